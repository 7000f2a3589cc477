"""Karn's live dashboard: `esper-watch PATH` follows a run's telemetry in the terminal.

PATH is a telemetry directory (or one event file, see `karn.history.telemetry_dir`)
or an `esper-train` run folder. Every poll reads the complete lines the envs wrote
since the last one and redraws the selected env: its slots (latest `step_ended`),
its last lifecycle events with the gate's reason of every refusal, its governor
rollbacks, curves of validation accuracy (with lifecycle marks), reward terms and
parameters added, and the run's figures. A line that does not fit the schema is shown
as an error naming its file and line; that file is not read past it.

The panels' text comes from the pure functions of this module (`slot_rows`,
`event_lines`, `rollback_lines`, `curve_lines`, `run_figures`, ...), so what the
dashboard shows can be checked without a terminal.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from agents.cli import run_cli
from agents.extras import require_extra
from esper_env.contracts import SlotReport
from esper_env.telemetry import (
    Fossilized,
    GateRefused,
    Germinated,
    GovernorRollback,
    Pruned,
    StageChanged,
    TelemetryFormatError,
    TelemetryReplacedError,
)
from karn.history import (
    EnvHistory,
    EpisodeHistory,
    LifecycleEvent,
    RunHistory,
    TelemetryFollower,
    telemetry_dir,
)

require_extra("textual", "esper-watch")
from textual.app import App, ComposeResult  # noqa: E402
from textual.binding import Binding, BindingType  # noqa: E402
from textual.containers import Horizontal, VerticalScroll  # noqa: E402
from textual.timer import Timer  # noqa: E402
from textual.widgets import DataTable, Footer, Header, Static  # noqa: E402

#: Column headers of the slot table, in the order of `slot_row`'s cells.
SLOT_COLUMNS = (
    "slot",
    "stage",
    "blueprint",
    "alpha",
    "epochs in stage",
    "contribution ± se",
    "improvement ± se",
    "params",
)

#: Lifecycle marks of the curves, by event type; one mark per step, the first listed wins.
MARKS: tuple[tuple[type[LifecycleEvent], str, str], ...] = (
    (GovernorRollback, "R", "rollback"),
    (Pruned, "P", "pruned"),
    (Fossilized, "F", "fossilized"),
    (Germinated, "G", "germinated"),
    (GateRefused, "x", "refused"),
)

#: Steps the curves show at most (the latest ones).
CURVE_WIDTH = 60

_BARS = "▁▂▃▄▅▆▇█"
_EIGHTHS = " ▏▎▍▌▋▊▉"


def alpha_bar(alpha: float, width: int = 10) -> str:
    """A slot's blending alpha as a bar of `width` cells (eighths of a cell) and its value.

    Args:
        alpha: The alpha (the bar is clipped to [0, 1]; the value is not).
        width: Cells of the bar.

    Returns:
        e.g. `"█████·····  0.50"`.
    """
    eighths = round(min(max(alpha, 0.0), 1.0) * width * 8)
    full, rest = divmod(eighths, 8)
    bar = "█" * full + (_EIGHTHS[rest] if rest else "")
    return f"{bar.ljust(width, '·')} {alpha:5.2f}"


def slot_row(slot: SlotReport) -> tuple[str, ...]:
    """One slot's cells, in `SLOT_COLUMNS` order."""
    return (
        slot.name,
        slot.stage.name,
        slot.blueprint or "—",
        alpha_bar(slot.alpha),
        str(slot.epochs_in_stage),
        f"{slot.contribution:+.4f} ± {slot.contribution_se:.4f}",
        f"{slot.improvement:+.4f} ± {slot.improvement_se:.4f}",
        f"{slot.params:,}",
    )


def slot_rows(episode: EpisodeHistory | None) -> list[tuple[str, ...]]:
    """The slot table of an episode: its latest `step_ended`'s slots ([] before its first step)."""
    if episode is None or not episode.steps:
        return []
    return [slot_row(slot) for slot in episode.steps[-1].slots]


