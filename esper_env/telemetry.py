"""Nissa and Oona: typed telemetry events, an in-process event bus, a JSONL sink and readers.

Every event is a frozen pydantic model with a literal `event` tag, so a JSONL line
validates against one schema (`EVENT_ADAPTER`, `event_json_schema()`) and a
misspelt field is an error rather than a silently missing column.

Each env writes its own file, `<telemetry_dir>/<telemetry_name>.jsonl` (`JsonlSink`),
and every event names that env (`env`, the file's stem) and the episode's seeds.
`read_events` validates and merges the files of a directory (or reads one file);
`TelemetryFile` follows one file that is still being written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

from pydantic import Field, TypeAdapter, ValidationError

from esper_env.contracts import SeedStage, SlotReport, StrictModel, TelemetryName

#: Bumped whenever an event's fields change meaning. 3: episodes and steps are events
#: (`episode_started`, `step_ended`, `episode_ended`: actions, reward terms, slot
#: states, wall times, the acting policy); 2: every event carries `env`, `seed` and
#: `episode_seed`; 1: the first version.
TELEMETRY_SCHEMA_VERSION = 3

#: The files `read_events` reads in a telemetry directory.
TELEMETRY_GLOB = "events*.jsonl"


class _Event(StrictModel):
    """Fields every event has.

    Attributes:
        schema_version: `TELEMETRY_SCHEMA_VERSION` of the writer.
        env: The writing env's `telemetry_name`, which is also its file's stem.
        seed: The seed given to the `reset` that began the episode (None: reset
            without one, e.g. an SB3 autoreset).
        episode_seed: The seed the episode was started from (drawn from the env's
            generator when `seed` is None); it alone fixes the episode.
        episode: Episode index within the env's life, from 0.
        step: Environment step (epoch) within the episode.
    """

    schema_version: Literal[3] = TELEMETRY_SCHEMA_VERSION
    env: TelemetryName
    seed: int | None
    episode_seed: int
    episode: int = Field(ge=0)
    step: int = Field(ge=0)


class Germinated(_Event):
    """A seed was placed in a dormant slot."""

    event: Literal["germinated"] = "germinated"
    slot: str
    blueprint: str
    params: int


class StageChanged(_Event):
    """A slot moved from one lifecycle stage to another."""

    event: Literal["stage_changed"] = "stage_changed"
    slot: str
    from_stage: SeedStage
    to_stage: SeedStage
    gate: str
    reason: str


class GateRefused(_Event):
    """A requested transition was refused by its gate (a no-op)."""

    event: Literal["gate_refused"] = "gate_refused"
    slot: str
    op: str
    stage: SeedStage
    gate: str
    reason: str


class Pruned(_Event):
    """A seed was removed from its slot."""

    event: Literal["pruned"] = "pruned"
    slot: str
    blueprint: str | None
    reason: str


class Fossilized(_Event):
    """A seed became a permanent part of the host."""

    event: Literal["fossilized"] = "fossilized"
    slot: str
    blueprint: str | None
    params: int


class GovernorRollback(_Event):
    """Tolaria's governor restored the last good snapshot."""

    event: Literal["governor_rollback"] = "governor_rollback"
    reason: str
    pruned_slot: str | None


class EpochEnd(_Event):
    """One environment step of host training finished."""

    event: Literal["epoch_end"] = "epoch_end"
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    host_params: int
    seed_params: int


class EpisodeStarted(_Event):
    """An episode began on a freshly initialised host (step 0).

    Attributes:
        episode_epochs: Steps the episode lasts unless the host becomes unrecoverable.
        slots: The slot names, in slot order.
        host_params: Parameters of the bare host.
        param_budget: Parameters seeds may add, as a multiple of `host_params`.
        val_accuracy: Validation accuracy of the untrained host.
        policy: Name of the acting policy, as the runner told the env (None: not told).
        time: Wall-clock time (Unix seconds).
    """

    event: Literal["episode_started"] = "episode_started"
    episode_epochs: int = Field(ge=1)
    slots: list[str]
    host_params: int
    param_budget: float
    val_accuracy: float
    policy: str | None
    time: float


