"""Gymnasium registration of the `Esper-CIFAR-*` environments."""

import gymnasium as gym

from esper_env.envs.presets import ENV_PRESETS


def register_envs() -> None:
    """Registers every id in `ENV_PRESETS` (idempotent: skips ids already registered).

    No `max_episode_steps`: the env itself truncates its episode when the epoch budget
    (`episode_epochs`, in any override) is spent, so a registered TimeLimit could only
    disagree with it. `gym.make(..., max_episode_steps=N)` still cuts episodes shorter.
    """
    for env_id in ENV_PRESETS:
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id, entry_point="esper_env.envs.cifar:EsperCifarEnv", kwargs={"preset": env_id}
        )


__all__ = ["ENV_PRESETS", "register_envs"]
