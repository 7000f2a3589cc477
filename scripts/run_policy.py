"""Runs a baseline or trained policy on an Esper env and reports each episode.

Example:
    python scripts/run_policy.py --env Esper-CIFAR-Mini-v0 --policy heuristic --episodes 3 --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym

import esper_env  # noqa: F401  (registers the envs)
from agents.cli import parse_key_values
from agents.policies import POLICY_NAMES
from agents.rollout import EpisodeResult, load_policy, run_episode


def main(argv: list[str] | None = None) -> list[EpisodeResult]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    args = parser.parse_args(argv)

    env = gym.make(args.env, **parse_key_values(args.env_kwargs))
    policy = load_policy(args.policy, env, seed=args.seed, deterministic=args.deterministic)
    results = []
    for episode in range(args.episodes):
        result = run_episode(env, policy, seed=args.seed + episode, policy_name=args.policy)
        results.append(result)
        print(
            f"episode {episode} seed {result.seed}: test_acc {result.final_test_accuracy:.4f} "
            f"val_acc {result.final_val_accuracy:.4f} params_added {result.params_added} "
            f"return {result.episode_return:.3f} "
            f"germinated/fossilized/pruned {result.seeds_germinated}/"
            f"{result.seeds_fossilized}/{result.seeds_pruned} ({result.wall_seconds:.1f}s)"
        )
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a", encoding="utf-8") as handle:
                handle.write(result.model_dump_json() + "\n")
    env.close()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
