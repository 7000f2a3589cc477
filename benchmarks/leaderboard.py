"""Leaderboards: every policy on the same env, the same evaluation seeds and the same metrics.

Three commands (the protocol is `benchmarks/PROTOCOL.md`):

    python -m benchmarks.leaderboard run --env Esper-CIFAR-Mini-v0 \
        --policies noop,random,fixed,heuristic --seeds 10
    python -m benchmarks.leaderboard render --env Esper-CIFAR-Mini-v0
    python -m benchmarks.leaderboard validate --env Esper-CIFAR-Mini-v0

`run` appends one JSON line per finished episode to `<out-dir>/<ID>.jsonl` (an
`EpisodeResult` plus the env kwargs and observation version), so an interrupted
run loses nothing, and a rerun skips every (policy, seed) already recorded:
adding a policy to a board is `run --policies ALGO:PATH` on the same board.
`render` writes `<out-dir>/<ID>.md`, sorted by mean final test accuracy, and two
plots. `validate` replays each recorded action sequence on a fresh env with the
recorded seed and checks that it reproduces the recorded result (CompilerGym's
`validate()`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

import esper_env  # noqa: F401  (registers the envs)
from agents.cli import parse_key_values
from agents.rollout import EpisodeResult, load_policy, run_episode
from benchmarks.machine import cpu_model, fix_threads
from esper_env.envs.presets import ENV_SEMANTICS_VERSION

#: Evaluation seeds start here; training seeds stay below it, so the two never meet.
EVAL_SEED_START = 1000
BOARD_DIR = Path(__file__).parent / "leaderboards"
#: Lifecycle operations marked on the validation curves: marker and colour.
EVENT_STYLE = {
    "germinate": ("^", "tab:green"),
    "fossilize": ("*", "tab:blue"),
    "prune": ("X", "tab:red"),
}
#: Two-sided 95% quantiles of Student's t by degrees of freedom (beyond 30: the next lower key).
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}  # fmt: skip
#: Float fields compared by `validate`, and the integer ones.
_FLOAT_FIELDS = ("final_test_accuracy", "final_val_accuracy", "episode_return")
_INT_FIELDS = ("steps", "params_added", "seeds_germinated", "seeds_fossilized", "seeds_pruned")


class BoardEntry(EpisodeResult):
    """One leaderboard line: an `EpisodeResult` plus what fixes the world it ran in.

    Attributes:
        env_kwargs: Keyword arguments given to `gym.make` on top of the registered preset.
        obs_version: Observation layout version of the env.
        env_semantics_version: `ENV_SEMANTICS_VERSION` of the Esper that ran it.
        torch_threads: torch's CPU thread count during the episode (results depend on it).
        cpu: The CPU model.
    """

    env_kwargs: dict[str, Any]
    obs_version: int
    env_semantics_version: int
    torch_threads: int
    cpu: str


# --- statistics -----------------------------------------------------------------------------


def t_quantile(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df > 120:
        return 1.960
    return _T975[max(k for k in _T975 if k <= df)]


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval (t-based; nan for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


@dataclass(frozen=True)
class PolicyRow:
    """Aggregates of one policy's episodes on a board (accuracies and fractions in 0..1)."""

    policy: str
    episodes: int
    test_accuracy: tuple[float, float]
    val_accuracy: tuple[float, float]
    added_param_fraction: float
    episode_return: tuple[float, float]
    germinated: float
    fossilized: float
    pruned: float
    wall_seconds: float
    devices: tuple[str, ...]
    machines: tuple[str, ...]


def aggregate(entries: Iterable[EpisodeResult]) -> list[PolicyRow]:
    """Groups episodes by policy; rows sorted by mean test accuracy, best first (ties: name)."""
    groups: dict[str, list[EpisodeResult]] = {}
    for entry in entries:
        groups.setdefault(entry.policy, []).append(entry)
    rows = [
        PolicyRow(
            policy=policy,
            episodes=len(group),
            test_accuracy=mean_ci([e.final_test_accuracy for e in group]),
            val_accuracy=mean_ci([e.final_val_accuracy for e in group]),
            added_param_fraction=statistics.fmean(e.added_param_fraction for e in group),
            episode_return=mean_ci([e.episode_return for e in group]),
            germinated=statistics.fmean(e.seeds_germinated for e in group),
            fossilized=statistics.fmean(e.seeds_fossilized for e in group),
            pruned=statistics.fmean(e.seeds_pruned for e in group),
            wall_seconds=statistics.fmean(e.wall_seconds for e in group),
            devices=tuple(sorted({e.device or "?" for e in group})),
            machines=tuple(sorted({e.machine or "?" for e in group})),
        )
        for policy, group in groups.items()
    ]
    return sorted(rows, key=lambda r: (-r.test_accuracy[0], r.policy))


