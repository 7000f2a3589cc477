"""Loading saved SB3 agents without running code from the file: agent files are untrusted input.

An SB3 `.zip` holds `data`, a JSON of the model's attributes, and `.pth` files of
weights. Every attribute JSON cannot hold (`policy_class`, `policy_kwargs` with classes
in it, the spaces, the schedules, the rollout state) is stored as a base64 cloudpickle
marked `:serialized:`, and `BaseAlgorithm.load` unpickles it: a file whose
`lr_schedule` was swapped for a crafted pickle runs that pickle's code when loaded.

`load_model` unpickles nothing from the file:

- every `:serialized:` entry of `data` is replaced (SB3's `custom_objects`) by an
  object built here: the spaces from the env (or from the file's plain-text description
  of them), the policy class from the algo, `policy_kwargs` from its plain-text
  description with classes from an allowlist, the schedules as constants (from
  `hyperparams` when training goes on), and the rollout state as SB3's "none yet";
  an entry with no safe replacement is refused, by name;
- the pickles are also cut out of the `data` handed to SB3, so no code path of SB3 can
  unpickle them;
- every `.pth` file (weights, optimizer state, `pytorch_variables`) must load with
  `torch.load(weights_only=True)`, which refuses pickles that call anything but
  tensor and container constructors.

`trust=True` (`--trust-agent` on the command lines) loads the file as SB3 does,
unpickling everything in it: that runs whatever code the file carries.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from agents.zoo.algos import RECURRENT_ALGOS, algo_class
from agents.zoo.hyperparams import Hyperparams
from esper_env.envs.multi_agent import MaskedMultiDiscrete

#: `--help` of the `--trust-agent` flags.
TRUST_AGENT_HELP = (
    "trust the saved agent: load the pickled entries of its .zip as SB3 does. Trusting "
    "RUNS CODE FROM THE FILE; only for agents you saved yourself or fully trust "
    "(without it, pickles are never loaded and an agent that needs one is refused)"
)

_SERIALIZED = ":serialized:"
_TYPE = ":type:"

#: Rollout state that SB3 rebuilds when training starts or resumes (`_setup_learn`,
#: `_setup_model`): None tells it "none yet", exactly as on a fresh model.
_RESET_ON_LOAD = frozenset(
    {
        "_last_obs",
        "_last_episode_starts",
        "_last_original_obs",
        "_last_lstm_states",
        "ep_info_buffer",
        "ep_success_buffer",
    }
)

#: Modules of SB3's own rollout buffers; with None, each algorithm picks its own default.
_BUFFER_MODULES = frozenset(
    {
        "stable_baselines3.common.buffers",
        "sb3_contrib.common.maskable.buffers",
        "sb3_contrib.common.recurrent.buffers",
    }
)

#: The space classes a saved description may name (`:type:` text to class).
_SPACES: dict[str, type[spaces.Space[Any]]] = {
    str(cls): cls
    for cls in (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, MaskedMultiDiscrete)
}

#: Classes `policy_kwargs` may name, by the text SB3 writes for them (`str(cls)`).
_POLICY_KWARG_CLASSES: dict[str, dict[str, type]] = {
    "activation_fn": {
        str(cls): cls for cls in (nn.Tanh, nn.ReLU, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU)
    },
    "optimizer_class": {
        str(cls): cls
        for cls in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.RMSprop)
    },
    "features_extractor_class": {str(FlattenExtractor): FlattenExtractor},
}

#: `policy_kwargs` keys whose values are plain JSON (numbers, bools, lists, mappings).
_POLICY_KWARG_PLAIN = frozenset(
    {
        "net_arch",
        "ortho_init",
        "lstm_hidden_size",
        "n_lstm_layers",
        "shared_lstm",
        "enable_critic_lstm",
        "lstm_kwargs",
        "log_std_init",
        "full_std",
        "use_expln",
        "squash_output",
        "share_features_extractor",
        "normalize_images",
        "optimizer_kwargs",
        "features_extractor_kwargs",
    }
)

_FLOAT = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)"
_CONSTANT_SCHEDULE = re.compile(rf"ConstantSchedule\(val=({_FLOAT})\)")
_LINEAR_SCHEDULE = re.compile(
    rf"LinearSchedule\(start=({_FLOAT}), end=({_FLOAT}), end_fraction=({_FLOAT})\)"
)
_INT_LIST = re.compile(r"\[\s*(-?\d+(?:\s+-?\d+)*)?\s*\]")
_INTEGER = re.compile(r"-?\d+")
_DTYPES = frozenset(
    {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
)


class UntrustedAgentError(ValueError):
    """A saved agent that cannot be loaded without running code from its file."""


class _UnloadedSchedule:
    """Stands in for a pickled schedule that was not loaded: fine to predict, refuses to train.

    Args:
        key: The entry of the saved agent (`clip_range`, ...).
        path: The saved agent.
    """

    def __init__(self, key: str, path: Path) -> None:
        self.key = key
        self.path = path

    def __call__(self, progress_remaining: float) -> float:
        """Refuses: training needs the real schedule."""
        raise RuntimeError(
            f"{self.key} of {self.path} was a pickled schedule that was not loaded (it could "
            "run code); to train this agent, load it with hyperparams (esper-train -i does) "
            "or with trust=True if you trust the file"
        )


def load_model(
    algo: str,
    path: str | Path,
    env: gym.Env | VecEnv | None = None,
    *,
    device: str = "cpu",
    trust: bool = False,
    hyperparams: Hyperparams | None = None,
    attach_env: bool = True,
    **kwargs: Any,
) -> BaseAlgorithm:
    """Loads a saved SB3 agent without unpickling anything from its file (unless trusted).

    Args:
        algo: `--algo` name it was trained with.
        path: The saved agent (`.zip`).
        env: The env it will act in: its spaces replace the file's (which must describe
            the same spaces). Without one, the spaces are rebuilt from their plain-text
            description in the file.
        device: Torch device of the policy.
        trust: Load the file as SB3 does, unpickling its entries: runs code from the file.
        hyperparams: The hyperparameters training goes on with (esper-train -i):
            the schedules and policy class come from them, and their algorithm
            arguments (all but `policy_kwargs`, which the saved weights fix) override
            the file's. Without them the model is fit to predict; schedules the file
            does not state as constants then refuse to train.
        attach_env: Give `env` to the model (SB3 wraps it in a `VecEnv`), as training
            needs; False only uses its spaces, enough to predict.
        **kwargs: Attributes to set on the model, as SB3's `load` takes them
            (`tensorboard_log`, `verbose`, ...).

    Returns:
        The model, with the file's weights.

    Raises:
        UntrustedAgentError: An entry needs unpickling (named with the fix) and
            `trust` is off, or a `.pth` file is not plain weights.
        ValueError: Not an SB3 zip, unknown algo, or the file's spaces differ from the env's.
        FileNotFoundError: No file at `path`.
    """
    cls = algo_class(algo)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved agent at {path} (expected a .zip from esper-train)")
    raw = path.read_bytes()  # read once: what is checked is what is loaded
    if hyperparams is not None:
        overrides = hyperparams.algo_kwargs()
        overrides.pop("policy_kwargs")  # fixed by the saved weights
        kwargs = {**overrides, **kwargs}
    attached = env if attach_env else None
    if trust:
        model = cls.load(io.BytesIO(raw), env=attached, device=device, **kwargs)
        if env is not None and attached is None:  # SB3 checks the spaces of an attached env
            for key in ("observation_space", "action_space"):
                if getattr(model, key) != getattr(env, key):
                    raise ValueError(
                        f"{path} was trained with {key} {getattr(model, key)}, but the env has "
                        f"{getattr(env, key)}: load it on the env (and env kwargs) it was "
                        "trained on"
                    )
        return model

    data, weights = _read_archive(raw, path)
    _check_weights(weights, path)
    custom_objects = _replacements(algo, cls, data, env, hyperparams, path)
    sanitized = _sanitized_archive(data, weights)
    return cls.load(
        io.BytesIO(sanitized), env=attached, device=device, custom_objects=custom_objects, **kwargs
    )


def serialized_entries(path: str | Path) -> dict[str, str]:
    """The entries of a saved agent's `data` that SB3 would unpickle, with their recorded types.

    Reads the JSON only; unpickles nothing.

    Raises:
        ValueError: Not an SB3 zip.
    """
    path = Path(path)
    data, _ = _read_archive(path.read_bytes(), path)
    return {key: str(entry.get(_TYPE)) for key, entry in data.items() if _is_serialized(entry)}


def saved_attribute(path: str | Path, key: str) -> Any:
    """A plain (JSON) attribute of a saved agent's `data`, None when absent; unpickles nothing.

    Raises:
        ValueError: Not an SB3 zip, or the attribute is stored as a pickle.
        FileNotFoundError: No file at `path`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved agent at {path} (expected a .zip from esper-train)")
    data, _ = _read_archive(path.read_bytes(), path)
    entry = data.get(key)
    if _is_serialized(entry):
        raise ValueError(f"{path}: {key} is stored as a pickle, not as plain data")
    return entry


