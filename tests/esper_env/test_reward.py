import pytest

from esper_env.contracts import RewardConfig
from esper_env.reward import REWARD_TERMS, reward_terms


def _terms(**overrides):
    kwargs = dict(
        val_accuracy=0.5,
        prev_val_accuracy=0.4,
        contributions={"slot0": 0.02, "slot1": -0.01},
        added_param_fraction=0.2,
        pruned=1,
        terminal=False,
    )
    kwargs.update(overrides)
    return reward_terms(RewardConfig(), **kwargs)


def test_each_term_follows_its_coefficient():
    config = RewardConfig()
    terms = _terms()
    assert tuple(terms) == REWARD_TERMS
    assert terms["accuracy_delta"] == pytest.approx(config.accuracy_delta * 0.1)
    assert terms["contribution"] == pytest.approx(config.contribution * 0.01)
    assert terms["rent"] == pytest.approx(-config.rent * 0.2)
    assert terms["churn"] == pytest.approx(-config.churn)
    assert terms["terminal_accuracy"] == 0.0 and terms["terminal_size"] == 0.0


def test_terminal_terms_only_at_episode_end():
    config = RewardConfig()
    terms = _terms(terminal=True)
    assert terms["terminal_accuracy"] == pytest.approx(config.terminal_accuracy * 0.5)
    assert terms["terminal_size"] == pytest.approx(-config.terminal_size * 0.2)


def test_a_bigger_network_pays_more_rent():
    assert _terms(added_param_fraction=0.5)["rent"] < _terms(added_param_fraction=0.1)["rent"]
