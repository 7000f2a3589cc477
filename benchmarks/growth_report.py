"""Does growth pay? A board's policies against noop, beside the world's headroom.

Reads a leaderboard (`benchmarks/leaderboards/<ID>.jsonl`) and a headroom run
(`benchmarks/results/headroom_<ID>.jsonl`, from `benchmarks.headroom`) and writes
`benchmarks/results/growth_<ID>.md`: for each policy, its paired test-accuracy
gain over noop (95% t CI) and its probability of improvement over noop, the
share of the headroom (static - bare, paired) it captures, the parameters it
added, and its mean return with every Simic term, so that a reader sees whether
the reward agrees with the evidence. The statistics are `benchmarks.stats`'.

Usage:
    python -m benchmarks.growth_report --env Esper-CIFAR-Mini-v0
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from benchmarks.headroom import RESULTS_DIR, HeadroomRow, read_rows
from benchmarks.leaderboard import BOARD_DIR, board_path, by_seed, paired_differences, read_board
from benchmarks.robust_stats import probability_of_improvement
from benchmarks.stats import PairedDifference, paired_difference


def _shown(path: Path) -> Path:
    """`path` relative to the repository when it lies inside it."""
    root = Path(__file__).resolve().parents[1]
    return path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path


def headroom(rows: list[HeadroomRow], arm: str) -> PairedDifference:
    """`arm` - bare test accuracy, paired over the seeds both ran, with its 95% t interval.

    Raises:
        ValueError: Fewer than two seeds ran both arms.
    """
    bare = {r.seed: r.final_test_accuracy for r in rows if r.arm == "bare"}
    grown = {r.seed: r.final_test_accuracy for r in rows if r.arm == arm}
    paired = paired_difference(grown, bare)
    if paired is None:
        shared = len(set(bare) & set(grown))
        raise ValueError(f"headroom arm {arm!r} has {shared} paired seed(s); need >= 2")
    return paired


def render(env_id: str, board: Path, headroom_file: Path, arm: str) -> str:
    """The Markdown report."""
    entries = read_board(board)
    rows = read_rows(headroom_file)
    room = headroom(rows, arm)
    lines = [
        f"# Does growth pay on {env_id}?",
        "",
        f"Board: `{_shown(board)}`; headroom: `{_shown(headroom_file)}` (arm `{arm}`: the seeds",
        "grafted in from epoch 0). Regenerate: `python -m benchmarks.growth_report "
        f"--env {env_id} --arm {arm}`.",
        "",
        f"Headroom (static {arm} - bare, paired over {len(room.seeds)} seeds): "
        f"**{room.difference.plus_minus(100, signed=True)}** test-accuracy points.",
        "",
        "Test acc - noop and return - noop: mean per-seed difference ± its 95% paired t CI;",
        "P(> noop): the probability of improvement in test accuracy with its 95% bootstrap CI.",
        "",
        "| policy | seeds | test acc - noop (points, 95% CI) | CI excludes 0 "
        "| P(> noop) (95% CI) | share of headroom | params added (% of host) | return "
        "| return - noop (95% CI) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    tests = by_seed(entries, "final_test_accuracy")
    returns = paired_differences(entries, "noop", "episode_return")
    by_policy: dict[str, list] = {}
    for entry in entries:
        by_policy.setdefault(entry.policy, []).append(entry)
    for policy, paired in paired_differences(entries, "noop").items():
        gain = paired.difference
        chance = probability_of_improvement(
            [tests[policy][s] for s in paired.seeds], [tests["noop"][s] for s in paired.seeds]
        )
        group = by_policy[policy]
        added = statistics.fmean(e.added_param_fraction for e in group)
        ret = statistics.fmean(e.episode_return for e in group)
        lines.append(
            f"| {policy} | {len(paired.seeds)} | {gain.plus_minus(100, signed=True)} "
            f"| {'yes' if gain.excludes(0) else 'no'} | {chance.bounds()} "
            f"| {100 * gain.estimate / room.difference.estimate:.0f}% "
            f"| {100 * added:.0f} | {ret:.3f} "
            f"| {returns[policy].difference.plus_minus(digits=3, signed=True)} |"
        )
    terms = sorted({t for e in entries for t in e.reward_terms})
    lines += [
        "",
        "Mean return per policy, term by term (the Simic terms sum to the return):",
        "",
        "| policy | " + " | ".join(terms) + " | return |",
        "| --- | " + " | ".join("---" for _ in terms) + " | --- |",
    ]
    for policy, group in by_policy.items():
        cells = [
            f"{statistics.fmean(e.reward_terms.get(t, 0.0) for e in group):+.3f}" for t in terms
        ]
        ret = statistics.fmean(e.episode_return for e in group)
        lines.append(f"| {policy} | " + " | ".join(cells) + f" | {ret:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Esper-CIFAR-Mini-v0")
    parser.add_argument("--arm", default="all3", help="headroom arm to compare with")
    parser.add_argument("--board-dir", type=Path, default=BOARD_DIR)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    board = board_path(args.board_dir, args.env)
    headroom_file = args.results_dir / f"headroom_{args.env}.jsonl"
    out = args.results_dir / f"growth_{args.env}.md"
    out.write_text(render(args.env, board, headroom_file, args.arm), encoding="utf-8")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
