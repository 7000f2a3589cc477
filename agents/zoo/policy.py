"""A saved SB3 agent behind the `Policy` interface, so it runs wherever the baselines do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.zoo.algos import ALGOS, MASKABLE_ALGOS, RECURRENT_ALGOS, algo_class
from agents.zoo.observation_transform import (
    TRANSFORM_ATTRIBUTE,
    ObservationPipeline,
    ObservationTransform,
)
from agents.zoo.safe_load import load_model, saved_attribute
from esper_env.envs.presets import ENV_SEMANTICS_VERSION
from esper_env.wrappers import FLAT_ACTIONS_VERSION, FlatMaskedActions

#: The model attribute saying the agent was trained on `FlatMaskedActions` (its version).
FLAT_ACTIONS_ATTRIBUTE = "esper_flat_actions_version"


def stamp_semantics(model: BaseAlgorithm) -> None:
    """Records the env semantics version on a model; SB3 saves it with the model's data."""
    model.env_semantics_version = ENV_SEMANTICS_VERSION  # type: ignore[attr-defined]


def stamp_action_interface(model: BaseAlgorithm, env: VecEnv) -> None:
    """Records on a model that it acts through `FlatMaskedActions`, when its env does.

    Saved with the model, so `load_sb3_policy` can decode its flat actions on a plain env.
    """
    if env.env_is_wrapped(FlatMaskedActions)[0]:
        setattr(model, FLAT_ACTIONS_ATTRIBUTE, FLAT_ACTIONS_VERSION)


def check_semantics(model: BaseAlgorithm, path: str | Path) -> None:
    """Refuses a saved agent trained on other env semantics than this Esper's.

    Raises:
        ValueError: The model records another version, or none (saved before versions).
    """
    version = getattr(model, "env_semantics_version", None)
    if version != ENV_SEMANTICS_VERSION:
        raise ValueError(
            f"{path} was trained on Esper env semantics version {version or '1 (unrecorded)'}, "
            f"this Esper runs version {ENV_SEMANTICS_VERSION}: what it learnt no longer "
            "applies; retrain it with esper-train"
        )


def algo_of(model: BaseAlgorithm) -> str:
    """Returns the `--algo` name of a model's class (`agents.zoo.algos.ALGOS`).

    Raises:
        ValueError: The model's class is none of the zoo's algorithms (nor a subclass of one).
    """
    # The most derived class wins: MaskableRecurrentPPO is also a RecurrentPPO.
    names = [name for name, cls in ALGOS.items() if type(model) is cls]
    if not names:
        names = [name for name, cls in ALGOS.items() if isinstance(model, cls)]
    if len(names) != 1:
        raise ValueError(
            f"cannot tell the algo of a {type(model).__name__} model: it must be one of "
            f"{sorted(f'{name} ({cls.__name__})' for name, cls in ALGOS.items())}"
        )
    return names[0]