def event_line(event: LifecycleEvent) -> str:
    """One lifecycle or rollback event in words, with the gate's reason or the cause."""
    if isinstance(event, GovernorRollback):
        pruned = f"; pruned {event.pruned_slot}" if event.pruned_slot else ""
        return f"step {event.step} governor rollback: {event.reason}{pruned}"
    head = f"step {event.step} {event.slot}:"
    if isinstance(event, Germinated):
        return f"{head} germinated {event.blueprint} (+{event.params:,} params)"
    if isinstance(event, StageChanged):
        stages = f"{event.from_stage.name} → {event.to_stage.name}"
        return f"{head} {stages} (gate {event.gate}: {event.reason})"
    if isinstance(event, GateRefused):
        return (
            f"{head} {event.op} refused at {event.stage.name} by gate {event.gate}: {event.reason}"
        )
    if isinstance(event, Pruned):
        return f"{head} pruned {event.blueprint or '—'}: {event.reason}"
    return f"{head} fossilized {event.blueprint or '—'} ({event.params:,} params)"


def event_lines(episode: EpisodeHistory | None, n: int) -> list[str]:
    """The last `n` lifecycle and rollback events of an episode, oldest first, in words."""
    if episode is None or n <= 0:
        return []
    return [event_line(event) for event in episode.lifecycle[-n:]]


def rollback_lines(episode: EpisodeHistory | None) -> list[str]:
    """Every governor rollback of an episode, with its cause and the slot it pruned."""
    if episode is None:
        return []
    return [event_line(e) for e in episode.lifecycle if isinstance(e, GovernorRollback)]


def spark(values: Sequence[float | None]) -> str:
    """A one-row plot: a block per value, scaled from the least to the greatest; None: a gap."""
    known = [v for v in values if v is not None and math.isfinite(v)]
    if not known:
        return " " * len(values)
    low, high = min(known), max(known)
    top = len(_BARS) - 1

    def block(value: float | None) -> str:
        if value is None:
            return " "
        if not math.isfinite(value):
            return "?"
        return _BARS[round((value - low) / (high - low) * top) if high > low else 0]

    return "".join(block(v) for v in values)


def lifecycle_marks(episode: EpisodeHistory, steps: Sequence[int]) -> str:
    """One mark per step of `steps` (`MARKS`; `·`: none), at the step each event carries."""
    at: dict[int, str] = {}
    for kind, mark, _ in reversed(MARKS):
        for event in episode.lifecycle:
            if isinstance(event, kind):
                at[event.step] = mark
    return "".join(at.get(step, "·") for step in steps)


def _rows(rows: list[tuple[str, str, str]]) -> list[str]:
    """Label, plot and text columns, the plots aligned on the longest label."""
    width = max(len(label) for label, _, _ in rows)
    return [f"{label:<{width}}  {plot}  {text}" for label, plot, text in rows]


def curve_lines(episode: EpisodeHistory | None, width: int = CURVE_WIDTH) -> list[str]:
    """The curves of an episode, one column per step, the latest `width` steps.

    Rows: validation accuracy from step 0 (the untrained host), the lifecycle marks
    (`MARKS`, at the step each event carries), Tamiyo's reward, each reward term, and
    the parameters added; each with its latest value and its range (or sum) over the
    whole episode. The last line is the marks' legend.
    """
    if episode is None or (episode.started is None and not episode.steps):
        return ["no step yet"]
    val = dict(episode.val_curve)
    last = max([*val, *(e.step for e in episode.lifecycle)])
    steps = list(range(max(0, last + 1 - width), last + 1))
    rows: list[tuple[str, str, str]] = []
    if val:
        accuracies = list(val.values())
        rows.append(
            (
                "val accuracy",
                spark([val.get(t) for t in steps]),
                f"{accuracies[-1]:.4f} (min {min(accuracies):.4f}, max {max(accuracies):.4f})",
            )
        )
    rows.append(("lifecycle", lifecycle_marks(episode, steps), ""))
    if episode.steps:
        by_step = {s.step: s for s in episode.steps}
        shown = [by_step.get(t) for t in steps]
        latest = episode.steps[-1]
        total = sum(s.reward for s in episode.steps)
        rewards = [None if s is None else s.reward for s in shown]
        rows.append(("reward", spark(rewards), f"{latest.reward:+.4f} (Σ {total:+.4f})"))
        for term in dict.fromkeys(name for s in episode.steps for name in s.reward_terms):
            values = [None if s is None else s.reward_terms.get(term) for s in shown]
            term_total = sum(s.reward_terms.get(term, 0.0) for s in episode.steps)
            now = latest.reward_terms.get(term)
            text = "—" if now is None else f"{now:+.4f}"
            rows.append((f"  {term}", spark(values), f"{text} (Σ {term_total:+.4f})"))
        params = [None if s is None else float(s.params_added) for s in shown]
        rows.append(("params added", spark(params), f"{latest.params_added:,}"))
    legend = ", ".join(f"{mark} {name}" for _, mark, name in MARKS)
    return [
        f"episode {episode.episode}, steps {steps[0]}–{steps[-1]}",
        *_rows(rows),
        f"marks: {legend} (the first listed wins a step)",
    ]


