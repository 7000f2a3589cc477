"""The algorithms the zoo trains (Simic's learners): names on the command line to SB3 classes."""

from __future__ import annotations

from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.zoo.maskable_recurrent_ppo import MaskableRecurrentPPO

#: `--algo` name to algorithm class; RecurrentPPO is the default (Tamiyo needs memory).
ALGOS: dict[str, type[BaseAlgorithm]] = {
    "recurrent_ppo": RecurrentPPO,
    "maskable_recurrent_ppo": MaskableRecurrentPPO,
    "maskable_ppo": MaskablePPO,
    "ppo": PPO,
}

#: Algorithms whose policies carry an LSTM state across steps.
RECURRENT_ALGOS = frozenset({"recurrent_ppo", "maskable_recurrent_ppo"})

#: Algorithms that take `action_masks` (the env's `action_masks()`).
MASKABLE_ALGOS = frozenset({"maskable_ppo", "maskable_recurrent_ppo"})


def algo_class(name: str) -> type[BaseAlgorithm]:
    """Returns the class behind an `--algo` name.

    Raises:
        ValueError: Unknown name.
    """
    if name not in ALGOS:
        raise ValueError(f"unknown algo {name!r}; choose from {sorted(ALGOS)}")
    return ALGOS[name]
