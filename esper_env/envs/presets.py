"""The registered environment ids and the config each one starts from."""

from __future__ import annotations

from typing import Any

from esper_env.contracts import EnvConfig

#: Keyword arguments (merged into `EnvConfig`) behind each registered id.
ENV_PRESETS: dict[str, dict[str, Any]] = {
    "Esper-CIFAR-v0": {},
    "Esper-CIFAR-Mini-v0": {
        "host": "mini",
        "episode_epochs": 12,
        "train_per_class": 100,
        "val_per_class": 50,
        "test_per_class": 100,
        "train": {"batch_size": 64, "lr": 0.05, "seed_lr": 0.05},
    },
    "Esper-CIFAR-Impaired-v0": {"host": "impaired"},
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