# --- the board file -------------------------------------------------------------------------


def board_path(out_dir: Path, env_id: str) -> Path:
    """The JSON-lines file of `env_id`'s board in `out_dir`."""
    return out_dir / f"{env_id}.jsonl"


def read_board(path: Path) -> list[BoardEntry]:
    """Reads a board's JSON lines (an absent file is an empty board).

    Raises:
        ValueError: A line is not a valid `BoardEntry` (the message names the line).
    """
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{path}:{number} is not JSON: {error}") from error
        version = raw.get("env_semantics_version") if isinstance(raw, dict) else None
        if version != ENV_SEMANTICS_VERSION:
            raise ValueError(
                f"{path}:{number} was recorded under env semantics version "
                f"{version or '1 (unrecorded)'}, this Esper runs version "
                f"{ENV_SEMANTICS_VERSION}: its results measured another world; delete the "
                "board and run it again"
            )
        try:
            entries.append(BoardEntry.model_validate(raw))
        except ValueError as error:
            raise ValueError(f"{path}:{number} is not a leaderboard line: {error}") from error
    return entries


def board_settings(entries: Sequence[BoardEntry], env_id: str) -> tuple[dict[str, Any], int]:
    """The env kwargs and observation version every entry shares.

    Raises:
        ValueError: Entries of another env, or entries disagreeing on kwargs or version.
    """
    if not entries:
        raise ValueError(f"the board of {env_id} has no results yet; run it first")
    foreign = sorted({e.env_id for e in entries} - {env_id})
    if foreign:
        raise ValueError(f"the board of {env_id} holds results of {foreign}")
    kwargs = {json.dumps(e.env_kwargs, sort_keys=True) for e in entries}
    versions = {e.obs_version for e in entries}
    if len(kwargs) > 1 or len(versions) > 1:
        raise ValueError(
            f"the board of {env_id} mixes env kwargs {sorted(kwargs)} or observation versions "
            f"{sorted(versions)}; one board holds one setting (use another --out-dir)"
        )
    return entries[0].env_kwargs, entries[0].obs_version


def machine_description(device: torch.device) -> str:
    """The machine an episode ran on: CPU architecture and count, torch, and the GPU if any."""
    text = f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text


def evaluation_seeds(count: int, first: int = EVAL_SEED_START) -> list[int]:
    """`count` evaluation seeds from `first`, which must not reach below `EVAL_SEED_START`.

    Raises:
        ValueError: `count` < 1 or `first` < `EVAL_SEED_START` (seeds below are training seeds).
    """
    if count < 1:
        raise ValueError(f"--seeds must be >= 1, got {count}")
    if first < EVAL_SEED_START:
        raise ValueError(
            f"evaluation seeds start at {EVAL_SEED_START} (training uses seeds below it); "
            f"got first seed {first}"
        )
    return list(range(first, first + count))


# --- run ------------------------------------------------------------------------------------


