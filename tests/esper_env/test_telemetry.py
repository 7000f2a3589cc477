import json

import pytest
from pydantic import ValidationError

from esper_env.contracts import SeedStage
from esper_env.telemetry import (
    EpochEnd,
    EventBus,
    Germinated,
    JsonlSink,
    StageChanged,
    event_json_schema,
    parse_event_line,
)


def test_jsonl_sink_lines_round_trip_through_the_schema(tmp_path):
    sink = JsonlSink(tmp_path)
    events = [
        Germinated(episode=0, step=1, slot="slot0", blueprint="norm", params=64),
        StageChanged(
            episode=0,
            step=2,
            slot="slot0",
            from_stage=SeedStage.GERMINATED,
            to_stage=SeedStage.TRAINING,
            gate="G1",
            reason="finite",
        ),
        EpochEnd(
            episode=0,
            step=2,
            train_loss=2.0,
            train_accuracy=0.2,
            val_loss=2.1,
            val_accuracy=0.19,
            host_params=1000,
            seed_params=64,
        ),
    ]
    for event in events:
        sink(event)
    sink.close()
    lines = sink.path.read_text().splitlines()
    assert [parse_event_line(line) for line in lines] == events
    assert json.loads(lines[1])["to_stage"] == int(SeedStage.TRAINING)
    with pytest.raises(RuntimeError, match="closed"):
        sink(events[0])


def test_a_line_with_an_unknown_field_or_event_is_rejected():
    good = Germinated(episode=0, step=1, slot="s", blueprint="b", params=1).model_dump_json()
    parse_event_line(good)
    with pytest.raises(ValidationError):
        parse_event_line(good.replace('"params"', '"parameters"'))
    with pytest.raises(ValidationError):
        parse_event_line(good.replace('"germinated"', '"sprouted"'))


def test_schema_names_every_event():
    schema = json.dumps(event_json_schema())
    for name in ("germinated", "stage_changed", "gate_refused", "pruned", "fossilized"):
        assert name in schema
    assert "governor_rollback" in schema and "epoch_end" in schema


def test_event_bus_delivers_in_subscription_order():
    bus = EventBus()
    seen: list[tuple[str, int]] = []
    bus.subscribe(lambda e: seen.append(("a", e.step)))
    bus.subscribe(lambda e: seen.append(("b", e.step)))
    bus.publish(Germinated(episode=0, step=3, slot="s", blueprint="b", params=1))
    assert seen == [("a", 3), ("b", 3)]