def duration(seconds: float | None) -> str:
    """Seconds as `12.3 s` or `1:02:03` (None: `—`)."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def run_figures(env: EnvHistory) -> dict[str, str]:
    """One env's figures: policy, episode and step, episodes done, mean return, speed, times."""
    current = env.current
    mean = env.mean_return()
    speed = env.steps_per_second()
    if current is None:
        episode = "—"
    else:
        step = current.steps[-1].step if current.steps else 0
        total = "?" if current.started is None else str(current.started.episode_epochs)
        state = " (ended)" if current.ended is not None else ""
        episode = f"{current.episode}, step {step}/{total}{state}"
    return {
        "policy": "—" if current is None or current.policy is None else current.policy,
        "episode": episode,
        "episodes done": str(len(env.finished)),
        "mean return": "—" if mean is None else f"{mean:+.4f}",
        "steps/s": "—" if speed is None else f"{speed:.2f}",
        "elapsed": duration(env.elapsed_seconds()),
        "remaining": duration(None if current is None else current.remaining_seconds()),
    }


def figures_text(env: EnvHistory) -> str:
    """`run_figures` on one line, then the latest step's actions and reward."""
    line = "  │  ".join(f"{key} {value}" for key, value in run_figures(env).items())
    current = env.current
    if current is None or not current.steps:
        return line
    step = current.steps[-1]
    actions = "; ".join(f"{agent}: {action}" for agent, action in step.actions.items())
    refused = f" (refused: {', '.join(step.refused)})" if step.refused else ""
    return (
        f"{line}\nstep {step.step}: {actions}{refused}  │  reward {step.reward:+.4f}  │  "
        f"val accuracy {step.val_accuracy:.4f}"
    )


def envs_text(names: Sequence[str], selected: str | None, paused: bool, interval: float) -> str:
    """The env switcher line: every env, the selected one bracketed, and the follow's state."""
    envs = "  ".join(f"[{name}]" if name == selected else name for name in names)
    state = "PAUSED (space follows)" if paused else f"following every {interval:g} s"
    return f"envs: {envs or '— (no telemetry yet)'}  │  {state}"


def errors_text(errors: dict[Path, TelemetryFormatError | TelemetryReplacedError]) -> str:
    """The telemetry errors, one per file, each naming its file (and line)."""
    return "\n".join(
        f"telemetry error: {error} ({path.name} is not followed past its last good poll "
        + (
            "until this line is fixed)"
            if isinstance(error, TelemetryFormatError)
            else "any more: restart esper-watch to read the new run)"
        )
        for path, error in errors.items()
    )


