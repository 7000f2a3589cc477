"""Hyperparameters per algorithm and env id, from `agents/hyperparams/<algo>.yml` (rl-zoo3 style).

Each file maps an env id to one section (a `default` section serves env ids without
their own, as in rl-zoo3). A section holds the zoo's own keys and arguments of the
algorithm's constructor:

- `n_timesteps`, `policy`, `n_envs`: training length, SB3 policy name, parallel envs.
- `normalize`: `true` or a mapping of `VecNormalize` arguments (`{norm_obs: true,
  norm_reward: false}`); rl-zoo3's Python string form is refused, never evaluated.
- `frame_stack`: stack this many observations (`VecFrameStack`).
- `env_wrapper`, `callback`: `module.Class`, a list of those, or a list of single-key
  mappings `{module.Class: {kwargs}}`; imported and checked when the section loads.
- `policy_kwargs`: a plain mapping (never an evaluated string), its keys checked
  against the policy class's constructor.
- Every other argument of the algorithm's `__init__` (found with `inspect.signature`,
  so it follows the installed SB3), except those the command line sets (`seed`,
  `device`, `verbose`, `tensorboard_log`, the env). `learning_rate`, `clip_range` and
  `clip_range_vf` also take `lin_<value>`: a linear schedule from that value to 0.

An unknown key fails with its name and the closest allowed key.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import torch
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from agents.zoo.algos import ALGOS, RECURRENT_ALGOS, algo_class
from esper_env.envs.presets import merge_kwargs

HYPERPARAMS_DIR = Path(__file__).resolve().parent.parent / "hyperparams"

#: Keys of a section that rl-zoo3 itself reads (the rest go to the algorithm).
ZOO_KEYS = frozenset(
    {
        "n_timesteps",
        "policy",
        "n_envs",
        "normalize",
        "frame_stack",
        "env_wrapper",
        "callback",
        "policy_kwargs",
    }
)

#: Constructor arguments a section may not set, with what sets them instead.
COMMAND_LINE_KEYS: dict[str, str] = {
    "env": "the command line sets it: --env (and --env-kwargs)",
    "env_kwargs": "the command line sets it: --env-kwargs",
    "seed": "the command line sets it: --seed",
    "device": "the command line sets it: --device",
    "verbose": "the command line sets it: --verbose",
    "tensorboard_log": "the command line sets it: --tensorboard-log",
    "_init_setup_model": "SB3 sets it itself when it loads a saved agent",
}

#: Keys whose value may be `lin_<value>`, a linear schedule from that value to 0.
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")

#: Short activation names; `nn.<Name>` names any activation of `torch.nn`.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}

_LSTM_KEYS = ("lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm")
#: Policy constructor arguments the algorithm passes itself, with where they come from.
_POLICY_ARGS_OF_THE_ALGO: dict[str, str] = {
    "observation_space": "the env gives it",
    "action_space": "the env gives it",
    "lr_schedule": "the algorithm builds it from learning_rate",
    "use_sde": "set use_sde at the top level of the section",
}
#: Policy kwargs a section names a class for by its name.
_NAMED_CLASS_POLICY_KWARGS = ("activation_fn", "optimizer_class")
_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_TORCH_PREFIXES = ("torch.nn.", "th.nn.", "nn.")
_OPTIM_PREFIXES = ("torch.optim.", "th.optim.", "optim.")

#: One `env_wrapper` or `callback` entry: `module.Class` or `{module.Class: {kwargs}}`.
ClassEntry = str | dict[str, dict[str, Any] | None]


def _did_you_mean(word: str, choices: Iterable[str], *, list_all: bool = True) -> str:
    """`: did you mean 'x'?` for the closest choice, else the choices (or nothing)."""
    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f": did you mean {close[0]!r}?"
    return f"; allowed: {', '.join(choices)}" if list_all else ""


def _float(text: str) -> float | None:
    """The number a string writes (YAML reads `3e-4`, without a dot, as a string)."""
    return float(text) if _FLOAT.fullmatch(text.strip()) else None


@functools.cache
def _init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The parameters of `cls.__init__`, without `self`.

    An `__init__` that passes `**kwargs` on to its parent's (a subclass that adds
    behaviour, not arguments) also takes the parent's parameters.
    """
    parameters = dict(inspect.signature(cls.__init__).parameters)
    parameters.pop("self", None)
    variadic = [n for n, p in parameters.items() if p.kind is inspect.Parameter.VAR_KEYWORD]
    if variadic and len(cls.__mro__) > 1 and cls.__mro__[1] is not object:
        for name in variadic:
            parameters.pop(name)
        parameters = {**_init_parameters(cls.__mro__[1]), **parameters}
    return parameters


