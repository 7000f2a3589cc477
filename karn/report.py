"""Karn's run report: one self-contained HTML page of a run's telemetry, or of a leaderboard.

    esper-report runs/ppo_1 -o report.html          # an esper-train run folder
    esper-report /tmp/telemetry --episode 3         # a telemetry directory, episode 3 in detail
    esper-report benchmarks/leaderboards/Esper-CIFAR-Mini-v0.jsonl -o board.html

The page is one file: the plots are PNGs embedded as base64 `data:` URIs and the
style is inline, so it can be mailed or attached to an issue as it is.

From telemetry (`karn.history`), it shows the episode table of every env, and per
env the validation curves of all its episodes overlaid, then one episode in detail
(the latest, or `--episode`): its validation curve with lifecycle marks, its slots'
stages and alphas, the parameters seeds added, its reward terms per step, and its
step and lifecycle logs. From a board (`benchmarks.leaderboard`), it shows the
per-policy table, the episode table, the validation curves with the policies'
lifecycle operations, the summed reward terms and the operations chosen.

Every figure is an event's (or a board record's) field, or a count or sum of them;
a line that does not fit its schema stops the report (`TelemetryFormatError`, or
`ValueError` for a board line), naming its file and line.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import statistics
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.cli import run_cli
from agents.extras import require_extra

# Before anything that imports matplotlib (benchmarks.leaderboard does), so that a missing
# extra is reported as esper-report's.
require_extra("matplotlib", "esper-report")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
from matplotlib import colormaps  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from benchmarks.leaderboard import BoardEntry, aggregate, read_board  # noqa: E402
from esper_env.contracts import Op, SeedStage  # noqa: E402
from esper_env.telemetry import (  # noqa: E402
    Fossilized,
    GateRefused,
    Germinated,
    GovernorRollback,
    Pruned,
    StageChanged,
    TelemetryFormatError,
    read_events,
)
from karn.history import (  # noqa: E402
    EnvHistory,
    EpisodeHistory,
    LifecycleEvent,
    RunHistory,
    telemetry_dir,
)

#: Resolution of the embedded plots (a 6.2 x 3.1 inch plot is 558 x 279 pixels).
DPI = 90
#: Size of one plot of an episode's detail, in inches; two sit side by side.
PLOT_SIZE = (6.2, 3.1)
#: Lifecycle marks on the validation curves: label, marker, colour.
MARK_STYLE: dict[str, tuple[str, str, str]] = {
    "germinated": ("germinated", "^", "tab:green"),
    "fossilized": ("fossilized", "*", "tab:blue"),
    "pruned": ("pruned", "X", "tab:red"),
    "governor_rollback": ("rollback", "v", "black"),
    "gate_refused": ("gate refused", "x", "0.55"),
}
#: A board's lifecycle operations (`LifecycleMark.op`) -> the mark of `MARK_STYLE` they make.
BOARD_MARKS = {"germinate": "germinated", "fossilize": "fossilized", "prune": "pruned"}
#: Colour of each stage in the slot-stage plot.
STAGE_COLOURS: dict[SeedStage, str] = {
    SeedStage.DORMANT: "#eeeeee",
    SeedStage.GERMINATED: "#f2d16b",
    SeedStage.TRAINING: "#f28e2b",
    SeedStage.BLENDING: "#b07aa1",
    SeedStage.HOLDING: "#76b7b2",
    SeedStage.FOSSILIZED: "#4e79a7",
    SeedStage.PRUNED: "#e15759",
    SeedStage.EMBARGOED: "#7f7f7f",
    SeedStage.RESETTING: "#c9b18f",
}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f;
  margin: 0; background: #f6f7f9; }
main { max-width: 1240px; margin: 0 auto; padding: 16px 20px 40px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 6px; padding-top: 10px; border-top: 2px solid #d0d4da; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.meta, p.note { color: #555; margin: 4px 0; }
code { background: #eceef1; padding: 0 3px; border-radius: 3px; }
.scroll { max-height: 34em; overflow: auto; border: 1px solid #d0d4da; background: #fff; }
table { border-collapse: collapse; font-size: 12px; width: 100%; }
th, td { padding: 3px 6px; border-bottom: 1px solid #e3e6ea; text-align: left;
  white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; }
th { position: sticky; top: 0; background: #e9ecf0; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.wrap { white-space: normal; overflow-wrap: anywhere; min-width: 8em; }
tr:nth-child(even) td { background: #fafbfc; }
tr.selected td { background: #fff4d6; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr));
  gap: 10px; }
.plots.wide { grid-template-columns: 1fr; }
figure { margin: 0; background: #fff; border: 1px solid #d0d4da; padding: 4px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 12px; color: #555; padding: 2px 4px; }
details { margin: 8px 0; }
summary { cursor: pointer; font-weight: 600; }
"""


# --- formatting ----------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _percent(value: float | None) -> str:
    """An accuracy (0..1) as a percentage with 2 decimals; a dash for none."""
    return "–" if value is None else f"{100 * value:.2f}"


