"""esper-train against rl-baselines3-zoo's habits: honest resume, seeds, args.yml, flags."""

import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from stable_baselines3.common.vec_env import VecNormalize
from zoo_helpers import as_key_values, read_monitor

from agents.rollout import run_episode
from agents.zoo.envs import make_esper_env
from agents.zoo.observation_transform import (
    TRANSFORM_ATTRIBUTE,
    NormalizeStats,
    ObservationPipeline,
    ObservationTransform,
)
from agents.zoo.policy import load_sb3_policy
from agents.zoo.safe_load import saved_attribute
from agents.zoo.train import TrainResult, log_interval_kwargs, main

ENV = "Esper-CIFAR-Mini-v0"


def _args(
    env_kwargs: dict[str, Any],
    logs: Path,
    *extra: str,
    algo: str = "ppo",
    params: tuple[str, ...] = (),
) -> list[str]:
    """A run of a few seconds; `--seed` is the caller's to add (`-params` is given once)."""
    return [
        "--algo", algo, "--env", ENV, "-f", str(logs), "--device", "cpu",
        "--num-threads", "1", "--no-progress", "--verbose", "0", "--eval-freq", "-1",
        "-params", "n_steps:16", "batch_size:16", "n_epochs:1", *params,
        *extra,
        "--env-kwargs", *as_key_values(env_kwargs),
    ]  # fmt: skip


def _train(args: list[str]) -> TrainResult:
    result = main(args)
    assert isinstance(result, TrainResult)
    return result