class StepEnded(_Event):
    """An environment step finished: its actions, its epoch, its reward, the slots after it.

    Attributes:
        actions: What each agent did, in words (`tamiyo`: `germinate slot1
            residual_block blend 3`); the single-agent env has only `tamiyo`.
        refused: The agents whose action a gate refused.
        reward: Tamiyo's reward (the sum of `reward_terms`).
        reward_terms: Tamiyo's Simic terms of the step (the team's, in the multi-agent env).
        val_accuracy: Validation accuracy after the epoch.
        params_added: Parameters seeds add over the bare host, live and fossilized.
        slots: Every slot's report after the step.
        seconds: Wall time of the step (operations, epoch, measurements).
        time: Wall-clock time at its end (Unix seconds).
    """

    event: Literal["step_ended"] = "step_ended"
    actions: dict[str, str]
    refused: list[str]
    reward: float
    reward_terms: dict[str, float]
    val_accuracy: float
    params_added: int
    slots: list[SlotReport]
    seconds: float = Field(ge=0)
    time: float


class EpisodeEnded(_Event):
    """An episode finished (truncated at `episode_epochs`, or terminated: unrecoverable).

    Attributes:
        terminated: The host became unrecoverable (else the epoch budget ran out).
        episode_return: Tamiyo's summed reward.
        final_val_accuracy: Validation accuracy at the end.
        final_test_accuracy: Test accuracy, measured once, at the end.
        seconds: Wall time of the episode.
        time: Wall-clock time at its end (Unix seconds).
    """

    event: Literal["episode_ended"] = "episode_ended"
    terminated: bool
    episode_return: float
    final_val_accuracy: float
    final_test_accuracy: float
    seconds: float = Field(ge=0)
    time: float


TelemetryEvent = Annotated[
    Germinated
    | StageChanged
    | GateRefused
    | Pruned
    | Fossilized
    | GovernorRollback
    | EpochEnd
    | EpisodeStarted
    | StepEnded
    | EpisodeEnded,
    Field(discriminator="event"),
]

EVENT_ADAPTER: TypeAdapter[TelemetryEvent] = TypeAdapter(TelemetryEvent)


def event_json_schema() -> dict[str, Any]:
    """Returns the JSON schema every telemetry line validates against."""
    return EVENT_ADAPTER.json_schema()


def parse_event_line(line: str | bytes) -> TelemetryEvent:
    """Parses and validates one JSONL line; raises `pydantic.ValidationError` if it does not fit."""
    return EVENT_ADAPTER.validate_json(line)


class TelemetryReplacedError(RuntimeError):
    """A followed event file shrank or vanished: another run replaced it.

    Attributes:
        path: The file.
    """

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


class TelemetryFormatError(ValueError):
    """A telemetry line that cannot be read; the message starts with `<file>:<line>:`.

    Attributes:
        path: The file.
        line_number: The line, from 1.
    """

    def __init__(self, path: Path, line_number: int, problem: str) -> None:
        super().__init__(f"{path}:{line_number}: {problem}")
        self.path = path
        self.line_number = line_number


def _parse_line(line: bytes, path: Path, line_number: int) -> TelemetryEvent:
    """Validates one complete line (without its newline) of `path` against the schema."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TelemetryFormatError(path, line_number, f"not a JSON line ({err})") from err
    if not isinstance(record, dict):
        raise TelemetryFormatError(path, line_number, "not a JSON object")
    version = record.get("schema_version")
    if version != TELEMETRY_SCHEMA_VERSION:
        raise TelemetryFormatError(
            path,
            line_number,
            f"telemetry schema_version {version!r}; this reader reads only version "
            f"{TELEMETRY_SCHEMA_VERSION}",
        )
    try:
        event = EVENT_ADAPTER.validate_json(line)
    except ValidationError as err:
        raise TelemetryFormatError(path, line_number, f"not a telemetry event: {err}") from err
    if event.env != path.stem:
        raise TelemetryFormatError(
            path, line_number, f"an event of env {event.env!r} in the file of env {path.stem!r}"
        )
    return event


def _name_key(path: Path) -> tuple[tuple[int, int, str], ...]:
    # Dot-separated parts, numbers by value: events < events.0 < events.2 < events.10 < events.x
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.stem.split(".")
    )


def telemetry_files(directory: str | os.PathLike[str], pattern: str = TELEMETRY_GLOB) -> list[Path]:
    """The event files of a telemetry directory, in the order `read_events` merges them.

    Args:
        directory: A telemetry directory.
        pattern: Glob of the files to take.

    Returns:
        The matching files sorted by name, dot-separated numeric parts by value
        (`events.2.jsonl` before `events.10.jsonl`); a directory without any gives [].
    """
    return sorted(Path(directory).glob(pattern), key=_name_key)


def read_event_file(path: str | os.PathLike[str]) -> list[TelemetryEvent]:
    """Reads one finished event file: every line, validated, in file order.

    Args:
        path: A `.jsonl` file written by `JsonlSink`.

    Raises:
        TelemetryFormatError: A line is not JSON, is of another schema version, does
            not fit the schema, names another env than the file's stem, or is the last
            line and lacks its newline (truncated). Nothing is skipped.
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines[-1]:
        raise TelemetryFormatError(path, len(lines), "truncated line (no final newline)")
    return [_parse_line(line, path, number) for number, line in enumerate(lines[:-1], start=1)]