@dataclass(frozen=True)
class Cell:
    """One table cell: its text and whether it is a number (right-aligned)."""

    text: str
    numeric: bool = False
    wrap: bool = False


def _table(
    header: Sequence[str], rows: Iterable[Sequence[Cell]], *, selected: Iterable[int] = ()
) -> str:
    """An HTML table in a scroll box; the rows of indices `selected` are highlighted."""
    selected = set(selected)
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        cells = "".join(
            f'<td class="{"num" if c.numeric else "wrap" if c.wrap else ""}">{_esc(c.text)}</td>'
            for c in row
        )
        marker = ' class="selected"' if index in selected else ""
        body.append(f"<tr{marker}>{cells}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _png(figure: Figure) -> str:
    """The figure as a PNG `data:` URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plot(figure: Figure, name: str, caption: str) -> str:
    """A figure element: the plot embedded as a PNG, named by its `alt` text."""
    return (
        f'<figure><img alt="{_esc(name)}" src="{_png(figure)}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _mark_handles(kinds: Iterable[str]) -> list[Line2D]:
    """Legend entries of the lifecycle marks of `kinds` (keys of `MARK_STYLE`)."""
    return [
        Line2D(
            [], [], marker=MARK_STYLE[k][1], color=MARK_STYLE[k][2], ls="", label=MARK_STYLE[k][0]
        )
        for k in dict.fromkeys(kinds)
    ]


def _figure(size: tuple[float, float] = PLOT_SIZE) -> tuple[Figure, Axes]:
    figure = Figure(figsize=size, layout="constrained")
    return figure, figure.subplots()


# --- the episodes of a telemetry -------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeRow:
    """One episode as the episode table shows it, counted from its events.

    Attributes:
        env: The env's telemetry name.
        episode: The episode's index within the env's life.
        seed: The `reset` seed (None: reset without one).
        episode_seed: The seed the episode was started from.
        policy: The acting policy's name (None: the runner did not tell the env).
        steps: Its `step_ended` events.
        episode_return: Tamiyo's summed reward (final once ended).
        final_val_accuracy: From `episode_ended` (None: not ended).
        final_test_accuracy: From `episode_ended` (None: not ended).
        germinated: `germinated` events.
        fossilized: `fossilized` events.
        pruned: `pruned` events plus rollbacks that pruned a seed (as the env counts them).
        rollbacks: `governor_rollback` events.
        refused: `gate_refused` events.
        seconds: Wall time: `episode_ended`'s, else the steps' so far.
        status: "truncated", "terminated" or "unfinished".
    """

    env: str
    episode: int
    seed: int | None
    episode_seed: int
    policy: str | None
    steps: int
    episode_return: float
    final_val_accuracy: float | None
    final_test_accuracy: float | None
    germinated: int
    fossilized: int
    pruned: int
    rollbacks: int
    refused: int
    seconds: float
    status: str

    @classmethod
    def of(cls, episode: EpisodeHistory) -> EpisodeRow:
        """Counts one episode's events."""
        events = [episode.started, *episode.epochs, *episode.steps, *episode.lifecycle]
        first = next(e for e in [*events, episode.ended] if e is not None)
        ended = episode.ended

        def count(kind: type) -> int:
            return sum(isinstance(e, kind) for e in episode.lifecycle)

        rollbacks = [e for e in episode.lifecycle if isinstance(e, GovernorRollback)]
        if ended is None:
            status = "unfinished"
        else:
            status = "terminated" if ended.terminated else "truncated"
        return cls(
            env=episode.env,
            episode=episode.episode,
            seed=first.seed,
            episode_seed=first.episode_seed,
            policy=episode.policy,
            steps=len(episode.steps),
            episode_return=episode.episode_return,
            final_val_accuracy=None if ended is None else ended.final_val_accuracy,
            final_test_accuracy=None if ended is None else ended.final_test_accuracy,
            germinated=count(Germinated),
            fossilized=count(Fossilized),
            pruned=count(Pruned) + sum(r.pruned_slot is not None for r in rollbacks),
            rollbacks=len(rollbacks),
            refused=count(GateRefused),
            seconds=ended.seconds if ended is not None else sum(s.seconds for s in episode.steps),
            status=status,
        )

    def cells(self) -> list[Cell]:
        """The row's cells, in `EPISODE_HEADER` order."""
        return [
            Cell(self.env),
            Cell(str(self.episode), True),
            Cell("–" if self.seed is None else str(self.seed), True),
            Cell(str(self.episode_seed), True),
            Cell(self.policy or "(not named)"),
            Cell(str(self.steps), True),
            Cell(f"{self.episode_return:.3f}", True),
            Cell(_percent(self.final_val_accuracy), True),
            Cell(_percent(self.final_test_accuracy), True),
            Cell(str(self.germinated), True),
            Cell(str(self.fossilized), True),
            Cell(str(self.pruned), True),
            Cell(str(self.rollbacks), True),
            Cell(str(self.refused), True),
            Cell(f"{self.seconds:.1f}", True),
            Cell(self.status),
        ]


EPISODE_HEADER = (
    "env",
    "episode",
    "seed",
    "episode seed",
    "policy",
    "steps",
    "return",
    "final val acc %",
    "final test acc %",
    "germinated",
    "fossilized",
    "pruned",
    "rollbacks",
    "refused",
    "seconds",
    "status",
)


def _episode_span(episode: EpisodeHistory) -> tuple[float, float]:
    """The x range of an episode's plots: step 0 to its epoch budget (or its last step)."""
    last = episode.started.episode_epochs if episode.started is not None else 0
    if episode.steps:
        last = max(last, episode.steps[-1].step)
    return -0.5, last + 0.5


def _mark_points(
    episode: EpisodeHistory, steps: Sequence[int], values: Sequence[float]
) -> dict[str, list[tuple[int, float]]]:
    """The lifecycle marks of an episode on its curve (x: the event's step), by kind.

    A step missing from the curve (the file began mid-episode) takes the value of the
    nearest step on it.
    """
    marks: dict[str, list[tuple[int, float]]] = {}
    for event in episode.lifecycle:
        if event.event not in MARK_STYLE:
            continue
        nearest = min(range(len(steps)), key=lambda i: abs(steps[i] - event.step))
        marks.setdefault(event.event, []).append((event.step, values[nearest]))
    return marks


def _draw_marks(ax: Axes, marks: dict[str, list[tuple[int, float]]], size: float = 80) -> None:
    for kind, points in marks.items():
        _, marker, colour = MARK_STYLE[kind]
        xs, ys = zip(*points, strict=True)
        ax.scatter(
            xs,
            ys,
            marker=marker,
            color=colour,
            s=size,
            zorder=4,
            edgecolors="white",
            linewidths=0.5,
        )


def plot_env_curves(env: EnvHistory, selected: EpisodeHistory | None) -> str:
    """The validation curves of all of an env's episodes, the selected one highlighted."""
    figure, ax = _figure((12.4, 3.4))
    curves = [(e, e.val_curve) for e in env.episodes if e.val_curve]
    norm = Normalize(0, max(1, len(curves) - 1))
    cmap = colormaps["viridis"]
    for index, (episode, curve) in enumerate(curves):
        if episode is selected:
            continue
        steps, values = zip(*curve, strict=True)
        ax.plot(steps, [100 * v for v in values], color=cmap(norm(index)), lw=0.9, alpha=0.8)
    kinds: list[str] = []
    if selected is not None and selected.val_curve:
        steps, values = zip(*selected.val_curve, strict=True)
        ax.plot(steps, [100 * v for v in values], color="black", lw=2.2, zorder=3)
        marks = _mark_points(selected, steps, [100 * v for v in values])
        _draw_marks(ax, marks, size=55)
        kinds = list(marks)
    colourbar = figure.colorbar(ScalarMappable(norm, cmap), ax=ax, pad=0.01, aspect=30)
    colourbar.set_label("episode (in order)", fontsize="small")
    colourbar.locator = MaxNLocator(integer=True)
    colourbar.update_ticks()
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    handles = _mark_handles(kinds)
    if selected is not None:
        handles.insert(
            0, Line2D([], [], color="black", lw=2.2, label=f"episode {selected.episode}")
        )
    if handles:
        ax.legend(handles=handles, fontsize="small", loc="lower right", ncols=6)
    label = "none" if selected is None else f"episode {selected.episode}"
    return _plot(
        figure,
        f"validation curves of {env.name}",
        f"Validation accuracy after each step of all {len(curves)} episodes of {env.name} "
        f"(colour: order), {label} in black with its lifecycle marks.",
    )


def plot_val_curve(episode: EpisodeHistory) -> str:
    """An episode's validation curve with its lifecycle and rollback marks."""
    figure, ax = _figure()
    steps, values = zip(*episode.val_curve, strict=True)
    percent = [100 * v for v in values]
    ax.plot(steps, percent, color="black", marker="o", markersize=3, lw=1.6)
    marks = _mark_points(episode, steps, percent)
    _draw_marks(ax, marks)
    ax.set_xlim(*_episode_span(episode))
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    if marks:
        ax.legend(handles=_mark_handles(marks), fontsize="small", loc="lower right", ncols=2)
    return _plot(
        figure,
        "validation accuracy",
        "Validation accuracy after each step (step 0: the untrained host). A mark at step k: "
        "an operation applied before step k+1's epoch, or an automatic transition or "
        "rollback at the end of epoch k.",
    )


def plot_stages(episode: EpisodeHistory) -> str:
    """Each slot's stage after each step, its seed's blueprint written where it began."""
    figure, ax = _figure()
    names = [s.name for s in episode.steps[0].slots]
    seen: set[SeedStage] = set()
    for row, name in enumerate(names):
        previous: str | None = None
        for step in episode.steps:
            report = next(s for s in step.slots if s.name == name)
            seen.add(report.stage)
            ax.broken_barh(
                [(step.step - 0.5, 1.0)],
                (row - 0.38, 0.76),
                facecolors=STAGE_COLOURS[report.stage],
                edgecolors="white",
                linewidth=0.5,
            )
            if report.blueprint is not None and report.blueprint != previous:
                ax.text(
                    step.step - 0.4, row, report.blueprint, va="center", fontsize=7, clip_on=True
                )
            previous = report.blueprint
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlim(*_episode_span(episode))
    ax.set_xlabel("step")
    handles = [
        Patch(facecolor=STAGE_COLOURS[s], edgecolor="0.6", label=s.name.lower())
        for s in SeedStage
        if s in seen
    ]
    figure.legend(handles=handles, fontsize="x-small", loc="outside right upper", frameon=False)
    return _plot(figure, "slot stages", "Each slot's lifecycle stage after each step.")


def plot_alpha(episode: EpisodeHistory) -> str:
    """Each slot's blend alpha after each step."""
    figure, ax = _figure()
    steps = [s.step for s in episode.steps]
    for index, report in enumerate(episode.steps[0].slots):
        alphas = [next(r for r in s.slots if r.name == report.name).alpha for s in episode.steps]
        ax.plot(
            steps, alphas, marker="o", markersize=3, lw=1.4, label=report.name, color=f"C{index}"
        )
    ax.set_xlim(*_episode_span(episode))
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("alpha")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="center left")
    return _plot(figure, "alpha per slot", "Each slot's blend alpha after each step.")