def _algo_parameters(algo: str) -> dict[str, inspect.Parameter]:
    """The constructor parameters of `algo`'s class.

    Raises:
        ValueError: Unknown algo.
    """
    return _init_parameters(algo_class(algo))


def allowed_keys(algo: str) -> frozenset[str]:
    """The keys a section for `algo` may hold: the zoo's and the constructor's own.

    Raises:
        ValueError: Unknown algo.
    """
    return (ZOO_KEYS | frozenset(_algo_parameters(algo))) - frozenset(COMMAND_LINE_KEYS)


def linear_schedule(initial_value: float) -> LinearSchedule:
    """SB3's schedule from `initial_value` at progress 1 to 0 at progress 0 (rl-zoo3's `lin_`)."""
    return LinearSchedule(start=initial_value, end=0.0, end_fraction=1.0)


def _schedule_value(key: str, value: Any, *, positive: bool) -> float | str | None:
    """A schedule key's value checked: a number or `lin_<number>` (kept as written).

    Raises:
        ValueError: Not a number, not `lin_<number>`, or not positive where it must be.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{key} takes a number or lin_<number>, got {value!r}")
    number: float | None
    if isinstance(value, str):
        head, sep, tail = value.partition("_")
        number = _float(tail) if sep and head == "lin" else _float(value)
        if number is None:
            raise ValueError(
                f"{key} {value!r} is neither a number nor a schedule lin_<initial value> "
                "(e.g. lin_3e-4)"
            )
    else:
        number = float(value)
    if positive and not number > 0:
        raise ValueError(f"{key} must be > 0, got {value!r}")
    if isinstance(value, str) and value.startswith("lin_"):
        return value
    return number


def _as_schedule(value: float | str) -> float | LinearSchedule:
    """A checked schedule value as SB3 takes it: `lin_X` becomes `linear_schedule(X)`."""
    if isinstance(value, str):
        return linear_schedule(float(value.removeprefix("lin_")))
    return value


def _import_module(module_name: str, where: str) -> Any:
    """Imports `module_name`, every package on its path checked to exist first.

    Raises:
        ValueError: A part of the path names no module (or a module that is no package).
    """
    parts = module_name.split(".")
    module = None
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if module is not None and not hasattr(module, "__path__"):
            raise ValueError(
                f"{where}: {'.'.join(parts[: end - 1])} is a module, not a package, so it "
                f"has no module {parts[end - 1]!r}; name a class as module.Class"
            )
        if importlib.util.find_spec(prefix) is None:
            raise ValueError(
                f"{where}: no module named {prefix!r}; check the spelling or install it"
            )
        module = importlib.import_module(prefix)
    return module


def _resolve_class(path: str, where: str, base: type) -> type:
    """The class a dotted path `module.Class` names, checked to subclass `base`.

    Raises:
        ValueError: Not a dotted path, no such module or attribute, or not a subclass of
            `base` (all naming `where` and `path`).
    """
    base_name = f"{base.__module__}.{base.__qualname__}"
    if not isinstance(path, str) or not _DOTTED.fullmatch(path):
        raise ValueError(f"{where}: {path!r} is not a dotted path module.Class")
    module_name, _, name = path.rpartition(".")
    module = _import_module(module_name, f"{where} {path!r}")
    target = getattr(module, name, None)
    if target is None:
        public = [attr for attr in dir(module) if not attr.startswith("_")]
        raise ValueError(
            f"{where} {path!r}: module {module_name} has no {name!r}"
            f"{_did_you_mean(name, public, list_all=False)}"
        )
    if not (isinstance(target, type) and issubclass(target, base)):
        raise ValueError(f"{where} {path!r} is not a class derived from {base_name}")
    return target


def _check_class_kwargs(cls: type, kwargs: Mapping[str, Any], where: str, *, skip: int) -> None:
    """Checks keyword arguments against the constructor of `cls` (its first `skip` given).

    Raises:
        ValueError: An argument it does not take (with the closest), or a required one missing.
    """
    parameters = list(_init_parameters(cls).values())[skip:]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        names = [
            p.name
            for p in parameters
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]
        for key in kwargs:
            if key not in names:
                raise ValueError(
                    f"{where}: {cls.__name__} takes no argument {key!r}{_did_you_mean(key, names)}"
                )
    missing = [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and p.name not in kwargs
    ]
    if missing:
        raise ValueError(
            f"{where}: {cls.__name__} needs {', '.join(missing)}; give them as "
            f"{{{cls.__module__}.{cls.__name__}: {{{missing[0]}: ...}}}}"
        )


def _class_entries(key: str, value: Any) -> list[tuple[str, dict[str, Any]]]:
    """`env_wrapper` or `callback` in rl-zoo3's forms, as (dotted path, kwargs) pairs.

    Raises:
        ValueError: A form rl-zoo3 does not take (named).
    """
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    entries: list[tuple[str, dict[str, Any]]] = []
    for index, item in enumerate(items):
        where = f"{key}[{index}]" if isinstance(value, list) else key
        if isinstance(item, str):
            entries.append((item, {}))
        elif isinstance(item, Mapping) and len(item) == 1:
            path, kwargs = next(iter(item.items()))
            kwargs = {} if kwargs is None else kwargs
            if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
                raise ValueError(
                    f"{where}: the arguments of {path!r} must be a mapping of names to "
                    f"values, got {kwargs!r}"
                )
            entries.append((path, dict(kwargs)))
        else:
            raise ValueError(
                f"{where}: {item!r} is neither module.Class nor a single-key mapping "
                "{module.Class: {kwargs}} (check the YAML indentation)"
            )
    return entries


def _resolve_entries(
    key: str, value: Any, base: type, *, skip: int
) -> list[tuple[type, dict[str, Any]]]:
    """`env_wrapper` or `callback` as classes with their kwargs, all checked.

    Raises:
        ValueError: A bad form, module, class or argument, naming the entry.
    """
    resolved: list[tuple[type, dict[str, Any]]] = []
    entries = _class_entries(key, value)
    for index, (path, kwargs) in enumerate(entries):
        where = f"{key}[{index}]" if isinstance(value, list) else key
        cls = _resolve_class(path, where, base)
        _check_class_kwargs(cls, kwargs, f"{where} {path!r}", skip=skip)
        resolved.append((cls, kwargs))
    return resolved


def _activation(name: str) -> type[nn.Module]:
    """The torch class an `activation_fn` name means (`tanh`, `nn.ReLU`, ...).

    Raises:
        ValueError: Not a short name, nor an activation of `torch.nn`.
    """
    if name in ACTIVATIONS:
        return ACTIVATIONS[name]
    prefix = next((p for p in _TORCH_PREFIXES if name.startswith(p)), None)
    target = getattr(nn, name.removeprefix(prefix), None) if prefix else None
    if isinstance(target, type) and target.__module__ == "torch.nn.modules.activation":
        return target
    raise ValueError(
        f"activation_fn {name!r} is not an activation: use one of {', '.join(ACTIVATIONS)} "
        "or a torch.nn activation class as nn.<Name> (e.g. nn.Hardswish)"
    )


def _optimizer(name: str) -> type[torch.optim.Optimizer]:
    """The torch optimizer an `optimizer_class` name means (`AdamW`, `torch.optim.SGD`).

    Raises:
        ValueError: Not an optimizer of `torch.optim`.
    """
    prefix = next((p for p in _OPTIM_PREFIXES if name.startswith(p)), "")
    short = name.removeprefix(prefix)
    target = getattr(torch.optim, short, None)
    if isinstance(target, type) and issubclass(target, torch.optim.Optimizer):
        return target
    names = [n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)]
    raise ValueError(
        f"optimizer_class {name!r} is not a torch.optim optimizer"
        f"{_did_you_mean(short, names, list_all=False)}"
    )


class PolicyKwargs(BaseModel):
    """The policy network's arguments; LSTM keys apply to recurrent algorithms only.

    The keys typed here are checked here; `Hyperparams` checks every key against the
    constructor of the algorithm's policy class, and the others pass through to it.

    Attributes:
        net_arch: Hidden layer sizes, shared or as `{"pi": [...], "vf": [...]}`.
        activation_fn: `tanh`, `relu`, `elu`, `leaky_relu`, `gelu`, `silu` or `nn.<Name>`.
        optimizer_class: A `torch.optim` optimizer by name (`AdamW`, `torch.optim.SGD`).
        ortho_init: Orthogonal initialisation of the weights.
        lstm_hidden_size: LSTM units (recurrent only).
        n_lstm_layers: LSTM layers (recurrent only).
        shared_lstm: Actor and critic share one LSTM (recurrent only).
        enable_critic_lstm: The critic has its own LSTM (recurrent only).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    net_arch: list[PositiveInt] | dict[Literal["pi", "vf"], list[PositiveInt]] | None = None
    activation_fn: str | None = None
    optimizer_class: str | None = None
    ortho_init: bool | None = None
    lstm_hidden_size: int | None = Field(default=None, ge=1)
    n_lstm_layers: int | None = Field(default=None, ge=1)
    shared_lstm: bool | None = None
    enable_critic_lstm: bool | None = None

    @field_validator("activation_fn")
    @classmethod
    def _known_activation(cls, value: str | None) -> str | None:
        if value is not None:
            _activation(value)
        return value

    @field_validator("optimizer_class")
    @classmethod
    def _known_optimizer(cls, value: str | None) -> str | None:
        if value is not None:
            _optimizer(value)
        return value

    def to_sb3(self) -> dict[str, Any]:
        """The `policy_kwargs` SB3 takes: set keys only, class names as classes."""
        kwargs = self.model_dump(exclude_none=True)
        if "activation_fn" in kwargs:
            kwargs["activation_fn"] = _activation(kwargs["activation_fn"])
        if "optimizer_class" in kwargs:
            kwargs["optimizer_class"] = _optimizer(kwargs["optimizer_class"])
        return kwargs