def run_board(
    env_id: str,
    policies: Sequence[str],
    seeds: Sequence[int],
    *,
    env_kwargs: dict[str, Any] | None = None,
    out_dir: Path = BOARD_DIR,
    deterministic: bool = True,
) -> list[BoardEntry]:
    """Runs every (policy, seed) not yet on the board, appending each episode as it ends.

    Args:
        env_id: Registered env id.
        policies: Policy specs for `load_policy` (`noop`, `heuristic`, `ALGO:PATH`, ...).
        seeds: Evaluation seeds (>= `EVAL_SEED_START`).
        env_kwargs: `gym.make` keyword arguments; must equal those of the board's entries.
        out_dir: Directory of the board files.
        deterministic: Greedy actions for trained agents.

    Returns:
        The entries this call ran (none when the board was complete).

    Raises:
        ValueError: A seed below `EVAL_SEED_START`, or `env_kwargs` differ from the board's.
    """
    kwargs = dict(env_kwargs or {})
    low = [s for s in seeds if s < EVAL_SEED_START]
    if low:
        raise ValueError(f"seeds {low} are training seeds; evaluation seeds are >= 1000")
    path = board_path(out_dir, env_id)
    existing = read_board(path)
    if existing:
        recorded, _ = board_settings(existing, env_id)
        if recorded != kwargs:
            raise ValueError(
                f"{path} was recorded with env kwargs {recorded}, this run asks for {kwargs}; "
                "pass the same --env-kwargs or use another --out-dir"
            )
    done = {(e.policy, e.seed) for e in existing}
    pending = {p: [s for s in seeds if (p, s) not in done] for p in policies}
    new: list[BoardEntry] = []
    if not any(pending.values()):
        return new
    env = gym.make(env_id, **kwargs)
    world = env.unwrapped.world
    machine = machine_description(world.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for spec, todo in pending.items():
            if not todo:
                continue
            policy = load_policy(spec, env, seed=todo[0], deterministic=deterministic)
            for seed in todo:
                result = run_episode(env, policy, seed=seed, policy_name=spec)
                entry = BoardEntry(
                    **result.model_dump(exclude={"device", "machine"}),
                    device=str(world.device),
                    machine=machine,
                    env_kwargs=kwargs,
                    obs_version=world.config.obs_version,
                    env_semantics_version=ENV_SEMANTICS_VERSION,
                    torch_threads=torch.get_num_threads(),
                    cpu=cpu_model(),
                )
                with path.open("a", encoding="utf-8") as handle:
                    handle.write(entry.model_dump_json() + "\n")
                new.append(entry)
                print(
                    f"{spec} seed {seed}: test_acc {entry.final_test_accuracy:.4f} "
                    f"params_added {entry.params_added} return {entry.episode_return:.3f} "
                    f"({entry.wall_seconds:.1f}s)",
                    flush=True,
                )
    finally:
        env.close()
    return new


# --- render ---------------------------------------------------------------------------------


def _pm(value: tuple[float, float], scale: float = 1.0, digits: int = 2) -> str:
    mean, half = value
    if math.isnan(half):
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * half:.{digits}f}"


