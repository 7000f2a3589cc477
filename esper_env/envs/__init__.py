"""Gymnasium registration of the `Esper-CIFAR-*` environments."""

import gymnasium as gym

from esper_env.envs.presets import ENV_PRESETS, preset_config


def register_envs() -> None:
    """Registers every id in `ENV_PRESETS` (idempotent: skips ids already registered)."""
    for env_id in ENV_PRESETS:
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="esper_env.envs.cifar:EsperCifarEnv",
            max_episode_steps=preset_config(env_id).episode_epochs,
            kwargs={"preset": env_id},
        )


__all__ = ["ENV_PRESETS", "register_envs"]