def read_events(
    path: str | os.PathLike[str], pattern: str = TELEMETRY_GLOB
) -> list[TelemetryEvent]:
    """Reads a telemetry directory (every `pattern` file) or one event file, validated.

    Order: file by file, in `telemetry_files` order (so by env name, `events.0`,
    `events.1`, ..., with numbers by value), and within a file in the order the env
    wrote its events. Every event's `env` names its file, so `sorted(events, key=...)`
    can interleave them another way.

    Args:
        path: A telemetry directory or one `.jsonl` file.
        pattern: In a directory, the glob of the files to read.

    Raises:
        FileNotFoundError: `path` does not exist.
        TelemetryFormatError: A line does not fit; see `read_event_file`.
    """
    path = Path(path)
    if not path.is_dir():
        return read_event_file(path)
    return [event for file in telemetry_files(path, pattern) for event in read_event_file(file)]


class TelemetryFile:
    """Follows an event file that is still being written: each call reads only what is new.

    A call returns the events of the complete lines added since the last call; a
    partial last line (its writer is mid-write) is left for a later call. A missing
    file is one that its env has not created yet: no events.

    Args:
        path: The `.jsonl` file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._offset = 0
        self._lines = 0

    @property
    def lines_read(self) -> int:
        """Complete lines consumed so far."""
        return self._lines

    def read_new(self) -> list[TelemetryEvent]:
        """The events of the complete lines written since the last call, in file order.

        Raises:
            TelemetryFormatError: A new complete line does not fit (as in
                `read_event_file`); nothing of this call is consumed, so the next
                call raises again.
            TelemetryReplacedError: The file shrank or vanished since the last call;
                every later call raises it too.
        """
        if not self.path.exists():
            if self._offset:
                raise TelemetryReplacedError(
                    self.path, f"vanished after {self._lines} lines were read"
                )
            return []
        with self.path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            if size < self._offset:
                raise TelemetryReplacedError(
                    self.path, f"shrank to {size} bytes after {self._offset} were read"
                )
            file.seek(self._offset)
            data = file.read(size - self._offset)
        end = data.rfind(b"\n") + 1
        lines = data[:end].split(b"\n")[:-1]
        events = [
            _parse_line(line, self.path, self._lines + number)
            for number, line in enumerate(lines, start=1)
        ]
        self._offset += end
        self._lines += len(lines)
        return events


Subscriber = Callable[[TelemetryEvent], None]


class EventBus:
    """Oona: delivers each published event to every subscriber, in subscription order."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        """Adds a callable that receives every later event."""
        self._subscribers.append(subscriber)

    def publish(self, event: TelemetryEvent) -> None:
        """Sends `event` to every subscriber."""
        for subscriber in self._subscribers:
            subscriber(event)


class JsonlSink:
    """Appends events as JSON lines to `<directory>/<name>.jsonl`, flushed per event.

    One sink per file: an env's events name it (`env`), and `read_events` refuses an
    event whose `env` is not its file's stem.
    """

    def __init__(self, directory: str | os.PathLike[str], name: str = "events") -> None:
        self.path = Path(directory) / f"{name}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = self.path.open("a", encoding="utf-8")

    def __call__(self, event: TelemetryEvent) -> None:
        """Writes one event as one line."""
        if self._file is None:
            raise RuntimeError(f"JsonlSink for {self.path} is closed")
        self._file.write(event.model_dump_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        """Closes the file; later events raise."""
        if self._file is not None:
            self._file.close()
            self._file = None