class WatchApp(App[None]):
    """The live dashboard of one run's telemetry.

    Args:
        path: A resolved telemetry directory or event file (`telemetry_dir`).
        interval: Seconds between two polls of the files.
    """

    TITLE = "esper-watch"
    CSS = """
    #envs { background: $boost; }
    #figures { height: auto; }
    #errors { color: $error; text-style: bold; display: none; }
    #errors.shown { display: block; }
    #slots { height: auto; max-height: 14; }
    #panes { height: 1fr; }
    #curves-pane { width: 3fr; border: round $primary; padding: 0 1; }
    #events-pane { width: 2fr; border: round $primary; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "next_env", "next env", priority=True),
        Binding("p", "previous_env", "previous env", priority=True),
        Binding("tab", "next_env", "next env", show=False, priority=True),
        Binding("shift+tab", "previous_env", "previous env", show=False, priority=True),
        Binding("space", "toggle_pause", "pause/follow", priority=True),
        Binding("q", "quit", "quit", priority=True),
    ]

    #: Lifecycle events the events panel shows.
    EVENT_COUNT: ClassVar[int] = 12

    def __init__(self, path: Path, interval: float = 0.5) -> None:
        super().__init__()
        self.telemetry_path = path
        self.poll_interval = interval
        self.follower = TelemetryFollower(path)
        self.history = RunHistory()
        self.selected_env: str | None = None
        self.paused = False
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        """The header, the env line, the figures, the errors, the slots, the curves and events."""
        yield Header()
        yield Static(id="envs", markup=False)
        yield Static(id="figures", markup=False)
        yield Static(id="errors", markup=False)
        yield DataTable(id="slots", cursor_type="none", zebra_stripes=True)
        with Horizontal(id="panes"):
            with VerticalScroll(id="curves-pane"):
                yield Static(id="curves", markup=False)
            with VerticalScroll(id="events-pane"):
                yield Static(id="events", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        """Reads what is there and starts following."""
        self.sub_title = str(self.telemetry_path)
        self.query_one("#slots", DataTable).add_columns(*SLOT_COLUMNS)
        self.query_one("#curves-pane").border_title = "curves"
        self.query_one("#events-pane").border_title = "lifecycle (latest) and rollbacks"
        self.follow()
        self._timer = self.set_interval(self.poll_interval, self.follow)

    def follow(self) -> None:
        """Reads the new complete lines of every file and redraws (not once the app stops)."""
        # Textual closes the screens before the app's own timers, so a poll can
        # tick after the panels are gone.
        if not self.is_running:
            return
        self.history.extend(self.follower.poll())
        names = list(self.history.envs)
        if names and self.selected_env not in names:
            self.selected_env = names[0]
        self.redraw()

    def redraw(self) -> None:
        """Redraws every panel from the history, for the selected env."""
        names = list(self.history.envs)
        env = self.history.envs.get(self.selected_env or "")
        episode = None if env is None else env.current
        self.query_one("#envs", Static).update(
            envs_text(names, self.selected_env, self.paused, self.poll_interval)
        )
        self.query_one("#figures", Static).update(
            f"waiting for telemetry in {self.telemetry_path}" if env is None else figures_text(env)
        )
        errors = self.query_one("#errors", Static)
        errors.update(errors_text(self.follower.errors))
        errors.set_class(bool(self.follower.errors), "shown")
        table = self.query_one("#slots", DataTable)
        table.clear()
        for row in slot_rows(episode):
            table.add_row(*row, key=row[0])
        self.query_one("#curves", Static).update("\n".join(curve_lines(episode)))
        lifecycle = event_lines(episode, self.EVENT_COUNT) or ["no lifecycle event yet"]
        rollbacks = rollback_lines(episode)
        text = [*lifecycle, "", f"governor rollbacks this episode: {len(rollbacks)}", *rollbacks]
        self.query_one("#events", Static).update("\n".join(text))

    def _switch(self, by: int) -> None:
        names = list(self.history.envs)
        if not names:
            return
        index = names.index(self.selected_env) if self.selected_env in names else 0
        self.selected_env = names[(index + by) % len(names)]
        self.redraw()

    def action_next_env(self) -> None:
        """Selects the next env (wrapping around)."""
        self._switch(1)

    def action_previous_env(self) -> None:
        """Selects the previous env (wrapping around)."""
        self._switch(-1)

    def action_toggle_pause(self) -> None:
        """Pauses the follow (the files are not read), or resumes it with a poll at once."""
        self.paused = not self.paused
        if self._timer is not None:
            if self.paused:
                self._timer.pause()
            else:
                self._timer.resume()
        if self.paused:
            self.redraw()
        else:
            self.follow()


def main(argv: list[str] | None = None) -> None:
    """Parses `esper-watch PATH [--interval S]` and runs the dashboard until `q`.

    Raises:
        FileNotFoundError: PATH does not exist or holds no telemetry.
        ValueError: The interval is not positive.
    """
    parser = argparse.ArgumentParser(
        prog="esper-watch",
        description="Live terminal dashboard of a run's telemetry (Karn).",
    )
    parser.add_argument(
        "path", metavar="PATH", help="a telemetry directory or file, or an esper-train run folder"
    )
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between polls (default 0.5)"
    )
    args = parser.parse_args(argv)
    if not args.interval > 0:
        raise ValueError(f"--interval must be positive, got {args.interval}")
    WatchApp(telemetry_dir(args.path), args.interval).run()


def cli() -> None:
    """The `esper-watch` console script: a bad PATH ends with one line."""
    run_cli(main, "esper-watch")