def _check_policy(algo: str, policy: str, policy_kwargs: PolicyKwargs) -> None:
    """Checks the policy name and every `policy_kwargs` key against `algo`'s policy class.

    Raises:
        ValueError: The wrong policy for `algo`, LSTM keys for a non-recurrent algorithm,
            or a key the policy class does not take (with the closest it does).
    """
    recurrent = algo in RECURRENT_ALGOS
    expected = "MlpLstmPolicy" if recurrent else "MlpPolicy"
    if policy != expected:
        raise ValueError(f"{algo} needs policy: {expected}, got {policy}")
    given = policy_kwargs.model_dump(exclude_none=True)
    stray = [key for key in _LSTM_KEYS if key in given]
    if stray and not recurrent:
        raise ValueError(f"policy_kwargs {stray} apply to recurrent algorithms only, not {algo}")
    policy_class = algo_class(algo).policy_aliases[policy]
    parameters = _init_parameters(policy_class)
    takes = [name for name in parameters if name not in _POLICY_ARGS_OF_THE_ALGO]
    for key, value in given.items():
        if key in _POLICY_ARGS_OF_THE_ALGO:
            raise ValueError(f"policy_kwargs.{key} cannot be set: {_POLICY_ARGS_OF_THE_ALGO[key]}")
        if key not in parameters:
            raise ValueError(
                f"unknown policy_kwargs key {key!r} for {algo}'s {policy} "
                f"({policy_class.__name__}){_did_you_mean(key, takes)}"
            )
        takes_a_class = isinstance(parameters[key].default, type)
        if takes_a_class and isinstance(value, str) and key not in _NAMED_CLASS_POLICY_KWARGS:
            raise ValueError(
                f"policy_kwargs.{key} takes a class; a hyperparameter file names one only "
                f"for {' and '.join(_NAMED_CLASS_POLICY_KWARGS)}: drop {key}"
            )


