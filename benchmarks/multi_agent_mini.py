"""Multi-agent Mini benchmark: the three heuristics together against HeuristicTamiyo alone.

On the multi-agent env over `Esper-CIFAR-Mini-v0` (real CIFAR-10 subset, mini
host, 12 epochs), for each seed, two episodes on the same env: the team
(`PoolTamiyo`, `HeuristicEmrakul`, `HeuristicKarn`) and HeuristicTamiyo with
Emrakul and Karn always waiting. Reports final test accuracy, final parameters
(bare host plus seeds), and wall seconds, per seed and as means with 95% t
intervals, the team's paired test-accuracy difference from Tamiyo alone with
its probability of improvement (`benchmarks.stats`), plus what Emrakul and
Karn did. The report is rewritten after every episode, so an
interrupted run still leaves its finished episodes.

Usage:
    ESPER_DATA_DIR=../shared/datasets python benchmarks/multi_agent_mini.py \
        --seeds 0 1 2 --out benchmarks/results/multi_agent_mini.md
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from agents.cli import parse_key_values
from agents.multi_agent_policies import (
    TeamEpisodeResult,
    heuristic_team,
    run_team_episode,
    tamiyo_alone,
)
from benchmarks.robust_stats import probability_of_improvement
from benchmarks.stats import paired_difference, t_interval
from esper_env.envs.multi_agent import EsperMultiAgentEnv

PRESET = "Esper-CIFAR-Mini-v0"
TEAMS = ("heuristic team", "tamiyo alone")


def render(
    results: list[TeamEpisodeResult], command: str, header: str, elapsed: float, planned: int
) -> str:
    """The markdown report of the episodes run so far."""
    lines = [
        "# Multi-agent Mini: heuristic team vs HeuristicTamiyo alone",
        "",
        f"Command: `{command}`",
        "",
        header,
        "",
        f"Episodes: {len(results)} of {planned}; wall time of the run so far: {elapsed:.0f} s.",
        "",
        "| team | seed | final test acc | final val acc | final params | params added | "
        "seconds | lysed | designs accepted / rejected | seeds from Karn |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.team} | {r.seed} | {r.final_test_accuracy:.3f} | {r.final_val_accuracy:.3f} | "
            f"{r.params} | {r.params_added} | {r.wall_seconds:.1f} | {r.seeds_lysed} | "
            f"{r.designs_accepted} / {r.designs_rejected} | {r.karn_seeds} |"
        )
    lines += [
        "",
        "Means over seeds (± half-width of the 95% t interval):",
        "",
        "| team | episodes | final test acc | final params | seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for team in TEAMS:
        mine = [r for r in results if r.team == team]
        if mine:
            lines.append(
                f"| {team} | {len(mine)} "
                f"| {t_interval([r.final_test_accuracy for r in mine]).plus_minus(digits=3)} "
                f"| {t_interval([float(r.params) for r in mine]).plus_minus(digits=0)} "
                f"| {t_interval([r.wall_seconds for r in mine]).plus_minus(digits=1)} |"
            )
    together, alone = (
        {r.seed: r.final_test_accuracy for r in results if r.team == name} for name in TEAMS
    )
    paired = paired_difference(together, alone)
    if paired is not None:
        chance = probability_of_improvement(
            [together[s] for s in paired.seeds], [alone[s] for s in paired.seeds]
        )
        lines += [
            "",
            f"Heuristic team - Tamiyo alone, final test acc on the same {len(paired.seeds)} "
            f"seeds: {paired.difference.plus_minus(digits=3, signed=True)} (95% paired t "
            f"interval); P(team > alone) {chance.bounds()} (95% bootstrap interval).",
        ]
    lines += ["", "Successful operations of the team (epoch, agent, op, slot or parent):", ""]
    for r in results:
        if r.team == TEAMS[0]:
            lines.append(f"- seed {r.seed}: " + "; ".join(r.events))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python " + shlex.join(["benchmarks/multi_agent_mini.py", *sys.argv[1:]])
    env = EsperMultiAgentEnv(preset=PRESET, **parse_key_values(args.env_kwargs))
    header = (
        f"Env: multi-agent over `{PRESET}` ({env.config.episode_epochs} epochs, host "
        f"`{env.config.host}`, {env.config.train_per_class} train / {env.config.val_per_class} "
        f"val / {env.config.test_per_class} test images per class), {env.team.karn_places} Karn "
        f"places. Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, device {env.world.device}. Other processes may share "
        "the CPUs, so seconds are indicative. Final params = bare host "
        f"({env.world.base_params}) + seeds, live and fossilized."
    )
    results: list[TeamEpisodeResult] = []
    start = time.perf_counter()
    text = ""
    for seed in args.seeds:
        for team in TEAMS:
            policies = heuristic_team(env, seed=seed) if team == TEAMS[0] else tamiyo_alone(env)
            results.append(run_team_episode(env, policies, seed=seed, team=team))
            text = render(
                results, command, header, time.perf_counter() - start, 2 * len(args.seeds)
            )
            if args.out is not None:
                args.out.write_text(text)
    env.close()
    print(text, end="")


if __name__ == "__main__":
    main()
