"""Runs a baseline or trained policy on an Esper env and reports each episode.

Example:
    esper-run --env Esper-CIFAR-Mini-v0 --policy heuristic --episodes 3 --seed 0

While it runs, progress bars (on stderr, in a terminal) show the episodes done and each
episode's steps with its latest validation accuracy; after each episode come its line
and a table of its steps (epoch, action, transition, validation accuracy, reward).
`--quiet` prints neither (results still go to `--out`). With `--telemetry-dir DIR`, the
env writes its telemetry there, for `esper-watch DIR` to follow live.

A trained agent (`--policy ALGO:PATH`) is untrusted input: nothing pickled in its file is
loaded (see `agents.zoo.safe_load`) unless `--trust-agent` is given, which runs code from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym

import esper_env  # noqa: F401  (registers the envs)
from agents.cli import parse_key_values, run_cli
from agents.policies import POLICY_NAMES
from agents.progress import QUIET_HELP, Progress
from agents.rollout import EpisodeResult, load_policy, run_episodes
from agents.zoo.safe_load import TRUST_AGENT_HELP


def main(argv: list[str] | None = None) -> list[EpisodeResult]:
    """Runs the command line; returns the episodes' records."""
    parser = argparse.ArgumentParser(prog="esper-run", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Esper-CIFAR-Mini-v0", help="registered env id")
    parser.add_argument(
        "--policy",
        default="heuristic",
        help=f"one of {POLICY_NAMES}, or ALGO:PATH",
    )
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="episode i uses seed+i")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    parser.add_argument(
        "--telemetry-dir",
        type=Path,
        metavar="DIR",
        help="write the env's telemetry to DIR (--env-kwargs telemetry_dir:DIR); "
        "watch it with esper-watch DIR",
    )
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, help="append one JSON line per episode to this file")
    parser.add_argument(
        "--trust-agent", action="store_true", help=f"for ALGO:PATH: {TRUST_AGENT_HELP}"
    )
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    args = parser.parse_args(argv)

    env_kwargs = parse_key_values(args.env_kwargs)
    if args.telemetry_dir is not None:
        if "telemetry_dir" in env_kwargs:
            parser.error("give --telemetry-dir or --env-kwargs telemetry_dir:DIR, not both")
        env_kwargs["telemetry_dir"] = str(args.telemetry_dir)
    env = gym.make(args.env, **env_kwargs)
    policy = load_policy(
        args.policy,
        env,
        seed=args.seed,
        deterministic=args.deterministic,
        trust=args.trust_agent,
    )
    seeds = range(args.seed, args.seed + args.episodes)
    with Progress(quiet=args.quiet) as progress:
        results = run_episodes(
            env,
            policy,
            seeds=seeds,
            policy_name=args.policy,
            out=args.out,
            progress=progress,
            step_tables=True,
        )
    env.close()
    return results


def cli() -> None:
    """The `esper-run` console script."""
    run_cli(main, "esper-run")


if __name__ == "__main__":
    cli()