class Hyperparams(BaseModel):
    """One env's section of a hyperparameter file, for one algorithm: what training builds.

    Build it with `Hyperparams.for_algo(algo, section)` or `load_hyperparams`. Keys the
    algorithm takes but not typed here pass through to its constructor (SB3 checks
    them); the typed ones not given take the constructor's default.

    Attributes:
        algo: `--algo` name the section is for (not dumped: the file is per algo).
        n_timesteps: Default training length (`-n` overrides it).
        policy: SB3 policy name (`MlpLstmPolicy` for RecurrentPPO, `MlpPolicy` otherwise).
        n_envs: Parallel envs (`--n-envs` overrides it).
        normalize: `VecNormalize` the envs: True, or a mapping of its arguments.
        frame_stack: Stack this many observations (`VecFrameStack`); None: no stacking.
        env_wrapper: Gymnasium wrappers of each env (see `env_wrappers`).
        callback: SB3 callbacks of training (see `callbacks`).
        policy_kwargs: The policy network's arguments.
        learning_rate: Adam learning rate, or `lin_<value>`.
        n_steps: Steps per env per rollout.
        batch_size: Minibatch size in steps.
        n_epochs: Passes over each rollout.
        gamma: Discount.
        gae_lambda: GAE lambda.
        clip_range: PPO clip range, or `lin_<value>`.
        clip_range_vf: Value-function clip range, or `lin_<value>` (None: no clipping).
        normalize_advantage: Normalise the advantages of each minibatch.
        ent_coef: Entropy bonus.
        vf_coef: Value loss weight.
        max_grad_norm: Gradient clipping.
        use_sde: Generalised state-dependent exploration (Box actions only).
        sde_sample_freq: Resample the gSDE noise every N steps (-1: once per rollout).
        rollout_buffer_class: A `RolloutBuffer` subclass as `module.Class`.
        target_kl: Early stop of an update at this KL (None: never).
        stats_window_size: Episodes the logged rollout means cover.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    algo: str = Field(exclude=True)
    n_timesteps: int = Field(ge=1)
    policy: str
    n_envs: int = Field(default=1, ge=1)
    normalize: bool | dict[str, Any] = False
    frame_stack: int | None = Field(default=None, ge=1)
    env_wrapper: ClassEntry | list[ClassEntry] | None = None
    callback: ClassEntry | list[ClassEntry] | None = None
    policy_kwargs: PolicyKwargs = Field(default_factory=PolicyKwargs)

    learning_rate: float | str | None = None
    n_steps: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    n_epochs: int | None = Field(default=None, ge=1)
    gamma: float | None = Field(default=None, gt=0, le=1)
    gae_lambda: float | None = Field(default=None, ge=0, le=1)
    clip_range: float | str | None = None
    clip_range_vf: float | str | None = None
    normalize_advantage: bool | None = None
    ent_coef: float | None = Field(default=None, ge=0)
    vf_coef: float | None = Field(default=None, ge=0)
    max_grad_norm: float | None = Field(default=None, gt=0)
    use_sde: bool | None = None
    sde_sample_freq: int | None = Field(default=None, ge=-1)
    rollout_buffer_class: str | None = None
    target_kl: float | None = Field(default=None, gt=0)
    stats_window_size: int | None = Field(default=None, ge=1)

    @classmethod
    def for_algo(cls, algo: str, section: Mapping[str, Any]) -> Hyperparams:
        """Validates `section` (a file's section, overrides merged) for `algo`.

        Raises:
            ValueError: An unknown, command-line-only or invalid key, or a value that does
                not suit `algo`; every problem named, with the fix.
        """
        return _validate(algo, section, where=f"{algo} hyperparameters")

    @classmethod
    def _algo_keys(cls) -> list[str]:
        """The typed keys that are arguments of the algorithm, not the zoo's own."""
        return [name for name in cls.model_fields if name not in ZOO_KEYS and name != "algo"]

    @model_validator(mode="before")
    @classmethod
    def _keys_of_the_algo(cls, data: Any) -> Any:
        """Refuses keys `algo` does not take; fills typed ones with the constructor's defaults."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a hyperparameter section is a mapping of keys, got {data!r}")
        algo = data.get("algo")
        if not isinstance(algo, str):
            raise ValueError(
                "Hyperparams needs the algo its section is for: use "
                "Hyperparams.for_algo(algo, section) or load_hyperparams(algo, env_id)"
            )
        parameters = _algo_parameters(algo)
        allowed = allowed_keys(algo)
        problems: list[str] = []
        for key in data:
            if key == "algo":
                continue
            if not isinstance(key, str):
                problems.append(f"key {key!r} is not a name")
            elif key in COMMAND_LINE_KEYS:
                problems.append(
                    f"{key!r} cannot be set in a hyperparameter section: {COMMAND_LINE_KEYS[key]}"
                )
            elif key not in allowed:
                problems.append(f"unknown key {key!r} for {algo}{_did_you_mean(key, allowed)}")
        if problems:
            raise ValueError("; ".join(problems))
        filled = dict(data)
        for name in cls._algo_keys():
            if name not in parameters:
                continue
            default = parameters[name].default
            if name not in filled:
                if default is not inspect.Parameter.empty:
                    filled[name] = default
            elif filled[name] is None and default is not None:
                raise ValueError(
                    f"{name} cannot be null for {algo}: drop it for SB3's default {default!r}"
                )
        return filled

    @field_validator("n_timesteps", mode="before")
    @classmethod
    def _whole_timesteps(cls, value: Any) -> Any:
        """Takes `1e6` as written in YAML (a string) or as a float, if it is whole."""
        number = _float(value) if isinstance(value, str) else value
        if isinstance(value, str) and number is None:
            raise ValueError(f"n_timesteps {value!r} is not a number")
        if isinstance(number, float):
            if not number.is_integer():
                raise ValueError(f"n_timesteps {value!r} is not a whole number of steps")
            return int(number)
        return value

    @field_validator("learning_rate", "clip_range", mode="before")
    @classmethod
    def _positive_schedule(cls, value: Any, info: ValidationInfo) -> float | str | None:
        return _schedule_value(info.field_name, value, positive=True)

    @field_validator("clip_range_vf", mode="before")
    @classmethod
    def _vf_schedule(cls, value: Any) -> float | str | None:
        return _schedule_value("clip_range_vf", value, positive=True)

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize_form(cls, value: Any) -> Any:
        """`true`/`false` or a mapping of `VecNormalize` arguments, never a string."""
        if isinstance(value, str):
            raise ValueError(
                f"normalize {value!r}: write true, false or a mapping of VecNormalize "
                "arguments such as {norm_obs: true, norm_reward: false} (rl-zoo3's Python "
                "string is never evaluated)"
            )
        if isinstance(value, Mapping):
            takes = [name for name in _init_parameters(VecNormalize) if name != "venv"]
            for key in value:
                if key not in takes:
                    raise ValueError(
                        f"normalize: VecNormalize takes no argument {key!r}"
                        f"{_did_you_mean(str(key), takes)}"
                    )
        return value

    @field_validator("env_wrapper", mode="before")
    @classmethod
    def _env_wrappers_exist(cls, value: Any) -> Any:
        _resolve_entries("env_wrapper", value, gym.Wrapper, skip=1)
        return value

    @field_validator("callback", mode="before")
    @classmethod
    def _callbacks_exist(cls, value: Any) -> Any:
        _resolve_entries("callback", value, BaseCallback, skip=0)
        return value

    @field_validator("rollout_buffer_class")
    @classmethod
    def _buffer_class_exists(cls, value: str | None) -> str | None:
        if value is not None:
            _resolve_class(value, "rollout_buffer_class", RolloutBuffer)
        return value

    @field_validator("policy_kwargs", mode="before")
    @classmethod
    def _policy_kwargs_mapping(cls, value: Any) -> Any:
        """A mapping (or nothing), never rl-zoo3's evaluated string."""
        if value is None:
            return {}
        if isinstance(value, str):
            raise ValueError(
                f"policy_kwargs {value!r} must be a mapping, e.g. {{net_arch: [64, 64], "
                "activation_fn: tanh} (a Python string is never evaluated)"
            )
        return value

    @model_validator(mode="after")
    def _fits_the_algo(self) -> Hyperparams:
        _check_policy(self.algo, self.policy, self.policy_kwargs)
        if self.n_steps is not None and self.batch_size is not None:
            rollout = self.n_steps * self.n_envs
            if self.batch_size > rollout:
                raise ValueError(
                    f"batch_size {self.batch_size} exceeds the rollout n_steps * n_envs = {rollout}"
                )
        return self

    @field_serializer("policy_kwargs")
    def _dump_policy_kwargs(self, value: PolicyKwargs) -> dict[str, Any]:
        return value.model_dump(exclude_none=True)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The section as a file holds it: no keys `algo` lacks, no unset optional ones."""
        data: dict[str, Any] = handler(self)
        parameters = _algo_parameters(self.algo)
        dropped = {key for key in self._algo_keys() if key not in parameters}
        dropped |= {key for key in ("frame_stack", "env_wrapper", "callback") if data[key] is None}
        return {key: value for key, value in data.items() if key not in dropped}

    def algo_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the algorithm's constructor (all but the zoo's own keys).

        `lin_<value>` schedules become SB3 `LinearSchedule`s, class names classes.
        """
        parameters = _algo_parameters(self.algo)
        kwargs = {name: getattr(self, name) for name in self._algo_keys() if name in parameters}
        kwargs.update(self.model_extra or {})
        for key in SCHEDULE_KEYS:
            if kwargs.get(key) is not None:
                kwargs[key] = _as_schedule(kwargs[key])
        if isinstance(kwargs.get("rollout_buffer_class"), str):
            kwargs["rollout_buffer_class"] = _resolve_class(
                kwargs["rollout_buffer_class"], "rollout_buffer_class", RolloutBuffer
            )
        kwargs["policy_kwargs"] = self.policy_kwargs.to_sb3()
        return kwargs

    def normalize_kwargs(self) -> dict[str, Any] | None:
        """`VecNormalize` arguments, or None when `normalize` is off.

        As in rl-zoo3, `gamma` is the algorithm's unless the mapping sets it. For an eval
        env the caller sets `norm_reward=False` (and `training=False`).
        """
        if self.normalize is False:
            return None
        kwargs = {} if self.normalize is True else dict(self.normalize)
        if self.gamma is not None and "gamma" not in kwargs:
            kwargs["gamma"] = self.gamma
        return kwargs

    def env_wrappers(self) -> list[Callable[[gym.Env], gym.Env]]:
        """One function per `env_wrapper` entry, in order: each wraps an env with its kwargs."""
        return [
            functools.partial(cls, **kwargs)
            for cls, kwargs in _resolve_entries(
                "env_wrapper", self.env_wrapper, gym.Wrapper, skip=1
            )
        ]

    def callbacks(self) -> list[BaseCallback]:
        """New instances of the `callback` entries, in order (fresh on every call)."""
        return [
            cls(**kwargs)
            for cls, kwargs in _resolve_entries("callback", self.callback, BaseCallback, skip=0)
        ]


def _validate(algo: str, section: Mapping[str, Any], *, where: str) -> Hyperparams:
    """`Hyperparams` of `section` for `algo`, errors as one `ValueError` naming `where`.

    Raises:
        ValueError: Unknown algo, an `algo` key in the section, or an invalid section.
    """
    algo_class(algo)
    if "algo" in section:
        raise ValueError(f"{where}: 'algo' is not a section key; --algo chooses the algorithm")
    try:
        return Hyperparams.model_validate({**section, "algo": algo})
    except ValidationError as error:
        lines = []
        for detail in error.errors():
            location = ".".join(str(part) for part in detail["loc"])
            message = str(detail["msg"]).removeprefix("Value error, ")
            named = not location or location in message
            lines.append(f"  - {message}" if named else f"  - {location}: {message}")
        raise ValueError(f"{where} are invalid:\n" + "\n".join(lines)) from error


def check_for_algo(hyperparams: Hyperparams, algo: str) -> None:
    """Checks that a section suits `algo`: its own algo, policy class and policy kwargs.

    Raises:
        ValueError: Validated for another algo, a recurrent algorithm without
            `MlpLstmPolicy` (or the reverse), LSTM keys for a non-recurrent algorithm, or
            a policy kwarg the policy class does not take.
    """
    if hyperparams.algo != algo:
        raise ValueError(f"these hyperparameters are for {hyperparams.algo}, not {algo}")
    _check_policy(algo, hyperparams.policy, hyperparams.policy_kwargs)


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
        ValueError: Not a YAML file (rl-zoo3's Python configs are never run), or not a
            mapping of env ids to mappings.
        FileNotFoundError: No file at `path`.
    """
    if path.suffix not in (".yml", ".yaml"):
        raise ValueError(
            f"{path}: hyperparameter files are YAML (.yml or .yaml); Python configs are never run"
        )
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
        env_id: Env id, a key of the file (else its `default` section, as in rl-zoo3).
        overrides: `--hyperparams` values; nested dicts (`policy_kwargs`) merge key by key.
        path: A file to read instead of `agents/hyperparams/<algo>.yml` (rl-zoo3's
            `-conf`), in the same format.

    Raises:
        ValueError: Unknown algo, no section for `env_id`, an unknown or invalid key
            (named in the message, with the fix), or a section that does not suit `algo`.
        FileNotFoundError: No file at `path`.
    """
    algo_class(algo)
    path = path if path is not None else hyperparams_file(algo)
    sections = read_sections(path)
    name = env_id if env_id in sections else "default"
    if name not in sections:
        raise ValueError(
            f"{path} has no section for {env_id!r} (it has {sorted(sections)}); add one "
            "(or a 'default' one) or pick one of those env ids"
        )
    raw = merge_kwargs(sections[name], overrides or {})
    return _validate(algo, raw, where=f"{path} [{name}] for {algo}")