def plot_contribution(episode: EpisodeHistory) -> str:
    """Each live seed's measured contribution after each step, with its standard error."""
    figure, ax = _figure()
    for index, name in enumerate(r.name for r in episode.steps[0].slots):
        points = [
            (step.step, 100 * report.contribution, 100 * report.contribution_se)
            for step in episode.steps
            for report in step.slots
            if report.name == name and report.blueprint is not None
        ]
        if not points:
            continue
        steps, values, errors = zip(*points, strict=True)
        colour = f"C{index}"
        ax.errorbar(
            steps,
            values,
            yerr=errors,
            color=colour,
            marker="o",
            markersize=3,
            lw=1.2,
            capsize=2,
            label=name,
        )
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlim(*_episode_span(episode))
    ax.set_xlabel("step")
    ax.set_ylabel("contribution (accuracy points)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper left")
    return _plot(
        figure,
        "seed contribution",
        "Each seed's latest measured contribution (validation accuracy at its alpha minus at "
        "alpha 0) after each step it held a seed, ± its standard error.",
    )


def plot_params(episode: EpisodeHistory) -> str:
    """The parameters seeds add over the bare host after each step, with the budget."""
    figure, ax = _figure()
    steps = [s.step for s in episode.steps]
    ax.step(
        steps,
        [s.params_added for s in episode.steps],
        where="mid",
        color="tab:purple",
        lw=1.6,
        marker="o",
        markersize=3,
        label="params added",
    )
    caption = "Parameters the seeds add over the bare host (live and fossilized), after each step."
    if episode.started is not None:
        host = episode.started.host_params
        ax.axhline(
            episode.started.param_budget * host,
            color="tab:red",
            ls="--",
            lw=1,
            label=f"budget ({episode.started.param_budget:g} x host)",
        )
        secondary = ax.secondary_yaxis("right", functions=(lambda p: p / host, lambda f: f * host))
        secondary.set_ylabel("x host")
        caption += f" The bare host has {host:,} parameters."
    ax.set_xlim(*_episode_span(episode))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("step")
    ax.set_ylabel("parameters")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return _plot(figure, "parameters added", caption)


