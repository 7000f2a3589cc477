"""Runs a baseline or trained policy on an Esper env and reports each episode.

Example:
    esper-run --env Esper-CIFAR-Mini-v0 --policy heuristic --episodes 3 --seed 0

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
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, help="append one JSON line per episode to this file")
    parser.add_argument(
        "--trust-agent", action="store_true", help=f"for ALGO:PATH: {TRUST_AGENT_HELP}"
    )
    args = parser.parse_args(argv)

    env = gym.make(args.env, **parse_key_values(args.env_kwargs))
    policy = load_policy(
        args.policy,
        env,
        seed=args.seed,
        deterministic=args.deterministic,
        trust=args.trust_agent,
    )
    seeds = range(args.seed, args.seed + args.episodes)
    results = run_episodes(env, policy, seeds=seeds, policy_name=args.policy, out=args.out)
    env.close()
    return results


def cli() -> None:
    """The `esper-run` console script."""
    run_cli(main, "esper-run")


if __name__ == "__main__":
    cli()
