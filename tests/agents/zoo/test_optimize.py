"""Hyperparameter optimisation (agents.zoo.optimize, agents.zoo.samplers) on the tiny dataset."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from gymnasium.wrappers import ClipReward
from optuna.pruners import BasePruner, MedianPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from tiny_data import tiny_kwargs

from agents.zoo import optimize
from agents.zoo.callbacks import eval_callback_class
from agents.zoo.hyperparams import hyperparams_file, load_hyperparams, read_sections
from agents.zoo.observation_transform import TRANSFORM_ATTRIBUTE, ObservationTransform
from agents.zoo.optimize import (
    BEST_HYPERPARAMS_FILE,
    StudySettings,
    TrialObjective,
    create_pruner,
    create_sampler,
    create_study,
    optimize_hyperparameters,
    write_report,
)
from agents.zoo.safe_load import saved_attribute
from agents.zoo.samplers import HYPERPARAMS_SAMPLER, max_n_steps_pow
from esper_env.telemetry import read_events

ENV_ID = "Esper-CIFAR-Mini-v0"


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def tiny_settings(tiny_cifar_dir: str, tmp_path: Path, **changes: Any) -> StudySettings:
    """Trials of 32 steps, 2 evaluations of 1 episode, random sampler, no pruning."""
    values: dict[str, Any] = {
        "algo": "ppo",
        "env_id": ENV_ID,
        "env_kwargs": tiny_kwargs(tiny_cifar_dir),
        "n_timesteps": 32,
        "seed": 0,
        "device": "cpu",
        "n_trials": 2,
        "sampler": "random",
        "pruner": "none",
        "n_evaluations": 2,
        "eval_episodes": 1,
        "log_path": tmp_path / "optuna",
        "verbose": 0,
    }
    values.update(changes)
    return StudySettings(**values)


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


class RecordedEnvs:
    """Wraps `make_vec_env` in the optimize module: keeps every env and whether it closed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.envs: list[VecEnv] = []
        self.closed: list[bool] = []
        real = optimize.make_vec_env

        def make(*args: Any, **kwargs: Any) -> VecEnv:
            env = real(*args, **kwargs)
            index = len(self.envs)
            self.envs.append(env)
            self.closed.append(False)
            close = env.close

            def recorded_close() -> None:
                self.closed[index] = True
                close()

            env.close = recorded_close  # type: ignore[method-assign]
            return env

        monkeypatch.setattr(optimize, "make_vec_env", make)


class AlwaysPrune(BasePruner):
    """Prunes every trial at its first report."""

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return True


def test_study_runs_reports_and_resumes_from_sqlite(
    tiny_cifar_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'db' / 'study.db'}"
    settings = tiny_settings(tiny_cifar_dir, tmp_path, storage=storage, study_name="tiny")

    study = optimize_hyperparameters(settings)

    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for trial in study.trials:
        assert set(trial.intermediate_values) == {1, 2}  # one report per evaluation
        assert trial.value == trial.intermediate_values[2]
        assert trial.user_attrs["n_steps"] in (16, 32)  # the rollout fits the 32-step trial
        assert trial.user_attrs["policy_kwargs"]["activation_fn"] in ("tanh", "relu")
        assert (settings.log_path / f"trial_{trial.number}" / "evaluations.npz").is_file()
    out = capsys.readouterr().out
    assert "2 trials, 2 finished, 0 pruned" in out
    assert f"Best trial {study.best_trial.number}: value {study.best_value}" in out

    (first_csv,) = settings.log_path.glob(
        "report_Esper-CIFAR-Mini-v0_2-trials-32-random-none_*.csv"
    )
    assert len(csv_rows(first_csv)) == 2
    best_path = settings.log_path / BEST_HYPERPARAMS_FILE
    section = yaml.safe_load(best_path.read_text())[ENV_ID]
    assert section == study.best_trial.user_attrs["hyperparams"]
    # The section reads as a hyperparameter file, and as overrides of the real one.
    from_file = load_hyperparams("ppo", ENV_ID, path=best_path)
    as_overrides = load_hyperparams("ppo", ENV_ID, section)
    assert from_file == as_overrides
    assert as_overrides.learning_rate == study.best_trial.user_attrs["learning_rate"]
    assert as_overrides.policy_kwargs.net_arch == section["policy_kwargs"]["net_arch"]

    # The same storage and study name resume the study: its trials add to the old ones,
    # and the resumed sampler draws new points.
    for old in first_csv.parent.glob("report_*.csv"):
        old.unlink()
    resumed = optimize_hyperparameters(settings.model_copy(update={"n_trials": 1}))
    assert [t.number for t in resumed.trials] == [0, 1, 2]
    assert resumed.trials[2].params != resumed.trials[0].params
    (second_csv,) = settings.log_path.glob("report_*.csv")
    assert len(csv_rows(second_csv)) == 3

    # max_total_trials caps the study's total across runs, whatever n_trials says.
    capped = settings.model_copy(update={"n_trials": 5, "max_total_trials": 3})
    assert len(optimize_hyperparameters(capped).trials) == 3
    topped = settings.model_copy(update={"n_trials": 5, "max_total_trials": 4})
    assert len(optimize_hyperparameters(topped).trials) == 4

    # A stored study of another algorithm is not resumed under the same name.
    with pytest.raises(ValueError, match="optimises ppo on Esper-CIFAR-Mini-v0"):
        create_study(settings.model_copy(update={"algo": "maskable_ppo"}))