def _stacked_bars(
    ax: Axes, xs: Sequence[float], terms: dict[str, list[float]], width: float
) -> None:
    """Bars of each term at each x, positive values stacked up from 0, negative down."""
    up = [0.0] * len(xs)
    down = [0.0] * len(xs)
    for index, (term, values) in enumerate(terms.items()):
        bottoms = [u if v >= 0 else d for v, u, d in zip(values, up, down, strict=True)]
        ax.bar(xs, values, width, bottom=bottoms, color=f"C{index % 10}", label=term)
        up = [u + max(v, 0.0) for u, v in zip(up, values, strict=True)]
        down = [d + min(v, 0.0) for d, v in zip(down, values, strict=True)]
    ax.axhline(0, color="0.3", lw=0.8)


def _nonzero_terms(records: Sequence[dict[str, float]]) -> tuple[dict[str, list[float]], list[str]]:
    """Each term's values over `records` (0 where absent), and the terms zero throughout."""
    names = list(dict.fromkeys(name for record in records for name in record))
    values = {name: [record.get(name, 0.0) for record in records] for name in names}
    zero = [name for name, column in values.items() if not any(column)]
    return {k: v for k, v in values.items() if k not in zero}, zero


def plot_reward_terms(episode: EpisodeHistory) -> str:
    """The reward terms of each step, stacked (positive up, negative down), with the reward."""
    figure, ax = _figure()
    steps = [s.step for s in episode.steps]
    terms, zero = _nonzero_terms([s.reward_terms for s in episode.steps])
    _stacked_bars(ax, steps, terms, 0.75)
    ax.plot(
        steps,
        [s.reward for s in episode.steps],
        color="black",
        marker="o",
        markersize=3,
        lw=1.2,
        label="reward",
    )
    ax.set_xlim(*_episode_span(episode))
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3, axis="y")
    figure.legend(fontsize="x-small", loc="outside right upper", frameon=False)
    caption = "Tamiyo's reward terms of each step, stacked; the line is their sum, the reward."
    if zero:
        caption += f" Zero at every step, so not drawn: {', '.join(zero)}."
    return _plot(figure, "reward terms", caption)


