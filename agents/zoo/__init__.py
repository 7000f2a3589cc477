"""The agent zoo: SB3 algorithms, hyperparameters, envs and callbacks behind `esper-train`."""

from agents.zoo.algos import ALGOS, algo_class
from agents.zoo.hyperparams import Hyperparams, load_hyperparams
from agents.zoo.policy import SB3Policy, load_sb3_policy

__all__ = ["ALGOS", "Hyperparams", "SB3Policy", "algo_class", "load_hyperparams", "load_sb3_policy"]
