"""Trains Tamiyo with an SB3 algorithm on an Esper env, rl-baselines3-zoo style.

Example:
    python scripts/train_agent.py --algo recurrent_ppo --env Esper-CIFAR-Mini-v0 -n 4800 --seed 0

A run lives in `{log_folder}/{algo}/{env}_{N}/`: `{env}.zip` (final model),
`best_model.zip` and `evaluations.npz` (periodic evaluation), `rl_model_*_steps.zip`
(checkpoints), `{i}.monitor.csv` (training episodes, with Esper's final metrics),
`eval/0.monitor.csv`, and `{env}/config.yml` + `{env}/args.yml` (effective
hyperparameters and arguments). Ctrl-C saves `{env}.zip`; `-i` resumes from any saved
model, continuing the timestep count, the monitor files and `evaluations.npz` of its run.
The model file is untrusted input: `-i` loads nothing pickled from it (see
`agents.zoo.safe_load`) unless `--trust-agent` is given, which runs code from the file.

`--multi-agent` trains Tamiyo, Emrakul and Karn on the PettingZoo env instead, with
separate policies in rounds of alternating best response (see `train_multi_agent`):

    python scripts/train_agent.py --multi-agent --algo maskable_ppo -n 2160 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from netrc import netrc
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from agents.cli import parse_key_values
from agents.multi_agent_sb3 import AgentView, make_agent_view
from agents.zoo.algos import ALGOS, MASKABLE_ALGOS, algo_class
from agents.zoo.callbacks import (
    EsperMetricsCallback,
    ResumableEvalCallback,
    ResumableMaskableEvalCallback,
    WandbCallback,
)
from agents.zoo.envs import MONITOR_KEYS, make_vec_env
from agents.zoo.hyperparams import Hyperparams, load_hyperparams
from agents.zoo.policy import SB3Policy, check_semantics, stamp_semantics
from agents.zoo.safe_load import TRUST_AGENT_HELP, load_model
from esper_env.envs.multi_agent import AGENTS
from esper_env.envs.presets import preset_config

REPO_ROOT = Path(__file__).resolve().parent.parent

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
    """

    log_path: Path
    model_path: Path
    num_timesteps: int
    interrupted: bool
    wall_seconds: float
    episodes: list[dict[str, Any]]
    wandb_dir: Path | None


