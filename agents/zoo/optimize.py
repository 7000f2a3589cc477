"""Hyperparameter optimisation with Optuna, rl-baselines3-zoo style (`exp_manager.py`).

A study runs trials; each trial samples hyperparameters (`agents.zoo.samplers`),
merges them over the base section of `agents/hyperparams/<algo>.yml` (or of
`conf_file`, the trainer's `-conf`) and the base overrides, validates them with
`load_hyperparams`, trains a fresh model for `n_timesteps` steps, and evaluates it
`n_evaluations` times on its way. Every evaluation's mean reward is reported to the
trial, and the pruner may stop it there; the last evaluation's mean reward is the
trial's value, maximised by the sampler.

A trial trains as `esper-train` trains a run: the section's `env_wrapper` wraps each
env, `normalize` and `frame_stack` wrap the vectorised envs (the eval env's
`VecNormalize` takes the training statistics and normalises no rewards), the saved
models record that observation transform, and the section's `callback` entries run
beside the evaluation.

Example:
    settings = StudySettings(
        algo="ppo",
        env_id="Esper-CIFAR-Mini-v0",
        n_timesteps=512,
        n_trials=20,
        storage="sqlite:///logs/optuna/ppo.db",
        log_path=Path("logs/optuna/ppo"),
    )
    study = optimize_hyperparameters(settings)

With a `storage`, a second run of the same `study_name` resumes the study: its trials
add to the stored ones, and `max_total_trials` caps them all (across runs and
parallel workers). Outputs under `log_path` (one folder per study):
`trial_{N}/` (the trial's `evaluations.npz`, `best_model.zip` and monitor files),
`report_{env}_{n_trials}-trials-{n_timesteps}-{sampler}-{pruner}_{time}-{us}.csv`
(every trial of the study; `{time}` in seconds, `{us}` its microseconds, so reports
never overwrite each other) and `best_hyperparams.yml` (the best trial's section, in
the format of a hyperparameter file: `load_hyperparams(algo, env_id, path=...)` reads
it). With `telemetry_dir` in the env kwargs, trial `N`'s training env `i` writes
`events.trial_N.{i}.jsonl` there and its eval env `events.trial_N.eval.{i}.jsonl`:
`esper_env.telemetry.read_events(telemetry_dir)` reads them all, and
`read_events(telemetry_dir, "events.trial_N.*")` one trial's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from agents.extras import require_extra
from agents.zoo.algos import ALGOS, algo_class
from agents.zoo.callbacks import (
    ResumableEvalCallback,
    ResumableMaskableEvalCallback,
    ResumableMaskableRecurrentEvalCallback,
    for_evaluation_of,
)
from agents.zoo.envs import make_vec_env
from agents.zoo.hyperparams import Hyperparams, load_hyperparams
from agents.zoo.observation_transform import StampObservationTransform, wrap_vec_env
from agents.zoo.policy import stamp_semantics
from esper_env.contracts import StrictModel
from esper_env.envs.presets import merge_kwargs, preset_config

require_extra("optuna")
import optuna  # noqa: E402
from optuna.pruners import BasePruner, MedianPruner, NopPruner, SuccessiveHalvingPruner  # noqa: E402
from optuna.samplers import BaseSampler, RandomSampler, TPESampler  # noqa: E402
from optuna.storages import BaseStorage, JournalStorage  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402
from optuna.study import MaxTrialsCallback  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from agents.zoo.samplers import HYPERPARAMS_SAMPLER  # noqa: E402

#: File of the best trial's hyperparameters, under `log_path`.
BEST_HYPERPARAMS_FILE = "best_hyperparams.yml"

#: Evaluation envs are seeded apart from training ones, and alike for every trial.
EVAL_SEED_OFFSET = 10_000

#: Trial states that count towards `max_total_trials` (running ones too, so parallel
#: workers do not overshoot the cap by one trial each).
COUNTED_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)

#: Errors of a trial whose sampled hyperparameters do not work (invalid combination,
#: NaN in the network, an SB3 assertion on the rollout): the trial is pruned, and the
#: study goes on. Anything else is a bug and stops the study.
TRIAL_ERRORS = (AssertionError, ValueError)


def telemetry_prefixes(trial_number: int) -> tuple[str, str]:
    """The `make_vec_env` telemetry prefixes of a trial's training and eval envs.

    Trials share the env kwargs' `telemetry_dir`; these keep their files apart, and
    apart from `esper-train`'s `events.{i}` and `events.eval.{i}`:
    `events.trial_{N}` and `events.trial_{N}.eval`. They start with `events`, so
    `esper_env.telemetry.read_events` finds them in the directory.
    """
    train = f"events.trial_{trial_number}"
    return train, f"{train}.eval"


def file_section(hyperparams: Hyperparams) -> dict[str, Any]:
    """A validated section as a hyperparameter file holds it, unset (None) keys left out.

    None means "the default" in a section, so leaving it out changes nothing; it only
    keeps the written file short.
    """
    section = {key: value for key, value in hyperparams.model_dump().items() if value is not None}
    if isinstance(section.get("policy_kwargs"), dict):
        section["policy_kwargs"] = {
            key: value for key, value in section["policy_kwargs"].items() if value is not None
        }
    return section


class StudySettings(StrictModel):
    """What `optimize_hyperparameters` runs; invalid settings fail here, by name.

    Attributes:
        algo: `--algo` name (a key of `agents.zoo.algos.ALGOS`).
        env_id: Esper env id (a section of the algorithm's hyperparameter file).
        env_kwargs: `gym.make` keyword arguments, validated by the env's preset.
        hyperparams: Base overrides of the file's section (nested dicts merge key by
            key); each trial's sampled values go on top of them.
        conf_file: A hyperparameter file to read instead of
            `agents/hyperparams/<algo>.yml` (the trainer's `-conf`), for the base
            section and every trial.
        n_timesteps: Steps each trial trains (None: the section's `n_timesteps`).
        seed: Seed of the sampler; trial `N` seeds its model and envs with `seed + N`.
        device: Torch device of the models.
        n_trials: Trials of this run (ignored when `max_total_trials` is set).
        max_total_trials: Cap on the study's trials in all (complete, pruned and
            running, across runs); this run adds trials until the study has them.
        n_jobs: Trials run in parallel threads (-1: one per CPU).
        sampler: `random` (RandomSampler) or `tpe` (multivariate TPESampler).
        pruner: `halving` (SuccessiveHalvingPruner), `median` (MedianPruner) or `none`.
        n_startup_trials: Trials before TPE models the space and MedianPruner prunes.
        n_evaluations: Evaluations of each trial, evenly spread over its `n_timesteps`.
        eval_episodes: Episodes of each evaluation.
        n_eval_envs: Parallel evaluation envs.
        storage: None (in memory), a database URL (`sqlite:///path.db`) or a journal
            file ending in `.log`; needed to resume or share a study.
        study_name: The study's name in the storage (None: `{algo}_{env_id}`).
        log_path: Folder of the trial outputs and the reports (one per study).
        verbose: 0: the summary only; 1: also progress lines; 2: SB3's training output.
    """

    algo: str
    env_id: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    hyperparams: dict[str, Any] = Field(default_factory=dict)
    conf_file: Path | None = None
    n_timesteps: int | None = Field(default=None, ge=1)
    seed: int = Field(default=0, ge=0)
    device: str = "auto"
    n_trials: int = Field(default=20, ge=1)
    max_total_trials: int | None = Field(default=None, ge=1)
    n_jobs: int = 1
    sampler: Literal["random", "tpe"] = "tpe"
    pruner: Literal["halving", "median", "none"] = "median"
    n_startup_trials: int = Field(default=5, ge=0)
    n_evaluations: int = Field(default=4, ge=1)
    eval_episodes: int = Field(default=5, ge=1)
    n_eval_envs: int = Field(default=1, ge=1)
    storage: str | None = None
    study_name: str | None = None
    log_path: Path
    verbose: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _check(self) -> StudySettings:
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; choose from {sorted(ALGOS)}")
        if self.n_jobs != -1 and self.n_jobs < 1:
            raise ValueError(f"n_jobs must be >= 1 (or -1: one per CPU), got {self.n_jobs}")
        if self.study_name is not None and not self.study_name.strip():
            raise ValueError("study_name must not be empty (None gives the default name)")
        storage = self.storage
        if storage is not None and "://" not in storage and not storage.endswith(".log"):
            raise ValueError(
                f"storage {storage!r} is neither a database URL (sqlite:///path.db) "
                "nor a journal file ending in .log"
            )
        try:
            preset_config(self.env_id, **self.env_kwargs)
        except KeyError as error:
            raise ValueError(f"env_id: {error.args[0]}") from error
        if self.env_kwargs.get("telemetry_dir") is not None and "telemetry_name" in self.env_kwargs:
            raise ValueError(
                "env_kwargs: telemetry_name is set per trial env (events.trial_<N>.<i>) "
                "beside telemetry_dir; drop it"
            )
        if self.conf_file is not None and not self.conf_file.is_file():
            raise ValueError(f"conf_file {self.conf_file}: no hyperparameter file there")
        base = self.base_hyperparams()  # raises ValueError naming the bad key
        timesteps = self.trial_timesteps()
        if timesteps // base.n_envs < self.n_evaluations:
            raise ValueError(
                f"n_timesteps {timesteps} is too short for n_evaluations {self.n_evaluations} "
                f"with n_envs {base.n_envs}: each evaluation needs at least one step per env"
            )
        return self

    def base_hyperparams(self) -> Hyperparams:
        """The section of `env_id` with the base overrides: what every trial starts from.

        Raises:
            ValueError: No section for `env_id`, or an invalid override.
        """
        return self.trial_hyperparams({})

    def trial_hyperparams(self, sampled: dict[str, Any]) -> Hyperparams:
        """The section of `env_id` (of `conf_file`, if set) with the base overrides and `sampled`.

        Args:
            sampled: A trial's sampled values, merged over the base overrides.

        Raises:
            ValueError: No section for `env_id`, or an invalid value.
        """
        return load_hyperparams(
            self.algo,
            self.env_id,
            merge_kwargs(self.hyperparams, sampled),
            path=self.conf_file,
        )

    def trial_timesteps(self) -> int:
        """Steps each trial trains: `n_timesteps`, or the section's own."""
        if self.n_timesteps is not None:
            return self.n_timesteps
        return self.base_hyperparams().n_timesteps

    def resolved_study_name(self) -> str:
        """The study's name: `study_name`, or `{algo}_{env_id}`."""
        return self.study_name if self.study_name is not None else f"{self.algo}_{self.env_id}"


class _TrialReporting:
    """Mixin for EvalCallbacks: reports each evaluation to an Optuna trial and obeys its pruner.

    After evaluation `k` (1-based) it calls `trial.report(mean_reward, k)`; when
    `trial.should_prune()` it stops training and sets `is_pruned`. Training also stops
    after the `n_evaluations`-th evaluation: the last rollout may overrun the trial's
    `n_timesteps`, and what it would add is not judged.
    """

    eval_freq: int
    n_calls: int
    last_mean_reward: float

    def __init__(
        self, eval_env: VecEnv, *, trial: optuna.Trial, n_evaluations: int, **kwargs: Any
    ) -> None:
        super().__init__(eval_env, **kwargs)  # type: ignore[call-arg]
        self.trial = trial
        self.n_evaluations = n_evaluations
        self.eval_idx = 0
        self.is_pruned = False

    def _on_step(self) -> bool:
        if self.eval_freq <= 0 or self.n_calls % self.eval_freq != 0:
            return True
        continue_training: bool = super()._on_step()  # type: ignore[misc]
        self.eval_idx += 1
        self.trial.report(self.last_mean_reward, self.eval_idx)
        if self.trial.should_prune():
            self.is_pruned = True
            return False
        return continue_training and self.eval_idx < self.n_evaluations


class TrialEvalCallback(_TrialReporting, ResumableEvalCallback):
    """Evaluates a PPO or RecurrentPPO trial and reports to its Optuna trial."""


class TrialMaskableEvalCallback(_TrialReporting, ResumableMaskableEvalCallback):
    """Evaluates a MaskablePPO trial with action masks and reports to its Optuna trial."""


class TrialMaskableRecurrentEvalCallback(_TrialReporting, ResumableMaskableRecurrentEvalCallback):
    """Evaluates a MaskableRecurrentPPO trial (masks, LSTM state) and reports to its trial."""


def trial_callback_class(algo: str) -> type[_TrialReporting]:
    """The reporting evaluation callback that evaluates `algo` as it acts."""
    return for_evaluation_of(
        algo, TrialEvalCallback, TrialMaskableEvalCallback, TrialMaskableRecurrentEvalCallback
    )


def create_sampler(settings: StudySettings, *, n_existing_trials: int = 0) -> BaseSampler:
    """The study's sampler: `RandomSampler` or a multivariate `TPESampler`.

    Args:
        settings: The study's settings.
        n_existing_trials: Trials the study already holds. The sampler is seeded with
            `seed + n_existing_trials`, so a resumed study draws new points instead of
            repeating the first run's.
    """
    seed = settings.seed + n_existing_trials
    if settings.sampler == "random":
        return RandomSampler(seed=seed)
    return TPESampler(n_startup_trials=settings.n_startup_trials, seed=seed, multivariate=True)


def create_pruner(settings: StudySettings) -> BasePruner:
    """The study's pruner, as rl-zoo makes them.

    `halving`: `SuccessiveHalvingPruner(min_resource=1, reduction_factor=4)`;
    `median`: `MedianPruner(n_startup_trials, n_warmup_steps=n_evaluations // 3)`;
    `none`: `NopPruner()`.
    """
    if settings.pruner == "halving":
        return SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=4, min_early_stopping_rate=0
        )
    if settings.pruner == "median":
        return MedianPruner(
            n_startup_trials=settings.n_startup_trials, n_warmup_steps=settings.n_evaluations // 3
        )
    return NopPruner()


