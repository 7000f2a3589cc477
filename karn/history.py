"""A run's history, rebuilt from Nissa's telemetry only: what the dashboard and the report show.

`RunHistory.add` takes events in the order each env wrote them (`read_events`, or a
`TelemetryFollower` as the files grow) and files them by env and episode. Nothing
here is measured anew: every figure is an event's field or a sum of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from esper_env.telemetry import (
    TELEMETRY_GLOB,
    EpisodeEnded,
    EpisodeStarted,
    EpochEnd,
    Fossilized,
    GateRefused,
    Germinated,
    GovernorRollback,
    Pruned,
    StageChanged,
    StepEnded,
    TelemetryEvent,
    TelemetryFile,
    TelemetryFormatError,
    TelemetryReplacedError,
    telemetry_files,
)

#: Events that change or try to change a slot's lifecycle, or roll the host back.
LifecycleEvent = Germinated | StageChanged | GateRefused | Pruned | Fossilized | GovernorRollback


@dataclass
class EpisodeHistory:
    """One episode of one env.

    Attributes:
        env: The env's telemetry name.
        episode: Its index within the env's life.
        started: Its `episode_started` event (None: the file began mid-episode).
        steps: Its `step_ended` events, in order.
        epochs: Its `epoch_end` events, in order.
        lifecycle: Its lifecycle and rollback events, in order.
        ended: Its `episode_ended` event (None: still running, or cut off).
    """

    env: str
    episode: int
    started: EpisodeStarted | None = None
    steps: list[StepEnded] = field(default_factory=list)
    epochs: list[EpochEnd] = field(default_factory=list)
    lifecycle: list[LifecycleEvent] = field(default_factory=list)
    ended: EpisodeEnded | None = None

    @property
    def policy(self) -> str | None:
        """The acting policy's name, as the runner told the env."""
        return None if self.started is None else self.started.policy

    @property
    def val_curve(self) -> list[tuple[int, float]]:
        """(step, validation accuracy) from step 0 (the untrained host) on."""
        start = [] if self.started is None else [(0, self.started.val_accuracy)]
        return start + [(s.step, s.val_accuracy) for s in self.steps]

    @property
    def episode_return(self) -> float:
        """Tamiyo's reward so far (the final return once the episode ended)."""
        if self.ended is not None:
            return self.ended.episode_return
        return sum(s.reward for s in self.steps)

    def remaining_seconds(self) -> float | None:
        """Steps left times the mean step time so far (None: unknown yet, or ended)."""
        if self.ended is not None or self.started is None or not self.steps:
            return None
        left = self.started.episode_epochs - self.steps[-1].step
        return left * sum(s.seconds for s in self.steps) / len(self.steps)


@dataclass
class EnvHistory:
    """Every episode one env wrote, in order.

    Attributes:
        name: The env's telemetry name (its file's stem).
        episodes: Its episodes; a resumed run's restart their numbering, and still
            append here.
    """

    name: str
    episodes: list[EpisodeHistory] = field(default_factory=list)

    @property
    def current(self) -> EpisodeHistory | None:
        """The latest episode."""
        return self.episodes[-1] if self.episodes else None

    @property
    def finished(self) -> list[EpisodeHistory]:
        """The episodes that ended."""
        return [e for e in self.episodes if e.ended is not None]

    def mean_return(self) -> float | None:
        """Mean return of the finished episodes (None: none yet)."""
        done = self.finished
        return sum(e.episode_return for e in done) / len(done) if done else None

    def steps_per_second(self) -> float | None:
        """Env steps per wall second, from the first episode's start to the last step."""
        steps = [s for e in self.episodes for s in e.steps]
        starts = [e.started.time for e in self.episodes if e.started is not None]
        if not steps or not starts:
            return None
        elapsed = steps[-1].time - starts[0]
        return len(steps) / elapsed if elapsed > 0 else None

    def elapsed_seconds(self) -> float | None:
        """Wall time from the first episode's start to the latest event with a time."""
        starts = [e.started.time for e in self.episodes if e.started is not None]
        times = [s.time for e in self.episodes for s in e.steps]
        times += [e.ended.time for e in self.episodes if e.ended is not None]
        if not starts:
            return None
        return max([*times, starts[0]]) - starts[0]

    def add(self, event: TelemetryEvent) -> None:
        """Files one event of this env under its episode."""
        current = self.current
        if isinstance(event, EpisodeStarted) or current is None or current.episode != event.episode:
            current = EpisodeHistory(env=self.name, episode=event.episode)
            self.episodes.append(current)
        if isinstance(event, EpisodeStarted):
            current.started = event
        elif isinstance(event, StepEnded):
            current.steps.append(event)
        elif isinstance(event, EpochEnd):
            current.epochs.append(event)
        elif isinstance(event, EpisodeEnded):
            current.ended = event
        else:
            current.lifecycle.append(event)


@dataclass
class RunHistory:
    """Every env of a run, by telemetry name, in the order they first wrote.

    Attributes:
        envs: Each env's history.
    """

    envs: dict[str, EnvHistory] = field(default_factory=dict)

    @classmethod
    def of(cls, events: list[TelemetryEvent]) -> RunHistory:
        """The history of `events` (each env's in the order it wrote them)."""
        history = cls()
        history.extend(events)
        return history

    def extend(self, events: list[TelemetryEvent]) -> None:
        """Adds events in the order their envs wrote them."""
        for event in events:
            self.envs.setdefault(event.env, EnvHistory(event.env)).add(event)

    def episodes(self) -> list[EpisodeHistory]:
        """Every episode of every env, env by env."""
        return [e for env in self.envs.values() for e in env.episodes]


def telemetry_dir(path: str | os.PathLike[str]) -> Path:
    """The telemetry of `path`: a telemetry directory, an esper-train run folder, or one file.

    A run folder keeps its telemetry in `telemetry/` (`esper-train` writes it there).

    Raises:
        FileNotFoundError: `path` does not exist, or holds no telemetry (the message
            says where it looked and how to write some).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file() or telemetry_files(path):
        return path
    if (path / "telemetry").is_dir():
        return path / "telemetry"
    raise FileNotFoundError(
        f"{path} holds no telemetry ({TELEMETRY_GLOB}, or a run folder's telemetry/): "
        "run with --env-kwargs telemetry_dir:DIR (esper-train writes its own)"
    )


class TelemetryFollower:
    """Follows a telemetry directory (or one file) as its envs write: new files, new lines.

    Each file is followed on its own: a line that does not fit stops its file only
    (every poll tries it again and records the error, nothing is skipped), as does
    a file that shrank or vanished (another run replaced it), and the other envs
    are still followed.

    Args:
        path: A telemetry directory or one `.jsonl` file (see `telemetry_dir`).

    Attributes:
        errors: The error of each file that is not followed, as of the last poll.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.errors: dict[Path, TelemetryFormatError | TelemetryReplacedError] = {}
        self._files: dict[Path, TelemetryFile] = {}

    def poll(self) -> list[TelemetryEvent]:
        """The events of every complete line written since the last poll, file by file."""
        paths = [self.path] if self.path.is_file() else telemetry_files(self.path)
        events: list[TelemetryEvent] = []
        for path in paths:
            follower = self._files.setdefault(path, TelemetryFile(path))
            try:
                events.extend(follower.read_new())
            # That file waits (a bad line) or stops (replaced); the others go on.
            except (TelemetryFormatError, TelemetryReplacedError) as error:
                self.errors[path] = error
            else:
                self.errors.pop(path, None)
        return events
