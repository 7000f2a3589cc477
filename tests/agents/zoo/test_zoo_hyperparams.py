from pathlib import Path

import pytest
import yaml
from torch import nn

from agents.zoo.algos import ALGOS
from agents.zoo.hyperparams import (
    Hyperparams,
    PolicyKwargs,
    hyperparams_file,
    load_hyperparams,
    read_sections,
)
from esper_env.envs.presets import ENV_PRESETS


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_shipped_files_cover_every_env_and_validate(algo: str) -> None:
    sections = read_sections(hyperparams_file(algo))
    assert sorted(sections) == sorted(ENV_PRESETS)
    for env_id in sections:
        hyperparams = load_hyperparams(algo, env_id)
        assert hyperparams.n_timesteps >= 1
        assert hyperparams.policy == ("MlpLstmPolicy" if algo == "recurrent_ppo" else "MlpPolicy")


def _write(tmp_path: Path, section: dict[str, object]) -> Path:
    path = tmp_path / "ppo.yml"
    path.write_text(yaml.safe_dump({"Esper-CIFAR-Mini-v0": section}))
    return path


def test_unknown_key_fails_with_its_name(tmp_path: Path) -> None:
    path = _write(tmp_path, {"n_timesteps": 10, "policy": "MlpPolicy", "n_stepz": 16})
    with pytest.raises(ValueError, match="n_stepz"):
        load_hyperparams("ppo", "Esper-CIFAR-Mini-v0", path=path)


def test_unknown_policy_kwarg_fails_with_its_name(tmp_path: Path) -> None:
    section = {"n_timesteps": 10, "policy": "MlpPolicy", "policy_kwargs": {"net_arc": [8]}}
    with pytest.raises(ValueError, match="net_arc"):
        load_hyperparams("ppo", "Esper-CIFAR-Mini-v0", path=_write(tmp_path, section))


def test_overrides_merge_into_policy_kwargs() -> None:
    base = load_hyperparams("recurrent_ppo", "Esper-CIFAR-Mini-v0")
    hyperparams = load_hyperparams(
        "recurrent_ppo",
        "Esper-CIFAR-Mini-v0",
        {"n_steps": 32, "batch_size": 16, "policy_kwargs": {"lstm_hidden_size": 8}},
    )
    assert hyperparams.n_steps == 32
    assert hyperparams.policy_kwargs.lstm_hidden_size == 8
    assert hyperparams.policy_kwargs.net_arch == base.policy_kwargs.net_arch
    kwargs = hyperparams.algo_kwargs()
    assert "n_timesteps" not in kwargs and "n_envs" not in kwargs and "policy" not in kwargs
    assert kwargs["policy_kwargs"]["lstm_hidden_size"] == 8
    assert kwargs["policy_kwargs"]["activation_fn"] is nn.Tanh


def test_missing_env_section_names_the_env(tmp_path: Path) -> None:
    path = _write(tmp_path, {"n_timesteps": 10, "policy": "MlpPolicy"})
    with pytest.raises(ValueError, match="Esper-CIFAR-Deep-v0"):
        load_hyperparams("ppo", "Esper-CIFAR-Deep-v0", path=path)


def test_lstm_keys_are_refused_for_non_recurrent_algos() -> None:
    with pytest.raises(ValueError, match="lstm_hidden_size"):
        load_hyperparams("ppo", "Esper-CIFAR-Mini-v0", {"policy_kwargs": {"lstm_hidden_size": 8}})


def test_policy_must_suit_the_algo() -> None:
    with pytest.raises(ValueError, match="MlpLstmPolicy"):
        load_hyperparams("recurrent_ppo", "Esper-CIFAR-Mini-v0", {"policy": "MlpPolicy"})


def test_batch_larger_than_rollout_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Hyperparams(n_timesteps=10, policy="MlpPolicy", n_steps=8, n_envs=2, batch_size=32)


def test_policy_kwargs_drop_unset_keys() -> None:
    assert PolicyKwargs(net_arch=[8]).to_sb3() == {"net_arch": [8]}
    assert PolicyKwargs(activation_fn="relu").to_sb3() == {"activation_fn": nn.ReLU}