def _is_serialized(entry: Any) -> bool:
    return isinstance(entry, dict) and _SERIALIZED in entry


def _read_archive(raw: bytes, path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The `data` JSON and the `.pth` files (unread) of a saved agent."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is not a saved SB3 agent (not a zip file)") from error
    with archive:
        names = archive.namelist()
        if "data" not in names:
            raise ValueError(f"{path} is not a saved SB3 agent (no 'data' entry in the zip)")
        try:
            data = json.loads(archive.read("data").decode("utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: its 'data' entry is not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise ValueError(f"{path}: its 'data' entry is not a JSON object")
        weights = {name: archive.read(name) for name in names if name.endswith(".pth")}
    return data, weights


def _check_weights(weights: Mapping[str, bytes], path: Path) -> None:
    """Refuses `.pth` files that are not plain tensors and containers.

    Raises:
        UntrustedAgentError: A file `torch.load(weights_only=True)` refuses.
    """
    for name, content in weights.items():
        try:
            torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise UntrustedAgentError(
                f"{path}: {name} is not plain weights: it is a pickle that "
                f"torch.load(weights_only=True) refuses, because loading it would call code "
                f"({str(error).splitlines()[0]}). Retrain the agent, or re-save it from a "
                "copy you trust"
            ) from error


def _sanitized_archive(data: dict[str, Any], weights: Mapping[str, bytes]) -> bytes:
    """A zip SB3 can load with the pickles of `data` cut out (`custom_objects` fills them)."""
    stripped = {
        key: {_TYPE: entry.get(_TYPE), "esper": "replaced on load"}
        if _is_serialized(entry)
        else entry
        for key, entry in data.items()
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data", json.dumps(stripped))
        for name, content in weights.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _replacements(
    algo: str,
    cls: type[BaseAlgorithm],
    data: dict[str, Any],
    env: gym.Env | VecEnv | None,
    hyperparams: Hyperparams | None,
    path: Path,
) -> dict[str, Any]:
    """A safe object for every `:serialized:` entry of `data`.

    Raises:
        UntrustedAgentError: Entries with no safe replacement, all named.
    """
    replacements: dict[str, Any] = {}
    refused: list[str] = []
    for key, entry in data.items():
        if not _is_serialized(entry):
            continue
        if key in ("observation_space", "action_space"):
            env_space = None if env is None else getattr(env, key)
            value, problem = _space(key, entry, env_space, path)
        elif key == "policy_class":
            value, problem = _policy_class(algo, cls, entry, hyperparams)
        elif key == "policy_kwargs":
            value, problem = _policy_kwargs(entry)
        elif key in ("learning_rate", "lr_schedule"):
            value, problem = _learning_rate(entry, data, hyperparams)
        elif key in ("clip_range", "clip_range_vf"):
            known = hyperparams.algo_kwargs().get(key) if hyperparams is not None else None
            value, problem = _schedule(key, entry, known, hyperparams is not None, path)
        elif key in _RESET_ON_LOAD:
            value, problem = None, None
        elif key == "rollout_buffer_class":
            module = entry.get("__module__")
            value = None
            problem = (
                None
                if module in _BUFFER_MODULES
                else f"a rollout buffer class of module {module!r}, not one of SB3's"
            )
        else:
            value, problem = None, "Esper has no safe replacement for this entry"
        if problem is None:
            replacements[key] = value
        else:
            refused.append(f"{key} ({entry.get(_TYPE)}): {problem}")
    if refused:
        listed = "\n  ".join(refused)
        raise UntrustedAgentError(
            f"{path}: refusing to load it, because these entries are pickles (which run code "
            f"when loaded) and cannot be rebuilt safely:\n  {listed}\n"
            "Fix: retrain or re-save the agent with Esper's zoo (esper-train), or, "
            "only if you trust the file, load it with trust=True (--trust-agent on the "
            "command line): trusting runs code from the file"
        )
    return replacements


def _space(
    key: str, entry: dict[str, Any], env_space: spaces.Space[Any] | None, path: Path
) -> tuple[spaces.Space[Any] | None, str | None]:
    """The env's space (checked against the file's description), else the described one."""
    described = _described_space(entry)
    if env_space is None:
        if described is None:
            return None, (
                f"its description ({entry.get(_TYPE)}) is not one Esper can rebuild; pass the "
                "env the agent acts in, whose space replaces it"
            )
        return described, None
    if described is not None:
        same = described == env_space
    else:
        shape = entry.get("_shape")
        same = shape is None or list(shape) == list(env_space.shape or ())
    if not same:
        raise ValueError(
            f"{path} was trained with {key} "
            f"{described if described is not None else entry.get('_shape')}, but the env has "
            f"{env_space}: load it on the env (and env kwargs) it was trained on"
        )
    return env_space, None


def _described_space(entry: Mapping[str, Any]) -> spaces.Space[Any] | None:
    """The space the plain-text attributes of a serialized space describe, if they suffice."""
    space_cls = _SPACES.get(str(entry.get(_TYPE)))
    dtype = entry.get("dtype")
    if space_cls is None or dtype not in _DTYPES:
        return None
    if space_cls is spaces.Box:
        shape = entry.get("_shape")
        if not _is_int_list(shape):
            return None
        low = _float_array(entry.get("low"), shape, dtype)
        high = _float_array(entry.get("high"), shape, dtype)
        if low is None or high is None:
            return None
        return spaces.Box(low=low, high=high, shape=tuple(shape), dtype=np.dtype(dtype))
    if space_cls is spaces.Discrete:
        n, start = _integer(entry.get("n")), _integer(entry.get("start"))
        if n is None or start is None:
            return None
        return spaces.Discrete(n, start=start, dtype=np.dtype(dtype).type)
    nvec, start_vec = _int_list(entry.get("nvec")), _int_list(entry.get("start"))
    if nvec is None or start_vec is None:
        return None
    return space_cls(nvec, dtype=np.dtype(dtype).type, start=start_vec)  # type: ignore[call-arg]


def _float_array(text: Any, shape: list[int], dtype: str) -> np.ndarray | None:
    """An array from numpy's text of it; None if summarised (`...`) or not of `shape`."""
    if not isinstance(text, str) or "..." in text:
        return None
    tokens = text.replace("[", " ").replace("]", " ").split()
    if len(tokens) != int(np.prod(shape)) or not all(re.fullmatch(_FLOAT, t) for t in tokens):
        return None
    return np.array([float(t) for t in tokens], dtype=np.dtype(dtype)).reshape(shape)


def _integer(text: Any) -> int | None:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    if isinstance(text, str) and _INTEGER.fullmatch(text):
        return int(text)
    return None


def _int_list(text: Any) -> list[int] | None:
    match = _INT_LIST.fullmatch(text) if isinstance(text, str) else None
    if match is None or match.group(1) is None:
        return None
    return [int(part) for part in match.group(1).split()]


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(n, int) and not isinstance(n, bool) for n in value
    )


def _policy_class(
    algo: str, cls: type[BaseAlgorithm], entry: Mapping[str, Any], hyperparams: Hyperparams | None
) -> tuple[type | None, str | None]:
    """The algo's own policy class, when the file's is of the same module."""
    default = "MlpLstmPolicy" if algo in RECURRENT_ALGOS else "MlpPolicy"
    name = hyperparams.policy if hyperparams is not None else default
    policy_cls = cls.policy_aliases[name]
    module = entry.get("__module__")
    if module != policy_cls.__module__:
        return None, (
            f"a policy class of module {module!r}, not {algo}'s {name} "
            f"({policy_cls.__module__}.{policy_cls.__name__})"
        )
    return policy_cls, None


def _policy_kwargs(entry: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """`policy_kwargs` rebuilt from SB3's plain-text copy of each of its items."""
    if entry.get(_TYPE) != str(dict):
        return None, "not a dict"
    kwargs: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in entry.items():
        if key in (_TYPE, _SERIALIZED, "device"):
            continue  # SB3's load drops a saved device for the one it is given
        if key in _POLICY_KWARG_CLASSES:
            allowed = _POLICY_KWARG_CLASSES[key]
            if value not in allowed:
                problems.append(f"{key} = {value} (allowed: {', '.join(sorted(allowed))})")
            else:
                kwargs[key] = allowed[value]
        elif key in _POLICY_KWARG_PLAIN and not isinstance(value, str):
            # SB3 writes items JSON can hold as they are, and str() of the others: a
            # string here is an object's text, not the object.
            kwargs[key] = value
        else:
            problems.append(f"{key} = {value!r} (not a key Esper rebuilds)")
    if problems:
        return None, "items that cannot be rebuilt: " + "; ".join(problems)
    return kwargs, None


def _learning_rate(
    entry: Mapping[str, Any], data: Mapping[str, Any], hyperparams: Hyperparams | None
) -> tuple[float | Callable[[float], float] | None, str | None]:
    """The learning rate: the hyperparameters', else a constant or linear one the file records.

    SB3 rebuilds `lr_schedule` from `learning_rate` on load.
    """
    if hyperparams is not None:
        return hyperparams.algo_kwargs()["learning_rate"], None
    plain = data.get("learning_rate")
    if isinstance(plain, int | float) and not isinstance(plain, bool):
        return float(plain), None
    schedule = _recorded_schedule(entry)
    if schedule is None:
        schedule = _recorded_schedule(data.get("learning_rate") or {})
    if schedule is None:
        return None, (
            "a learning-rate schedule that is neither a recorded constant nor linear; "
            "load it with hyperparams (esper-train -i does)"
        )
    return schedule, None


def _schedule(
    key: str, entry: Mapping[str, Any], known: Any, training: bool, path: Path
) -> tuple[float | Callable[[float], float] | None, str | None]:
    """A schedule: from the hyperparameters, else constant or linear as the file records it."""
    if known is not None:
        return known, None
    schedule = _recorded_schedule(entry)
    if schedule is not None:
        return schedule, None
    if training:
        return None, (
            "a schedule the file records as neither constant nor linear, and no "
            "hyperparameter gives it"
        )
    return _UnloadedSchedule(key, path), None  # prediction never calls it


def _recorded_schedule(entry: Mapping[str, Any]) -> float | LinearSchedule | None:
    """A recorded constant (as a float) or linear schedule, from the entry's plain-text copy.

    SB3 records a `FloatSchedule` by the `repr` of what it wraps (`value_schedule`) and
    a `LinearSchedule` by its attributes (`start`, `end`, `end_fraction`).
    """
    if not isinstance(entry, Mapping):
        return None
    numbers = [entry.get(key) for key in ("start", "end", "end_fraction")]
    if str(entry.get(_TYPE)).endswith(".LinearSchedule'>") and all(
        isinstance(n, int | float) and not isinstance(n, bool) for n in numbers
    ):
        return LinearSchedule(*(float(n) for n in numbers))
    text = entry.get("value_schedule")
    if not isinstance(text, str):
        return None
    if match := _CONSTANT_SCHEDULE.fullmatch(text):
        return float(match.group(1))
    if match := _LINEAR_SCHEDULE.fullmatch(text):
        start, end, fraction = (float(group) for group in match.groups())
        return LinearSchedule(start, end, fraction)
    return None