def plot_run_overview(envs: Sequence[EnvHistory]) -> str:
    """Return and final test accuracy of every finished episode, env by env, in order."""
    figure = Figure(figsize=(12.4, 3.1), layout="constrained")
    left, right = figure.subplots(1, 2)
    for index, env in enumerate(envs):
        done = env.finished
        numbers = range(1, len(done) + 1)
        style = {"marker": "o", "markersize": 3, "lw": 1, "color": f"C{index % 10}"}
        left.plot(numbers, [e.episode_return for e in done], label=env.name, **style)
        right.plot(numbers, [100 * e.ended.final_test_accuracy for e in done if e.ended], **style)
    left.set_ylabel("episode return")
    right.set_ylabel("final test accuracy (%)")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("finished episode of the env (in order)")
        ax.grid(alpha=0.3)
    if len(envs) <= 12:
        left.legend(fontsize="x-small", ncols=min(len(envs), 4))
    return _plot(
        figure,
        "episodes of the run",
        "Each env's finished episodes in the order they ended: return and final test accuracy.",
    )


def _slot_summary(episode: EpisodeHistory, index: int) -> str:
    parts = []
    for report in episode.steps[index].slots:
        if report.stage is SeedStage.DORMANT:
            continue
        text = f"{report.name} {report.stage.name.lower()}"
        if report.blueprint is not None:
            text += f" {report.blueprint} α{report.alpha:.2f}"
        parts.append(text)
    return "; ".join(parts) or "all dormant"


def _step_log(episode: EpisodeHistory) -> str:
    header = ("step", "actions", "refused", "reward", "val acc %", "params added", "slots", "s")
    rows = [
        [
            Cell(str(step.step), True),
            Cell("; ".join(f"{agent}: {text}" for agent, text in step.actions.items()), wrap=True),
            Cell(", ".join(step.refused)),
            Cell(f"{step.reward:.3f}", True),
            Cell(_percent(step.val_accuracy), True),
            Cell(f"{step.params_added:,}", True),
            Cell(_slot_summary(episode, index), wrap=True),
            Cell(f"{step.seconds:.2f}", True),
        ]
        for index, step in enumerate(episode.steps)
    ]
    return _table(header, rows)


def _describe(event: LifecycleEvent) -> tuple[str, str]:
    """A lifecycle event's slot and what happened, in words."""
    if isinstance(event, Germinated):
        return event.slot, f"{event.blueprint} ({event.params:,} params)"
    if isinstance(event, StageChanged):
        change = f"{event.from_stage.name.lower()} → {event.to_stage.name.lower()}"
        return event.slot, f"{change} ({event.gate}: {event.reason})"
    if isinstance(event, GateRefused):
        refusal = f"{event.op} refused in {event.stage.name.lower()} by {event.gate}"
        return event.slot, f"{refusal}: {event.reason}"
    if isinstance(event, Pruned):
        return event.slot, f"{event.blueprint or ''} {event.reason}".strip()
    if isinstance(event, Fossilized):
        return event.slot, f"{event.blueprint or ''} ({event.params:,} params)"
    return event.pruned_slot or "", event.reason


def _lifecycle_log(episode: EpisodeHistory) -> str:
    rows = [
        [Cell(str(e.step), True), Cell(e.event), *(Cell(t, wrap=True) for t in _describe(e))]
        for e in episode.lifecycle
    ]
    return _table(("step", "event", "slot", "what"), rows)


def _episode_detail(episode: EpisodeHistory) -> str:
    row = EpisodeRow.of(episode)
    seed = "none" if row.seed is None else row.seed
    title = (
        f"<h3>{_esc(episode.env)} episode {episode.episode} in detail: "
        f"{_esc(row.policy or 'policy not named')}, seed {_esc(seed)}, {row.status}</h3>"
    )
    if not episode.steps:
        return title + '<p class="note">No step has ended yet: nothing to plot.</p>'
    plots = [
        plot_val_curve(episode),
        plot_stages(episode),
        plot_alpha(episode),
        plot_contribution(episode),
        plot_params(episode),
        plot_reward_terms(episode),
    ]
    return (
        f"{title}<div class='plots'>{''.join(plots)}</div>"
        f"<details><summary>Step log ({len(episode.steps)} steps)</summary>"
        f"{_step_log(episode)}</details>"
        f"<details><summary>Lifecycle log ({len(episode.lifecycle)} events)</summary>"
        "<p class='note'>Step: the steps completed when the event happened, so an operation "
        "of step k's action is at k − 1 and an automatic transition at the end of epoch k "
        "at k (as on the validation curve).</p>"
        f"{_lifecycle_log(episode)}</details>"
    )


