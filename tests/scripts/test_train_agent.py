import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wandb
import yaml
from zoo_helpers import hostile_agent, read_monitor, read_wandb_history, tiny_train_args

from agents.rollout import run_episode
from agents.zoo.callbacks import EsperMetricsCallback
from agents.zoo.envs import make_esper_env
from agents.zoo.policy import load_sb3_policy
from agents.zoo.safe_load import UntrustedAgentError
from agents.zoo.train import main
from benchmarks import leaderboard
from esper_env.envs.presets import ENV_SEMANTICS_VERSION


# maskable_ppo runs two subprocess envs: its masks then come through SubprocVecEnv.env_method.
@pytest.mark.parametrize(
    ("algo", "n_envs"),
    [("recurrent_ppo", 1), ("maskable_ppo", 2), ("ppo", 1), ("maskable_recurrent_ppo", 1)],
)
def test_smoke_run_saves_reloads_and_evaluates(
    algo: str, n_envs: int, tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    args = tiny_train_args(tiny_env_kwargs, tmp_path / "logs", algo)
    result = main(
        [
            *args,
            "-n",
            "32",
            "--eval-freq",
            "16",
            "--eval-episodes",
            "1",
            "--save-freq",
            "16",
            "--n-envs",
            str(n_envs),
        ]
    )

    run = tmp_path / "logs" / algo / "Esper-CIFAR-Mini-v0_1"
    assert result.log_path == run
    assert result.num_timesteps == 32 and not result.interrupted
    for name in [
        "Esper-CIFAR-Mini-v0.zip",
        "best_model.zip",
        "rl_model_16_steps.zip",
        "rl_model_32_steps.zip",
    ]:
        assert (run / name).is_file(), name
    evaluations = np.load(run / "evaluations.npz")
    assert evaluations["timesteps"].tolist() == [16, 32]
    config = yaml.safe_load((run / "Esper-CIFAR-Mini-v0" / "config.yml").read_text())
    assert config["n_steps"] == 16 and config["n_timesteps"] == 32
    assert config["n_envs"] == n_envs
    saved_args = yaml.safe_load((run / "Esper-CIFAR-Mini-v0" / "args.yml").read_text())
    assert saved_args["algo"] == algo
    assert saved_args["command"].startswith(f"esper-train --algo {algo} ")
    assert leaderboard.training_command(result.model_path) == saved_args["command"]
    monitor = [row for i in range(n_envs) for row in read_monitor(run / f"{i}.monitor.csv")]
    assert len(monitor) == 32 // tiny_env_kwargs["episode_epochs"]
    assert all(0 < row["final_val_accuracy"] <= 1 for row in monitor)
    assert len(result.episodes) == len(monitor)

    env = make_esper_env("Esper-CIFAR-Mini-v0", tiny_env_kwargs)
    policy = load_sb3_policy(algo, result.model_path, env)
    # The saved agent records the env semantics it was trained on.
    assert policy.model.env_semantics_version == ENV_SEMANTICS_VERSION
    episode = run_episode(env, policy, seed=7, policy_name=f"{algo}:{result.model_path}")
    again = run_episode(env, policy, seed=7, policy_name=f"{algo}:{result.model_path}")
    env.close()
    assert episode.steps == tiny_env_kwargs["episode_epochs"]
    assert episode.final_test_accuracy == again.final_test_accuracy  # deterministic replay


def test_metrics_reach_the_logger(tiny_env_kwargs: dict[str, Any], tmp_path: Path) -> None:
    args = tiny_train_args(tiny_env_kwargs, tmp_path / "logs", "ppo")
    main([*args, "-n", "16", "--eval-freq", "-1", "--tensorboard-log", str(tmp_path / "tb")])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (tmp_path / "tb").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    for tag in [
        "esper/final_val_accuracy",
        "esper/final_test_accuracy",
        "esper/params_added",
        "esper/seeds_germinated",
        "esper/seeds_fossilized",
        "esper/seeds_pruned",
        "esper/governor_rollbacks",
        "esper/refused_actions",
        "esper/reward/rent",
        "time/env_steps_per_second",
    ]:
        assert tag in tags, tag


def test_interrupt_saves_and_resume_continues(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = tiny_train_args(tiny_env_kwargs, tmp_path / "logs", "recurrent_ppo")
    original = EsperMetricsCallback._on_step

    def interrupt_at_20(self: EsperMetricsCallback) -> bool:
        if self.num_timesteps == 20:
            raise KeyboardInterrupt  # what Ctrl-C raises in the training loop
        return original(self)

    monkeypatch.setattr(EsperMetricsCallback, "_on_step", interrupt_at_20)
    first = main([*args, "-n", "48", "--eval-freq", "16", "--eval-episodes", "1"])
    assert first.interrupted and first.num_timesteps == 20
    assert first.model_path.is_file()
    monkeypatch.setattr(EsperMetricsCallback, "_on_step", original)

    # Without -n a resume trains what is left of the run's n_timesteps (48).
    second = main([*args, "-i", str(first.model_path), "--eval-freq", "16", "--eval-episodes", "1"])
    assert second.log_path == first.log_path
    assert not second.interrupted
    assert second.num_timesteps >= 48
    assert second.num_timesteps - 20 < 48  # continued, not restarted
    assert second.episodes[0]["timestep"] > 20
    evaluations = np.load(first.log_path / "evaluations.npz")
    assert evaluations["timesteps"].tolist()[0] == 16  # the first run's evaluation is kept
    assert evaluations["timesteps"].tolist()[-1] > 20
    monitor = read_monitor(first.log_path / "0.monitor.csv")
    assert sum(row["l"] for row in monitor) >= 44  # both runs' episodes, one file
    resumes = yaml.safe_load((first.log_path / "Esper-CIFAR-Mini-v0" / "resumes.yml").read_text())
    assert resumes[0]["from_timestep"] == 20


def test_track_offline_writes_history_with_esper_keys(
    tiny_env_kwargs: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = tiny_train_args(tiny_env_kwargs, tmp_path / "logs", "recurrent_ppo")
    result = main(
        [
            *args,
            "-n",
            "32",
            "--eval-freq",
            "-1",
            "--track",
            "--wandb-project-name",
            "esper-test",
            "--wandb-group",
            "ablation",
            "-tags",
            "mini",
            "smoke",
        ]
    )

    assert "wandb sync" in capsys.readouterr().out
    # wandb-core writes the run file from its own process; shutting the service
    # down waits for it, as the end of an `esper-train` process does.
    wandb.teardown()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert result.wandb_dir == run_dir
    (run_file,) = run_dir.glob("run-*.wandb")
    rows, config, run = read_wandb_history(run_file)
    assert run["group"] == "ablation"
    assert run["tags"][:2] == ["mini", "smoke"] and run["tags"][2].startswith("v")  # + SB3's
    keys = set().union(*rows)
    for key in [
        "esper/final_val_accuracy",
        "esper/params_added",
        "esper/seeds_germinated",
        "esper/refused_actions",
        "time/env_steps_per_second",
        "rollout/ep_rew_mean",
    ]:
        assert key in keys, key
    (table_file,) = (run_dir / "files" / "media" / "table").rglob("episodes_table*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][-1] == "lifecycle"
    assert len(table["data"]) == len(result.episodes) == 32 // tiny_env_kwargs["episode_epochs"]
    assert config["env_id"] == "Esper-CIFAR-Mini-v0"
    assert config["hyperparams"]["n_steps"] == 16
    assert config["env_kwargs"]["episode_epochs"] == tiny_env_kwargs["episode_epochs"]
    assert "git_commit" in config and config["command"].startswith("esper-train ")


def test_bad_env_kwarg_fails_by_name_before_any_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="episode_epochz"):
        main(["--env-kwargs", "episode_epochz:3", "-f", str(tmp_path / "logs")])
    assert not (tmp_path / "logs").exists()


def test_bad_hyperparameter_fails_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_stepz"):
        main(["--hyperparams", "n_stepz:8", "-f", str(tmp_path / "logs")])


def test_resume_refuses_a_crafted_agent_unless_trusted(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    marker = tmp_path / "MARKER"
    hostile = hostile_agent("ppo", tiny_env_kwargs, tmp_path, marker)
    args = [*tiny_train_args(tiny_env_kwargs, tmp_path / "logs", "ppo"), "-n", "16"]
    args += ["--eval-freq", "-1", "-i", str(hostile)]
    with pytest.raises(UntrustedAgentError, match=r"esper_backdoor[\s\S]*--trust-agent"):
        main(args)
    assert not marker.exists()

    result = main([*args, "--trust-agent"])
    assert marker.exists()  # trusting does run the file's code: the flag is the only way in
    assert result.num_timesteps == 16 and not result.interrupted


def test_trust_agent_is_single_agent_only(tiny_env_kwargs: dict[str, Any], tmp_path: Path) -> None:
    args = tiny_train_args(tiny_env_kwargs, tmp_path / "logs", "ppo")
    with pytest.raises(ValueError, match="--trust-agent: single-agent only"):
        main([*args, "--multi-agent", "--trust-agent"])
