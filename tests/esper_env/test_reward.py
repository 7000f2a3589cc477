import pytest

from esper_env.contracts import RewardConfig
from esper_env.reward import REWARD_TERMS, reward_terms

#: Explicit coefficients (distinct, so that a swapped term shows), not the defaults.
CONFIG = RewardConfig(
    accuracy_delta=10.0,
    contribution=2.0,
    rent=0.5,
    churn=0.2,
    terminal_accuracy=7.0,
    terminal_size=0.25,
)


def _terms(config=CONFIG, **overrides):
    kwargs = dict(
        val_accuracy=0.5,
        prev_val_accuracy=0.4,
        contributions={"slot0": 0.02, "slot1": -0.01},
        added_param_fraction=0.2,
        pruned=1,
        terminal=False,
        episode_epochs=10,
    )
    kwargs.update(overrides)
    return reward_terms(config, **kwargs)


def test_each_term_follows_its_coefficient():
    terms = _terms()
    assert tuple(terms) == REWARD_TERMS
    assert terms["accuracy_delta"] == pytest.approx(10.0 * 0.1)
    assert terms["contribution"] == pytest.approx(2.0 * 0.01)
    assert terms["rent"] == pytest.approx(-0.5 * 0.2 / 10)
    assert terms["churn"] == pytest.approx(-0.2)
    assert terms["terminal_accuracy"] == 0.0 and terms["terminal_size"] == 0.0


def test_terminal_terms_only_at_episode_end():
    terms = _terms(terminal=True)
    assert terms["terminal_accuracy"] == pytest.approx(7.0 * 0.5)
    assert terms["terminal_size"] == pytest.approx(-0.25 * 0.2)
    # The terminal size term is not spread over the episode.
    assert _terms(terminal=True, episode_epochs=3)["terminal_size"] == terms["terminal_size"]


def test_a_bigger_network_pays_more_rent():
    assert _terms(added_param_fraction=0.5)["rent"] < _terms(added_param_fraction=0.1)["rent"]


@pytest.mark.parametrize("episode_epochs", [1, 5, 25])
def test_rent_over_a_whole_episode_is_independent_of_its_length(episode_epochs: int):
    # Holding a fraction f of extra parameters for every step of an episode costs rent * f.
    per_step = _terms(added_param_fraction=0.4, episode_epochs=episode_epochs)["rent"]
    assert per_step == pytest.approx(-0.5 * 0.4 / episode_epochs)
    assert per_step * episode_epochs == pytest.approx(-0.5 * 0.4)


def test_episode_epochs_is_required():
    with pytest.raises(TypeError, match="episode_epochs"):
        reward_terms(
            CONFIG,
            val_accuracy=0.5,
            prev_val_accuracy=0.4,
            contributions={},
            added_param_fraction=0.0,
            pruned=0,
            terminal=False,
        )