def _selected(env: EnvHistory, episode: int | None) -> EpisodeHistory | None:
    """The episode shown in detail: the last one numbered `episode`, else the latest with steps."""
    if episode is not None:
        return next((e for e in reversed(env.episodes) if e.episode == episode), None)
    return next((e for e in reversed(env.episodes) if e.steps), env.current)


def _env_section(env: EnvHistory, episode: int | None) -> str:
    selected = _selected(env, episode)
    facts = [f"{len(env.episodes)} episodes, {len(env.finished)} finished"]
    mean = env.mean_return()
    if mean is not None:
        facts.append(f"mean return {mean:.3f}")
    rate = env.steps_per_second()
    if rate is not None:
        facts.append(f"{rate:.2f} steps/s")
    elapsed = env.elapsed_seconds()
    if elapsed is not None:
        facts.append(f"{elapsed:.0f} s from first start to last event")
    parts = [f"<h2>{_esc(env.name)}</h2><p class='meta'>{_esc('; '.join(facts))}</p>"]
    if any(e.val_curve for e in env.episodes):
        parts.append(f"<div class='plots wide'>{plot_env_curves(env, selected)}</div>")
    if selected is None:
        parts.append(f"<p class='note'>{_esc(env.name)} has no episode {episode}.</p>")
    else:
        parts.append(_episode_detail(selected))
    return "".join(parts)


def telemetry_report(path: Path, *, episode: int | None = None, env: str | None = None) -> str:
    """The report of a run's telemetry (see `build_report`)."""
    source = telemetry_dir(path)
    history = RunHistory.of(read_events(source))
    if not history.envs:
        raise ValueError(f"{source} holds no telemetry events")
    if env is not None:
        if env not in history.envs:
            raise ValueError(f"no env {env!r} in {source}; its envs: {sorted(history.envs)}")
        history = RunHistory({env: history.envs[env]})
    if episode is not None and not any(_selected(e, episode) for e in history.envs.values()):
        numbers = sorted({e.episode for e in history.episodes()})
        raise ValueError(f"no env of {source} has episode {episode}; its episodes: {numbers}")
    envs = list(history.envs.values())
    rows = [EpisodeRow.of(e) for e in history.episodes()]
    chosen = {id(_selected(e, episode)) for e in envs}
    selected = [i for i, e in enumerate(history.episodes()) if id(e) in chosen]
    title = f"Esper run report: {source}"
    body = [
        f"<h1>{_esc(title)}</h1>",
        f"<p class='meta'>{len(envs)} envs, {len(rows)} episodes, "
        f"{sum(r.steps for r in rows)} steps; generated by <code>esper-report</code> from the "
        "telemetry alone (every figure is an event's field, or a count or sum of them).</p>",
    ]
    if any(e.finished for e in envs):
        body.append(f"<div class='plots wide'>{plot_run_overview(envs)}</div>")
    body.append("<h2>Episodes</h2>")
    body.append(
        "<p class='note'>Pruned counts rollbacks that pruned a seed too; refused counts "
        "actions a gate refused. Highlighted: the episodes shown in detail below.</p>"
    )
    body.append(_table(EPISODE_HEADER, (r.cells() for r in rows), selected=selected))
    body.extend(_env_section(e, episode) for e in envs)
    return _page(title, "".join(body))


# --- a board ---------------------------------------------------------------------------------


def is_board(path: Path) -> bool:
    """Whether `path` is a leaderboard file: its first line is a record with `env_id`.

    Telemetry lines have `event` instead; anything else (a directory, a line that
    is not JSON) is left to the telemetry reader, which says what is wrong.
    """
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        first = handle.readline()
    try:
        record = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and "env_id" in record and "event" not in record


def _policy_table(entries: Sequence[BoardEntry]) -> str:
    header = (
        "policy",
        "episodes",
        "test acc % (95% CI)",
        "val acc % (95% CI)",
        "params added % of host",
        "return (95% CI)",
        "germinated",
        "fossilized",
        "pruned",
        "wall s / episode",
    )
    rows = [
        [
            Cell(r.policy, wrap=True),
            Cell(str(r.episodes), True),
            Cell(r.test_accuracy.plus_minus(100), True),
            Cell(r.val_accuracy.plus_minus(100), True),
            Cell(f"{100 * r.added_param_fraction:.1f}", True),
            Cell(r.episode_return.plus_minus(digits=3), True),
            Cell(f"{r.germinated:.1f}", True),
            Cell(f"{r.fossilized:.1f}", True),
            Cell(f"{r.pruned:.1f}", True),
            Cell(f"{r.wall_seconds:.1f}", True),
        ]
        for r in aggregate(entries)
    ]
    return _table(header, rows)