TABLE_HEADER = (
    "| rank | policy | episodes | test acc % (95% CI) | val acc % (95% CI) "
    "| params added (% of host) | return (95% CI) | germinated / fossilized / pruned "
    "| wall s / episode | device | machine |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def render_table(entries: Iterable[EpisodeResult]) -> str:
    """The board's Markdown table: one row per policy, best mean test accuracy first."""
    lines = [TABLE_HEADER]
    for rank, r in enumerate(aggregate(entries), start=1):
        lines.append(
            f"| {rank} | {r.policy} | {r.episodes} | {_pm(r.test_accuracy, 100)} "
            f"| {_pm(r.val_accuracy, 100)} | {100 * r.added_param_fraction:.1f} "
            f"| {_pm(r.episode_return)} "
            f"| {r.germinated:.1f} / {r.fossilized:.1f} / {r.pruned:.1f} "
            f"| {r.wall_seconds:.1f} | {', '.join(r.devices)} | {'; '.join(r.machines)} |"
        )
    return "\n".join(lines)


def paired_differences(
    entries: Iterable[EpisodeResult], reference: str, field: str = "final_test_accuracy"
) -> list[tuple[str, int, float, float]]:
    """Each policy minus `reference` on the seeds both ran: (policy, n, mean, 95% CI half-width).

    Policies run on the same evaluation seeds, so the paired difference removes the
    seed-to-seed spread that unpaired intervals carry.
    """
    by_policy: dict[str, dict[int, float]] = {}
    for entry in entries:
        by_policy.setdefault(entry.policy, {})[entry.seed] = float(getattr(entry, field))
    base = by_policy.get(reference, {})
    rows = []
    for policy, values in by_policy.items():
        shared = sorted(set(values) & set(base))
        if policy == reference or len(shared) < 2:
            continue
        mean, half = mean_ci([values[s] - base[s] for s in shared])
        rows.append((policy, len(shared), mean, half))
    return rows


def render_paired(entries: Sequence[EpisodeResult]) -> str:
    """Markdown table of paired differences against noop and against heuristic, where present."""
    lines = [
        "| policy | minus | seeds | test acc (points, 95% CI) | excludes 0 | return (95% CI) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for reference in ("noop", "heuristic"):
        returns = {
            p: (m, h) for p, _, m, h in paired_differences(entries, reference, "episode_return")
        }
        for policy, n, mean, half in paired_differences(entries, reference):
            if policy == "noop":  # noop - heuristic is heuristic - noop negated
                continue
            excludes = "yes" if abs(mean) > half else "no"
            ret_mean, ret_half = returns[policy]
            lines.append(
                f"| {policy} | {reference} | {n} | {100 * mean:+.2f} ± {100 * half:.2f} "
                f"| {excludes} | {ret_mean:+.3f} ± {ret_half:.3f} |"
            )
    return "\n".join(lines)


def env_version(env_id: str) -> str:
    """The `-vN` suffix of an env id, e.g. "v0".

    Raises:
        ValueError: The id has no version suffix.
    """
    match = re.search(r"-(v\d+)$", env_id)
    if match is None:
        raise ValueError(f"env id {env_id!r} has no -vN version suffix")
    return match.group(1)


def _seed_text(seeds: set[int]) -> str:
    ordered = sorted(seeds)
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}–{ordered[-1]}"
    return ", ".join(str(s) for s in ordered)


def render_board(env_id: str, out_dir: Path = BOARD_DIR) -> Path:
    """Writes `<out_dir>/<env_id>.md` and its plots from the board's JSON lines.

    Returns:
        The Markdown file's path.
    """
    entries = read_board(board_path(out_dir, env_id))
    kwargs, obs_version = board_settings(entries, env_id)
    curves, frontier = out_dir / f"{env_id}_curves.png", out_dir / f"{env_id}_frontier.png"
    plot_curves(entries, curves, title=env_id)
    plot_frontier(entries, frontier, title=env_id)
    kwargs_text = f"`{kwargs}`" if kwargs else "none (the registered preset as it is)"
    policies = ",".join(dict.fromkeys(e.policy for e in entries))
    n = max(r.episodes for r in aggregate(entries))
    threads_text = ", ".join(str(t) for t in sorted({e.torch_threads for e in entries}))
    kwargs_flag = ""
    if kwargs:
        pairs = " ".join(f"{key}:{json.dumps(value)}" for key, value in kwargs.items())
        kwargs_flag = f" \\\n    --env-kwargs {pairs}"
    cpu_text = "; ".join(sorted({e.cpu for e in entries}))
    text = f"""# Leaderboard: {env_id}

Env version **{env_version(env_id)}**, observation layout version **{obs_version}**,
env semantics version **{ENV_SEMANTICS_VERSION}** (records of another semantics
version are refused). Torch threads: {threads_text}; CPU: {cpu_text}. Protocol:
[PROTOCOL.md](../PROTOCOL.md). Env kwargs: {kwargs_text}. Evaluation seeds:
{_seed_text({e.seed for e in entries})} (training seeds are below {EVAL_SEED_START}).

Reproduce, resume or extend (a run skips the episodes already recorded here):

```bash
python -m benchmarks.leaderboard run --env {env_id} --policies {policies} \\
    --seeds {n} --threads {threads_text}{kwargs_flag}
python -m benchmarks.leaderboard validate --env {env_id}
```

Sorted by mean final test accuracy. ± is the half-width of the 95% confidence
interval of the mean (Student's t over episodes). Params added: mean over
episodes of the parameters seeds added, live or fossilized, as % of the bare
host's. Seed counts are means per episode.

{render_table(entries)}

Paired differences: each policy minus the reference on the same evaluation seeds,
mean ± half-width of the 95% t interval of the per-seed differences (the honest
comparison, since every policy sees the same seeds):

{render_paired(entries)}

Validation accuracy per epoch (thin: episodes; thick: their mean), with the
policy's lifecycle operations marked:

![validation curves]({curves.name})

The growth frontier: final test accuracy against parameters added, one point per
episode; the line joins the episodes no other beats on both.

![frontier]({frontier.name})
"""
    path = out_dir / f"{env_id}.md"
    path.write_text(text, encoding="utf-8")
    return path


def _short(policy: str) -> str:
    algo, sep, location = policy.partition(":")
    return f"{algo}:{Path(location).name}" if sep else policy


def plot_curves(entries: Sequence[EpisodeResult], path: Path, *, title: str) -> None:
    """Validation-accuracy curves, one panel per policy, lifecycle events marked."""
    rows = aggregate(entries)
    columns = min(3, len(rows))
    n_rows = math.ceil(len(rows) / columns)
    figure = Figure(figsize=(4.5 * columns, 3.4 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, row in zip(axes, rows, strict=False):
        group = [e for e in entries if e.policy == row.policy]
        for episode in group:
            epochs = np.arange(1, len(episode.val_accuracy_curve) + 1)
            ax.plot(epochs, episode.val_accuracy_curve, color="0.6", linewidth=0.7)
            for mark in episode.lifecycle:
                if mark.op in EVENT_STYLE and 1 <= mark.epoch <= len(epochs):
                    marker, colour = EVENT_STYLE[mark.op]
                    y = episode.val_accuracy_curve[mark.epoch - 1]
                    ax.scatter(mark.epoch, y, marker=marker, color=colour, s=36, zorder=3)
        length = min(len(e.val_accuracy_curve) for e in group)
        if length:
            mean = np.mean([e.val_accuracy_curve[:length] for e in group], axis=0)
            ax.plot(np.arange(1, length + 1), mean, color="black", linewidth=2.0)
        ax.set_title(f"{_short(row.policy)} (n={row.episodes})")
        ax.grid(alpha=0.3)
    for ax in axes[len(rows) :]:
        ax.set_visible(False)
    for ax in axes[: len(rows)]:
        ax.set_xlabel("epoch (operations are marked on the epoch they preceded)")
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[::columns]:
        ax.set_ylabel("validation accuracy")
    handles = [
        Line2D([], [], marker=m, color=c, linestyle="", label=op)
        for op, (m, c) in EVENT_STYLE.items()
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    figure.suptitle(f"{title}: validation accuracy")
    figure.savefig(path, dpi=110)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other beats with fewer-or-equal x and higher-or-equal y, by x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def plot_frontier(entries: Sequence[EpisodeResult], path: Path, *, title: str) -> None:
    """Final test accuracy against parameters added (% of host), one point per episode."""
    figure = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = figure.subplots()
    markers = "osD^vP*X<>"
    points = []
    for index, row in enumerate(aggregate(entries)):
        group = [e for e in entries if e.policy == row.policy]
        xs = [100 * e.added_param_fraction for e in group]
        ys = [100 * e.final_test_accuracy for e in group]
        points += list(zip(xs, ys, strict=True))
        ax.scatter(
            xs, ys, marker=markers[index % len(markers)], alpha=0.75, label=_short(row.policy)
        )
    front = pareto_front(points)
    # Carry the best accuracy on to the largest growth, so a one-point frontier shows too.
    front.append((max(x for x, _ in points), front[-1][1]))
    ax.step(*zip(*front, strict=True), where="post", color="black", linewidth=1, label="frontier")
    ax.set_xlabel("parameters added (% of host)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(f"{title}: growth frontier")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.savefig(path, dpi=110)


# --- validate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """Outcome of replaying one recorded episode: empty `mismatches` means it reproduced."""

    policy: str
    seed: int
    mismatches: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether the replay reproduced every checked field."""
        return not self.mismatches


def replay(env: gym.Env, entry: EpisodeResult, tolerance: float = 1e-6) -> Validation:
    """Replays `entry.actions` from `reset(seed=entry.seed)` and compares the outcome.

    Checks the episode ends exactly after the last action, and the final test and
    validation accuracies, return, steps, parameters added, seed counts and the
    validation curve (floats within `tolerance`).
    """
    if not entry.actions:
        return Validation(entry.policy, entry.seed, ("no recorded actions to replay",))
    problems: list[str] = []
    _, info = env.reset(seed=entry.seed)
    total, curve, done, steps = 0.0, [], False, 0
    for action in entry.actions:
        if done:
            problems.append(f"episode ended after {steps} of {len(entry.actions)} actions")
            break
        _, reward, terminated, truncated, info = env.step(np.asarray(action, dtype=np.int64))
        steps += 1
        total += float(reward)
        curve.append(info["val_accuracy"])
        done = terminated or truncated
    if not done:
        return Validation(
            entry.policy, entry.seed, (f"episode still running after {steps} actions",)
        )
    replayed = {
        "final_test_accuracy": info["final_test_accuracy"],
        "final_val_accuracy": info["final_val_accuracy"],
        "episode_return": total,
        "steps": steps,
        "params_added": info["params_added"],
        "seeds_germinated": info["seeds_germinated"],
        "seeds_fossilized": info["seeds_fossilized"],
        "seeds_pruned": info["seeds_pruned"],
    }
    for name in _FLOAT_FIELDS:
        if not math.isclose(replayed[name], getattr(entry, name), rel_tol=0, abs_tol=tolerance):
            problems.append(f"{name}: recorded {getattr(entry, name)}, replayed {replayed[name]}")
    for name in _INT_FIELDS:
        if replayed[name] != getattr(entry, name):
            problems.append(f"{name}: recorded {getattr(entry, name)}, replayed {replayed[name]}")
    if len(curve) != len(entry.val_accuracy_curve) or not np.allclose(
        curve, entry.val_accuracy_curve, rtol=0, atol=tolerance
    ):
        problems.append("val_accuracy_curve differs")
    return Validation(entry.policy, entry.seed, tuple(problems))


def validate_board(
    env_id: str,
    out_dir: Path = BOARD_DIR,
    *,
    policy: str | None = None,
    seeds: Sequence[int] | None = None,
    tolerance: float = 1e-6,
) -> list[Validation]:
    """Replays the board's episodes (optionally one policy's, or some seeds) and checks them."""
    entries = read_board(board_path(out_dir, env_id))
    kwargs, _ = board_settings(entries, env_id)
    chosen = [
        e
        for e in entries
        if (policy is None or e.policy == policy) and (seeds is None or e.seed in seeds)
    ]
    if not chosen:
        raise ValueError(f"no episodes of {env_id} match policy={policy!r} seeds={seeds}")
    env = gym.make(env_id, **kwargs)
    try:
        return [replay(env, entry, tolerance) for entry in chosen]
    finally:
        env.close()


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run or resume a board")
    run.add_argument("--env", required=True, help="registered env id")
    run.add_argument(
        "--policies", required=True, help="comma-separated: noop,random,fixed,heuristic,ALGO:PATH"
    )
    run.add_argument("--seeds", type=int, default=10, help="evaluation episodes per policy")
    run.add_argument("--first-seed", type=int, default=EVAL_SEED_START)
    run.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    run.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True)
    run.add_argument("--threads", type=int, default=2, help="torch CPU threads (recorded)")
    run.add_argument(
        "--render", action=argparse.BooleanOptionalAction, default=True, help="render afterwards"
    )
    show = commands.add_parser("render", help="write the board's Markdown table and plots")
    check = commands.add_parser("validate", help="replay recorded episodes and check them")
    check.add_argument("--policy", help="only this policy's episodes")
    check.add_argument("--seed", type=int, nargs="*", help="only these seeds")
    check.add_argument("--tolerance", type=float, default=1e-6)
    for sub in (show, check):
        sub.add_argument("--env", required=True, help="registered env id")
    for sub in (run, show, check):
        sub.add_argument("--out-dir", type=Path, default=BOARD_DIR)
    args = parser.parse_args(argv)

    if args.command == "run":
        fix_threads(args.threads)
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        run_board(
            args.env,
            policies,
            evaluation_seeds(args.seeds, args.first_seed),
            env_kwargs=parse_key_values(args.env_kwargs),
            out_dir=args.out_dir,
            deterministic=args.deterministic,
        )
        if args.render:
            print(f"wrote {render_board(args.env, args.out_dir)}")
        return 0
    if args.command == "render":
        print(f"wrote {render_board(args.env, args.out_dir)}")
        return 0
    results = validate_board(
        args.env, args.out_dir, policy=args.policy, seeds=args.seed, tolerance=args.tolerance
    )
    for result in results:
        verdict = "ok" if result.ok else "MISMATCH: " + "; ".join(result.mismatches)
        print(f"{result.policy} seed {result.seed}: {verdict}")
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed}/{len(results)} episodes reproduced")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
