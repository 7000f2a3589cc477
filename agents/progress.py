"""Progress of the long commands: one bar per run (episodes) and one per episode (steps).

`esper-run`, `esper-eval`, `esper-leaderboard run`, `benchmarks.seed_paper` and
`benchmarks.headroom` share `Progress`: its bars go to stderr through `rich.progress`,
and only when stderr is a terminal (rich's `FORCE_COLOR` or `TTY_COMPATIBLE=1` force
it), so logs and captured output stay clean; result lines go to stdout, printed
between the bars' redraws (`Progress.echo`). `quiet` (`--quiet`) silences both.

Example:
    with Progress() as progress:
        progress.start_run(len(seeds))
        for seed in seeds:
            result = run_episode(env, policy, seed=seed, policy_name=name, progress=progress)
            progress.echo(f"seed {seed}: test_acc {result.final_test_accuracy:.4f}")
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Column

#: The `--quiet` flag's help, the same in every command.
QUIET_HELP = "no progress bars and no per-episode lines (results still go to the output files)"


class EpisodeSink(Protocol):
    """What an episode reports to while it runs (`agents.rollout.run_episode`'s `progress`)."""

    def start_episode(self, name: str, steps: int) -> None:
        """An episode named `name` of (at most) `steps` steps begins."""

    def step(self, val_accuracy: float) -> None:
        """One step (epoch) ended with validation accuracy `val_accuracy`."""

    def end_episode(self) -> None:
        """The episode ended (possibly before its last planned step)."""


class Progress:
    """A run's progress bars on stderr, and its result lines on stdout.

    Use it as a context manager: the bars show from `__enter__` to `__exit__`. It is an
    `EpisodeSink`; one update per step, nothing per sample.

    Args:
        quiet: No bars and no lines (`echo` prints nothing).
        bars: Show the bars (when `console` is a terminal); off: lines only.
        console: Where the bars go (default: stderr).
        out: Where `echo` prints renderables such as tables (default: stdout).
    """

    def __init__(
        self,
        *,
        quiet: bool = False,
        bars: bool = True,
        console: Console | None = None,
        out: Console | None = None,
    ) -> None:
        self.quiet = quiet
        console = console or Console(stderr=True)
        self._out = out or Console()
        self._bars = RichProgress(
            TextColumn(
                "{task.description}",
                table_column=Column(no_wrap=True, overflow="ellipsis", max_width=48),
            ),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[postfix]}"),
            console=console,
            refresh_per_second=2,
            transient=True,
            redirect_stdout=False,
            disable=quiet or not bars or not console.is_terminal,
        )
        self._run: TaskID | None = None
        self._episode: TaskID | None = None

    def __enter__(self) -> Self:
        self._bars.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._bars.stop()

    def start_run(self, total: int, description: str = "episodes") -> None:
        """Shows the run's bar: `total` episodes planned (replaces an earlier run's bar)."""
        if self._run is not None:
            self._bars.remove_task(self._run)
        self._run = self._bars.add_task(description, total=total, postfix="")

    def start_episode(self, name: str, steps: int) -> None:
        """Shows an episode's bar: `steps` steps planned."""
        if self._episode is not None:
            self._bars.remove_task(self._episode)
        self._episode = self._bars.add_task(name, total=steps, postfix="")

    def step(self, val_accuracy: float) -> None:
        """Advances the episode's bar by one step, showing `val_accuracy`.

        Raises:
            RuntimeError: No episode was started.
        """
        if self._episode is None:
            raise RuntimeError("step() before start_episode()")
        self._bars.update(
            self._episode, advance=1, postfix=f"val_acc {val_accuracy:.4f}", refresh=True
        )

    def end_episode(self) -> None:
        """Removes the episode's bar and counts the episode on the run's bar."""
        if self._episode is not None:
            self._bars.remove_task(self._episode)
            self._episode = None
        if self._run is not None:
            self._bars.update(self._run, advance=1, refresh=True)

    def echo(self, item: str | RenderableType) -> None:
        """Prints a result to stdout (nothing when quiet), the bars paused around it.

        A string is printed as it is (no markup, no wrapping); anything else (a
        `rich.table.Table`, ...) through rich.
        """
        if self.quiet:
            return
        started = self._bars.live.is_started
        if started:
            self._bars.stop()
        if isinstance(item, str):
            print(item, flush=True)
        else:
            self._out.print(item)
        if started:
            self._bars.start()
