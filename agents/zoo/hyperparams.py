"""Hyperparameters per algorithm and env id, from `agents/hyperparams/<algo>.yml` (rl-zoo3 style).

Each file maps an env id to one section: `n_timesteps`, `policy`, `n_envs` and the
algorithm's keyword arguments, with `policy_kwargs` as a plain mapping (never an
evaluated string). Every section is validated by `Hyperparams`: an unknown key fails
with its name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator
from torch import nn

from agents.zoo.algos import ALGOS, RECURRENT_ALGOS
from esper_env.contracts import StrictModel
from esper_env.envs.presets import merge_kwargs

HYPERPARAMS_DIR = Path(__file__).resolve().parent.parent / "hyperparams"

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
_LSTM_KEYS = ("lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm")


class PolicyKwargs(StrictModel):
    """The policy network's shape; LSTM keys apply to recurrent algorithms only.

    Attributes:
        net_arch: Hidden layer sizes, shared or as `{"pi": [...], "vf": [...]}`.
        activation_fn: `tanh` or `relu`.
        ortho_init: Orthogonal initialisation of the weights.
        lstm_hidden_size: LSTM units (recurrent only).
        n_lstm_layers: LSTM layers (recurrent only).
        shared_lstm: Actor and critic share one LSTM (recurrent only).
        enable_critic_lstm: The critic has its own LSTM (recurrent only).
    """

    net_arch: list[int] | dict[Literal["pi", "vf"], list[int]] | None = None
    activation_fn: Literal["tanh", "relu"] | None = None
    ortho_init: bool | None = None
    lstm_hidden_size: int | None = Field(default=None, ge=1)
    n_lstm_layers: int | None = Field(default=None, ge=1)
    shared_lstm: bool | None = None
    enable_critic_lstm: bool | None = None

    def to_sb3(self) -> dict[str, Any]:
        """The `policy_kwargs` SB3 takes: set keys only, activation names as classes."""
        kwargs = self.model_dump(exclude_none=True)
        if "activation_fn" in kwargs:
            kwargs["activation_fn"] = _ACTIVATIONS[kwargs["activation_fn"]]
        return kwargs


class Hyperparams(StrictModel):
    """One env's section of a hyperparameter file: what `train_agent.py` builds the model from.

    Attributes:
        n_timesteps: Default training length (`-n` overrides it).
        policy: SB3 policy name (`MlpLstmPolicy` for RecurrentPPO, `MlpPolicy` otherwise).
        n_envs: Parallel envs (`--n-envs` overrides it).
        learning_rate: Adam learning rate.
        n_steps: Steps per env per rollout.
        batch_size: Minibatch size in steps.
        n_epochs: Passes over each rollout.
        gamma: Discount.
        gae_lambda: GAE lambda.
        clip_range: PPO clip range.
        ent_coef: Entropy bonus.
        vf_coef: Value loss weight.
        max_grad_norm: Gradient clipping.
        target_kl: Early stop of an update at this KL (None: never).
        policy_kwargs: The policy network's shape.
    """

    n_timesteps: int = Field(ge=1)
    policy: Literal["MlpPolicy", "MlpLstmPolicy"]
    n_envs: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=3e-4, gt=0)
    n_steps: int = Field(default=2048, ge=1)
    batch_size: int = Field(default=64, ge=1)
    n_epochs: int = Field(default=10, ge=1)
    gamma: float = Field(default=0.99, gt=0, le=1)
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    clip_range: float = Field(default=0.2, gt=0)
    ent_coef: float = Field(default=0.0, ge=0)
    vf_coef: float = Field(default=0.5, ge=0)
    max_grad_norm: float = Field(default=0.5, gt=0)
    target_kl: float | None = Field(default=None, gt=0)
    policy_kwargs: PolicyKwargs = Field(default_factory=PolicyKwargs)

    @model_validator(mode="after")
    def _batch_fits_rollout(self) -> Hyperparams:
        rollout = self.n_steps * self.n_envs
        if self.batch_size > rollout:
            raise ValueError(
                f"batch_size {self.batch_size} exceeds the rollout n_steps * n_envs = {rollout}"
            )
        return self

    def algo_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the algorithm's constructor (all but the zoo's own keys)."""
        kwargs = self.model_dump(exclude={"n_timesteps", "policy", "n_envs", "policy_kwargs"})
        kwargs["policy_kwargs"] = self.policy_kwargs.to_sb3()
        return kwargs


def check_for_algo(hyperparams: Hyperparams, algo: str) -> None:
    """Checks that a section suits `algo`: the right policy class and no stray LSTM keys.

    Raises:
        ValueError: A recurrent algorithm without `MlpLstmPolicy`, or the reverse, or LSTM
            keys for a non-recurrent algorithm.
    """
    recurrent = algo in RECURRENT_ALGOS
    expected = "MlpLstmPolicy" if recurrent else "MlpPolicy"
    if hyperparams.policy != expected:
        raise ValueError(f"{algo} needs policy: {expected}, got {hyperparams.policy}")
    stray = [key for key in _LSTM_KEYS if getattr(hyperparams.policy_kwargs, key) is not None]
    if stray and not recurrent:
        raise ValueError(f"policy_kwargs {stray} apply to recurrent algorithms only, not {algo}")


def hyperparams_file(algo: str) -> Path:
    """Path of the hyperparameter file of `algo`.

    Raises:
        ValueError: Unknown algo.
    """
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; choose from {sorted(ALGOS)}")
    return HYPERPARAMS_DIR / f"{algo}.yml"


def read_sections(path: Path) -> dict[str, dict[str, Any]]:
    """Reads a hyperparameter file: a mapping of env id to its raw section.

    Raises:
        ValueError: The file is not a mapping of env ids to mappings.
    """
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path} must map env ids to sections of hyperparameters")
    return data


def load_hyperparams(
    algo: str, env_id: str, overrides: dict[str, Any] | None = None, *, path: Path | None = None
) -> Hyperparams:
    """Loads and validates the section of `env_id` for `algo`, with `overrides` merged on top.

    Args:
        algo: `--algo` name.
        env_id: Env id, a key of the file.
        overrides: `--hyperparams` values; nested dicts (`policy_kwargs`) merge key by key.
        path: File to read instead of `agents/hyperparams/<algo>.yml`.

    Raises:
        ValueError: No section for `env_id`, an unknown or invalid key (named in the
            message), or a section that does not suit `algo`.
    """
    path = path if path is not None else hyperparams_file(algo)
    sections = read_sections(path)
    if env_id not in sections:
        raise ValueError(
            f"{path} has no section for {env_id!r} (it has {sorted(sections)}); add one "
            "or pick one of those env ids"
        )
    raw = merge_kwargs(sections[env_id], overrides or {})
    try:
        hyperparams = Hyperparams(**raw)
    except ValidationError as error:
        raise ValueError(f"{path} [{env_id}] is invalid:\n{error}") from error
    check_for_algo(hyperparams, algo)
    return hyperparams
