"""Does growth pay? A board's policies against noop, beside the world's headroom.

Reads a leaderboard (`benchmarks/leaderboards/<ID>.jsonl`) and a headroom run
(`benchmarks/results/headroom_<ID>.jsonl`, from `benchmarks.headroom`) and writes
`benchmarks/results/growth_<ID>.md`: for each policy, its paired test-accuracy
gain over noop (95% t CI), the share of the headroom (static - bare, paired) it
captures, the parameters it added, and its mean return with every Simic term, so
that a reader sees whether the reward agrees with the evidence.

Usage:
    python -m benchmarks.growth_report --env Esper-CIFAR-Mini-v0
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from benchmarks.headroom import RESULTS_DIR, HeadroomRow
from benchmarks.leaderboard import BOARD_DIR, board_path, mean_ci, paired_differences, read_board


def _shown(path: Path) -> Path:
    """`path` relative to the repository when it lies inside it."""
    root = Path(__file__).resolve().parents[1]
    return path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path


def headroom(rows: list[HeadroomRow], arm: str) -> tuple[float, float, int]:
    """Paired mean and 95% half-width of `arm` - bare test accuracy, and the seeds used."""
    bare = {r.seed: r.final_test_accuracy for r in rows if r.arm == "bare"}
    grown = {r.seed: r.final_test_accuracy for r in rows if r.arm == arm}
    seeds = sorted(set(bare) & set(grown))
    if len(seeds) < 2:
        raise ValueError(f"headroom arm {arm!r} has {len(seeds)} paired seed(s); need >= 2")
    mean, half = mean_ci([grown[s] - bare[s] for s in seeds])
    return mean, half, len(seeds)


def render(env_id: str, board: Path, headroom_file: Path, arm: str) -> str:
    """The Markdown report."""
    entries = read_board(board)
    rows = [HeadroomRow.model_validate_json(line) for line in headroom_file.open() if line.strip()]
    room, room_half, room_n = headroom(rows, arm)
    lines = [
        f"# Does growth pay on {env_id}?",
        "",
        f"Board: `{_shown(board)}`; headroom: `{_shown(headroom_file)}` (arm `{arm}`: the seeds",
        "grafted in from epoch 0). Regenerate: `python -m benchmarks.growth_report "
        f"--env {env_id} --arm {arm}`.",
        "",
        f"Headroom (static {arm} - bare, paired over {room_n} seeds): "
        f"**{100 * room:+.2f} ± {100 * room_half:.2f}** test-accuracy points.",
        "",
        "| policy | seeds | test acc - noop (points, 95% CI) | CI excludes 0 | share of headroom "
        "| params added (% of host) | return | return - noop (95% CI) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    returns = {p: (m, h) for p, _, m, h in paired_differences(entries, "noop", "episode_return")}
    by_policy: dict[str, list] = {}
    for entry in entries:
        by_policy.setdefault(entry.policy, []).append(entry)
    for policy, n, mean, half in paired_differences(entries, "noop"):
        group = by_policy[policy]
        added = statistics.fmean(e.added_param_fraction for e in group)
        ret = statistics.fmean(e.episode_return for e in group)
        ret_mean, ret_half = returns[policy]
        lines.append(
            f"| {policy} | {n} | {100 * mean:+.2f} ± {100 * half:.2f} "
            f"| {'yes' if mean - half > 0 else 'no'} | {100 * mean / room:.0f}% "
            f"| {100 * added:.0f} | {ret:.3f} | {ret_mean:+.3f} ± {ret_half:.3f} |"
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