def test_resume_takes_the_runs_own_env_kwargs_and_hyperparameters(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    first = _train(
        _args(tiny_env_kwargs, tmp_path / "logs", "-n", "16", "--seed", "3",
              params=("learning_rate:0.01",))
    )  # fmt: skip
    # No env kwargs and no hyperparameters on the command line: the run's own are used.
    resume = [
        "--algo", "ppo", "--env", ENV, "-i", str(first.model_path), "-n", "16",
        "--device", "cpu", "--no-progress", "--verbose", "0", "--eval-freq", "-1",
    ]  # fmt: skip
    second = _train(resume)

    assert second.log_path == first.log_path and second.num_timesteps == 32
    monitor = read_monitor(first.log_path / "0.monitor.csv")
    assert {row["l"] for row in monitor} == {tiny_env_kwargs["episode_epochs"]}
    assert len(monitor) == 32 // tiny_env_kwargs["episode_epochs"]
    entry = yaml.safe_load((first.log_path / ENV / "resumes.yml").read_text())[0]
    assert entry["config"]["learning_rate"] == 0.01 and entry["changes"] == []
    assert entry["args"]["env_kwargs"] == tiny_env_kwargs
    assert entry["args"]["seed"] != 3  # no --seed: a fresh random one, recorded


def test_resume_refuses_changed_settings_by_name_unless_allowed(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    first = _train(_args(tiny_env_kwargs, tmp_path / "logs", "-n", "16", "--seed", "0"))
    longer = {**tiny_env_kwargs, "episode_epochs": 8}
    resume = _args(
        longer, tmp_path / "logs", "-i", str(first.model_path), "-n", "16",
        params=("learning_rate:0.002",),
    )  # fmt: skip
    before = sorted(p.name for p in first.log_path.rglob("*"))

    with pytest.raises(ValueError) as refused:
        main(resume)
    message = str(refused.value)
    assert "env_kwargs.episode_epochs: 4 -> 8" in message
    assert "hyperparams.learning_rate" in message and "--allow-changes" in message
    assert sorted(p.name for p in first.log_path.rglob("*")) == before  # nothing written

    second = _train([*resume, "--allow-changes"])
    entry = yaml.safe_load((first.log_path / ENV / "resumes.yml").read_text())[0]
    assert "env_kwargs.episode_epochs: 4 -> 8" in entry["changes"]
    assert any(line.startswith("hyperparams.learning_rate") for line in entry["changes"])
    assert entry["config"]["learning_rate"] == 0.002
    rows = read_monitor(first.log_path / "0.monitor.csv")
    assert rows[-1]["l"] == 8 and second.num_timesteps == 32


def test_resume_refuses_another_algorithm(tiny_env_kwargs: dict[str, Any], tmp_path: Path) -> None:
    first = _train(_args(tiny_env_kwargs, tmp_path / "logs", "-n", "16", "--seed", "0"))
    with pytest.raises(ValueError, match="trained ppo, not --algo maskable_ppo"):
        main(_args(tiny_env_kwargs, tmp_path / "logs", "-i", str(first.model_path),
                   algo="maskable_ppo"))  # fmt: skip


def test_a_random_seed_is_drawn_recorded_and_used(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    result = _train(_args(tiny_env_kwargs, tmp_path / "logs", "-n", "16"))
    saved = yaml.safe_load((result.log_path / ENV / "args.yml").read_text())
    assert saved["seed"] == result.seed >= 0
    # Replaying the recorded seed reproduces the run's first training episode.
    again = _train(
        _args(tiny_env_kwargs, tmp_path / "again", "-n", "16", "--seed", str(result.seed))
    )
    first = read_monitor(result.log_path / "0.monitor.csv")[0]
    replay = read_monitor(again.log_path / "0.monitor.csv")[0]
    assert first["r"] == replay["r"] and first["final_val_accuracy"] == replay["final_val_accuracy"]


def test_args_yml_is_what_rl_zoo_reads(tiny_env_kwargs: dict[str, Any], tmp_path: Path) -> None:
    result = _train(_args(tiny_env_kwargs, tmp_path / "logs", "-n", "16", "--seed", "0", "-uuid"))
    assert (
        result.log_path.name.startswith(f"{ENV}_1_")
        and len(result.log_path.name) == len(f"{ENV}_1_") + 36
    )
    text = (result.log_path / ENV / "args.yml").read_text()
    # rl-zoo's enjoy.py reads args.yml with yaml's UnsafeLoader and takes env_kwargs as a dict.
    loaded = yaml.load(text, Loader=yaml.UnsafeLoader)
    assert loaded["env_kwargs"] == tiny_env_kwargs
    assert loaded["hyperparams"] == {"n_steps": 16, "batch_size": 16, "n_epochs": 1}
    assert list(loaded) == sorted(loaded)  # sorted keys, as rl-zoo writes them


def test_eval_envs_take_their_own_kwargs_and_count(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    shorter = {**tiny_env_kwargs, "episode_epochs": 2}
    args = _args(tiny_env_kwargs, tmp_path / "logs", "-n", "16", "--seed", "0")
    args += ["--eval-freq", "16", "--eval-episodes", "2", "--n-eval-envs", "2"]
    result = _train([*args, "--eval-env-kwargs", *as_key_values(shorter)])
    rows = [
        row for i in (0, 1) for row in read_monitor(result.log_path / "eval" / f"{i}.monitor.csv")
    ]
    assert rows and {row["l"] for row in rows} == {2}
    assert np.load(result.log_path / "evaluations.npz")["ep_lengths"].tolist() == [[2, 2]]


def test_conf_file_and_gym_packages(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A user package registers its own Esper world; its hyperparameters come from -conf;
    # the subprocess worker imports the package too.
    package = tmp_path / "my_worlds.py"
    package.write_text(
        textwrap.dedent(
            """
            import gymnasium as gym

            gym.register(
                id="MyWorld-v0",
                entry_point="esper_env.envs.cifar:EsperCifarEnv",
                kwargs={"preset": "Esper-CIFAR-Mini-v0", "episode_epochs": 2},
            )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    conf = tmp_path / "ppo.yml"
    conf.write_text(
        yaml.safe_dump(
            {"MyWorld-v0": {"n_timesteps": 8, "policy": "MlpPolicy", "n_steps": 8, "batch_size": 8}}
        )
    )
    kwargs = {k: v for k, v in tiny_env_kwargs.items() if k != "episode_epochs"}
    args = [
        "--algo", "ppo", "--env", "MyWorld-v0", "--gym-packages", "my_worlds", "-conf", str(conf),
        "-f", str(tmp_path / "logs"), "--seed", "0", "--no-progress", "--verbose", "0",
        "--eval-freq", "-1", "--num-threads", "1", "--vec-env", "subproc",
        "--env-kwargs", *as_key_values(kwargs),
    ]  # fmt: skip
    result = _train(args)
    assert result.num_timesteps == 8
    assert {row["l"] for row in read_monitor(result.log_path / "0.monitor.csv")} == {2}
    sys.modules.pop("my_worlds")


def test_an_unknown_env_id_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="did you mean 'Esper-CIFAR-Mini-v0'"):
        main(["--env", "Esper-CIFAR-Mimi-v0", "-f", str(tmp_path)])


def test_log_interval_follows_rl_zoo() -> None:
    assert log_interval_kwargs(-1) == {}
    assert log_interval_kwargs(-2) == {"log_interval": None}
    assert log_interval_kwargs(3) == {"log_interval": 3}
    with pytest.raises(ValueError, match="--log-interval"):
        log_interval_kwargs(0)


def test_normalize_and_frame_stack_train_resume_and_evaluate(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    args = _args(
        tiny_env_kwargs, tmp_path / "logs", "-n", "16", "--seed", "0",
        params=("normalize:true", "frame_stack:2", "learning_rate:lin_1e-3"),
    )  # fmt: skip
    result = _train(args)

    record = saved_attribute(result.model_path, TRANSFORM_ATTRIBUTE)
    transform = ObservationTransform.of_record(record)
    assert transform is not None and transform.frame_stack == 2
    assert transform.normalize is not None and transform.normalize.obs_count > 16

    # An evaluator on the plain env sees what the policy saw in training: normalised, stacked.
    env = make_esper_env(ENV, tiny_env_kwargs)
    policy = load_sb3_policy("ppo", result.model_path, env)  # untrusted: lin_ schedule rebuilt
    assert policy.model.lr_schedule(0.5) == pytest.approx(5e-4)  # lin_1e-3, rebuilt exactly
    width = env.observation_space.shape[0]
    assert policy.model.observation_space.shape == (2 * width,)
    episode = run_episode(env, policy, seed=5, policy_name="ppo")
    assert episode.steps == tiny_env_kwargs["episode_epochs"]
    env.close()

    # Resuming goes on from the recorded statistics, not from fresh ones.
    resumed = _train(
        ["--algo", "ppo", "--env", ENV, "-i", str(result.model_path), "-n", "16",
         "--no-progress", "--verbose", "0", "--eval-freq", "-1", "--device", "cpu"]
    )  # fmt: skip
    after = ObservationTransform.of_record(saved_attribute(resumed.model_path, TRANSFORM_ATTRIBUTE))
    assert after is not None and after.normalize is not None
    assert after.normalize.obs_count > transform.normalize.obs_count + 15


def test_the_pipeline_replays_vec_normalize_and_vec_frame_stack() -> None:
    stats = NormalizeStats(
        obs_mean=[1.0, 2.0], obs_var=[4.0, 1.0], obs_count=10.0, ret_mean=0.0, ret_var=1.0,
        ret_count=1.0, norm_obs=True, norm_reward=True, clip_obs=1.5, clip_reward=10.0,
        gamma=0.99, epsilon=0.0,
    )  # fmt: skip
    pipeline = ObservationPipeline(ObservationTransform(normalize=stats, frame_stack=2))
    first = pipeline(np.array([3.0, 2.0], dtype=np.float32))
    assert first.tolist() == [0.0, 0.0, 1.0, 0.0]  # zeros, then the newest: (3-1)/2, (2-2)/1
    second = pipeline(np.array([-9.0, 3.0], dtype=np.float32))
    assert second.tolist() == [1.0, 0.0, -1.5, 1.0]  # rolled; -5 clipped to -1.5
    pipeline.reset()
    assert pipeline(np.array([1.0, 2.0], dtype=np.float32)).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_normalize_stats_round_trip_a_vec_normalize(tiny_env_kwargs: dict[str, Any]) -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = VecNormalize(DummyVecEnv([lambda: make_esper_env(ENV, tiny_env_kwargs)]))
    venv.reset()
    venv.obs_rms.update(np.random.default_rng(0).normal(size=(5, venv.observation_space.shape[0])))
    stats = NormalizeStats.of(venv)
    fresh = VecNormalize(DummyVecEnv([lambda: make_esper_env(ENV, tiny_env_kwargs)]))
    stats.restore(fresh)
    assert NormalizeStats.of(fresh) == stats
    obs = np.random.default_rng(1).normal(size=venv.observation_space.shape).astype(np.float32)
    assert np.allclose(stats.normalize(obs), venv.normalize_obs(obs), atol=1e-6)
    venv.close()
    fresh.close()


def test_optimize_runs_and_resumes_a_study_from_the_command_line(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = _args(tiny_env_kwargs, tmp_path / "logs", "-n", "32", "--seed", "0")
    args += [
        "-optimize", "--n-trials", "1", "--sampler", "random", "--pruner", "none",
        "--n-evaluations", "2", "--eval-episodes", "1", "--storage", storage,
        "--study-name", "cli", "--optimization-log-path", str(tmp_path / "study"),
    ]  # fmt: skip
    first = main(args)
    assert len(first.trials) == 1
    second = main(args)  # the same storage and name: the study goes on
    assert len(second.trials) == 2
    assert sorted(p.name for p in (tmp_path / "study").glob("report_*.csv"))
    assert (tmp_path / "study" / "best_hyperparams.yml").is_file()


def test_an_agent_trained_on_flat_actions_acts_on_the_plain_env(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    result = _train(
        _args(
            tiny_env_kwargs, tmp_path / "logs", "-n", "16", "--seed", "0", algo="maskable_ppo",
            params=("env_wrapper:esper_env.wrappers.FlatMaskedActions",),
        )
    )  # fmt: skip
    env = make_esper_env(ENV, tiny_env_kwargs)  # no wrapper: the policy decodes
    policy = load_sb3_policy("maskable_ppo", result.model_path, env)
    assert policy.flat_actions is not None
    assert policy.model.action_space.n == policy.flat_actions.n
    episode = run_episode(env, policy, seed=2, policy_name="flat")
    env.close()
    assert episode.steps == tiny_env_kwargs["episode_epochs"]
    assert all(len(action) == 4 for action in episode.actions)


def test_maskable_recurrent_ppo_resumes_and_runs_on_the_board_path(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    # The Mini section trains it through FlatMaskedActions with evaluation (masks + LSTM).
    args = _args(
        tiny_env_kwargs, tmp_path / "logs", "-n", "16", "--seed", "0",
        "--eval-freq", "16", "--eval-episodes", "1", algo="maskable_recurrent_ppo",
    )  # fmt: skip
    first = _train(args)
    assert (first.log_path / "best_model.zip").is_file()
    resume = _args(
        tiny_env_kwargs, tmp_path / "logs", "-n", "16", "-i", str(first.model_path),
        algo="maskable_recurrent_ppo",
    )  # fmt: skip
    second = _train(resume)  # untrusted: the file is rebuilt safely
    assert second.log_path == first.log_path and second.num_timesteps == 32

    env = make_esper_env(ENV, tiny_env_kwargs)
    policy = load_sb3_policy("maskable_recurrent_ppo", second.model_path, env)
    assert policy.flat_actions is not None  # acts on the plain env through its flat actions
    episode = run_episode(env, policy, seed=4, policy_name="mrppo")
    again = run_episode(env, policy, seed=4, policy_name="mrppo")
    env.close()
    assert episode.actions == again.actions  # greedy and stateful: replays exactly


def test_init_policy_starts_a_new_run_from_saved_weights_and_records_them(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    import hashlib

    import torch

    source = _train(_args(tiny_env_kwargs, tmp_path / "logs", "-n", "16", "--seed", "0"))
    args = _args(
        tiny_env_kwargs, tmp_path / "logs", "-n", "16", "--seed", "1",
        "--init-policy", str(source.model_path), params=("learning_rate:1e-12",),
    )  # fmt: skip
    fine_tuned = _train(args)
    assert fine_tuned.log_path != source.log_path and fine_tuned.num_timesteps == 16
    saved = yaml.safe_load((fine_tuned.log_path / ENV / "args.yml").read_text())
    assert saved["init_policy"] == str(source.model_path)
    assert saved["init_policy_sha256"] == hashlib.sha256(source.model_path.read_bytes()).hexdigest()
    env = make_esper_env(ENV, tiny_env_kwargs)
    before = load_sb3_policy("ppo", source.model_path, env).model.policy.state_dict()
    after = load_sb3_policy("ppo", fine_tuned.model_path, env).model.policy.state_dict()
    env.close()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)  # lr ~ 0

    with pytest.raises(ValueError, match="give one of them"):
        main([*args, "-i", str(source.model_path)])
