"""RecurrentPPO on Esper-CIFAR-Mini-v0: learning curve and held-out evaluation against baselines.

Reads a finished (or interrupted) run of `esper-train`, plots its learning
curve (training episode return and final validation accuracy against timesteps, with
the periodic evaluations), evaluates its final and best models on held-out seeds with
`scripts/evaluate_agent.py`, and NoOp and RandomMasked on the same seeds with
`scripts/run_policy.py`, then writes a markdown summary (means with 95% t
intervals, paired differences from NoOp and probabilities of improvement over
it: `benchmarks.stats`).

Usage (the run itself, then this report):
    ESPER_DATA_DIR=../shared/datasets esper-train --algo recurrent_ppo \
        --env Esper-CIFAR-Mini-v0 -n 3840 --seed 0 -f logs/bench --eval-freq 960 \
        --eval-episodes 3 --save-freq 960 --device cpu --num-threads 1 --no-progress
    ESPER_DATA_DIR=../shared/datasets python -m benchmarks.recurrent_ppo_mini \
        --run logs/bench/recurrent_ppo/Esper-CIFAR-Mini-v0_1 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agents.extras import require_extra
from agents.rollout import EpisodeResult
from agents.run import main as run_policy
from agents.zoo.evaluate import main as evaluate_agent
from benchmarks.robust_stats import probability_of_improvement
from benchmarks.stats import paired_difference, t_interval

require_extra("matplotlib", "benchmarks.recurrent_ppo_mini")
import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

ENV_ID = "Esper-CIFAR-Mini-v0"
NAME = "recurrent_ppo_mini"


def read_monitor(path: Path) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """The JSON header and the rows of an SB3 `monitor.csv`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0].lstrip("#"))
    rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(lines[1:])]
    return header, rows


def rolling(values: list[float], window: int) -> np.ndarray:
    """Trailing mean over `window` values (shorter at the start)."""
    array = np.asarray(values, dtype=float)
    sums = np.cumsum(np.insert(array, 0, 0.0))
    counts = np.minimum(np.arange(1, len(array) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(array) + 1) - counts]) / counts


def plot_curve(run: Path, baselines: dict[str, list[EpisodeResult]], out: Path) -> None:
    """Plots return and final validation accuracy against timesteps into `out` (PNG)."""
    _, train = read_monitor(run / "0.monitor.csv")
    steps = np.cumsum([row["l"] for row in train])
    fig, (ax_return, ax_acc) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    returns = [row["r"] for row in train]
    accs = [row["final_val_accuracy"] for row in train]
    ax_return.plot(steps, returns, ".", alpha=0.25, color="C0", label="training episode")
    ax_return.plot(steps, rolling(returns, 20), color="C0", label="mean of last 20")
    ax_acc.plot(steps, accs, ".", alpha=0.25, color="C1", label="training episode")
    ax_acc.plot(steps, rolling(accs, 20), color="C1", label="mean of last 20")
    if (run / "evaluations.npz").exists():
        evaluations = np.load(run / "evaluations.npz")
        ax_return.errorbar(
            evaluations["timesteps"],
            evaluations["results"].mean(axis=1),
            yerr=[t_interval(returns).half_width for returns in evaluations["results"]],
            fmt="s",
            color="C3",
            label="evaluation (deterministic, 95% t CI)",
        )
        _, evals = read_monitor(run / "eval" / "0.monitor.csv")
        per_eval = len(evals) // max(len(evaluations["timesteps"]), 1)
        if per_eval:
            eval_acc = [
                statistics.mean(r["final_val_accuracy"] for r in evals[i : i + per_eval])
                for i in range(0, per_eval * len(evaluations["timesteps"]), per_eval)
            ]
            ax_acc.plot(evaluations["timesteps"], eval_acc, "s", color="C3", label="evaluation")
    for (name, results), color in zip(baselines.items(), ["C2", "C7"], strict=False):
        ax_return.axhline(
            statistics.mean(r.episode_return for r in results),
            ls="--",
            color=color,
            label=f"{name} (held-out seeds)",
        )
        ax_acc.axhline(
            statistics.mean(r.final_val_accuracy for r in results),
            ls="--",
            color=color,
            label=f"{name} (held-out seeds)",
        )
    ax_return.set_ylabel("episode return")
    ax_acc.set_ylabel("final validation accuracy")
    ax_acc.set_xlabel("timesteps")
    ax_return.legend(fontsize=7)
    ax_acc.legend(fontsize=7)
    ax_return.set_title(f"RecurrentPPO on {ENV_ID}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def evaluate(
    run: Path, jsonl: Path, seed: int, episodes: int, env_kwargs: list[str]
) -> dict[str, list[EpisodeResult]]:
    """Runs the agent's final and best models, NoOp and RandomMasked on the same seeds."""
    jsonl.unlink(missing_ok=True)
    common = ["--env", ENV_ID, "--episodes", str(episodes), "--seed", str(seed)]
    common += ["--env-kwargs", *env_kwargs]
    results = {
        "recurrent_ppo (final)": evaluate_agent(
            [
                "--algo",
                "recurrent_ppo",
                "--model",
                str(run / f"{ENV_ID}.zip"),
                *common,
                "--out",
                str(jsonl),
            ]
        )
    }
    if (run / "best_model.zip").exists():
        results["recurrent_ppo (best)"] = evaluate_agent(
            [
                "--algo",
                "recurrent_ppo",
                "--model",
                str(run / "best_model.zip"),
                *common,
                "--out",
                str(jsonl),
            ]
        )
    results["noop"] = run_policy(["--policy", "noop", *common, "--out", str(jsonl)])
    results["random"] = run_policy(["--policy", "random", *common, "--out", str(jsonl)])
    return results


