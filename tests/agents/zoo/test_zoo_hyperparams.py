from pathlib import Path

import gymnasium as gym
import pytest
import torch
import yaml
from gymnasium.wrappers import TimeAwareObservation
from stable_baselines3.common.callbacks import StopTrainingOnMaxEpisodes
from torch import nn

from agents.zoo.algos import ALGOS, RECURRENT_ALGOS
from agents.zoo.hyperparams import (
    HYPERPARAMS_DIR,
    Hyperparams,
    PolicyKwargs,
    allowed_keys,
    check_for_algo,
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
        assert hyperparams.policy == ("MlpLstmPolicy" if algo in RECURRENT_ALGOS else "MlpPolicy")


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
        Hyperparams.for_algo(
            "ppo",
            {"n_timesteps": 10, "policy": "MlpPolicy", "n_steps": 8, "n_envs": 2, "batch_size": 32},
        )


def test_policy_kwargs_drop_unset_keys() -> None:
    assert PolicyKwargs(net_arch=[8]).to_sb3() == {"net_arch": [8]}
    assert PolicyKwargs(activation_fn="relu").to_sb3() == {"activation_fn": nn.ReLU}


# --- Keys the algorithm's signature and rl-zoo3 allow ---------------------------------

ENV = "Esper-CIFAR-Mini-v0"
BASE = {"n_timesteps": 32, "policy": "MlpPolicy", "n_steps": 16, "batch_size": 16}
LSTM_BASE = {**BASE, "policy": "MlpLstmPolicy"}
WRAPPER = "gymnasium.wrappers.TimeAwareObservation"
STOP = "stable_baselines3.common.callbacks.StopTrainingOnMaxEpisodes"


def test_every_section_of_every_shipped_file_loads_and_round_trips() -> None:
    files = sorted(HYPERPARAMS_DIR.glob("*.yml"))
    assert [path.stem for path in files] == sorted(ALGOS)
    for path in files:
        algo = path.stem
        for env_id in read_sections(path):
            hyperparams = load_hyperparams(algo, env_id, path=path)
            dumped = yaml.safe_load(yaml.safe_dump(hyperparams.model_dump()))
            assert "algo" not in dumped
            assert Hyperparams.for_algo(algo, dumped) == hyperparams
            assert set(hyperparams.algo_kwargs()) <= allowed_keys(algo)


def test_allowed_keys_follow_the_algorithm_signature() -> None:
    assert {"use_sde", "sde_sample_freq", "rollout_buffer_class"} <= allowed_keys("ppo")
    assert "use_sde" not in allowed_keys("maskable_ppo")  # MaskablePPO takes no gSDE
    for algo in ALGOS:
        assert {"normalize", "frame_stack", "env_wrapper", "callback"} <= allowed_keys(algo)
        assert not {"seed", "device", "verbose", "tensorboard_log", "env"} & allowed_keys(algo)


@pytest.mark.parametrize(
    ("algo", "section", "env_id"),
    [
        ("ppo", {**BASE, "use_sde": True, "sde_sample_freq": 4}, "Pendulum-v1"),
        ("recurrent_ppo", {**LSTM_BASE, "use_sde": True}, "Pendulum-v1"),
        ("maskable_ppo", BASE, "CartPole-v1"),
    ],
)
def test_signature_keys_reach_the_constructor(
    algo: str, section: dict[str, object], env_id: str
) -> None:
    section = {
        **section,
        "learning_rate": "lin_1e-3",
        "clip_range": "lin_0.2",
        "clip_range_vf": 0.5,
        "normalize_advantage": False,
        "stats_window_size": 7,
        "policy_kwargs": {"net_arch": [8], "activation_fn": "nn.GELU"},
    }
    hyperparams = Hyperparams.for_algo(algo, section)
    model = ALGOS[algo](hyperparams.policy, env_id, device="cpu", **hyperparams.algo_kwargs())
    assert model.normalize_advantage is False
    assert model.clip_range_vf(1.0) == 0.5
    assert model.lr_schedule(0.5) == pytest.approx(5e-4)
    assert model._stats_window_size == 7
    assert model.policy.activation_fn is nn.GELU
    if "use_sde" in section:
        assert model.use_sde is True


def test_lin_schedules_run_to_zero_and_dump_as_written() -> None:
    section = {**BASE, "learning_rate": "lin_3e-4", "clip_range": "lin_0.2"}
    section["clip_range_vf"] = "lin_0.4"
    hyperparams = Hyperparams.for_algo("ppo", section)
    kwargs = hyperparams.algo_kwargs()
    for key, start in (("learning_rate", 3e-4), ("clip_range", 0.2), ("clip_range_vf", 0.4)):
        assert callable(kwargs[key])
        assert kwargs[key](1.0) == pytest.approx(start)
        assert kwargs[key](0.5) == pytest.approx(start / 2)
        assert kwargs[key](0.0) == pytest.approx(0.0)
        assert hyperparams.model_dump()[key] == section[key]
    assert Hyperparams.for_algo("ppo", hyperparams.model_dump()) == hyperparams


@pytest.mark.parametrize("value", ["lin_", "lin_abc", "exp_3e-4", "lin_-1e-3", "lin_0"])
def test_bad_schedules_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        Hyperparams.for_algo("ppo", {**BASE, "learning_rate": value})


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "ppo.yml"
    path.write_text(f"{ENV}:\n  n_timesteps: 1e6\n  policy: MlpPolicy\n  learning_rate: 3e-4\n")
    hyperparams = load_hyperparams("ppo", ENV, path=path)
    assert hyperparams.n_timesteps == 1_000_000
    assert hyperparams.learning_rate == pytest.approx(3e-4)
    assert Hyperparams.for_algo("ppo", {**BASE, "n_timesteps": 1e6}).n_timesteps == 1_000_000
    with pytest.raises(ValueError, match="whole number"):
        Hyperparams.for_algo("ppo", {**BASE, "n_timesteps": 2.5})


def test_unset_keys_take_the_constructor_defaults() -> None:
    hyperparams = Hyperparams.for_algo(
        "recurrent_ppo", {"n_timesteps": 8, "policy": "MlpLstmPolicy"}
    )
    assert (hyperparams.n_steps, hyperparams.batch_size) == (128, 128)  # RecurrentPPO's own
    assert hyperparams.use_sde is False and hyperparams.clip_range_vf is None
    assert "rollout_buffer_class" not in hyperparams.model_dump()  # not a RecurrentPPO key
    with pytest.raises(ValueError, match="n_steps cannot be null"):
        Hyperparams.for_algo("ppo", {**BASE, "n_steps": None})


@pytest.mark.parametrize(
    ("algo", "section", "message"),
    [
        (
            "maskable_ppo",
            {"clip_rnage": 0.1},
            "unknown key 'clip_rnage' for maskable_ppo: did you mean 'clip_range'",
        ),
        ("ppo", {"n_stepz": 16}, "did you mean 'n_steps'"),
        ("ppo", {"normalise": True}, "did you mean 'normalize'"),
        ("maskable_ppo", {"use_sde": True}, "unknown key 'use_sde' for maskable_ppo"),
        ("ppo", {"policy_kwargs": {"net_arc": [8]}}, "'net_arc'.*did you mean 'net_arch'"),
        ("ppo", {"policy_kwargs": {"activaton_fn": "tanh"}}, "did you mean 'activation_fn'"),
        ("maskable_ppo", {"policy_kwargs": {"log_std_init": 0.0}}, "MaskableActorCriticPolicy"),
        ("ppo", {"policy_kwargs": {"use_sde": True}}, "set use_sde at the top level"),
        ("ppo", {"policy_kwargs": "dict(net_arch=[8])"}, "must be a mapping"),
        ("ppo", {"policy_kwargs": {"features_extractor_class": "x.Y"}}, "takes a class"),
        ("ppo", {"policy_kwargs": {"activation_fn": "swish"}}, "swish"),
        ("ppo", {"policy_kwargs": {"activation_fn": "nn.Linear"}}, "nn.Linear"),
        ("ppo", {"policy_kwargs": {"optimizer_class": "AdamX"}}, "did you mean 'Adam"),
        ("ppo", {"policy_kwargs": {"net_arch": [0]}}, "net_arch"),
        ("ppo", {"gamma": 1.5}, "gamma"),
        ("ppo", {"frame_stack": 0}, "frame_stack"),
        ("ppo", {"rollout_buffer_class": "collections.OrderedDict"}, "RolloutBuffer"),
    ],
)
def test_bad_keys_fail_by_name_with_the_closest_one(
    algo: str, section: dict[str, object], message: str
) -> None:
    base = LSTM_BASE if algo == "recurrent_ppo" else BASE
    with pytest.raises(ValueError, match=message):
        Hyperparams.for_algo(algo, {**base, **section})


@pytest.mark.parametrize(
    ("key", "flag"),
    [
        ("seed", "--seed"),
        ("device", "--device"),
        ("verbose", "--verbose"),
        ("tensorboard_log", "--tensorboard-log"),
        ("env", "--env"),
    ],
)
def test_command_line_keys_are_refused_naming_the_flag(key: str, flag: str) -> None:
    with pytest.raises(ValueError, match=f"'{key}' cannot be set.*{flag}"):
        load_hyperparams("ppo", ENV, {key: 1})


def test_algo_comes_from_the_command_line() -> None:
    with pytest.raises(ValueError, match="--algo"):
        Hyperparams.for_algo("ppo", {**BASE, "algo": "ppo"})
    with pytest.raises(ValueError, match="for_algo"):
        Hyperparams(**BASE)


def test_normalize_follows_rl_zoo() -> None:
    assert Hyperparams.for_algo("ppo", BASE).normalize_kwargs() is None
    on = Hyperparams.for_algo("ppo", {**BASE, "normalize": True, "gamma": 0.9})
    assert on.normalize_kwargs() == {"gamma": 0.9}  # the algorithm's discount, as rl-zoo3
    mapping = {"norm_obs": True, "norm_reward": False, "clip_obs": 5.0}
    some = Hyperparams.for_algo("ppo", {**BASE, "normalize": mapping})
    assert some.normalize_kwargs() == {**mapping, "gamma": 0.99}
    assert some.model_dump()["normalize"] == mapping
    own_gamma = Hyperparams.for_algo("ppo", {**BASE, "normalize": {"gamma": 0.5}})
    assert own_gamma.normalize_kwargs() == {"gamma": 0.5}
    with pytest.raises(ValueError, match="never evaluated"):
        Hyperparams.for_algo("ppo", {**BASE, "normalize": "dict(norm_obs=False)"})
    with pytest.raises(ValueError, match="did you mean 'norm_reward'"):
        Hyperparams.for_algo("ppo", {**BASE, "normalize": {"norm_rewards": False}})


def test_frame_stack() -> None:
    assert Hyperparams.for_algo("ppo", BASE).frame_stack is None
    assert Hyperparams.for_algo("ppo", {**BASE, "frame_stack": 4}).frame_stack == 4


@pytest.mark.parametrize(
    "value",
    [WRAPPER, [WRAPPER], [{WRAPPER: {"normalize_time": True}}], {WRAPPER: None}],
)
def test_env_wrappers_in_rl_zoo_forms(value: object) -> None:
    hyperparams = Hyperparams.for_algo("ppo", {**BASE, "env_wrapper": value})
    assert hyperparams.model_dump()["env_wrapper"] == value
    (wrap,) = hyperparams.env_wrappers()
    env = gym.make("CartPole-v1")
    wrapped = wrap(env)
    assert isinstance(wrapped, TimeAwareObservation)
    assert wrapped.observation_space.shape == (env.observation_space.shape[0] + 1,)
    normalized = isinstance(value, list) and isinstance(value[0], dict)
    assert wrapped.normalize_time is normalized
    wrapped.close()


def test_env_wrappers_apply_in_order() -> None:
    section = {
        **BASE,
        "env_wrapper": [WRAPPER, {"gymnasium.wrappers.ClipReward": {"min_reward": 0}}],
    }
    first, second = Hyperparams.for_algo("ppo", section).env_wrappers()
    env = second(first(gym.make("CartPole-v1")))
    assert isinstance(env, gym.wrappers.ClipReward)
    assert isinstance(env.env, TimeAwareObservation)
    env.close()


def test_callbacks_are_fresh_instances() -> None:
    hyperparams = Hyperparams.for_algo("ppo", {**BASE, "callback": [{STOP: {"max_episodes": 3}}]})
    (callback,) = hyperparams.callbacks()
    assert isinstance(callback, StopTrainingOnMaxEpisodes)
    assert callback.max_episodes == 3
    assert hyperparams.callbacks()[0] is not callback
    assert Hyperparams.for_algo("ppo", BASE).callbacks() == []
    assert Hyperparams.for_algo("ppo", BASE).env_wrappers() == []


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "env_wrapper",
            "gymnasium.wrappers.TimeAwareObservaton",
            "TimeAwareObservaton.*did you mean 'TimeAwareObservation'",
        ),
        ("env_wrapper", "no_such_package.Wrapper", "no module named 'no_such_package'"),
        ("env_wrapper", "TimeAwareObservation", "not a dotted path"),
        (
            "env_wrapper",
            "collections.OrderedDict",
            "collections.OrderedDict' is not a class derived from gymnasium",
        ),
        (
            "env_wrapper",
            [WRAPPER, "gymnasium.wrappers.Nope"],
            r"env_wrapper\[1\] 'gymnasium.wrappers.Nope'",
        ),
        ("env_wrapper", {WRAPPER: {"flaten": False}}, "did you mean 'flatten'"),
        ("env_wrapper", {WRAPPER: {}, "x.Y": {}}, "single-key mapping"),
        ("env_wrapper", {WRAPPER: [1]}, "must be a mapping"),
        (
            "callback",
            WRAPPER,
            "not a class derived from stable_baselines3.common.callbacks.BaseCallback",
        ),
        ("callback", STOP, "needs max_episodes"),
    ],
)
def test_bad_wrappers_and_callbacks_fail_naming_the_entry(
    key: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Hyperparams.for_algo("ppo", {**BASE, key: value})


def test_user_file_with_a_default_section(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"default": {**BASE, "normalize": True, "frame_stack": 2}}))
    hyperparams = load_hyperparams("ppo", "Esper-CIFAR-Deep-v0", path=path)
    assert hyperparams.frame_stack == 2 and hyperparams.normalize_kwargs() == {"gamma": 0.99}
    python_config = tmp_path / "mine.py"
    python_config.write_text("hyperparams = {}")
    with pytest.raises(ValueError, match="YAML"):
        load_hyperparams("ppo", ENV, path=python_config)


def test_check_for_algo_refuses_another_algo() -> None:
    hyperparams = Hyperparams.for_algo("ppo", BASE)
    check_for_algo(hyperparams, "ppo")
    with pytest.raises(ValueError, match="for ppo, not maskable_ppo"):
        check_for_algo(hyperparams, "maskable_ppo")


def test_policy_kwargs_name_activations_and_optimizers() -> None:
    assert PolicyKwargs(activation_fn="leaky_relu").to_sb3() == {"activation_fn": nn.LeakyReLU}
    assert PolicyKwargs(activation_fn="nn.SiLU").to_sb3() == {"activation_fn": nn.SiLU}
    assert PolicyKwargs(optimizer_class="torch.optim.AdamW").to_sb3() == {
        "optimizer_class": torch.optim.AdamW
    }
    section = {**BASE, "policy_kwargs": {"optimizer_kwargs": {"eps": 1e-5}, "log_std_init": -1.0}}
    kwargs = Hyperparams.for_algo("ppo", section).algo_kwargs()["policy_kwargs"]
    assert kwargs == {"optimizer_kwargs": {"eps": 1e-5}, "log_std_init": -1.0}
