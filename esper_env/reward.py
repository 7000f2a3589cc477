"""Simic: the reward economy of the single-agent environment.

The reward is a sum of named terms, each reported in `info["reward_terms"]`, so a
researcher can see what a policy is paid for: the change in validation accuracy,
the measured contribution of live seeds, rent on added parameters (per step, a
`1 / episode_epochs` share of the coefficient, so that holding a fraction `f` of
extra parameters for a whole episode costs `rent * f` whatever its length), a
churn cost for pruning, and at episode end a terminal term on final accuracy and
size.
"""

from __future__ import annotations

from collections.abc import Mapping

from esper_env.contracts import RewardConfig

REWARD_TERMS = (
    "accuracy_delta",
    "contribution",
    "rent",
    "churn",
    "terminal_accuracy",
    "terminal_size",
)


def reward_terms(
    config: RewardConfig,
    *,
    val_accuracy: float,
    prev_val_accuracy: float,
    contributions: Mapping[str, float],
    added_param_fraction: float,
    pruned: int,
    terminal: bool,
    episode_epochs: int,
) -> dict[str, float]:
    """Computes every term of one step's reward; the reward is their sum.

    Args:
        config: Coefficients.
        val_accuracy: Validation accuracy (0..1) after this step's training.
        prev_val_accuracy: Validation accuracy before it.
        contributions: Measured contribution (accuracy points, 0..1) of each live seed.
        added_param_fraction: Parameters added by seeds (live and fossilized) over the bare host's.
        pruned: Seeds pruned during this step (by the agent or the governor).
        terminal: Whether this step ends the episode.
        episode_epochs: Steps in an episode (the rent's time scale).

    Returns:
        The terms, keyed as in `REWARD_TERMS`, in that order.
    """
    return {
        "accuracy_delta": config.accuracy_delta * (val_accuracy - prev_val_accuracy),
        "contribution": config.contribution * sum(contributions.values()),
        "rent": -config.rent * added_param_fraction / episode_epochs,
        "churn": -config.churn * pruned,
        "terminal_accuracy": config.terminal_accuracy * val_accuracy if terminal else 0.0,
        "terminal_size": -config.terminal_size * added_param_fraction if terminal else 0.0,
    }