def _mean_ci(values: list[float]) -> str:
    return t_interval(values).plus_minus(digits=3)


def _against_noop(episodes: list[EpisodeResult], noop: list[EpisodeResult]) -> str:
    """Paired test-accuracy difference from noop and P(test acc > noop), as two table cells."""
    mine = {e.seed: e.final_test_accuracy for e in episodes}
    base = {e.seed: e.final_test_accuracy for e in noop}
    paired = None if episodes is noop else paired_difference(mine, base)
    if paired is None:
        return "- | -"
    chance = probability_of_improvement(
        [mine[s] for s in paired.seeds], [base[s] for s in paired.seeds]
    )
    return f"{paired.difference.plus_minus(digits=3, signed=True)} | {chance.bounds()}"


def report(run: Path, results: dict[str, list[EpisodeResult]], png: Path, jsonl: Path) -> str:
    """The markdown summary of the run and the evaluation."""
    _, train = read_monitor(run / "0.monitor.csv")
    config = yaml.safe_load((run / ENV_ID / "config.yml").read_text(encoding="utf-8"))
    args = yaml.safe_load((run / ENV_ID / "args.yml").read_text(encoding="utf-8"))
    steps = int(sum(row["l"] for row in train))
    rollout = config["n_steps"] * config["n_envs"]
    wall = train[-1]["t"]
    first, last = train[:20], train[-20:]
    seeds = sorted({r.seed for r in next(iter(results.values()))})
    lines = [
        f"# RecurrentPPO on {ENV_ID} (issue 6)",
        "",
        "Training command (2-core CPU shared with two other jobs, real CIFAR-10):",
        "",
        "```",
        f"ESPER_DATA_DIR=../shared/datasets {args['command']}",
        f"python -m benchmarks.{NAME} --run {run} --out benchmarks/results",
        "```",
        "",
        f"- Trained {steps} timesteps ({len(train)} episodes, "
        f"{steps // rollout} PPO updates of {rollout} steps) in **{wall / 60:.1f} min** wall "
        f"time ({steps / wall:.2f} env steps/s, PPO updates included).",
        f"- Hyperparameters (`agents/hyperparams/recurrent_ppo.yml`): n_steps "
        f"{config['n_steps']}, batch_size {config['batch_size']}, n_epochs {config['n_epochs']}, "
        f"learning_rate {config['learning_rate']}, ent_coef {config['ent_coef']}, "
        f"LSTM {config['policy_kwargs']['lstm_hidden_size']}, net_arch "
        f"{config['policy_kwargs']['net_arch']}.",
        f"- Training episodes, first 20 vs last 20 (mean ± 95% t CI): return "
        f"{_mean_ci([r['r'] for r in first])} -> {_mean_ci([r['r'] for r in last])}; "
        f"final val acc {_mean_ci([r['final_val_accuracy'] for r in first])} -> "
        f"{_mean_ci([r['final_val_accuracy'] for r in last])}; seeds germinated per episode "
        f"{statistics.mean(r['seeds_germinated'] for r in first):.2f} -> "
        f"{statistics.mean(r['seeds_germinated'] for r in last):.2f}; refused actions "
        f"{statistics.mean(r['refused_actions'] for r in first):.2f} -> "
        f"{statistics.mean(r['refused_actions'] for r in last):.2f}.",
        "",
        f"![learning curve]({png.name})",
        "",
        f"## Held-out evaluation: seeds {seeds[0]}-{seeds[-1]} (deterministic agent)",
        "",
        f"Per-episode records (`EpisodeResult` JSON lines): `{jsonl.name}`. Means ± 95% t CI;",
        "test acc - noop: the mean per-seed difference ± its 95% paired t CI; P(> noop): the",
        "probability of improvement in test accuracy with its 95% bootstrap CI.",
        "",
        "| policy | return | final test acc | final val acc | test acc - noop | P(> noop) "
        "| params added | germinated / fossilized / pruned | refused actions | s / step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, episodes in results.items():
        lines.append(
            f"| {name} | {_mean_ci([e.episode_return for e in episodes])} "
            f"| {_mean_ci([e.final_test_accuracy for e in episodes])} "
            f"| {_mean_ci([e.final_val_accuracy for e in episodes])} "
            f"| {_against_noop(episodes, results['noop'])} "
            f"| {statistics.mean(e.params_added for e in episodes):.0f} "
            f"| {statistics.mean(e.seeds_germinated for e in episodes):.1f} / "
            f"{statistics.mean(e.seeds_fossilized for e in episodes):.1f} / "
            f"{statistics.mean(e.seeds_pruned for e in episodes):.1f} "
            f"| {statistics.mean(e.refused_actions for e in episodes):.1f} "
            f"| {sum(e.wall_seconds for e in episodes) / sum(e.steps for e in episodes):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder of esper-train")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--seed", type=int, default=1000, help="first held-out seed")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / f"{NAME}_eval.jsonl"
    png = args.out / f"{NAME}.png"
    results = evaluate(args.run, jsonl, args.seed, args.episodes, args.env_kwargs)
    baselines = {name: results[name] for name in ("noop", "random")}
    plot_curve(args.run, baselines, png)
    text = report(args.run, results, png, jsonl)
    (args.out / f"{NAME}.md").write_text(text, encoding="utf-8")
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
