"""Multi-agent Esper: Tamiyo, Emrakul and Karn on one host, through PettingZoo.

`parallel_env(**kwargs)` is the Parallel API env (`EsperMultiAgentEnv`, see
`esper_env.envs.multi_agent` for agents, spaces, masks and rewards); `env(**kwargs)`
is its AEC form, converted by PettingZoo and wrapped as PettingZoo's own envs are
(out-of-bounds actions assert, order of calls enforced).

Example:
    >>> from esper_env import multi_agent
    >>> par = multi_agent.parallel_env(preset="Esper-CIFAR-Mini-v0", episode_epochs=4)
    >>> obs, infos = par.reset(seed=0)
    >>> actions = {a: par.action_space(a).sample(obs[a]["action_mask"]) for a in par.agents}
    >>> obs, rewards, terminations, truncations, infos = par.step(actions)
"""

from __future__ import annotations

from typing import Any

from pettingzoo import AECEnv
from pettingzoo.utils import wrappers
from pettingzoo.utils.conversions import parallel_to_aec_wrapper

from esper_env.envs.multi_agent import (
    AGENTS,
    DesignOp,
    DesignReport,
    EsperMultiAgentEnv,
    MaintenanceOp,
    MaskedMultiDiscrete,
    MultiAgentConfig,
)


def parallel_env(**kwargs: Any) -> EsperMultiAgentEnv:
    """The multi-agent env, PettingZoo Parallel API.

    Args:
        **kwargs: `preset` (a registered single-agent id, default "Esper-CIFAR-v0"),
            `render_mode`, `multi_agent` (`MultiAgentConfig` keys) and any `EnvConfig` key.
    """
    return EsperMultiAgentEnv(**kwargs)


def env(**kwargs: Any) -> AECEnv:
    """The multi-agent env, PettingZoo AEC API (agents act in turn; the step trains after karn).

    Args:
        **kwargs: As for `parallel_env`.
    """
    aec = parallel_to_aec_wrapper(parallel_env(**kwargs))
    return wrappers.OrderEnforcingWrapper(wrappers.AssertOutOfBoundsWrapper(aec))


__all__ = [
    "AGENTS",
    "DesignOp",
    "DesignReport",
    "EsperMultiAgentEnv",
    "MaintenanceOp",
    "MaskedMultiDiscrete",
    "MultiAgentConfig",
    "env",
    "parallel_env",
]