def create_storage(storage: str | None) -> str | BaseStorage | None:
    """The Optuna storage of a `storage` setting; makes the folder of a file-backed one.

    Args:
        storage: None (in memory), a database URL, or a journal file ending in `.log`.

    Returns:
        What `optuna.create_study(storage=...)` takes.
    """
    if storage is None:
        return None
    if storage.endswith(".log") and "://" not in storage:
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(storage))
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return storage


class TrialObjective:
    """The objective of a study: trains and evaluates one trial's hyperparameters.

    Call it with an `optuna.Trial`: it samples the algorithm's hyperparameters,
    records them as the trial's user attributes (each sampled key, and the whole
    validated section under `hyperparams`), trains for `n_timesteps` with
    `n_evaluations` evaluations, and returns the last evaluation's mean reward. The
    envs, wrappers and callbacks are those `esper-train` gives a run of the section
    (see the module docstring). The trial's envs are closed however it ends.

    Args:
        settings: The study's settings.

    Raises:
        optuna.TrialPruned: The pruner stopped the trial, or its hyperparameters failed
            (invalid, NaN, an SB3 assertion); the reason is the `failure` user attribute.
    """

    def __init__(self, settings: StudySettings) -> None:
        self.settings = settings
        self.n_envs = settings.base_hyperparams().n_envs
        self.n_timesteps = settings.trial_timesteps()
        self.eval_freq = max(self.n_timesteps // settings.n_evaluations // self.n_envs, 1)

    def __call__(self, trial: optuna.Trial) -> float:
        """Runs one trial; returns its last evaluation's mean reward."""
        settings = self.settings
        sampled = HYPERPARAMS_SAMPLER[settings.algo](
            trial, n_envs=self.n_envs, n_timesteps=self.n_timesteps
        )
        for key, value in sampled.items():
            trial.set_user_attr(key, value)
        try:
            hyperparams = settings.trial_hyperparams(sampled)
        except ValueError as error:
            raise self._failed(trial, error) from error
        trial.set_user_attr("hyperparams", file_section(hyperparams))

        trial_path = settings.log_path / f"trial_{trial.number}"
        trial_path.mkdir(parents=True, exist_ok=True)
        # A folder left by an earlier study in this log_path: its evaluations are not ours.
        (trial_path / "evaluations.npz").unlink(missing_ok=True)
        seed = settings.seed + trial.number
        train_prefix, eval_prefix = telemetry_prefixes(trial.number)
        env = make_vec_env(
            settings.env_id,
            settings.env_kwargs,
            n_envs=hyperparams.n_envs,
            seed=seed,
            monitor_dir=trial_path,
            wrappers=hyperparams.env_wrappers(),
            telemetry_prefix=train_prefix,
        )
        eval_env: VecEnv | None = None
        try:
            env = wrap_vec_env(env, hyperparams, training=True)
            eval_env = make_vec_env(
                settings.env_id,
                settings.env_kwargs,
                n_envs=settings.n_eval_envs,
                seed=settings.seed + EVAL_SEED_OFFSET,
                monitor_dir=trial_path / "eval",
                wrappers=hyperparams.env_wrappers(),
                telemetry_prefix=eval_prefix,
            )
            eval_env = wrap_vec_env(eval_env, hyperparams, training=False)
            trial_verbose = settings.verbose if settings.verbose >= 2 else 0
            model = algo_class(settings.algo)(
                hyperparams.policy,
                env,
                seed=seed,
                device=settings.device,
                tensorboard_log=None,
                verbose=trial_verbose,
                **hyperparams.algo_kwargs(),
            )
            stamp_semantics(model)
            callback = trial_callback_class(settings.algo)(
                eval_env,
                trial=trial,
                n_evaluations=settings.n_evaluations,
                n_eval_episodes=settings.eval_episodes,
                eval_freq=self.eval_freq,
                log_path=str(trial_path),
                best_model_save_path=str(trial_path),
                deterministic=True,
                verbose=trial_verbose,
            )
            # As esper-train's: the transform is stamped before any evaluation saves a model.
            callbacks: list[BaseCallback] = [
                StampObservationTransform(),
                *hyperparams.callbacks(),
                callback,
            ]
            model.learn(total_timesteps=self.n_timesteps, callback=callbacks)
        except TRIAL_ERRORS as error:
            raise self._failed(trial, error) from error
        finally:
            env.close()
            if eval_env is not None:
                eval_env.close()

        if callback.is_pruned:
            raise optuna.TrialPruned(f"pruned after evaluation {callback.eval_idx}")
        reward = float(callback.last_mean_reward)
        if not math.isfinite(reward):
            raise self._failed(trial, ValueError(f"mean eval reward is {reward}"))
        return reward

    def _failed(self, trial: optuna.Trial, error: BaseException) -> optuna.TrialPruned:
        """Records why a trial's hyperparameters failed; the pruned-trial error to raise."""
        reason = f"{type(error).__name__}: {error}"
        trial.set_user_attr("failure", reason)
        if self.settings.verbose >= 1:
            print(f"Trial {trial.number} pruned: its hyperparameters failed ({reason})")
        return optuna.TrialPruned(reason)


@dataclass(frozen=True)
class OptimizationReport:
    """The files of a study's report.

    Attributes:
        csv_path: Every trial of the study (`study.trials_dataframe()`).
        best_path: The best trial's section as a hyperparameter file (None: no trial
            completed).
    """

    csv_path: Path
    best_path: Path | None


def create_study(settings: StudySettings) -> optuna.Study:
    """Creates the study of `settings`, or loads it from the storage to resume it.

    A new study records the algo, env id, trial length and base settings as its user
    attributes; a loaded one must be of the same algo and env id, and its sampler is
    seeded past the stored trials (see `create_sampler`).

    Raises:
        ValueError: The stored study is of another algo or env id.
    """
    study = optuna.create_study(
        storage=create_storage(settings.storage),
        sampler=create_sampler(settings),
        pruner=create_pruner(settings),
        study_name=settings.resolved_study_name(),
        load_if_exists=True,
        direction="maximize",
    )
    n_existing = len(study.get_trials(deepcopy=False))
    if n_existing:
        study.sampler = create_sampler(settings, n_existing_trials=n_existing)
    stored = study.user_attrs
    if "algo" in stored:
        if (stored["algo"], stored["env_id"]) != (settings.algo, settings.env_id):
            raise ValueError(
                f"study {study.study_name!r} in {settings.storage} optimises {stored['algo']} "
                f"on {stored['env_id']}, not {settings.algo} on {settings.env_id}: "
                "pick another study_name"
            )
    else:
        study.set_user_attr("algo", settings.algo)
        study.set_user_attr("env_id", settings.env_id)
        study.set_user_attr("n_timesteps", settings.trial_timesteps())
        study.set_user_attr("n_evaluations", settings.n_evaluations)
        study.set_user_attr("env_kwargs", settings.env_kwargs)
        study.set_user_attr("hyperparams", settings.hyperparams)
        conf_file = None if settings.conf_file is None else str(settings.conf_file)
        study.set_user_attr("conf_file", conf_file)
    return study


def optimize_hyperparameters(settings: StudySettings) -> optuna.Study:
    """Runs (or resumes) a study, writes its report and prints a summary.

    Trials run until this run has added `n_trials`, or, with `max_total_trials`, until
    the study holds that many (complete, pruned or running). Ctrl-C stops the study
    and still writes the report of the trials so far.

    Args:
        settings: What to optimise and how.

    Returns:
        The study, with this run's trials added to any stored ones.

    Raises:
        ValueError: The stored study is of another algo or env id.
    """
    if settings.verbose >= 1:
        print(
            f"Optimizing {settings.algo} on {settings.env_id}: sampler {settings.sampler}, "
            f"pruner {settings.pruner}, {settings.trial_timesteps()} steps per trial"
        )
    settings.log_path.mkdir(parents=True, exist_ok=True)
    study = create_study(settings)
    objective = TrialObjective(settings)
    try:
        if settings.max_total_trials is not None:
            counted = len(study.get_trials(deepcopy=False, states=COUNTED_STATES))
            if counted < settings.max_total_trials:
                study.optimize(
                    objective,
                    n_jobs=settings.n_jobs,
                    callbacks=[MaxTrialsCallback(settings.max_total_trials, states=COUNTED_STATES)],
                )
        else:
            study.optimize(objective, n_trials=settings.n_trials, n_jobs=settings.n_jobs)
    except KeyboardInterrupt:
        print("Interrupted: reporting the trials so far")
    report = write_report(study, settings)
    print(summarize(study, report))
    return study


def best_section(trial: FrozenTrial) -> dict[str, Any]:
    """The validated hyperparameter section a trial ran with (its `hyperparams` user attribute).

    Raises:
        KeyError: The trial did not record one (it failed before validation).
    """
    return dict(trial.user_attrs["hyperparams"])


def write_report(study: optuna.Study, settings: StudySettings) -> OptimizationReport:
    """Writes the study's trials as CSV and its best trial's section as YAML under `log_path`.

    Returns:
        Where they are.
    """
    settings.log_path.mkdir(parents=True, exist_ok=True)
    seconds, microseconds = divmod(time.time_ns() // 1000, 1_000_000)
    name = (
        f"report_{settings.env_id}_{settings.n_trials}-trials-{settings.trial_timesteps()}"
        f"-{settings.sampler}-{settings.pruner}_{seconds}-{microseconds:06d}"
    )
    csv_path = _new_file(settings.log_path, name, ".csv")
    study.trials_dataframe().to_csv(csv_path)
    if settings.verbose >= 1:
        print(f"Writing report to {csv_path}")
    best_path: Path | None = None
    if _complete(study):
        best = study.best_trial
        best_path = settings.log_path / BEST_HYPERPARAMS_FILE
        header = (
            f"# Best trial of study {study.study_name!r}: trial {best.number}, mean eval "
            f"reward {best.value} over {settings.eval_episodes} episodes after "
            f"{study.user_attrs.get('n_timesteps')} steps.\n# Sampled: {best.params}\n"
        )
        body = yaml.safe_dump({settings.env_id: best_section(best)}, sort_keys=False)
        best_path.write_text(header + body, encoding="utf-8")
    return OptimizationReport(csv_path=csv_path, best_path=best_path)


def _new_file(folder: Path, name: str, suffix: str) -> Path:
    """Creates `{folder}/{name}{suffix}` empty, or `{name}_{k}{suffix}` for the first free `k`.

    The file is created exclusively, so two writers (threads, processes) never get the
    same one, even within a microsecond.
    """
    attempt = 0
    while True:
        path = folder / (f"{name}{suffix}" if attempt == 0 else f"{name}_{attempt}{suffix}")
        try:
            path.touch(exist_ok=False)
        except FileExistsError:
            attempt += 1
        else:
            return path


def summarize(study: optuna.Study, report: OptimizationReport | None = None) -> str:
    """A short summary: trials by state, the best value, params and section, the report files."""
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    lines = [
        f"Study {study.study_name!r}: {len(trials)} trials, "
        f"{counts[TrialState.COMPLETE]} finished, {counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.FAIL]} failed"
    ]
    if _complete(study):
        best = study.best_trial
        lines.append(f"Best trial {best.number}: value {best.value}")
        lines.append("Params:")
        lines += [f"    {key}: {value}" for key, value in best.params.items()]
        lines.append("Hyperparameters:")
        lines += [f"    {key}: {value}" for key, value in best_section(best).items()]
    else:
        lines.append("No trial finished: no best hyperparameters")
    if report is not None:
        lines.append(f"Report: {report.csv_path}")
        if report.best_path is not None:
            lines.append(f"Best hyperparameters: {report.best_path}")
    return "\n".join(lines)


def _complete(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