BOARD_EPISODE_HEADER = (
    "env",
    "policy",
    "seed",
    "steps",
    "return",
    "final val acc %",
    "final test acc %",
    "params added % of host",
    "germinated",
    "fossilized",
    "pruned",
    "rollbacks",
    "refused",
    "seconds",
    "device",
)


def _board_episode_cells(entry: BoardEntry) -> list[Cell]:
    return [
        Cell(entry.env_id),
        Cell(entry.policy, wrap=True),
        Cell(str(entry.seed), True),
        Cell(str(entry.steps), True),
        Cell(f"{entry.episode_return:.3f}", True),
        Cell(_percent(entry.final_val_accuracy), True),
        Cell(_percent(entry.final_test_accuracy), True),
        Cell(f"{100 * entry.added_param_fraction:.1f}", True),
        Cell(str(entry.seeds_germinated), True),
        Cell(str(entry.seeds_fossilized), True),
        Cell(str(entry.seeds_pruned), True),
        Cell(str(entry.governor_rollbacks), True),
        Cell(str(entry.refused_actions), True),
        Cell(f"{entry.wall_seconds:.1f}", True),
        Cell(entry.device or "?"),
    ]


def _short(policy: str) -> str:
    """A policy's name for a plot: `ALGO:PATH` becomes `ALGO:FILE`."""
    algo, sep, location = policy.partition(":")
    return f"{algo}:{Path(location).name}" if sep else policy


def _policy_ticks(ax: Axes, policies: Sequence[str]) -> None:
    ax.set_xticks(
        range(len(policies)),
        [_short(p) for p in policies],
        fontsize="small",
        rotation=20 if len(policies) > 3 else 0,
        ha="right" if len(policies) > 3 else "center",
    )