def test_pruner_prunes_a_maskable_trial_and_its_envs_close(
    tiny_cifar_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = RecordedEnvs(monkeypatch)
    settings = tiny_settings(tiny_cifar_dir, tmp_path, algo="maskable_ppo")
    study = optuna.create_study(
        direction="maximize", sampler=RandomSampler(0), pruner=AlwaysPrune()
    )

    study.optimize(TrialObjective(settings), n_trials=1)

    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # stopped at its first evaluation
    assert "failure" not in trial.user_attrs
    assert len(recorded.envs) == 2  # training and evaluation
    assert all(recorded.closed)


def test_failing_hyperparameters_prune_the_trial_not_the_study(
    tiny_cifar_dir: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recorded = RecordedEnvs(monkeypatch)

    def nan_learning_rate(trial: optuna.Trial, *, n_envs: int, n_timesteps: int) -> dict[str, Any]:
        trial.suggest_float("x", 0.0, 1.0)
        return {"learning_rate": math.nan}

    monkeypatch.setitem(HYPERPARAMS_SAMPLER, "ppo", nan_learning_rate)
    settings = tiny_settings(tiny_cifar_dir, tmp_path)

    study = optimize_hyperparameters(settings)

    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert all("learning_rate" in t.user_attrs["failure"] for t in study.trials)
    assert recorded.envs == []  # rejected before any env was built
    out = capsys.readouterr().out
    assert "2 trials, 0 finished, 2 pruned" in out
    assert "No trial finished" in out
    assert list(settings.log_path.glob("report_*.csv"))
    assert not (settings.log_path / BEST_HYPERPARAMS_FILE).exists()


def test_training_that_hits_nan_prunes_the_trial_and_closes_its_envs(
    tiny_cifar_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = RecordedEnvs(monkeypatch)

    def nan_learn(self: PPO, *args: Any, **kwargs: Any) -> PPO:
        raise ValueError("Expected parameter logits to satisfy the constraint, but found nan")

    monkeypatch.setattr(PPO, "learn", nan_learn)
    study = optuna.create_study(direction="maximize", sampler=RandomSampler(0))

    study.optimize(TrialObjective(tiny_settings(tiny_cifar_dir, tmp_path)), n_trials=1)

    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert "found nan" in trial.user_attrs["failure"]
    assert len(recorded.envs) == 2
    assert all(recorded.closed)


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo", "recurrent_ppo"])
@pytest.mark.parametrize(("n_envs", "n_timesteps"), [(1, 32), (1, 100_000), (3, 200)])
def test_samplers_draw_valid_sections(algo: str, n_envs: int, n_timesteps: int) -> None:
    study = optuna.create_study(direction="maximize", sampler=RandomSampler(1))
    max_n_steps = 2 ** max_n_steps_pow(n_envs, n_timesteps)
    assert 16 <= max_n_steps <= 256
    assert max_n_steps * n_envs <= max(n_timesteps, 16 * n_envs)
    seen: set[int] = set()
    for _ in range(25):
        trial = study.ask()
        sampled = HYPERPARAMS_SAMPLER[algo](trial, n_envs=n_envs, n_timesteps=n_timesteps)
        hyperparams = load_hyperparams(algo, ENV_ID, {**sampled, "n_envs": n_envs})
        rollout = hyperparams.n_steps * n_envs
        assert 16 <= hyperparams.n_steps <= max_n_steps
        assert rollout % hyperparams.batch_size == 0
        assert 1e-5 <= hyperparams.learning_rate <= 3e-3
        assert 0.9 <= hyperparams.gamma < 1.0
        assert ("lstm_hidden_size" in sampled["policy_kwargs"]) == (algo == "recurrent_ppo")
        seen.add(hyperparams.n_steps)
        study.tell(trial, 0.0)
    assert max(seen) == max_n_steps  # the whole range is drawn


def test_sampler_and_pruner_choices(tiny_cifar_dir: str, tmp_path: Path) -> None:
    settings = tiny_settings(
        tiny_cifar_dir, tmp_path, sampler="tpe", pruner="median", n_evaluations=6
    )
    assert isinstance(create_sampler(settings), TPESampler)
    pruner = create_pruner(settings)
    assert isinstance(pruner, MedianPruner)
    assert pruner._n_warmup_steps == 2  # n_evaluations // 3
    assert pruner._n_startup_trials == settings.n_startup_trials
    halving = settings.model_copy(update={"pruner": "halving"})
    assert isinstance(create_pruner(halving), SuccessiveHalvingPruner)
    assert isinstance(create_pruner(settings.model_copy(update={"pruner": "none"})), NopPruner)
    random = settings.model_copy(update={"sampler": "random"})
    assert isinstance(create_sampler(random), RandomSampler)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sampler": "grid"}, "sampler"),
        ({"pruner": "hyperband"}, "pruner"),
        ({"n_evaluations": 0}, "n_evaluations"),
        ({"n_trials": 0}, "n_trials"),
        ({"max_total_trials": 0}, "max_total_trials"),
        ({"n_jobs": 0}, "n_jobs"),
        ({"eval_episodes": 0}, "eval_episodes"),
        ({"algo": "dqn"}, "unknown algo 'dqn'"),
        ({"env_id": "Esper-Nope-v0"}, "Esper-Nope-v0"),
        ({"env_kwargs": {"episode_epochz": 3}}, "episode_epochz"),
        ({"hyperparams": {"n_stepz": 16}}, "n_stepz"),
        ({"hyperparams": {"policy_kwargs": {"lstm_hidden_size": 8}}}, "lstm_hidden_size"),
        ({"conf_file": Path("no/such.yml")}, "conf_file no/such.yml"),
        ({"env_kwargs": {"telemetry_dir": "t", "telemetry_name": "mine"}}, "telemetry_name"),
        ({"storage": "study.db"}, "storage 'study.db'"),
        ({"n_timesteps": 1}, "n_timesteps 1 is too short for n_evaluations 2"),
        ({"n_triales": 3}, "n_triales"),
    ],
)
def test_bad_settings_fail_by_name(
    tiny_cifar_dir: str, tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        tiny_settings(tiny_cifar_dir, tmp_path, **changes)


def test_trials_normalize_stack_and_keep_their_telemetry_apart(
    tiny_cifar_dir: str, tmp_path: Path
) -> None:
    telemetry = tmp_path / "telemetry"
    settings = tiny_settings(
        tiny_cifar_dir,
        tmp_path,
        env_kwargs={**tiny_kwargs(tiny_cifar_dir), "telemetry_dir": str(telemetry)},
        hyperparams={"normalize": True, "frame_stack": 2},
    )

    study = optimize_hyperparameters(settings)

    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for trial in study.trials:
        best_model = settings.log_path / f"trial_{trial.number}" / "best_model.zip"
        transform = ObservationTransform.of_record(saved_attribute(best_model, TRANSFORM_ATTRIBUTE))
        assert transform is not None
        assert transform.frame_stack == 2
        assert transform.normalize is not None
        assert transform.normalize.norm_reward  # the training env's statistics
        assert transform.normalize.gamma == trial.user_attrs["gamma"]  # the trial's own
    best = yaml.safe_load((settings.log_path / BEST_HYPERPARAMS_FILE).read_text())[ENV_ID]
    assert (best["normalize"], best["frame_stack"]) == (True, 2)
    # Each trial's training and eval envs write their own files, all read as a directory.
    assert sorted(path.name for path in telemetry.iterdir()) == [
        "events.trial_0.0.jsonl",
        "events.trial_0.eval.0.jsonl",
        "events.trial_1.0.jsonl",
        "events.trial_1.eval.0.jsonl",
    ]
    trial_events = read_events(telemetry, "events.trial_1.*")
    assert trial_events
    assert {event.env for event in trial_events} == {"events.trial_1.0", "events.trial_1.eval.0"}
    assert len(read_events(telemetry)) > len(trial_events)


def test_trials_use_the_conf_file_section_its_wrappers_and_callbacks(
    tiny_cifar_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = RecordedEnvs(monkeypatch)
    checkpoints = tmp_path / "checkpoints"
    section = {
        **read_sections(hyperparams_file("ppo"))[ENV_ID],
        "vf_coef": 0.25,  # not sampled: it comes from the file
        "env_wrapper": [{"gymnasium.wrappers.ClipReward": {"min_reward": -100.0}}],
        "callback": [
            {
                "stable_baselines3.common.callbacks.CheckpointCallback": {
                    "save_freq": 16,
                    "save_path": str(checkpoints),
                }
            }
        ],
    }
    conf_file = tmp_path / "custom.yml"
    conf_file.write_text(yaml.safe_dump({ENV_ID: section}), encoding="utf-8")
    settings = tiny_settings(tiny_cifar_dir, tmp_path, conf_file=conf_file)
    assert settings.base_hyperparams().vf_coef == 0.25
    study = optuna.create_study(direction="maximize", sampler=RandomSampler(0))

    study.optimize(TrialObjective(settings), n_trials=1)

    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["hyperparams"]["vf_coef"] == 0.25
    assert len(recorded.envs) == 2
    for env in recorded.envs:  # training and evaluation: each env wrapped after Monitor
        assert isinstance(env, DummyVecEnv)
        assert isinstance(env.envs[0], ClipReward)
    assert list(checkpoints.glob("rl_model_*_steps.zip"))


def test_reports_in_the_same_microsecond_do_not_overwrite_each_other(
    tiny_cifar_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(optimize.time, "time_ns", lambda: 1_700_000_000_123_456_789)
    settings = tiny_settings(tiny_cifar_dir, tmp_path)
    study = optuna.create_study(direction="maximize")

    first = write_report(study, settings).csv_path
    second = write_report(study, settings).csv_path

    prefix = "report_Esper-CIFAR-Mini-v0_2-trials-32-random-none_1700000000-123456"
    assert (first.name, second.name) == (f"{prefix}.csv", f"{prefix}_1.csv")
    assert re.fullmatch(r"report_.+_\d+-\d{6}(_\d+)?\.csv", second.name)
    assert sorted(settings.log_path.glob("report_*.csv")) == [first, second]


@pytest.mark.parametrize(
    ("algo", "kind"),
    [
        ("ppo", ""),
        ("recurrent_ppo", ""),  # SB3's evaluation carries the LSTM state itself
        ("maskable_ppo", "Maskable"),
        ("maskable_recurrent_ppo", "MaskableRecurrent"),
    ],
)
def test_each_algorithm_is_evaluated_as_it_acts_in_training_and_in_trials(
    algo: str, kind: str
) -> None:
    assert eval_callback_class(algo).__name__ == f"Resumable{kind}EvalCallback"
    trial = optimize.trial_callback_class(algo)
    assert trial.__name__ == f"Trial{kind}EvalCallback"
    assert issubclass(trial, eval_callback_class(algo))
