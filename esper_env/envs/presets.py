"""The registered environment ids, the config each one starts from, and their semantics version.

`ENV_SEMANTICS_VERSION` names what an episode of the registered ids means (the
lifecycle mechanics and gates, how seeds train and are measured, the reward, the
presets). Board records and checkpoints carry it, and readers refuse records of
another version instead of replaying them wrongly.

Version history:
* 3: batches are channels-last (other convolution kernels, so other numbers);
  `Esper-CIFAR-Mini-v0` trains on 320 images per class, so that a heuristic
  episode takes under 30 s on 2 cores.
* 2: seeds train on the task loss of the blended output (the host after the slot
  rerun on `h.detach() + s`), start at zero, and have their own learning-rate
  schedule; measurements use batch statistics and the gates G2/G4 compare against
  the measurement's standard error; a rollback restores the lifecycle too and
  prunes the measured culprit; rent is spread over the episode; `Esper-CIFAR-Mini-v0`
  became capacity-starved (width-8/16/16 host, 400 images per class, 15 epochs);
  `Esper-CIFAR-Impaired-v0` may add 2.5x its parameters.
* 1: the first release (not published).
"""

from __future__ import annotations

from typing import Any

from esper_env.contracts import EnvConfig

ENV_SEMANTICS_VERSION = 3

#: Keyword arguments (merged into `EnvConfig`) behind each registered id.
ENV_PRESETS: dict[str, dict[str, Any]] = {
    "Esper-CIFAR-v0": {},
    "Esper-CIFAR-Mini-v0": {
        "host": "mini",
        "episode_epochs": 15,
        "train_per_class": 320,
        "val_per_class": 100,
        "test_per_class": 300,
        "param_budget": 2.5,
        "train": {"batch_size": 64, "lr": 0.05, "seed_lr": 0.05},
    },
    # The impaired host is so small that one residual block at 16 channels is its size again.
    "Esper-CIFAR-Impaired-v0": {"host": "impaired", "param_budget": 2.5},
    "Esper-CIFAR-Deep-v0": {"host": "deep"},
}


def merge_kwargs(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merges `overrides` into `base` key by key, descending into nested dicts."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_kwargs(merged[key], value)
        else:
            merged[key] = value
    return merged


def preset_config(env_id: str, **overrides: Any) -> EnvConfig:
    """Builds the validated config of `env_id` with `overrides` applied on top.

    Raises:
        KeyError: `env_id` is not one of `ENV_PRESETS`.
        pydantic.ValidationError: An override names an unknown key or a bad value.
    """
    if env_id not in ENV_PRESETS:
        raise KeyError(f"unknown Esper env {env_id!r}; registered: {list(ENV_PRESETS)}")
    return EnvConfig(**merge_kwargs(ENV_PRESETS[env_id], overrides))