def _by_policy(entries: Sequence[BoardEntry]) -> dict[str, list[BoardEntry]]:
    groups: dict[str, list[BoardEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.policy, []).append(entry)
    return groups


def plot_board_curves(entries: Sequence[BoardEntry]) -> str:
    """Every episode's validation curve (thin) and each policy's mean (thick), marks on them."""
    figure, ax = _figure((12.4, 3.8))
    kinds: list[str] = []
    for index, (policy, group) in enumerate(_by_policy(entries).items()):
        colour = f"C{index % 10}"
        for entry in group:
            curve = [100 * v for v in entry.val_accuracy_curve]
            ax.plot(range(1, len(curve) + 1), curve, color=colour, lw=0.7, alpha=0.45)
            for mark in entry.lifecycle:
                kind = BOARD_MARKS.get(mark.op)
                if kind is not None and 1 <= mark.epoch <= len(curve):
                    _, marker, mark_colour = MARK_STYLE[kind]
                    ax.scatter(
                        mark.epoch,
                        curve[mark.epoch - 1],
                        marker=marker,
                        s=28,
                        color=mark_colour,
                        zorder=4,
                        edgecolors="white",
                    )
                    kinds.append(kind)
        length = min(len(e.val_accuracy_curve) for e in group)
        if length:
            mean = [
                100 * statistics.fmean(e.val_accuracy_curve[i] for e in group)
                for i in range(length)
            ]
            ax.plot(
                range(1, length + 1), mean, color=colour, lw=2.4, label=f"{_short(policy)} (mean)"
            )
    handles, _ = ax.get_legend_handles_labels()
    handles += _mark_handles(kinds)
    figure.legend(handles=handles, fontsize="small", loc="outside right upper", frameon=False)
    ax.set_xlabel("epoch (operations are marked on the epoch they preceded)")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    return _plot(
        figure,
        "validation curves",
        "Validation accuracy after each epoch: thin lines are episodes, thick ones each "
        "policy's mean; marks are the policy's lifecycle operations.",
    )


def plot_board_terms(entries: Sequence[BoardEntry]) -> str:
    """Each policy's reward terms summed over an episode, averaged over its episodes, stacked."""
    figure, ax = _figure()
    groups = _by_policy(entries)
    means = [
        {
            name: statistics.fmean(e.reward_terms.get(name, 0.0) for e in group)
            for name in dict.fromkeys(n for e in group for n in e.reward_terms)
        }
        for group in groups.values()
    ]
    terms, zero = _nonzero_terms(means)
    _stacked_bars(ax, range(len(groups)), terms, 0.6)
    returns = [statistics.fmean(e.episode_return for e in group) for group in groups.values()]
    ax.scatter(range(len(groups)), returns, color="black", zorder=4, label="return")
    _policy_ticks(ax, list(groups))
    ax.set_ylabel("reward per episode")
    ax.grid(alpha=0.3, axis="y")
    figure.legend(fontsize="x-small", loc="outside right upper", frameon=False)
    caption = "Each policy's reward terms summed over an episode (mean over its episodes), stacked."
    if zero:
        caption += f" Zero throughout, so not drawn: {', '.join(zero)}."
    return _plot(figure, "reward terms", caption)


def plot_board_ops(entries: Sequence[BoardEntry]) -> str:
    """How often each policy chose each operation per episode (from the recorded actions)."""
    figure, ax = _figure()
    groups = _by_policy(entries)
    counts = {
        op.name.lower(): [
            statistics.fmean(sum(Op(a[0]) is op for a in e.actions) for e in group)
            for group in groups.values()
        ]
        for op in Op
    }
    _stacked_bars(ax, range(len(groups)), counts, 0.6)
    _policy_ticks(ax, list(groups))
    ax.set_ylabel("actions per episode")
    ax.grid(alpha=0.3, axis="y")
    figure.legend(fontsize="x-small", loc="outside right upper", frameon=False)
    return _plot(
        figure,
        "operations",
        "Operations each policy chose per episode (mean over its episodes), refused ones included.",
    )


def board_report(path: Path) -> str:
    """The report of a leaderboard file (see `build_report`)."""
    entries = read_board(path)
    if not entries:
        raise ValueError(f"{path} holds no leaderboard records")
    envs = sorted({e.env_id for e in entries})
    kwargs = sorted({json.dumps(e.env_kwargs, sort_keys=True) for e in entries})
    title = f"Esper board report: {path.name}"
    body = [
        f"<h1>{_esc(title)}</h1>",
        f"<p class='meta'>{len(entries)} episodes of {len(_by_policy(entries))} policies on "
        f"{_esc(', '.join(envs))}; env kwargs {_esc(' | '.join(kwargs))}; generated by "
        "<code>esper-report</code> from the board's records alone.</p>",
        "<h2>Policies</h2>",
        "<p class='note'>Means over episodes; ± is the half-width of the 95% t interval.</p>",
        _policy_table(entries),
        "<div class='plots wide'>",
        plot_board_curves(entries),
        "</div><div class='plots'>",
        plot_board_terms(entries),
        plot_board_ops(entries),
        "</div><h2>Episodes</h2>",
        _table(BOARD_EPISODE_HEADER, (_board_episode_cells(e) for e in entries)),
    ]
    return _page(title, "".join(body))


# --- entry points ----------------------------------------------------------------------------


def build_report(
    path: str | os.PathLike[str], *, episode: int | None = None, env: str | None = None
) -> str:
    """The HTML report of a telemetry directory, a run folder, an event file or a board file.

    Args:
        path: A telemetry directory, an `esper-train` run folder (its `telemetry/`),
            one event file, or a leaderboard `.jsonl` file (`BoardEntry` records).
        episode: For telemetry: the episode index shown in detail in each env (default:
            each env's latest).
        env: For telemetry: report only this env (its telemetry name).

    Returns:
        One self-contained HTML page (plots as PNG `data:` URIs, inline style).

    Raises:
        FileNotFoundError: `path` does not exist or holds no telemetry.
        TelemetryFormatError: An event line does not fit (the message names file:line).
        ValueError: A board line does not fit (named file:line), no events or records,
            an unknown `env`, or an `episode` no env has.
    """
    path = Path(path)
    if is_board(path):
        if episode is not None or env is not None:
            raise ValueError("--episode and --env select telemetry; a board has neither")
        return board_report(path)
    return telemetry_report(path, episode=episode, env=env)


def write_report(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    episode: int | None = None,
    env: str | None = None,
) -> Path:
    """Builds the report of `path` (see `build_report`) and writes it to `out` atomically.

    The page goes to a temporary file beside `out` that then replaces it, so `out`
    is never half-written and a failed report leaves an older one as it was.

    Returns:
        `out`.
    """
    out = Path(out)
    text = build_report(path, episode=episode, env=env)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, out)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> Path:
    """Runs the command line; returns the report's path.

    Errors are `build_report`'s, their messages (pydantic's span lines) made one line
    for `run_cli` to print.
    """
    parser = argparse.ArgumentParser(
        prog="esper-report", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "path",
        type=Path,
        metavar="PATH",
        help="a telemetry directory, an esper-train run folder, an event file or a board .jsonl",
    )
    parser.add_argument("-o", "--out", type=Path, default=Path("report.html"), help="HTML file")
    parser.add_argument(
        "--episode", type=int, help="episode index shown in detail (default: each env's latest)"
    )
    parser.add_argument("--env", help="report only this env (its telemetry name)")
    args = parser.parse_args(argv)
    try:
        out = write_report(args.path, args.out, episode=args.episode, env=args.env)
    except TelemetryFormatError as error:
        problem = str(error).removeprefix(f"{error.path}:{error.line_number}: ")
        raise TelemetryFormatError(error.path, error.line_number, _one_line(problem)) from error
    except ValueError as error:
        raise ValueError(_one_line(str(error))) from error
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return out


def cli() -> None:
    """The `esper-report` console script."""
    run_cli(main, "esper-report")


if __name__ == "__main__":
    cli()