class SB3Policy:
    """Adapts an SB3 model to `Policy`: `act(obs, info)` and `reset(seed)`.

    Serves the single-agent env and, as a partner, an `agents.multi_agent_sb3.AgentView`.
    A recurrent model carries its LSTM state and `episode_start` across steps and
    forgets them on `reset` (`episode_start` is True exactly on the first step after
    a reset); a maskable model is given `info["action_mask"]` as bools (the single-agent
    env gives bools, the multi-agent env int8). A model trained with `normalize` or
    `frame_stack` sees its observations as in training (`ObservationPipeline`, from
    the transform the model records). A model trained on `FlatMaskedActions` acts on a
    plain env through `flat_actions`: it is given the exact flat mask, and its flat
    action is decoded into the env's `[op, slot, blueprint, speed]`.

    Args:
        model: The trained model.
        algo: Its `--algo` name (decides how it is called); None infers it from the
            model's class.
        deterministic: Greedy actions instead of sampled ones.
        flat_actions: The flat-action codec of the plain env the model acts in (None:
            the model's actions are the env's own).

    Raises:
        ValueError: Unknown algo, a model that is not of `algo`'s class, or (with no
            `algo`) a model of none of the zoo's classes.
    """

    def __init__(
        self,
        model: BaseAlgorithm,
        algo: str | None = None,
        *,
        deterministic: bool = True,
        flat_actions: FlatMaskedActions | None = None,
    ) -> None:
        if algo is None:
            algo = algo_of(model)
        elif not isinstance(model, cls := algo_class(algo)):
            raise ValueError(
                f"algo {algo!r} needs a {cls.__name__} model, got a {type(model).__name__}"
            )
        self.model = model
        self.algo = algo
        self.deterministic = deterministic
        self.flat_actions = flat_actions
        self._state: tuple[np.ndarray, ...] | None = None
        self._episode_start = np.ones((1,), dtype=bool)
        transform = ObservationTransform.of_record(getattr(model, TRANSFORM_ATTRIBUTE, None))
        self._pipeline = None if transform is None else ObservationPipeline(transform)

    def reset(self, seed: int | None = None) -> None:
        """Starts a new episode; `seed` fixes the sampling of a stochastic policy."""
        self._state = None
        self._episode_start = np.ones((1,), dtype=bool)
        if self._pipeline is not None:
            self._pipeline.reset()
        if seed is not None and not self.deterministic:
            self.model.set_random_seed(seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Returns the model's action (an int64 vector) for this observation."""
        if self._pipeline is not None:
            obs = self._pipeline(obs)
        kwargs: dict[str, Any] = {"deterministic": self.deterministic}
        if self.algo in MASKABLE_ALGOS:
            mask = np.asarray(info["action_mask"]).astype(bool)
            if self.flat_actions is not None:
                mask = self.flat_actions.flat_mask(info["op_slot_mask"], mask)
            kwargs["action_masks"] = mask
        if self.algo in RECURRENT_ALGOS:
            action, self._state = self.model.predict(
                obs, state=self._state, episode_start=self._episode_start, **kwargs
            )
            self._episode_start = np.zeros((1,), dtype=bool)
        else:
            action, _ = self.model.predict(obs, **kwargs)
        if self.flat_actions is not None:
            return self.flat_actions.decode(action)
        return np.asarray(action, dtype=np.int64)


def load_sb3_policy(
    algo: str,
    path: str | Path,
    env: gym.Env | None = None,
    *,
    device: str = "cpu",
    deterministic: bool = True,
    trust: bool = False,
) -> SB3Policy:
    """Loads a saved agent (`.zip`) as a `Policy`, without running code from the file.

    The file is untrusted input: `agents.zoo.safe_load.load_model` rebuilds everything
    SB3 stores as a pickle, and refuses what it cannot rebuild, unless `trust`.

    Args:
        algo: `--algo` name it was trained with.
        path: The saved model.
        env: The env it will act in, e.g. the single-agent env or, for a partner, an
            `AgentView` of the agent it was trained as (its spaces are used and checked
            against the file's); without one, the spaces are rebuilt from the file's
            description of them.
        device: Torch device of the policy network.
        deterministic: Greedy actions instead of sampled ones.
        trust: Unpickle the file's entries as SB3 does: runs code from the file.

    Raises:
        ValueError: Unknown algo, an agent of other env semantics, or of other spaces
            than `env`'s.
        UntrustedAgentError: The file needs unpickling (the message names the entries)
            and `trust` is off.
        FileNotFoundError: No file at `path`.
    """
    transform = ObservationTransform.of_record(saved_attribute(path, TRANSFORM_ATTRIBUTE))
    flat_version = saved_attribute(path, FLAT_ACTIONS_ATTRIBUTE)
    if flat_version not in (None, FLAT_ACTIONS_VERSION):
        raise ValueError(
            f"{path} acts through flat actions version {flat_version}, this Esper decodes "
            f"version {FLAT_ACTIONS_VERSION}: retrain it"
        )
    spaces_of: Any = env
    flat_actions = None
    if env is not None:
        observation_space, action_space = env.observation_space, env.action_space
        if transform is not None and transform.frame_stack is not None:
            # The policy saw stacked observations: check the file against those.
            observation_space = transform.stacked_space(observation_space)
        if flat_version is not None and not isinstance(action_space, gym.spaces.Discrete):
            flat_actions = FlatMaskedActions(env)  # a plain env: decode the flat actions
            action_space = flat_actions.action_space
        spaces_of = _Spaces(observation_space, action_space)
    model = load_model(algo, path, spaces_of, device=device, trust=trust, attach_env=False)
    check_semantics(model, path)
    return SB3Policy(model, algo, deterministic=deterministic, flat_actions=flat_actions)


@dataclass(frozen=True)
class _Spaces:
    """An env's spaces without the env: what `load_model` checks a file against."""

    observation_space: gym.Space[Any]
    action_space: gym.Space[Any]