def build_parser() -> argparse.ArgumentParser:
    """The command line, with rl-baselines3-zoo's names."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="recurrent_ppo", choices=sorted(ALGOS))
    parser.add_argument("--env", default="Esper-CIFAR-Mini-v0", help="registered env id")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    parser.add_argument(
        "-n",
        "--n-timesteps",
        type=int,
        default=None,
        help="timesteps to train (default: the hyperparameter file's; on resume: the "
        "rest of the run's n_timesteps)",
    )
    parser.add_argument("--n-envs", type=int, default=None, help="default: hyperparameter file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="torch device of the policy")
    parser.add_argument(
        "--eval-freq", type=int, default=1200, help="evaluate every N timesteps (-1: never)"
    )
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument(
        "--save-freq", type=int, default=-1, help="checkpoint every N timesteps (-1: never)"
    )
    parser.add_argument("-f", "--log-folder", type=Path, default=Path("logs"))
    parser.add_argument(
        "--hyperparams",
        nargs="*",
        default=[],
        metavar="KEY:VALUE",
        help="overrides of the hyperparameter file (policy_kwargs.lstm_hidden_size:32)",
    )
    parser.add_argument("-i", "--trained-agent", type=Path, help="saved model to continue")
    parser.add_argument("--trust-agent", action="store_true", help=f"for -i: {TRUST_AGENT_HELP}")
    parser.add_argument("--tensorboard-log", default="", help="TensorBoard folder (off if empty)")
    parser.add_argument("--track", action="store_true", help="log the run to Weights & Biases")
    parser.add_argument("--wandb-project", default="esper")
    parser.add_argument("--wandb-entity", default=None)
    parser.add_argument(
        "--num-threads",
        type=int,
        default=-1,
        help="torch threads of the training process (-1: half the cores; subprocess envs "
        "get cores / n_envs each: the trainer and the envs take turns)",
    )
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--verbose", type=int, default=1)
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


def find_run_folder(model_path: Path, env_id: str) -> Path | None:
    """The run folder holding `model_path` (a parent with `{env_id}/args.yml`), if any."""
    for folder in list(model_path.resolve().parents)[:3]:
        if (folder / env_id / "args.yml").is_file():
            return folder
    return None


def new_run_folder(log_folder: Path, algo: str, env_id: str) -> Path:
    """`{log_folder}/{algo}/{env_id}_{N}` with N one more than the largest existing."""
    parent = log_folder / algo
    pattern = re.compile(rf"^{re.escape(env_id)}_(\d+)$")
    taken = [
        int(match.group(1))
        for child in (parent.iterdir() if parent.is_dir() else [])
        if (match := pattern.match(child.name))
    ]
    return parent / f"{env_id}_{max(taken, default=0) + 1}"


def git_commit() -> str | None:
    """The checked-out commit of this repository; None when it is not a git checkout."""
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def wandb_mode() -> str:
    """`WANDB_MODE` if set; else online with an API key, offline without one."""
    if mode := os.environ.get("WANDB_MODE"):
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc_file = Path.home() / ".netrc"
    if netrc_file.is_file() and netrc(netrc_file).authenticators("api.wandb.ai"):
        return "online"
    return "offline"


def _yaml_ready(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    return value


def _planned_timesteps(
    args: argparse.Namespace, hyperparams: Hyperparams, model: BaseAlgorithm, resume_in: Path | None
) -> int:
    if args.n_timesteps is not None:
        return args.n_timesteps
    if resume_in is None:
        return hyperparams.n_timesteps
    config = yaml.safe_load((resume_in / args.env / "config.yml").read_text(encoding="utf-8"))
    left = int(config["n_timesteps"]) - model.num_timesteps
    if left <= 0:
        raise ValueError(
            f"the run already trained {model.num_timesteps} of its n_timesteps "
            f"{config['n_timesteps']}; pass -n to train more"
        )
    return left


def train(args: argparse.Namespace) -> TrainResult:
    """Trains (or resumes) one run as `args` says; see the module docstring for its outputs.

    Raises:
        ValueError: Bad hyperparameters or env kwargs (named in the message).
        FileNotFoundError: `-i` names no file.
    """
    env_kwargs = parse_key_values(args.env_kwargs)
    preset_config(args.env, **env_kwargs)  # bad env kwargs fail before any folder is made
    overrides = parse_key_values(args.hyperparams)
    if args.n_envs is not None:
        overrides["n_envs"] = args.n_envs
    hyperparams = load_hyperparams(args.algo, args.env, overrides)
    cls = algo_class(args.algo)

    resume_in: Path | None = None
    if args.trained_agent is not None:
        if not args.trained_agent.is_file():
            raise FileNotFoundError(f"-i {args.trained_agent}: no saved model there")
        resume_in = find_run_folder(args.trained_agent, args.env)
    log_path = resume_in or new_run_folder(args.log_folder, args.algo, args.env)
    (log_path / args.env).mkdir(parents=True, exist_ok=True)

    n_envs = hyperparams.n_envs
    # Oversubscribed cores are far slower than idle ones (5x measured on 2 busy cores).
    threads = args.num_threads if args.num_threads > 0 else max(1, (os.cpu_count() or 1) // 2)
    torch.set_num_threads(threads)

    env = make_vec_env(
        args.env,
        env_kwargs,
        n_envs=n_envs,
        seed=args.seed,
        monitor_dir=log_path,
        resume=resume_in is not None,
    )
    eval_env = None
    if args.eval_freq > 0:
        eval_env = make_vec_env(
            args.env,
            env_kwargs,
            n_envs=1,
            seed=args.seed + 10_000,  # evaluation episodes differ from training ones
            monitor_dir=log_path / "eval",
            resume=resume_in is not None,
        )

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
    else:
        model = _new_model(cls, hyperparams, env, args, tensorboard_log)
    n_timesteps = _planned_timesteps(args, hyperparams, model, resume_in)

    config = hyperparams.model_dump()
    args_record = {key: _yaml_ready(value) for key, value in vars(args).items()}
    if resume_in is None:
        config["n_timesteps"] = n_timesteps
        (log_path / args.env / "config.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        (log_path / args.env / "args.yml").write_text(yaml.safe_dump(args_record), encoding="utf-8")
    else:
        with (log_path / args.env / "resumes.yml").open("a", encoding="utf-8") as handle:
            entry = {"from_timestep": model.num_timesteps, "args": args_record, "config": config}
            handle.write(yaml.safe_dump([entry]))

    metrics = EsperMetricsCallback()
    callbacks: list[BaseCallback] = [metrics]
    if eval_env is not None:
        eval_cls: type[EvalCallback] = (
            ResumableMaskableEvalCallback if args.algo in MASKABLE_ALGOS else ResumableEvalCallback
        )
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
        run = _start_wandb(args, env_kwargs, config, log_path, tensorboard_log is not None)
        wandb_callback = WandbCallback(run, metrics, log_scalars=tensorboard_log is None)
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
    )
    _print_summary(args, result, model.num_timesteps - start_timesteps, tensorboard_log, run)
    return result


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
        "--trust-agent": args.trust_agent,
        "--track": args.track,
        "--save-freq": args.save_freq > 0,
    }
    if used := [flag for flag, given in single_only.items() if given]:
        raise ValueError(f"{', '.join(used)}: single-agent only; drop it with --multi-agent")
    agents = parse_agents(args.agents)
    if args.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
    env_kwargs = parse_key_values(args.env_kwargs)
    overrides = parse_key_values(args.hyperparams)
    if args.n_envs is not None:
        overrides["n_envs"] = args.n_envs
    hyperparams = load_hyperparams(args.algo, args.env, overrides)
    cls = algo_class(args.algo)
    n_timesteps = args.n_timesteps if args.n_timesteps is not None else hyperparams.n_timesteps
    stages = args.rounds * len(agents)
    per_stage = n_timesteps // stages
    if per_stage < 1:
        raise ValueError(
            f"-n {n_timesteps} is less than one timestep for each of the {stages} stages "
            f"({args.rounds} rounds x {len(agents)} agents)"
        )
    threads = args.num_threads if args.num_threads > 0 else max(1, (os.cpu_count() or 1) // 2)
    torch.set_num_threads(threads)

    n_envs = hyperparams.n_envs
    # Building the views first makes bad env kwargs fail before any folder is made.
    views = {
        agent: [
            make_agent_view(
                agent, partners="heuristic", seed=args.seed + i, preset=args.env, **env_kwargs
            )
            for i in range(n_envs)
        ]
        for agent in agents
    }
    heuristics = {agent: [dict(view.partners) for view in views[agent]] for agent in agents}
    log_path = new_run_folder(args.log_folder, args.algo, f"{args.env}_multi")
    (log_path / args.env).mkdir(parents=True)
    vec_envs = {
        agent: DummyVecEnv(
            [_monitored(view, log_path / f"{agent}.{i}") for i, view in enumerate(views[agent])]
        )
        for agent in agents
    }
    config = {**hyperparams.model_dump(), "n_timesteps": n_timesteps}
    args_record = {key: _yaml_ready(value) for key, value in vars(args).items()}
    (log_path / args.env / "config.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (log_path / args.env / "args.yml").write_text(yaml.safe_dump(args_record), encoding="utf-8")

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
                models[agent] = _new_model(cls, hyperparams, vec_env, args, tensorboard_log)
            else:
                models[agent].set_env(vec_env)  # restarts the episodes with the new partners
            models[agent].learn(
                total_timesteps=per_stage,
                progress_bar=args.progress,
                reset_num_timesteps=False,
                tb_log_name=f"{log_path.name}_{agent}",
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
        f"{args.env} in {result.wall_seconds:.0f} s",
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


def _start_wandb(
    args: argparse.Namespace,
    env_kwargs: dict[str, Any],
    config: dict[str, Any],
    log_path: Path,
    sync_tensorboard: bool,
) -> Any:
    import wandb  # imported only when tracking: it is slow to import

    mode = wandb_mode()
    run = wandb.init(
        project=args.wandb_project,
        entity=args.wandb_entity,
        name=f"{args.env}__{args.algo}__{args.seed}__{log_path.name}",
        group=f"{args.algo}/{log_path.name}",
        config={
            "env_id": args.env,
            "env_kwargs": env_kwargs,
            "algo": args.algo,
            "seed": args.seed,
            "hyperparams": config,
            "git_commit": git_commit(),
            "log_path": str(log_path),
        },
        sync_tensorboard=sync_tensorboard,
        mode=mode,
    )
    if mode == "offline":
        print(
            "W&B runs offline (no API key, or WANDB_MODE=offline); sync it later with:\n"
            f"  wandb sync {Path(run.dir).parent}"
        )
    return run


def _print_summary(
    args: argparse.Namespace,
    result: TrainResult,
    trained: int,
    tensorboard_log: str | None,
    run: Any,
) -> None:
    log_path = result.log_path
    recent = result.episodes[-20:]
    lines = [
        "",
        "=" * 72,
        f"{'Interrupted' if result.interrupted else 'Finished'}: {args.algo} on {args.env}, "
        f"{trained} timesteps this run ({result.num_timesteps} in total) in "
        f"{result.wall_seconds:.0f} s ({trained / max(result.wall_seconds, 1e-9):.2f} steps/s)",
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
        f"  evaluate     python scripts/evaluate_agent.py --algo {args.algo} --env {args.env} "
        f"--model {result.model_path}"
    )
    if result.interrupted:
        lines.append(
            f"  resume       python scripts/train_agent.py --algo {args.algo} --env {args.env} "
            f"-i {result.model_path}"
        )
    lines.append("=" * 72)
    print("\n".join(lines))


def _new_model(
    cls: type[BaseAlgorithm],
    hyperparams: Hyperparams,
    env: VecEnv,
    args: argparse.Namespace,
    tensorboard_log: str | None,
) -> BaseAlgorithm:
    """A fresh SB3 model of `cls` with the run's hyperparameters, seed, device and logging."""
    model = cls(
        hyperparams.policy,
        env,
        seed=args.seed,
        device=args.device,
        tensorboard_log=tensorboard_log,
        verbose=args.verbose,
        **hyperparams.algo_kwargs(),
    )
    stamp_semantics(model)
    return model


def main(argv: list[str] | None = None) -> TrainResult | MultiAgentTrainResult:
    """Runs the command line: `train`, or `train_multi_agent` with `--multi-agent`.

    The command itself lands in the run's `args.yml` (key `command`): the leaderboard
    records it beside each agent it evaluates.
    """
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["python", "scripts/train_agent.py", *argv])
    if args.multi_agent:
        return train_multi_agent(args)
    if args.shared_policy:
        raise ValueError("--shared-policy applies to --multi-agent only")
    return train(args)


if __name__ == "__main__":
    main()
