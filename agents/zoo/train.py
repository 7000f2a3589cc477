"""Trains Tamiyo with an SB3 algorithm on an Esper env, as rl-baselines3-zoo's `train.py` does.

Example:
    esper-train --algo recurrent_ppo --env Esper-CIFAR-Mini-v0 -n 4800 --seed 0

(`python scripts/train_agent.py ...` in a checkout is the same command.) The flags are
rl-zoo3's, with the same names and meaning; where Esper differs on purpose, the flag's
help says how and why. A run lives in `{log_folder}/{algo}/{env}_{N}[_{uuid}]/`:
`{env}.zip` (final model), `best_model.zip` and `evaluations.npz` (periodic
evaluation), `rl_model_*_steps.zip` (checkpoints), `{i}.monitor.csv` (training
episodes, with Esper's final metrics), `eval/{i}.monitor.csv`, `telemetry/` (Nissa's event
files, unless `--env-kwargs telemetry_dir:DIR` puts them elsewhere), and `{env}/config.yml`
+ `{env}/args.yml` (effective hyperparameters and arguments, see
`agents.zoo.run_folder`). Ctrl-C saves `{env}.zip`.

`-i` resumes from any saved model. In a run folder it continues that run: the
timestep count, the monitor files and `evaluations.npz` go on, and the run's own env
kwargs and hyperparameters are used; a value on the command line that differs from
the run's is refused by name unless `--allow-changes`, which records it in
`{env}/resumes.yml`. The model file is untrusted input: `-i` loads nothing pickled
from it (see `agents.zoo.safe_load`) unless `--trust-agent` is given, which runs code
from the file.

`-optimize` tunes the hyperparameters with Optuna instead of training one model
(see `agents.zoo.optimize`). `--multi-agent` trains Tamiyo, Emrakul and Karn on the
PettingZoo env, with separate policies in rounds of alternating best response (see
`train_multi_agent`):

    esper-train --multi-agent --algo maskable_ppo -n 2160 --rounds 3
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import importlib
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecNormalize

import esper_env  # noqa: F401  (registers the envs)
from agents.cli import StoreDict, run_cli
from agents.extras import require_extra
from agents.multi_agent_sb3 import AgentView, make_agent_view
from agents.zoo.algos import ALGOS, algo_class
from agents.zoo.callbacks import (
    EsperMetricsCallback,
    eval_callback_class,
)
from agents.zoo.envs import MONITOR_KEYS, make_vec_env
from agents.zoo.hyperparams import Hyperparams, load_hyperparams
from agents.zoo.observation_transform import (
    TRANSFORM_ATTRIBUTE,
    ObservationTransform,
    StampObservationTransform,
    wrap_vec_env,
)
from agents.zoo.policy import SB3Policy, check_semantics, stamp_action_interface, stamp_semantics
from agents.zoo.run_folder import (
    RunRecord,
    new_run_folder,
    read_run,
    run_folder_of,
    write_yaml,
)
from agents.zoo.safe_load import TRUST_AGENT_HELP, load_model
from esper_env.envs.multi_agent import AGENTS
from esper_env.envs.presets import ENV_PRESETS, merge_kwargs, preset_config

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Why `--shared-policy` fails: parameter sharing needs one space for all agents.
SHARED_POLICY_IMPOSSIBLE = (
    "--shared-policy: one policy shared by Tamiyo, Emrakul and Karn is not possible: "
    "parameter sharing (SuperSuit-style) needs identical observation and action spaces, "
    "and theirs differ in size and meaning (actions [op, slot, blueprint, speed], "
    "[op, slot] and [op, parent, mutation]). --multi-agent trains a separate policy per "
    "agent; drop --shared-policy."
)


@dataclass
class TrainResult:
    """Where a training run left its outputs, and how far it got.

    Attributes:
        log_path: The run folder.
        model_path: The final (or interrupted) model.
        num_timesteps: Timesteps trained in total, resumed ones included.
        interrupted: Training stopped on Ctrl-C.
        wall_seconds: Wall time of this invocation's training.
        episodes: Per-episode records of `EsperMetricsCallback`.
        wandb_dir: The W&B run directory, when tracking.
        seed: The seed the run used (drawn at random when `--seed` was negative).
    """

    log_path: Path
    model_path: Path
    num_timesteps: int
    interrupted: bool
    wall_seconds: float
    episodes: list[dict[str, Any]]
    wandb_dir: Path | None
    seed: int


def build_parser() -> argparse.ArgumentParser:
    """The command line, with rl-baselines3-zoo's names (and its short forms)."""
    parser = argparse.ArgumentParser(
        prog="esper-train",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--algo", default="recurrent_ppo", choices=sorted(ALGOS))
    parser.add_argument("--env", default="Esper-CIFAR-Mini-v0", help="registered env id")
    parser.add_argument(
        "--env-kwargs",
        nargs="+",
        action=StoreDict,
        default=None,
        metavar="KEY:VALUE",
        help="env keyword arguments; values are YAML (rl-zoo evaluates Python), dotted "
        "keys nest: train.batch_size:32",
    )
    parser.add_argument(
        "--eval-env-kwargs",
        nargs="+",
        action=StoreDict,
        default=None,
        metavar="KEY:VALUE",
        help="the eval env's keyword arguments (default: --env-kwargs)",
    )
    parser.add_argument(
        "-n",
        "--n-timesteps",
        type=int,
        default=-1,
        help="timesteps to train (-1: the hyperparameter file's; on resume: the rest of "
        "the run's n_timesteps)",
    )
    parser.add_argument("--n-envs", type=int, default=None, help="default: hyperparameter file")
    parser.add_argument(
        "--vec-env",
        choices=["dummy", "subproc"],
        default=None,
        help="VecEnv type. Esper's default (unlike rl-zoo's 'dummy'): subproc when n_envs > "
        "1, since every env trains a CNN and needs its own process",
    )
    parser.add_argument(
        "--seed", type=int, default=-1, help="random seed (negative: drawn, then recorded)"
    )
    parser.add_argument("--device", default="auto", help="torch device of the policy")
    parser.add_argument(
        "--num-threads",
        type=int,
        default=-1,
        help="torch threads of the training process (-1: half the cores, where rl-zoo "
        "leaves torch's default: oversubscribed cores measured 5x slower; subprocess "
        "envs get cores / n_envs each)",
    )
    parser.add_argument(
        "--log-interval",
        type=int,
        default=-1,
        help="SB3's log_interval (-1: the algorithm's default, -2: no logging)",
    )
    parser.add_argument(
        "--eval-freq",
        type=int,
        default=1200,
        help="evaluate every N timesteps (negative: never). Esper's default is smaller "
        "than rl-zoo's 25000: an Esper step trains a CNN for an epoch",
    )
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--n-eval-envs", type=int, default=1, help="envs for evaluation")
    parser.add_argument(
        "--save-freq", type=int, default=-1, help="checkpoint every N timesteps (-1: never)"
    )
    parser.add_argument("-f", "--log-folder", type=Path, default=Path("logs"))
    parser.add_argument(
        "-params",
        "--hyperparams",
        nargs="+",
        action=StoreDict,
        default=None,
        metavar="KEY:VALUE",
        help="overrides of the hyperparameter file: learning_rate:lin_1e-3 "
        "policy_kwargs.lstm_hidden_size:32",
    )
    parser.add_argument(
        "-conf",
        "--conf-file",
        type=Path,
        default=None,
        help="YAML hyperparameter file to use instead of agents/hyperparams/{algo}.yml "
        "(rl-zoo also takes a Python module; Esper reads only YAML, never code)",
    )
    parser.add_argument(
        "--gym-packages",
        nargs="+",
        default=[],
        help="modules to import first, so that the env ids they register exist",
    )
    parser.add_argument(
        "-uuid", "--uuid", action="store_true", help="append a unique id to the run folder"
    )
    parser.add_argument("-i", "--trained-agent", type=Path, help="saved model to continue")
    parser.add_argument("--trust-agent", action="store_true", help=f"for -i: {TRUST_AGENT_HELP}")
    parser.add_argument(
        "--init-policy",
        type=Path,
        default=None,
        help="start a new run from this saved agent's policy weights (e.g. a behaviour-cloned "
        "one, agents.imitation.clone) and fine-tune it; recorded in args.yml with its SHA-256",
    )
    parser.add_argument(
        "--allow-changes",
        action="store_true",
        help="for -i in a run folder: accept env kwargs and hyperparameters that differ "
        "from the run's (recorded in {env}/resumes.yml); without it they are refused",
    )
    parser.add_argument(
        "-tb", "--tensorboard-log", default="", help="TensorBoard folder (off if empty)"
    )
    parser.add_argument("--track", action="store_true", help="log the run to Weights & Biases")
    parser.add_argument(
        "--wandb-project-name", "--wandb-project", dest="wandb_project_name", default="esper"
    )
    parser.add_argument("--wandb-entity", default=None)
    parser.add_argument("--wandb-group", default=None, help="W&B group of the run")
    parser.add_argument(
        "-tags", "--wandb-tags", nargs="+", default=[], help="W&B tags: -tags mini ablation"
    )
    parser.add_argument(
        "-P",
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bar. On by default (rl-zoo: off): an Esper run takes minutes to "
        "hours, and --no-progress turns it off",
    )
    parser.add_argument("--verbose", type=int, default=1)
    optimize = parser.add_argument_group("hyperparameter optimisation (Optuna)")
    optimize.add_argument(
        "-optimize",
        "--optimize-hyperparameters",
        action="store_true",
        help="tune hyperparameters with Optuna instead of training one model",
    )
    optimize.add_argument("--n-trials", type=int, default=500, help="trials of this process")
    optimize.add_argument(
        "--max-total-trials",
        type=int,
        default=None,
        help="trials of the whole study, across runs sharing --storage (overrides --n-trials)",
    )
    optimize.add_argument("--n-jobs", type=int, default=1, help="trials run in parallel threads")
    optimize.add_argument("--sampler", choices=["random", "tpe"], default="tpe")
    optimize.add_argument("--pruner", choices=["halving", "median", "none"], default="median")
    optimize.add_argument(
        "--n-startup-trials", type=int, default=10, help="random trials before the sampler"
    )
    optimize.add_argument(
        "--n-evaluations",
        type=int,
        default=4,
        help="evaluations per trial, the pruner's checkpoints (rl-zoo: 1 per 100k "
        "timesteps; Esper trials are a few thousand timesteps)",
    )
    optimize.add_argument(
        "--storage", default=None, help="Optuna storage URL: sqlite:///study.db resumes a study"
    )
    optimize.add_argument("--study-name", default=None, help="Optuna study name")
    optimize.add_argument(
        "--optimization-log-path",
        type=Path,
        default=None,
        help="folder of the trials' evaluations and the report (default: the run folder)",
    )
    multi = parser.add_argument_group(
        "multi-agent",
        "evaluation, checkpoints, -i, --trust-agent and --track are single-agent only",
    )
    multi.add_argument(
        "--multi-agent",
        action="store_true",
        help="train tamiyo, emrakul and karn on the multi-agent env over --env's preset",
    )
    multi.add_argument(
        "--agents",
        default=",".join(AGENTS),
        help="comma-separated agents to train; the others keep their heuristics",
    )
    multi.add_argument("--rounds", type=int, default=3, help="rounds of alternating best response")
    multi.add_argument(
        "--shared-policy",
        action="store_true",
        help="one policy for all agents: not possible (their spaces differ), fails with why",
    )
    return parser


def git_commit() -> str | None:
    """The checked-out commit of this repository; None outside a git checkout (a wheel)."""
    if not (REPO_ROOT / ".git").exists():
        return None
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def check_env_id(env_id: str) -> None:
    """Checks that `env_id` is a registered Esper env, suggesting the closest id if not.

    Raises:
        ValueError: Unregistered, or registered but not an Esper world.
    """
    if env_id not in gym.registry:
        match = difflib.get_close_matches(env_id, list(gym.registry), n=1)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        raise ValueError(f"--env {env_id!r} is not a registered env id{hint}")
    preset = gym.spec(env_id).kwargs.get("preset")
    if preset not in ENV_PRESETS:
        raise ValueError(
            f"--env {env_id!r} is not an Esper world (its gym.register kwargs name no "
            f"preset of {list(ENV_PRESETS)}); Esper's zoo trains on Esper worlds only"
        )


def validate_env_kwargs(env_id: str, env_kwargs: dict[str, Any]) -> None:
    """Validates `env_kwargs` for `env_id` (registered kwargs merged in) without an env.

    Raises:
        ValueError: An unknown key or a bad value, named (pydantic's message).
    """
    kwargs = merge_kwargs(dict(gym.spec(env_id).kwargs), env_kwargs)
    preset = kwargs.pop("preset")
    preset_config(preset, **kwargs)


def _flat(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every (dotted) key whose value differs between two mappings."""
    flat_old, flat_new = _flat(old), _flat(new)
    return [
        f"{key}: {flat_old.get(key, '(unset)')!r} -> {flat_new.get(key, '(unset)')!r}"
        for key in sorted(set(flat_old) | set(flat_new))
        if flat_old.get(key) != flat_new.get(key)
    ]


@dataclass(frozen=True)
class RunSettings:
    """What a (possibly resumed) run trains with, once the command line met the run folder.

    Attributes:
        env_kwargs: The training envs' kwargs.
        eval_env_kwargs: The eval envs' kwargs.
        hyperparams: The validated section.
        resumed: The run folder being continued (None: a new run).
        changes: On resume, what differs from the run's own settings (`key: old -> new`).
    """

    env_kwargs: dict[str, Any]
    eval_env_kwargs: dict[str, Any]
    hyperparams: Hyperparams
    resumed: RunRecord | None
    changes: list[str]


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = dict(args.hyperparams or {})
    if args.n_envs is not None:
        overrides["n_envs"] = args.n_envs
    return overrides


def resolve_settings(args: argparse.Namespace) -> RunSettings:
    """Env kwargs and hyperparameters of the run: the command line's, or on resume the run's.

    Raises:
        ValueError: Bad env kwargs or hyperparameters (named), another algorithm than the
            run's, or (without `--allow-changes`) a resume that changes the run's settings.
    """
    overrides = _overrides(args)
    record = None
    if args.trained_agent is not None:
        folder = run_folder_of(args.trained_agent, args.env)
        record = None if folder is None else read_run(folder, args.env)
    if record is None:
        env_kwargs = args.env_kwargs or {}
        eval_env_kwargs = args.eval_env_kwargs if args.eval_env_kwargs is not None else env_kwargs
        hyperparams = load_hyperparams(args.algo, args.env, overrides, path=args.conf_file)
        return RunSettings(env_kwargs, eval_env_kwargs, hyperparams, None, [])

    if record.args.get("algo") != args.algo:
        raise ValueError(
            f"-i {args.trained_agent}: the run {record.folder} trained {record.args.get('algo')}"
            f", not --algo {args.algo}"
        )
    env_kwargs = args.env_kwargs if args.env_kwargs is not None else record.env_kwargs
    run_eval = record.eval_env_kwargs
    eval_env_kwargs = (
        args.eval_env_kwargs
        if args.eval_env_kwargs is not None
        else (run_eval if run_eval is not None else env_kwargs)
    )
    run_section = {k: v for k, v in record.config.items() if k != "n_timesteps"}
    run_section["n_timesteps"] = record.config["n_timesteps"]
    if args.conf_file is not None:
        hyperparams = load_hyperparams(args.algo, args.env, overrides, path=args.conf_file)
    else:
        hyperparams = Hyperparams.for_algo(args.algo, merge_kwargs(run_section, overrides))
    new_config = hyperparams.model_dump()
    changes = [f"env_kwargs.{line}" for line in differences(record.env_kwargs, env_kwargs)]
    if args.eval_env_kwargs is not None:  # else the eval env follows the training env
        run_eval_kwargs = run_eval if run_eval is not None else record.env_kwargs
        changes += [
            f"eval_env_kwargs.{line}" for line in differences(run_eval_kwargs, eval_env_kwargs)
        ]
    changes += [
        f"hyperparams.{line}"
        for line in differences(
            {k: v for k, v in run_section.items() if k != "n_timesteps"},
            {k: v for k, v in new_config.items() if k != "n_timesteps"},
        )
    ]
    if changes and not args.allow_changes:
        raise ValueError(
            f"-i {args.trained_agent} continues the run {record.folder}, and the command line "
            f"changes its settings: {'; '.join(changes)}. Drop those arguments to resume the "
            "run as it was, or pass --allow-changes to change them on purpose (recorded in "
            "resumes.yml)"
        )
    return RunSettings(env_kwargs, eval_env_kwargs, hyperparams, record, changes)


def _prepare(args: argparse.Namespace) -> None:
    """rl-zoo's preamble: import --gym-packages, check the id, draw a seed, set threads."""
    for module in args.gym_packages:
        importlib.import_module(module)
    check_env_id(args.env)
    if args.seed < 0:
        args.seed = int(np.random.default_rng().integers(2**31 - 1))
    # Oversubscribed cores are far slower than idle ones (5x measured on 2 busy cores).
    threads = args.num_threads if args.num_threads > 0 else max(1, (os.cpu_count() or 1) // 2)
    torch.set_num_threads(threads)
    if args.tensorboard_log:
        require_extra("tensorboard", "-tb/--tensorboard-log")
    if args.track:
        require_extra("wandb", "--track")


def _planned_timesteps(
    args: argparse.Namespace, settings: RunSettings, model: BaseAlgorithm
) -> int:
    if args.n_timesteps > 0:
        return args.n_timesteps
    if settings.resumed is None:
        return settings.hyperparams.n_timesteps
    planned = int(settings.resumed.config["n_timesteps"])
    left = planned - model.num_timesteps
    if left <= 0:
        raise ValueError(
            f"the run already trained {model.num_timesteps} of its n_timesteps {planned}; "
            "pass -n to train more"
        )
    return left


def args_record(args: argparse.Namespace, settings: RunSettings) -> dict[str, Any]:
    """The command line as `args.yml` stores it: every argument, env kwargs as mappings."""
    record = {key: str(v) if isinstance(v, Path) else v for key, v in vars(args).items()}
    record["env_kwargs"] = settings.env_kwargs
    record["eval_env_kwargs"] = args.eval_env_kwargs
    return record


def train(args: argparse.Namespace) -> TrainResult:
    """Trains (or resumes) one run as `args` says; see the module docstring for its outputs.

    Raises:
        ValueError: Bad hyperparameters or env kwargs (named in the message), or a resume
            that changes the run's settings without `--allow-changes`.
        FileNotFoundError: `-i` names no file.
    """
    _prepare(args)
    if args.trained_agent is not None and not args.trained_agent.is_file():
        raise FileNotFoundError(f"-i {args.trained_agent}: no saved model there")
    if args.trained_agent is not None and args.init_policy is not None:
        raise ValueError("-i continues a run, --init-policy starts a new one: give one of them")
    settings = resolve_settings(args)
    # Bad env kwargs fail before any folder is made.
    validate_env_kwargs(args.env, settings.env_kwargs)
    validate_env_kwargs(args.env, settings.eval_env_kwargs)
    hyperparams = settings.hyperparams
    resume_in = None if settings.resumed is None else settings.resumed.folder
    suffix = f"_{uuid.uuid4()}" if args.uuid else ""
    log_path = resume_in or new_run_folder(args.log_folder, args.algo, args.env, suffix)
    (log_path / args.env).mkdir(parents=True, exist_ok=True)

    n_envs = hyperparams.n_envs
    env = make_vec_env(
        args.env,
        with_run_telemetry(settings.env_kwargs, log_path),
        n_envs=n_envs,
        seed=args.seed,
        monitor_dir=log_path,
        resume=resume_in is not None,
        vec_env=args.vec_env,
        wrappers=hyperparams.env_wrappers(),
        gym_packages=args.gym_packages,
    )
    env = wrap_vec_env(env, hyperparams, training=True)
    env.env_method("set_policy_name", f"{args.algo} (esper-train, training)")
    eval_env = None
    if args.eval_freq > 0:
        eval_env = make_vec_env(
            args.env,
            with_run_telemetry(settings.eval_env_kwargs, log_path),
            n_envs=args.n_eval_envs,
            seed=args.seed + 10_000,  # evaluation episodes differ from training ones
            monitor_dir=log_path / "eval",
            resume=resume_in is not None,
            vec_env=args.vec_env,
            wrappers=hyperparams.env_wrappers(),
            gym_packages=args.gym_packages,
            telemetry_prefix="events.eval",
        )
        eval_env = wrap_vec_env(eval_env, hyperparams, training=False)
        eval_env.env_method("set_policy_name", f"{args.algo} (esper-train, evaluation)")

    tensorboard_log = f"{args.tensorboard_log}/{args.algo}" if args.tensorboard_log else None
    if args.trained_agent is not None:
        # The file is untrusted input: nothing pickled in it is loaded unless --trust-agent.
        # It goes on with this run's hyperparameters; its policy_kwargs fix the network.
        try:
            model = load_model(
                args.algo,
                args.trained_agent,
                env,
                device=args.device,
                trust=args.trust_agent,
                hyperparams=hyperparams,
                tensorboard_log=tensorboard_log,
                verbose=args.verbose,
            )
            check_semantics(model, args.trained_agent)
        except ValueError:  # refused or unfit: the envs' worker processes must not outlive it
            env.close()
            if eval_env is not None:
                eval_env.close()
            raise
        model.set_random_seed(args.seed)
        restore_observation_statistics(model, env)
    else:
        model = new_model(
            args.algo,
            hyperparams,
            env,
            seed=args.seed,
            device=args.device,
            tensorboard_log=tensorboard_log,
            verbose=args.verbose,
        )
        if args.init_policy is not None:
            args.init_policy_sha256 = init_policy_from(model, args.algo, args.init_policy, env)
    stamp_action_interface(model, env)
    n_timesteps = _planned_timesteps(args, settings, model)

    config = hyperparams.model_dump()
    record = args_record(args, settings)
    if resume_in is None:
        config["n_timesteps"] = n_timesteps
        write_yaml(log_path / args.env / "config.yml", config)
        write_yaml(log_path / args.env / "args.yml", record)
    else:
        with (log_path / args.env / "resumes.yml").open("a", encoding="utf-8") as handle:
            entry = {
                "from_timestep": model.num_timesteps,
                "args": record,
                "config": config,
                "changes": settings.changes,
            }
            handle.write(yaml.safe_dump([entry], sort_keys=True))

    metrics = EsperMetricsCallback()
    callbacks: list[BaseCallback] = [metrics, StampObservationTransform(), *hyperparams.callbacks()]
    if eval_env is not None:
        eval_cls = eval_callback_class(args.algo)
        callbacks.append(
            eval_cls(
                eval_env,
                n_eval_episodes=args.eval_episodes,
                eval_freq=max(args.eval_freq // n_envs, 1),
                log_path=str(log_path),
                best_model_save_path=str(log_path),
                deterministic=True,
                verbose=args.verbose,
            )
        )
    if args.save_freq > 0:
        callbacks.append(
            CheckpointCallback(
                save_freq=max(args.save_freq // n_envs, 1),
                save_path=str(log_path),
                name_prefix="rl_model",
                verbose=args.verbose,
            )
        )
    run = None
    wandb_callback = None
    if args.track:
        from agents.zoo import tracking  # needs the [wandb] extra, checked in _prepare

        run = tracking.start_run(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            group=args.wandb_group,
            tags=args.wandb_tags,
            name=f"{args.env}__{args.algo}__{args.seed}__{log_path.name}",
            config={
                "env_id": args.env,
                "env_kwargs": settings.env_kwargs,
                "algo": args.algo,
                "seed": args.seed,
                "hyperparams": config,
                "git_commit": git_commit(),
                "log_path": str(log_path),
                "command": args.command,
            },
            sync_tensorboard=tensorboard_log is not None,
        )
        wandb_callback = tracking.WandbCallback(run, metrics, log_scalars=tensorboard_log is None)
        callbacks.append(wandb_callback)

    start = time.perf_counter()
    start_timesteps = model.num_timesteps
    interrupted = False
    try:
        model.learn(
            total_timesteps=n_timesteps,
            callback=callbacks,
            progress_bar=args.progress,
            reset_num_timesteps=args.trained_agent is None,
            tb_log_name=log_path.name,
            **log_interval_kwargs(args.log_interval),
        )
    except KeyboardInterrupt:
        interrupted = True
    wall = time.perf_counter() - start

    model_path = log_path / f"{args.env}.zip"
    model.save(model_path)
    env.close()
    if eval_env is not None:
        eval_env.close()
    wandb_dir = None
    if run is not None:
        if interrupted and wandb_callback is not None:
            wandb_callback.log_episode_table()  # SB3 skips on_training_end on an interrupt
        wandb_dir = Path(run.dir).parent
        run.finish()

    result = TrainResult(
        log_path=log_path,
        model_path=model_path,
        num_timesteps=model.num_timesteps,
        interrupted=interrupted,
        wall_seconds=wall,
        episodes=metrics.episodes,
        wandb_dir=wandb_dir,
        seed=args.seed,
    )
    _print_summary(args, result, model.num_timesteps - start_timesteps, tensorboard_log)
    return result


def init_policy_from(model: BaseAlgorithm, algo: str, path: Path, env: VecEnv) -> str:
    """Copies the policy weights of the saved agent at `path` into `model` (a fresh run's).

    The file is loaded as untrusted input (nothing pickled runs), against the run's
    spaces; its network must have the run's shape (`policy_kwargs`).

    Returns:
        The file's SHA-256, which the run records beside the path.

    Raises:
        FileNotFoundError: No file at `path`.
        ValueError: Another algorithm's, or another network's, weights.
    """
    source = load_model(algo, path, env, device=str(model.device), attach_env=False)
    check_semantics(source, path)
    ours, theirs = model.policy.state_dict(), source.policy.state_dict()
    shapes = {key: tuple(value.shape) for key, value in ours.items()}
    if shapes != {key: tuple(value.shape) for key, value in theirs.items()}:
        raise ValueError(
            f"--init-policy {path}: its network differs from this run's "
            "(policy_kwargs); clone or train it with the same hyperparameters"
        )
    model.policy.load_state_dict(theirs)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def with_run_telemetry(env_kwargs: dict[str, Any], log_path: Path) -> dict[str, Any]:
    """`env_kwargs` with the run folder's `telemetry/` as `telemetry_dir`, unless they name one.

    Every run keeps its telemetry, so `esper-watch RUN_FOLDER` and `esper-report` work on it.
    """
    if "telemetry_dir" in env_kwargs:
        return env_kwargs
    return {**env_kwargs, "telemetry_dir": str(log_path / "telemetry")}


def restore_observation_statistics(model: BaseAlgorithm, env: VecEnv) -> None:
    """A resumed run's `VecNormalize` goes on from the statistics its agent file records.

    Raises:
        ValueError: The run normalises observations and the file records no statistics.
    """
    layer: VecEnv = env
    while isinstance(layer, VecEnvWrapper) and not isinstance(layer, VecNormalize):
        layer = layer.venv
    if not isinstance(layer, VecNormalize):
        return
    transform = ObservationTransform.of_record(getattr(model, TRANSFORM_ATTRIBUTE, None))
    if transform is None or transform.normalize is None:
        raise ValueError(
            "the run normalises observations (normalize in its hyperparameters), but the "
            "agent file records no normalisation statistics to go on from"
        )
    transform.normalize.restore(layer)


def log_interval_kwargs(log_interval: int) -> dict[str, Any]:
    """`model.learn` kwargs for rl-zoo's `--log-interval` (-1: default, < -1: no logging).

    Raises:
        ValueError: 0 (SB3 would divide by it).
    """
    if log_interval == 0:
        raise ValueError("--log-interval must be positive, -1 (default) or -2 (no logging)")
    if log_interval > 0:
        return {"log_interval": log_interval}
    if log_interval < -1:
        return {"log_interval": None}
    return {}


@dataclass
class MultiAgentTrainResult:
    """Where a `--multi-agent` run left its models, and how far each agent got.

    Attributes:
        log_path: The run folder.
        model_paths: Each trained agent's final (or interrupted) model, `{agent}.zip`.
        num_timesteps: Timesteps each agent trained.
        interrupted: Training stopped on Ctrl-C.
        wall_seconds: Wall time of the training.
    """

    log_path: Path
    model_paths: dict[str, Path]
    num_timesteps: dict[str, int]
    interrupted: bool
    wall_seconds: float


def parse_agents(text: str) -> list[str]:
    """The `--agents` list: known, distinct agent names in the given order.

    Raises:
        ValueError: An unknown or repeated name.
    """
    agents = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in agents if name not in AGENTS]
    if not agents or unknown or len(set(agents)) != len(agents):
        raise ValueError(
            f"--agents {text!r}: give distinct names from {', '.join(AGENTS)} separated by commas"
        )
    return agents


def train_multi_agent(args: argparse.Namespace) -> MultiAgentTrainResult:
    """Trains separate SB3 policies for Tamiyo, Emrakul and Karn by alternating best response.

    Each round trains every agent of `--agents` in turn for `n_timesteps / (rounds *
    agents)` timesteps (rounded up to whole rollouts) on its `AgentView` of the
    multi-agent env over `--env`'s preset. The partners in that view are the other
    agents' current models (deterministic, through `SB3Policy`) once they have one, and
    their heuristics (`heuristic_team`) before that; agents left out of `--agents` keep
    their heuristics throughout. Each agent's model is one `--algo` model that keeps
    learning across rounds, built with the single-agent hyperparameters of `--env`
    (the spaces differ per agent, and SB3 sizes its networks from them); MaskablePPO
    reads the view's `action_masks`. Envs run in-process (a `DummyVecEnv` of `n_envs`
    views), because partners are the live models.

    The run folder `{log_folder}/{algo}/{env}_multi_{N}/` holds `{agent}.zip` (saved
    after each of its stages), `{agent}.{i}.monitor.csv` (its training episodes, with
    Esper's final metrics) and `{env}/config.yml` + `{env}/args.yml`.

    Raises:
        ValueError: `--shared-policy`, a single-agent-only option, bad `--agents`, too
            few timesteps for the stages, or bad hyperparameters or env kwargs.
    """
    if args.shared_policy:
        raise ValueError(SHARED_POLICY_IMPOSSIBLE)
    single_only = {
        "-i": args.trained_agent is not None,
        "--init-policy": args.init_policy is not None,
        "--trust-agent": args.trust_agent,
        "--track": args.track,
        "--save-freq": args.save_freq > 0,
    }
    if used := [flag for flag, given in single_only.items() if given]:
        raise ValueError(f"{', '.join(used)}: single-agent only; drop it with --multi-agent")
    agents = parse_agents(args.agents)
    if args.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
    _prepare(args)
    env_kwargs = args.env_kwargs or {}
    hyperparams = load_hyperparams(args.algo, args.env, _overrides(args), path=args.conf_file)
    n_timesteps = args.n_timesteps if args.n_timesteps > 0 else hyperparams.n_timesteps
    stages = args.rounds * len(agents)
    per_stage = n_timesteps // stages
    if per_stage < 1:
        raise ValueError(
            f"-n {n_timesteps} is less than one timestep for each of the {stages} stages "
            f"({args.rounds} rounds x {len(agents)} agents)"
        )
    n_envs = hyperparams.n_envs
    # Building the views first makes bad env kwargs fail before any folder is made.
    views = {
        agent: [
            make_agent_view(
                agent,
                partners="heuristic",
                seed=args.seed + i,
                preset=args.env,
                **_view_telemetry(env_kwargs, f"events.{agent}.{i}"),
            )
            for i in range(n_envs)
        ]
        for agent in agents
    }
    heuristics = {agent: [dict(view.partners) for view in views[agent]] for agent in agents}
    suffix = f"_{uuid.uuid4()}" if args.uuid else ""
    log_path = new_run_folder(args.log_folder, args.algo, f"{args.env}_multi", suffix)
    (log_path / args.env).mkdir(parents=True)
    vec_envs = {
        agent: DummyVecEnv(
            [_monitored(view, log_path / f"{agent}.{i}") for i, view in enumerate(views[agent])]
        )
        for agent in agents
    }
    config = {**hyperparams.model_dump(), "n_timesteps": n_timesteps}
    record = {key: str(v) if isinstance(v, Path) else v for key, v in vars(args).items()}
    record["env_kwargs"] = env_kwargs
    write_yaml(log_path / args.env / "config.yml", config)
    write_yaml(log_path / args.env / "args.yml", record)

    tensorboard_log = f"{args.tensorboard_log}/{args.algo}" if args.tensorboard_log else None
    models: dict[str, BaseAlgorithm] = {}
    model_paths: dict[str, Path] = {}
    start = time.perf_counter()
    interrupted = False
    try:
        for stage in range(stages):
            agent = agents[stage % len(agents)]
            for view, fallback in zip(views[agent], heuristics[agent], strict=True):
                view.partners = {
                    other: SB3Policy(models[other], args.algo) if other in models else policy
                    for other, policy in fallback.items()
                }
            vec_env = vec_envs[agent]
            vec_env.seed(args.seed + stage * n_envs)  # each stage sees fresh episodes
            if agent not in models:
                models[agent] = new_model(
                    args.algo,
                    hyperparams,
                    vec_env,
                    seed=args.seed,
                    device=args.device,
                    tensorboard_log=tensorboard_log,
                    verbose=args.verbose,
                )
            else:
                models[agent].set_env(vec_env)  # restarts the episodes with the new partners
            models[agent].learn(
                total_timesteps=per_stage,
                progress_bar=args.progress,
                reset_num_timesteps=False,
                tb_log_name=f"{log_path.name}_{agent}",
                **log_interval_kwargs(args.log_interval),
            )
            model_paths[agent] = log_path / f"{agent}.zip"
            models[agent].save(model_paths[agent])
    except KeyboardInterrupt:
        interrupted = True
    wall = time.perf_counter() - start
    for agent, model in models.items():
        model_paths[agent] = log_path / f"{agent}.zip"
        model.save(model_paths[agent])
    for vec_env in vec_envs.values():
        vec_env.close()

    result = MultiAgentTrainResult(
        log_path=log_path,
        model_paths=model_paths,
        num_timesteps={agent: model.num_timesteps for agent, model in models.items()},
        interrupted=interrupted,
        wall_seconds=wall,
    )
    _print_multi_agent_summary(args, result, vec_envs)
    return result


def _view_telemetry(env_kwargs: dict[str, Any], name: str) -> dict[str, Any]:
    """`env_kwargs` with its own telemetry file per view, when telemetry is on."""
    if "telemetry_dir" not in env_kwargs:
        return env_kwargs
    return {**env_kwargs, "telemetry_name": name}


def _monitored(view: AgentView, filename: Path) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        return Monitor(view, str(filename), info_keywords=MONITOR_KEYS)

    return make


def _print_multi_agent_summary(
    args: argparse.Namespace, result: MultiAgentTrainResult, vec_envs: dict[str, DummyVecEnv]
) -> None:
    lines = [
        "",
        "=" * 72,
        f"{'Interrupted' if result.interrupted else 'Finished'}: {args.algo} multi-agent on "
        f"{args.env} in {result.wall_seconds:.0f} s (seed {args.seed})",
        f"  run folder   {result.log_path}",
    ]
    for agent, path in result.model_paths.items():
        returns = [r for env in vec_envs[agent].envs for r in env.get_episode_rewards()][-20:]
        recent = (
            f", last {len(returns)} episodes' mean return {np.mean(returns):.3f}" if returns else ""
        )
        lines.append(f"  {agent:<8} {path} ({result.num_timesteps[agent]} timesteps{recent})")
    lines.append(
        "  act with    agents.zoo.policy.load_sb3_policy(algo, path, view) in "
        "view = agents.multi_agent_sb3.make_agent_view(agent, ...)"
    )
    lines.append("=" * 72)
    print("\n".join(lines))


def _print_summary(
    args: argparse.Namespace, result: TrainResult, trained: int, tensorboard_log: str | None
) -> None:
    log_path = result.log_path
    recent = result.episodes[-20:]
    lines = [
        "",
        "=" * 72,
        f"{'Interrupted' if result.interrupted else 'Finished'}: {args.algo} on {args.env}, "
        f"{trained} timesteps this run ({result.num_timesteps} in total) in "
        f"{result.wall_seconds:.0f} s ({trained / max(result.wall_seconds, 1e-9):.2f} steps/s), "
        f"seed {result.seed}",
        f"  run folder   {log_path}",
        f"  final model  {result.model_path}",
    ]
    best = log_path / "best_model.zip"
    if best.exists():
        lines.append(f"  best model   {best}")
    if (log_path / "evaluations.npz").exists():
        lines.append(f"  evaluations  {log_path / 'evaluations.npz'}")
    lines.append(f"  monitor      {log_path}/*.monitor.csv")
    lines.append(f"  config       {log_path / args.env / 'config.yml'}")
    if tensorboard_log is not None:
        lines.append(f"  tensorboard  tensorboard --logdir {args.tensorboard_log}")
    if result.wandb_dir is not None:
        lines.append(f"  wandb        {result.wandb_dir}")
    if recent:
        val = np.mean([e["final_val_accuracy"] for e in recent])
        ret = np.mean([e["return"] for e in recent])
        lines.append(
            f"  last {len(recent)} episodes: mean return {ret:.3f}, mean final val acc {val:.4f}"
        )
    lines.append(
        f"  evaluate     esper-eval --algo {args.algo} --env {args.env} --model {result.model_path}"
    )
    if result.interrupted:
        lines.append(
            f"  resume       esper-train --algo {args.algo} --env {args.env} -i {result.model_path}"
        )
    lines.append("=" * 72)
    print("\n".join(lines))


def new_model(
    algo: str,
    hyperparams: Hyperparams,
    env: VecEnv,
    *,
    seed: int,
    device: str,
    tensorboard_log: str | None,
    verbose: int,
) -> BaseAlgorithm:
    """A fresh SB3 model of `algo` with the run's hyperparameters, seed, device and logging."""
    model = algo_class(algo)(
        hyperparams.policy,
        env,
        seed=seed,
        device=device,
        tensorboard_log=tensorboard_log,
        verbose=verbose,
        **hyperparams.algo_kwargs(),
    )
    stamp_semantics(model)
    return model


def optimize(args: argparse.Namespace) -> Any:
    """`-optimize`: an Optuna study of `--algo` on `--env` (see `agents.zoo.optimize`).

    Its trials, report and best hyperparameters go to `--optimization-log-path`, else
    to a new run folder `{log_folder}/{algo}/{env}_optimize_{N}`.

    Returns:
        The `optuna.Study`.
    """
    require_extra("optuna", "-optimize")
    _prepare(args)
    from agents.zoo import optimize as tuning  # needs the [optuna] extra, checked above

    validate_env_kwargs(args.env, args.env_kwargs or {})
    suffix = f"_{uuid.uuid4()}" if args.uuid else ""
    log_path = args.optimization_log_path or new_run_folder(
        args.log_folder, args.algo, f"{args.env}_optimize", suffix
    )
    settings = tuning.StudySettings(
        algo=args.algo,
        env_id=args.env,
        env_kwargs=args.env_kwargs or {},
        hyperparams=_overrides(args),
        conf_file=args.conf_file,
        n_timesteps=args.n_timesteps if args.n_timesteps > 0 else None,
        seed=args.seed,
        device=args.device,
        n_trials=args.n_trials,
        max_total_trials=args.max_total_trials,
        n_jobs=args.n_jobs,
        sampler=args.sampler,
        pruner=args.pruner,
        n_startup_trials=args.n_startup_trials,
        n_evaluations=args.n_evaluations,
        eval_episodes=args.eval_episodes,
        n_eval_envs=args.n_eval_envs,
        storage=args.storage,
        study_name=args.study_name,
        log_path=log_path,
        verbose=args.verbose,
    )
    return tuning.optimize_hyperparameters(settings)


def main(argv: list[str] | None = None) -> TrainResult | MultiAgentTrainResult | Any:
    """Runs the command line: `train`, `optimize`, or `train_multi_agent` with `--multi-agent`.

    The command itself lands in the run's `args.yml` (key `command`): the leaderboard
    records it beside each agent it evaluates.
    """
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["esper-train", *argv])
    if args.multi_agent:
        if args.optimize_hyperparameters:
            raise ValueError("-optimize tunes single-agent training; drop it with --multi-agent")
        return train_multi_agent(args)
    if args.shared_policy:
        raise ValueError("--shared-policy applies to --multi-agent only")
    if args.optimize_hyperparameters:
        return optimize(args)
    return train(args)


def cli() -> None:
    """The `esper-train` console script."""
    run_cli(main, "esper-train")


if __name__ == "__main__":
    cli()
