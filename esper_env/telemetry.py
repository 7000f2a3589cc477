"""Nissa and Oona: typed telemetry events, an in-process event bus, and a JSONL sink.

Every event is a frozen pydantic model with a literal `event` tag, so a JSONL line
validates against one schema (`EVENT_ADAPTER`, `event_json_schema()`) and a
misspelt field is an error rather than a silently missing column.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

from pydantic import Field, TypeAdapter

from esper_env.contracts import SeedStage, StrictModel

#: Bumped whenever an event's fields change meaning.
TELEMETRY_SCHEMA_VERSION = 1


class _Event(StrictModel):
    schema_version: Literal[1] = TELEMETRY_SCHEMA_VERSION
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


TelemetryEvent = Annotated[
    Germinated | StageChanged | GateRefused | Pruned | Fossilized | GovernorRollback | EpochEnd,
    Field(discriminator="event"),
]

EVENT_ADAPTER: TypeAdapter[TelemetryEvent] = TypeAdapter(TelemetryEvent)


def event_json_schema() -> dict[str, Any]:
    """Returns the JSON schema every telemetry line validates against."""
    return EVENT_ADAPTER.json_schema()


def parse_event_line(line: str) -> TelemetryEvent:
    """Parses and validates one JSONL line; raises `pydantic.ValidationError` if it does not fit."""
    return EVENT_ADAPTER.validate_json(line)


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
    """Appends events as JSON lines to `<directory>/<name>.jsonl`, flushed per event."""

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
