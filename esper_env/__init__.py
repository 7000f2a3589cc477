"""Esper: morphogenetic training as Gymnasium environments.

Importing the package registers `Esper-CIFAR-v0`, `Esper-CIFAR-Mini-v0`,
`Esper-CIFAR-Impaired-v0` and `Esper-CIFAR-Deep-v0` with Gymnasium.
"""

from esper_env.data import load_cifar10
from esper_env.envs import register_envs
from esper_env.kasmina import wrap

register_envs()

__all__ = ["load_cifar10", "wrap"]
