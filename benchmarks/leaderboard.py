"""Leaderboards: every policy on the same env, the same evaluation seeds and the same metrics.

Four commands (the protocol is `benchmarks/PROTOCOL.md`):

    python -m benchmarks.leaderboard run --env Esper-CIFAR-Mini-v0 \
        --policies noop,random,fixed,heuristic --seeds 10
    python -m benchmarks.leaderboard render --env Esper-CIFAR-Mini-v0
    python -m benchmarks.leaderboard validate --env Esper-CIFAR-Mini-v0
    python -m benchmarks.leaderboard compare --envs Esper-CIFAR-Mini-v0 Esper-CIFAR-Impaired-v0

`run` fixes torch's CPU threads (`--threads`) and appends one JSON line per
finished episode to `<out-dir>/<ID>.jsonl` (a `BoardEntry`: the `EpisodeResult`
plus the env kwargs, versions, CPU, threads, device and, for an agent, its file's
SHA-256 and training command), so an interrupted run loses nothing, and a rerun
skips every (policy, seed) already recorded: adding a policy to a board is
`run --policies ALGO:PATH` on the same board. `render` writes `<out-dir>/<ID>.md`,
sorted by mean final test accuracy, and two plots. `validate` re-runs each
recorded episode's policy from its seed, with the recorded threads and on the
recorded device, and checks that it chooses the recorded actions and reproduces
the recorded results exactly (CompilerGym's `validate()`, plus the policy).
`compare` writes `<out-dir>/across_worlds.md` and rliable's aggregate and
performance-profile plots over several boards. The statistics
are `benchmarks.stats`'.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import platform
import re
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml

import esper_env  # noqa: F401  (registers the envs)
from agents.cli import parse_key_values
from agents.extras import require_extra
from agents.policies import POLICY_NAMES
from agents.progress import QUIET_HELP, Progress
from agents.rollout import EpisodeResult, load_policy, run_episode
from benchmarks.machine import cpu_model, fix_threads, make_reproducible
from benchmarks.robust_stats import (
    AGGREGATE_METRICS,
    aggregate_estimates,
    iqm,
    performance_profiles,
    probability_of_improvement,
)
from benchmarks.stats import Interval, PairedDifference, paired_difference, t_interval
from esper_env.envs.presets import ENV_SEMANTICS_VERSION, merge_kwargs, preset_config
from esper_env.tolaria import resolve_device

require_extra("matplotlib", "benchmarks.leaderboard (esper-leaderboard)")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from rliable import plot_utils  # noqa: E402

#: Evaluation seeds start here; training seeds stay below it, so the two never meet.
EVAL_SEED_START = 1000
BOARD_DIR = Path(__file__).parent / "leaderboards"
#: Lifecycle operations marked on the validation curves: marker and colour.
EVENT_STYLE = {
    "germinate": ("^", "tab:green"),
    "fossilize": ("*", "tab:blue"),
    "prune": ("X", "tab:red"),
}
#: Float fields compared by `validate`, and the integer ones.
_FLOAT_FIELDS = ("final_test_accuracy", "final_val_accuracy", "episode_return")
_INT_FIELDS = ("steps", "params_added", "seeds_germinated", "seeds_fossilized", "seeds_pruned")


class BoardEntry(EpisodeResult):
    """One leaderboard line: an `EpisodeResult` plus what fixes the world it ran in.

    `device` (from `EpisodeResult`) is where it ran and where `validate` replays it.

    Attributes:
        env_kwargs: Keyword arguments given to `gym.make` on top of the registered preset.
        obs_version: Observation layout version of the env.
        env_semantics_version: `ENV_SEMANTICS_VERSION` of the Esper that ran it.
        torch_threads: torch's CPU thread count during the episode (results depend on it).
        cpu: The CPU model.
        torch_version: `torch.__version__`.
        numpy_version: `numpy.__version__`.
        deterministic_algorithms: Whether PyTorch's deterministic algorithms were on (CUDA).
        greedy: Whether a trained agent took greedy actions (else sampled, seeded by `seed`).
        agent_sha256: For a trained agent (`ALGO:PATH`), the SHA-256 of its file.
        agent_command: For a trained agent, the command that trained it.
    """

    env_kwargs: dict[str, Any]
    obs_version: int
    env_semantics_version: int
    torch_threads: int
    cpu: str
    torch_version: str
    numpy_version: str
    deterministic_algorithms: bool
    greedy: bool
    agent_sha256: str | None = None
    agent_command: str | None = None


# --- statistics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRow:
    """Aggregates of one policy's episodes on a board (accuracies and fractions in 0..1).

    `test_accuracy`, `val_accuracy` and `episode_return` are means with their 95%
    t intervals; `test_iqm` is the interquartile mean with its bootstrap interval.
    """

    policy: str
    episodes: int
    test_accuracy: Interval
    test_iqm: Interval
    val_accuracy: Interval
    added_param_fraction: float
    episode_return: Interval
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
            test_accuracy=t_interval([e.final_test_accuracy for e in group]),
            test_iqm=iqm([e.final_test_accuracy for e in group]),
            val_accuracy=t_interval([e.final_val_accuracy for e in group]),
            added_param_fraction=statistics.fmean(e.added_param_fraction for e in group),
            episode_return=t_interval([e.episode_return for e in group]),
            germinated=statistics.fmean(e.seeds_germinated for e in group),
            fossilized=statistics.fmean(e.seeds_fossilized for e in group),
            pruned=statistics.fmean(e.seeds_pruned for e in group),
            wall_seconds=statistics.fmean(e.wall_seconds for e in group),
            devices=tuple(sorted({e.device or "?" for e in group})),
            machines=tuple(sorted({e.machine or "?" for e in group})),
        )
        for policy, group in groups.items()
    ]
    return sorted(rows, key=lambda r: (-r.test_accuracy.estimate, r.policy))


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


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def agent_path(spec: str) -> Path | None:
    """The file of an `ALGO:PATH` policy spec; None for a baseline."""
    if spec in POLICY_NAMES:
        return None
    _, _, path = spec.partition(":")
    return Path(path)


def training_command(model: Path) -> str | None:
    """The command recorded in the `esper-train` run folder that holds `model`, if any."""
    for folder in list(model.resolve().parents)[:3]:
        for args in sorted(folder.glob("*/args.yml")):
            command = yaml.safe_load(args.read_text(encoding="utf-8")).get("command")
            if command:
                return str(command)
    return None


def board_device(env_id: str, env_kwargs: dict[str, Any]) -> torch.device:
    """The device an env with these kwargs trains on (`train.device`, "auto" resolved)."""
    return resolve_device(preset_config(env_id, **env_kwargs).train.device)


def run_board(
    env_id: str,
    policies: Sequence[str],
    seeds: Sequence[int],
    *,
    env_kwargs: dict[str, Any] | None = None,
    out_dir: Path = BOARD_DIR,
    deterministic: bool = True,
    agent_commands: dict[str, str] | None = None,
    trust_agents: bool = False,
    progress: Progress | None = None,
) -> list[BoardEntry]:
    """Runs every (policy, seed) not yet on the board, appending each episode as it ends.

    Fix torch's threads first (`benchmarks.machine.fix_threads`): every entry records
    them. On CUDA, the run switches to deterministic algorithms so that it replays.

    Args:
        env_id: Registered env id.
        policies: Policy specs for `load_policy` (`noop`, `heuristic`, `ALGO:PATH`, ...).
        seeds: Evaluation seeds (>= `EVAL_SEED_START`).
        env_kwargs: `gym.make` keyword arguments; must equal those of the board's entries.
        out_dir: Directory of the board files.
        deterministic: Greedy actions for trained agents.
        agent_commands: The command that trained each `ALGO:PATH` agent, by spec; an agent
            left out must sit in an `esper-train` run folder that records its command.
        trust_agents: Load agent files that need unpickling (runs code from the file).
        progress: Shows the bars of the run (episodes to run) and of each episode, and
            prints a line per episode (quiet: none); default: the lines only.

    Returns:
        The entries this call ran (none when the board was complete).

    Raises:
        ValueError: A seed below `EVAL_SEED_START`, `env_kwargs` differ from the board's,
            or an agent's training command is unknown.
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
    agents: dict[str, tuple[str, str]] = {}
    for spec in policies:
        model = agent_path(spec)
        if model is None:
            continue
        command = (agent_commands or {}).get(spec) or training_command(model)
        if command is None:
            raise ValueError(
                f"the board records how each agent was trained, and {model} is not in a "
                "esper-train run folder that says: pass --agent-command"
            )
        agents[spec] = (file_sha256(model), command)
    done = {(e.policy, e.seed) for e in existing}
    pending = {p: [s for s in seeds if (p, s) not in done] for p in policies}
    new: list[BoardEntry] = []
    if not any(pending.values()):
        return new
    device = board_device(env_id, kwargs)
    deterministic_algorithms = make_reproducible(device)
    env = gym.make(env_id, **kwargs)
    world = env.unwrapped.world
    machine = machine_description(world.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = progress or Progress(bars=False)
    progress.start_run(sum(len(todo) for todo in pending.values()))
    try:
        for spec, todo in pending.items():
            if not todo:
                continue
            policy = load_policy(
                spec, env, seed=todo[0], deterministic=deterministic, trust=trust_agents
            )
            sha256, command = agents.get(spec, (None, None))
            for seed in todo:
                result = run_episode(env, policy, seed=seed, policy_name=spec, progress=progress)
                entry = BoardEntry(
                    **result.model_dump(exclude={"device", "machine"}),
                    device=str(world.device),
                    machine=machine,
                    env_kwargs=kwargs,
                    obs_version=world.config.obs_version,
                    env_semantics_version=ENV_SEMANTICS_VERSION,
                    torch_threads=torch.get_num_threads(),
                    cpu=cpu_model(),
                    torch_version=torch.__version__,
                    numpy_version=np.__version__,
                    deterministic_algorithms=deterministic_algorithms,
                    greedy=deterministic,
                    agent_sha256=sha256,
                    agent_command=command,
                )
                with path.open("a", encoding="utf-8") as handle:
                    handle.write(entry.model_dump_json() + "\n")
                new.append(entry)
                progress.echo(
                    f"{spec} seed {seed}: test_acc {entry.final_test_accuracy:.4f} "
                    f"params_added {entry.params_added} return {entry.episode_return:.3f} "
                    f"({entry.wall_seconds:.1f}s)"
                )
    finally:
        env.close()
    return new


# --- render ---------------------------------------------------------------------------------


TABLE_HEADER = (
    "| rank | policy | episodes | test acc % (95% CI) | test acc IQM % (95% CI) "
    "| val acc % (95% CI) | params added (% of host) | return (95% CI) "
    "| germinated / fossilized / pruned | wall s / episode | device | machine |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def by_seed(entries: Iterable[EpisodeResult], field: str) -> dict[str, dict[int, float]]:
    """`field` of every episode, by policy and then by evaluation seed."""
    scores: dict[str, dict[int, float]] = {}
    for entry in entries:
        scores.setdefault(entry.policy, {})[entry.seed] = float(getattr(entry, field))
    return scores


def ranks(rows: Sequence[PolicyRow], entries: Iterable[EpisodeResult]) -> list[str]:
    """Rank labels of `rows` (best first), `n=` on rows not separated from a neighbour.

    Two neighbours are separated when the 95% paired t interval of their
    test-accuracy difference excludes 0 (they need two shared seeds for one); a
    run of unseparated neighbours shares the rank of its first row.
    """
    scores = by_seed(entries, "final_test_accuracy")
    separated = []
    for upper, lower in itertools.pairwise(rows):
        paired = paired_difference(scores[upper.policy], scores[lower.policy])
        separated.append(paired is not None and paired.difference.excludes(0))
    labels, first = [], 0
    for index in range(len(rows)):
        if index and separated[index - 1]:
            first = index
        tied = (index > 0 and not separated[index - 1]) or (
            index < len(separated) and not separated[index]
        )
        labels.append(f"{first + 1}{'=' if tied else ''}")
    return labels


def render_table(entries: Iterable[EpisodeResult]) -> str:
    """The board's Markdown table: one row per policy, best mean test accuracy first."""
    entries = list(entries)
    rows = aggregate(entries)
    lines = [TABLE_HEADER]
    for rank, r in zip(ranks(rows, entries), rows, strict=True):
        lines.append(
            f"| {rank} | {r.policy} | {r.episodes} | {r.test_accuracy.plus_minus(100)} "
            f"| {r.test_iqm.bounds(100)} | {r.val_accuracy.plus_minus(100)} "
            f"| {100 * r.added_param_fraction:.1f} | {r.episode_return.plus_minus()} "
            f"| {r.germinated:.1f} / {r.fossilized:.1f} / {r.pruned:.1f} "
            f"| {r.wall_seconds:.1f} | {', '.join(r.devices)} | {'; '.join(r.machines)} |"
        )
    return "\n".join(lines)


def paired_differences(
    entries: Iterable[EpisodeResult], reference: str, field: str = "final_test_accuracy"
) -> dict[str, PairedDifference]:
    """Each policy minus `reference` on the seeds both ran (policies sharing two or more).

    Policies run on the same evaluation seeds, so the paired difference removes the
    seed-to-seed spread that unpaired intervals carry.
    """
    scores = by_seed(entries, field)
    base = scores.get(reference, {})
    differences = {}
    for policy, values in scores.items():
        paired = paired_difference(values, base)
        if policy != reference and paired is not None:
            differences[policy] = paired
    return differences


def render_paired(entries: Sequence[EpisodeResult]) -> str:
    """Markdown table of each policy against noop and against heuristic, where present.

    The paired test-accuracy and return differences with their 95% t intervals,
    and rliable's probability that the policy's test accuracy beats the reference's.
    """
    lines = [
        "| policy | minus | seeds | test acc (points, 95% CI) | excludes 0 "
        "| P(policy > minus) (95% CI) | return (95% CI) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    tests = by_seed(entries, "final_test_accuracy")
    for reference in ("noop", "heuristic"):
        returns = paired_differences(entries, reference, "episode_return")
        for policy, paired in paired_differences(entries, reference).items():
            if policy == "noop":  # noop - heuristic is heuristic - noop negated
                continue
            test = paired.difference
            improvement = probability_of_improvement(
                [tests[policy][s] for s in paired.seeds],
                [tests[reference][s] for s in paired.seeds],
            )
            lines.append(
                f"| {policy} | {reference} | {len(paired.seeds)} "
                f"| {test.plus_minus(100, signed=True)} | {'yes' if test.excludes(0) else 'no'} "
                f"| {improvement.bounds()} "
                f"| {returns[policy].difference.plus_minus(digits=3, signed=True)} |"
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
interval of the mean (Student's t over episodes); the IQM (interquartile mean,
rliable) comes with its 95% stratified-bootstrap interval [low, high]. A rank
marked `=` is not separated from a neighbour: the 95% paired t interval of their
test-accuracy difference on their shared seeds includes 0 (or they share fewer
than two seeds). Params added: mean over episodes of the parameters seeds
added, live or fossilized, as % of the bare host's. Seed counts are means per
episode.

{render_table(entries)}

Paired differences: each policy minus the reference on the same evaluation seeds,
mean ± half-width of the 95% t interval of the per-seed differences (the honest
comparison, since every policy sees the same seeds), and rliable's probability
of improvement P(policy > minus) on test accuracy with its 95% bootstrap
interval:

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


def readme_markers(env_id: str) -> tuple[str, str]:
    """The comments that delimit `env_id`'s generated board section in a README."""
    return f"<!-- board:{env_id} -->", f"<!-- /board:{env_id} -->"


def readme_section(env_id: str, out_dir: Path = BOARD_DIR) -> str:
    """The board's tables as the README shows them, generated from its JSON lines."""
    entries = read_board(board_path(out_dir, env_id))
    board_settings(entries, env_id)
    threads = ", ".join(str(t) for t in sorted({e.torch_threads for e in entries}))
    return (
        f"`{env_id}` ({len({e.seed for e in entries})} evaluation seeds, torch threads "
        f"{threads}; generated from `benchmarks/leaderboards/{env_id}.jsonl` by "
        f"`python -m benchmarks.leaderboard render --env {env_id} --readme README.md`):\n\n"
        f"{render_table(entries)}\n\n{render_paired(entries)}\n"
    )


def update_readme(readme: Path, env_id: str, out_dir: Path = BOARD_DIR) -> None:
    """Replaces the text between `env_id`'s markers in `readme` with `readme_section`.

    Raises:
        ValueError: The README lacks the markers (the message shows them).
    """
    start, end = readme_markers(env_id)
    text = readme.read_text(encoding="utf-8")
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{readme} needs one {start} ... {end} pair where the board goes")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    readme.write_text(
        f"{head}{start}\n{readme_section(env_id, out_dir)}{end}{tail}", encoding="utf-8"
    )


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


# --- across worlds --------------------------------------------------------------------------

#: How `compare` turns test accuracy into a score comparable across worlds.
NORMALISATIONS = {
    "noop": "test accuracy minus noop's on the same seed, in points",
    "none": "test accuracy in %",
}
#: Thresholds of the performance profiles.
_PROFILE_POINTS = 101


def world_scores(
    boards: Mapping[str, Sequence[EpisodeResult]], normalise: str = "noop"
) -> dict[str, np.ndarray]:
    """By policy present on every board, its (seeds x worlds) score matrix for rliable.

    Rows are the evaluation seeds the policy ran on every board (with `noop`,
    those noop ran too); columns follow `boards`. Subtracting noop's test
    accuracy on the same seed removes each world's own level and most of its
    seed-to-seed spread, so that gains, not worlds, are compared.

    Args:
        boards: Episodes by env id.
        normalise: A key of `NORMALISATIONS`.

    Returns:
        Score matrices by policy, in the first board's order (policies sharing no seed left out).

    Raises:
        ValueError: An unknown normalisation, or `noop` normalisation without noop on every board.
    """
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {list(NORMALISATIONS)}, got {normalise!r}")
    tests = [by_seed(entries, "final_test_accuracy") for entries in boards.values()]
    if normalise == "noop" and not all("noop" in board for board in tests):
        raise ValueError("normalising by noop needs noop on every board")
    common = [p for p in tests[0] if all(p in board for board in tests)]
    scores = {}
    for policy in common:
        needed = (policy, "noop") if normalise == "noop" else (policy,)
        seeds = sorted(set.intersection(*(set(board[p]) for board in tests for p in needed)))
        if not seeds:
            continue
        scores[policy] = np.array(
            [
                [
                    100 * (board[policy][s] - (board["noop"][s] if normalise == "noop" else 0.0))
                    for board in tests
                ]
                for s in seeds
            ]
        )
    return scores


def render_comparison(
    env_ids: Sequence[str], out_dir: Path = BOARD_DIR, *, normalise: str = "noop"
) -> Path:
    """Writes `<out_dir>/across_worlds.md` and its two rliable plots from several boards.

    Returns:
        The Markdown file's path.

    Raises:
        ValueError: A board is empty, or no policy ran on every board.
    """
    boards = {env: read_board(board_path(out_dir, env)) for env in env_ids}
    empty = [env for env, entries in boards.items() if not entries]
    if empty:
        raise ValueError(f"no results on the boards of {empty}; run them first")
    scores = world_scores(boards, normalise)
    if not scores:
        raise ValueError(f"no policy ran the same seeds on every board of {list(env_ids)}")
    accuracies = world_scores(boards, "none")
    points, intervals = aggregate_estimates(scores)
    order = sorted(scores, key=lambda p: -points[p][AGGREGATE_METRICS.index("IQM")])
    label = NORMALISATIONS[normalise]
    aggregates_png = out_dir / "across_worlds_aggregates.png"
    profiles_png = out_dir / "across_worlds_profiles.png"
    plot_aggregates(points, intervals, order, aggregates_png, xlabel=label)
    plot_profiles(scores, order, profiles_png, xlabel=label)
    lines = [
        "| policy | seeds per world | "
        + " | ".join(f"{name} (95% CI)" for name in AGGREGATE_METRICS)
        + " | P(> noop) (95% CI) | P(> heuristic) (95% CI) |",
        "| --- | --- | " + " | ".join("---" for _ in AGGREGATE_METRICS) + " | --- | --- |",
    ]
    for policy in order:
        cells = [
            Interval(points[policy][i], *intervals[policy][:, i]).bounds()
            for i in range(len(AGGREGATE_METRICS))
        ]
        for reference in ("noop", "heuristic"):
            if reference in accuracies and policy != reference:
                chance = probability_of_improvement(accuracies[policy], accuracies[reference])
                cells.append(chance.bounds())
            else:
                cells.append("-")
        lines.append(f"| {policy} | {len(scores[policy])} | " + " | ".join(cells) + " |")
    left_out = sorted({e.policy for entries in boards.values() for e in entries} - set(scores))
    left_text = f"\n\nLeft out (not on every board): {', '.join(left_out)}." if left_out else ""
    links = ", ".join(f"[{env}]({env}.md)" for env in env_ids)
    table = "\n".join(lines)
    command = (
        f"python -m benchmarks.leaderboard compare --envs {' '.join(env_ids)} "
        f"--normalise {normalise}"
    )
    text = f"""# Across worlds: {", ".join(env_ids)}

Boards: {links}.

Score: {label}. Each policy that ran on every board counts the
evaluation seeds it ran on all of them. Median, IQM and Mean are rliable's
aggregates over the worlds (median and mean of the per-world means; the
interquartile mean of every run of every world), with 95% stratified-bootstrap
intervals [low, high] (runs resampled within each world). P(> noop) and
P(> heuristic): rliable's probability of improvement on test accuracy (a run of
the policy beats a run of the reference; ties count half), averaged over worlds,
with its 95% bootstrap interval.

Regenerate: `{command}`

{table}{left_text}

Aggregates with their 95% intervals:

![aggregates]({aggregates_png.name})

Performance profiles: the fraction of runs (all worlds) scoring above each threshold,
with 95% bootstrap bands:

![performance profiles]({profiles_png.name})
"""
    path = out_dir / "across_worlds.md"
    path.write_text(text, encoding="utf-8")
    return path


def _labels(policies: Sequence[str]) -> dict[str, str]:
    """Short plot labels for `policies`, or the full names where two would read the same."""
    short = {p: _short(p) for p in policies}
    return short if len(set(short.values())) == len(short) else {p: p for p in policies}


def _colours(labels: Sequence[str]) -> dict[str, str]:
    """One colour per label, the same in both plots of a comparison."""
    return {label: f"C{index % 10}" for index, label in enumerate(labels)}


def plot_aggregates(
    points: Mapping[str, np.ndarray],
    intervals: Mapping[str, np.ndarray],
    order: Sequence[str],
    path: Path,
    *,
    xlabel: str,
) -> None:
    """The interval estimates of the `AGGREGATE_METRICS`, one bar per policy (rliable's plot)."""
    names = _labels(order)
    figure, _ = plot_utils.plot_interval_estimates(
        {names[p]: points[p] for p in order},
        {names[p]: intervals[p] for p in order},
        metric_names=list(AGGREGATE_METRICS),
        algorithms=[names[p] for p in reversed(order)],  # best at the top
        colors=_colours([names[p] for p in order]),
        xlabel=xlabel,
        row_height=0.6,
        xlabel_y_coordinate=-0.25,
    )
    # rliable draws through pyplot; close the figure so that repeated renders do not pile up.
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_profiles(
    scores: Mapping[str, np.ndarray], order: Sequence[str], path: Path, *, xlabel: str
) -> None:
    """Performance profiles (rliable's score distributions) with their 95% bootstrap bands."""
    names = _labels(order)
    low = min(float(m.min()) for m in scores.values())
    high = max(float(m.max()) for m in scores.values())
    if high - low < 1e-9:  # every run scored the same: widen so the step shows
        low, high = low - 1.0, high + 1.0
    taus = np.linspace(low, high, _PROFILE_POINTS)
    profiles, bands = performance_profiles({names[p]: scores[p] for p in order}, taus)
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.subplots()
    plot_utils.plot_performance_profiles(
        profiles,
        taus,
        performance_profile_cis=bands,
        ax=ax,
        colors=_colours([names[p] for p in order]),
        xlabel=f"{xlabel} (τ)",
        ylabel="fraction of runs with score > τ",
        labelsize="medium",
        ticklabelsize="medium",
        legend=True,
        legendsize="small",
    )
    ax.set_title("Performance profiles across worlds")
    figure.savefig(path, dpi=110)


# --- validate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """Outcome of re-running one recorded episode: empty `mismatches` means it reproduced.

    Attributes:
        policy: The recorded policy spec.
        seed: The recorded seed.
        mismatches: What differs between the record and the re-run.
        machine: How this machine differs from the recorded one (exact replays need none).
    """

    policy: str
    seed: int
    mismatches: tuple[str, ...]
    machine: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the re-run reproduced every checked field."""
        return not self.mismatches


def machine_differences(entry: BoardEntry) -> tuple[str, ...]:
    """What of the recorded CPU, threads and library versions this process does not match."""
    here = {
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
    }
    return tuple(
        f"{name}: recorded {getattr(entry, name)!r}, here {value!r}"
        for name, value in here.items()
        if getattr(entry, name) != value
    )


def compare_episode(entry: EpisodeResult, rerun: EpisodeResult, tolerance: float) -> list[str]:
    """What differs between a recorded episode and its re-run (floats beyond `tolerance`)."""
    problems: list[str] = []
    if rerun.actions != entry.actions:
        step = next(
            (
                i
                for i, (a, b) in enumerate(zip(rerun.actions, entry.actions, strict=False))
                if a != b
            ),
            min(len(rerun.actions), len(entry.actions)),
        )
        chose = rerun.actions[step] if step < len(rerun.actions) else "nothing (episode over)"
        recorded = entry.actions[step] if step < len(entry.actions) else "nothing (episode over)"
        problems.append(
            f"actions differ at step {step + 1}: policy chose {chose}, recorded {recorded}"
        )
    for name in _FLOAT_FIELDS:
        mine, theirs = getattr(rerun, name), getattr(entry, name)
        if not math.isclose(mine, theirs, rel_tol=0, abs_tol=tolerance):
            problems.append(f"{name}: recorded {theirs!r}, re-run {mine!r}")
    for name in _INT_FIELDS:
        mine, theirs = getattr(rerun, name), getattr(entry, name)
        if mine != theirs:
            problems.append(f"{name}: recorded {theirs}, re-run {mine}")
    curve, recorded_curve = rerun.val_accuracy_curve, entry.val_accuracy_curve
    if len(curve) != len(recorded_curve) or not np.allclose(
        curve, recorded_curve, rtol=0, atol=tolerance
    ):
        first = next(
            (i for i, (a, b) in enumerate(zip(curve, recorded_curve, strict=False)) if a != b),
            min(len(curve), len(recorded_curve)),
        )
        problems.append(f"val_accuracy_curve differs from step {first + 1}")
    return problems


def validate_board(
    env_id: str,
    out_dir: Path = BOARD_DIR,
    *,
    policy: str | None = None,
    seeds: Sequence[int] | None = None,
    tolerance: float = 0.0,
    trust_agents: bool = False,
) -> list[Validation]:
    """Re-runs the board's episodes (optionally one policy's, or some seeds) and checks them.

    Each episode runs its recorded policy (an agent only if its file still has the
    recorded SHA-256) from its recorded seed, with the recorded torch threads, on the
    recorded device (deterministic algorithms on CUDA, as recorded), and must choose
    the recorded actions and reach the recorded accuracies, return and curve: exactly,
    unless `tolerance` allows more.

    Raises:
        ValueError: No episode matches, or an agent's file is not the recorded one.
    """
    entries = read_board(board_path(out_dir, env_id))
    kwargs, _ = board_settings(entries, env_id)
    chosen = [
        e
        for e in entries
        if (policy is None or e.policy == policy) and (seeds is None or e.seed in seeds)
    ]
    if not chosen:
        raise ValueError(f"no episodes of {env_id} match policy={policy!r} seeds={seeds}")
    for entry in chosen:
        model = agent_path(entry.policy)
        if model is not None and file_sha256(model) != entry.agent_sha256:
            raise ValueError(
                f"{model} is not the agent on the board (SHA-256 {entry.agent_sha256}); "
                "fetch the recorded file or run the board again"
            )
    results: list[Validation] = []
    for device in sorted({e.device or "cpu" for e in chosen}):
        on_device = [e for e in chosen if (e.device or "cpu") == device]
        if make_reproducible(torch.device(device)) != on_device[0].deterministic_algorithms:
            raise ValueError(f"the records on {device} disagree on deterministic algorithms")
        env = gym.make(env_id, **merge_kwargs(kwargs, {"train": {"device": device}}))
        policies: dict[str, Any] = {}
        try:
            for entry in on_device:
                fix_threads(entry.torch_threads)
                if entry.policy not in policies:
                    policies[entry.policy] = load_policy(
                        entry.policy,
                        env,
                        seed=entry.seed,
                        deterministic=entry.greedy,
                        trust=trust_agents,
                    )
                rerun = run_episode(
                    env, policies[entry.policy], seed=entry.seed, policy_name=entry.policy
                )
                results.append(
                    Validation(
                        entry.policy,
                        entry.seed,
                        tuple(compare_episode(entry, rerun, tolerance)),
                        machine_differences(entry),
                    )
                )
        finally:
            env.close()
    return results


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="esper-leaderboard", description=__doc__.splitlines()[0])
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
        "--agent-command",
        action="append",
        default=[],
        metavar="SPEC=COMMAND",
        help="the command that trained agent SPEC (ALGO:PATH), when its run folder does not say",
    )
    run.add_argument(
        "--render", action=argparse.BooleanOptionalAction, default=True, help="render afterwards"
    )
    run.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    show = commands.add_parser("render", help="write the board's Markdown table and plots")
    show.add_argument(
        "--readme", type=Path, help="also regenerate the board's section of this README"
    )
    check = commands.add_parser("validate", help="replay recorded episodes and check them")
    check.add_argument("--policy", help="only this policy's episodes")
    check.add_argument("--seed", type=int, nargs="*", help="only these seeds")
    check.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="allowed float difference (0: exact, what the same machine kind reproduces)",
    )
    for sub in (run, check):
        sub.add_argument(
            "--trust-agent",
            action="store_true",
            help="load agent files that need unpickling: this runs code from the file",
        )
    for sub in (show, check):
        sub.add_argument("--env", required=True, help="registered env id")
    compare = commands.add_parser(
        "compare", help="compare the policies of several boards (worlds) with rliable's plots"
    )
    compare.add_argument("--envs", nargs="+", required=True, help="registered env ids")
    compare.add_argument(
        "--normalise",
        choices=list(NORMALISATIONS),
        default="noop",
        help="score per world: " + "; ".join(f"{k}: {v}" for k, v in NORMALISATIONS.items()),
    )
    for sub in (run, show, check, compare):
        sub.add_argument("--out-dir", type=Path, default=BOARD_DIR)
    args = parser.parse_args(argv)

    if args.command == "run":
        fix_threads(args.threads)
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        with Progress(quiet=args.quiet) as progress:
            run_board(
                args.env,
                policies,
                evaluation_seeds(args.seeds, args.first_seed),
                env_kwargs=parse_key_values(args.env_kwargs),
                out_dir=args.out_dir,
                deterministic=args.deterministic,
                agent_commands=dict(item.partition("=")[::2] for item in args.agent_command),
                trust_agents=args.trust_agent,
                progress=progress,
            )
        if args.render:
            print(f"wrote {render_board(args.env, args.out_dir)}")
        return 0
    if args.command == "render":
        print(f"wrote {render_board(args.env, args.out_dir)}")
        if args.readme:
            update_readme(args.readme, args.env, args.out_dir)
            print(f"updated {args.readme}")
        return 0
    if args.command == "compare":
        print(f"wrote {render_comparison(args.envs, args.out_dir, normalise=args.normalise)}")
        return 0
    results = validate_board(
        args.env,
        args.out_dir,
        policy=args.policy,
        seeds=args.seed,
        tolerance=args.tolerance,
        trust_agents=args.trust_agent,
    )
    for result in results:
        verdict = "ok" if result.ok else "MISMATCH: " + "; ".join(result.mismatches)
        if result.machine and not result.ok:
            verdict += " (this machine differs: " + "; ".join(result.machine) + ")"
        print(f"{result.policy} seed {result.seed}: {verdict}", flush=True)
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed}/{len(results)} episodes reproduced")
    return 1 if failed else 0


def cli() -> None:
    """The `esper-leaderboard` console script: `main`'s status is the exit code."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
