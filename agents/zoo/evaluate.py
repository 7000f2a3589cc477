"""Evaluates a saved agent on chosen seeds and writes one `EpisodeResult` JSON line per episode.

Example:
    esper-eval --algo recurrent_ppo --env Esper-CIFAR-Mini-v0 \
        -f logs --exp-id 0 --load-best --episodes 5 --seed 1000 --out results.jsonl

The records have the schema of `esper-run` (policy name `ALGO:PATH`), so
trained agents and baselines compare on equal terms. When the model sits in a run folder
of `esper-train`, the env kwargs it was trained with are used unless `--env-kwargs`
is given. The model file is untrusted input: nothing pickled in it is loaded (see
`agents.zoo.safe_load`) unless `--trust-agent` is given, which runs code from it.
Progress bars (stderr, in a terminal) and a line per episode show while it runs;
`--quiet` prints neither, only the summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agents.cli import parse_key_values, run_cli
from agents.progress import QUIET_HELP, Progress
from agents.rollout import EpisodeResult, run_episodes
from agents.zoo.algos import ALGOS
from agents.zoo.envs import make_esper_env
from agents.zoo.policy import load_sb3_policy
from agents.zoo.run_folder import find_run, read_run, run_folder_of
from agents.zoo.safe_load import TRUST_AGENT_HELP
from benchmarks.stats import t_interval


def resolve_model(args: argparse.Namespace) -> Path:
    """The model file: `--model`, else the final or best model of run `--exp-id` under `-f`.

    Raises:
        FileNotFoundError: No such run or model.
        ValueError: Neither `--model` nor `-f` given.
    """
    if args.model is not None:
        return args.model
    if args.folder is None:
        raise ValueError("give --model PATH, or -f LOG_FOLDER (with --exp-id, 0 = latest)")
    run = find_run(args.folder, args.algo, args.env, args.exp_id)
    path = run / ("best_model.zip" if args.load_best else f"{args.env}.zip")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def training_env_kwargs(model_path: Path, env_id: str) -> dict[str, Any] | None:
    """The env kwargs of the run that saved `model_path`, from its `{env}/args.yml` (None: none)."""
    folder = run_folder_of(model_path, env_id)
    return None if folder is None else read_run(folder, env_id).env_kwargs


def main(argv: list[str] | None = None) -> list[EpisodeResult]:
    """Runs the command line; returns the episodes' records."""
    parser = argparse.ArgumentParser(prog="esper-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="recurrent_ppo", choices=sorted(ALGOS))
    parser.add_argument("--env", default="Esper-CIFAR-Mini-v0", help="registered env id")
    parser.add_argument("--model", type=Path, help="saved agent (.zip)")
    parser.add_argument("-f", "--folder", type=Path, help="log folder of esper-train")
    parser.add_argument("--exp-id", type=int, default=0, help="run number (0: the latest)")
    parser.add_argument("--load-best", action="store_true", help="best_model.zip of the run")
    parser.add_argument("--env-kwargs", nargs="*", default=None, metavar="KEY:VALUE")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1000, help="episode i uses seed+i")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--device", default="cpu", help="torch device of the policy")
    parser.add_argument("--out", type=Path, help="append one JSON line per episode to this file")
    parser.add_argument("--trust-agent", action="store_true", help=TRUST_AGENT_HELP)
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    args = parser.parse_args(argv)

    model_path = resolve_model(args)
    if args.env_kwargs is not None:
        env_kwargs = parse_key_values(args.env_kwargs)
    else:
        env_kwargs = training_env_kwargs(model_path, args.env) or {}
        if env_kwargs:
            print(f"env kwargs of the training run: {env_kwargs}")
    env = make_esper_env(args.env, env_kwargs)
    policy = load_sb3_policy(
        args.algo,
        model_path,
        env,
        device=args.device,
        deterministic=args.deterministic,
        trust=args.trust_agent,
    )
    name = f"{args.algo}:{model_path}"
    seeds = range(args.seed, args.seed + args.episodes)
    with Progress(quiet=args.quiet) as progress:
        results = run_episodes(
            env, policy, seeds=seeds, policy_name=name, out=args.out, progress=progress
        )
    env.close()
    returns = t_interval([r.episode_return for r in results])
    tests = t_interval([r.final_test_accuracy for r in results])
    print(
        f"{name} on {args.env}, {len(results)} episodes (mean ± 95% t CI): return "
        f"{returns.plus_minus(digits=3)}, test acc {tests.plus_minus(digits=4)}"
    )
    return results


def cli() -> None:
    """The `esper-eval` console script."""
    run_cli(main, "esper-eval")


if __name__ == "__main__":
    cli()
