import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from esper_env.contracts import SeedStage
from esper_env.telemetry import (
    TELEMETRY_SCHEMA_VERSION,
    EpochEnd,
    EventBus,
    Germinated,
    JsonlSink,
    StageChanged,
    TelemetryFile,
    TelemetryFormatError,
    TelemetryReplacedError,
    event_json_schema,
    parse_event_line,
    read_events,
    telemetry_files,
)

STAMP = {"env": "events", "seed": 7, "episode_seed": 123}


def _germinated(env: str = "events", step: int = 1, seed: int | None = 7) -> Germinated:
    return Germinated(
        env=env,
        seed=seed,
        episode_seed=123,
        episode=0,
        step=step,
        slot="s",
        blueprint="b",
        params=1,
    )


def _write(path: Path, *events: Germinated) -> None:
    path.write_text("".join(event.model_dump_json() + "\n" for event in events))


def test_jsonl_sink_lines_round_trip_through_the_schema(tmp_path):
    sink = JsonlSink(tmp_path)
    events = [
        Germinated(**STAMP, episode=0, step=1, slot="slot0", blueprint="norm", params=64),
        StageChanged(
            **STAMP,
            episode=0,
            step=2,
            slot="slot0",
            from_stage=SeedStage.GERMINATED,
            to_stage=SeedStage.TRAINING,
            gate="G1",
            reason="finite",
        ),
        EpochEnd(
            **STAMP,
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
    assert read_events(tmp_path) == events
    assert json.loads(lines[0])["schema_version"] == TELEMETRY_SCHEMA_VERSION == 3
    assert json.loads(lines[1])["to_stage"] == int(SeedStage.TRAINING)
    with pytest.raises(RuntimeError, match="closed"):
        sink(events[0])


def test_a_line_with_an_unknown_field_or_event_is_rejected():
    good = _germinated().model_dump_json()
    parse_event_line(good)
    with pytest.raises(ValidationError):
        parse_event_line(good.replace('"params"', '"parameters"'))
    with pytest.raises(ValidationError):
        parse_event_line(good.replace('"germinated"', '"sprouted"'))
    with pytest.raises(ValidationError):  # provenance is required, not defaulted
        parse_event_line(good.replace('"seed":7,', ""))
    with pytest.raises(ValidationError):
        parse_event_line(good.replace('"env":"events"', '"env":"../x"'))


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
    bus.publish(_germinated(step=3))
    assert seen == [("a", 3), ("b", 3)]


def test_read_events_merges_a_directory_file_by_file_in_name_order(tmp_path):
    for index in (10, 2, 0):
        _write(
            tmp_path / f"events.{index}.jsonl",
            _germinated(f"events.{index}", step=1, seed=index),
            _germinated(f"events.{index}", step=2, seed=None),
        )
    (tmp_path / "other.jsonl").write_text("not telemetry\n")
    assert [p.name for p in telemetry_files(tmp_path)] == [
        "events.0.jsonl",
        "events.2.jsonl",
        "events.10.jsonl",
    ]
    events = read_events(tmp_path)
    assert [(e.env, e.step, e.seed) for e in events] == [
        ("events.0", 1, 0),
        ("events.0", 2, None),
        ("events.2", 1, 2),
        ("events.2", 2, None),
        ("events.10", 1, 10),
        ("events.10", 2, None),
    ]
    assert read_events(tmp_path / "events.2.jsonl") == events[2:4]
    (tmp_path / "empty").mkdir()
    assert read_events(tmp_path / "empty") == []
    with pytest.raises(FileNotFoundError):
        read_events(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("{not json", "not a JSON line"),
        ("[1, 2]", "not a JSON object"),
        ("", "not a JSON line"),
        (
            _germinated().model_dump_json().replace('"schema_version":3', '"schema_version":1'),
            "schema_version 1; this reader reads only version 3",
        ),
        (_germinated().model_dump_json().replace('"params":1', '"params":"x"'), "params"),
        (_germinated("events.1").model_dump_json(), "env 'events.1' in the file of env 'events'"),
    ],
)
def test_a_bad_line_fails_naming_its_file_and_line(tmp_path, bad_line, problem):
    path = tmp_path / "events.jsonl"
    path.write_text(_germinated().model_dump_json() + "\n" + bad_line + "\n")
    with pytest.raises(TelemetryFormatError, match=problem) as caught:
        read_events(tmp_path)
    assert str(caught.value).startswith(f"{path}:2: ")
    assert (caught.value.path, caught.value.line_number) == (path, 2)


def test_a_truncated_last_line_fails_the_full_reader(tmp_path):
    path = tmp_path / "events.3.jsonl"
    line = _germinated("events.3").model_dump_json()
    path.write_text(line + "\n" + line[:20])
    with pytest.raises(TelemetryFormatError, match=r"events\.3\.jsonl:2: truncated line"):
        read_events(path)


def test_the_follower_returns_only_new_complete_lines(tmp_path):
    path = tmp_path / "events.0.jsonl"
    follower = TelemetryFile(path)
    assert follower.read_new() == []  # not created yet
    first, second, third = (_germinated("events.0", step=step) for step in (1, 2, 3))
    line2 = second.model_dump_json() + "\n"
    with path.open("w") as file:
        file.write(first.model_dump_json() + "\n" + line2[:15])
        file.flush()
        assert follower.read_new() == [first]
        assert follower.read_new() == []  # the partial line waits
        file.write(line2[15:])
        file.flush()
        assert follower.read_new() == [second]
        file.write(third.model_dump_json() + "\n" + "{broken\n")
        file.flush()
        for _ in range(2):  # a bad line consumes nothing: it fails again
            with pytest.raises(TelemetryFormatError, match=r"events\.0\.jsonl:4: not a JSON"):
                follower.read_new()
    assert follower.lines_read == 2
    path.write_text("")
    for _ in range(2):  # a replaced file is never read again
        with pytest.raises(TelemetryReplacedError, match="shrank to 0 bytes"):
            follower.read_new()
    path.unlink()
    with pytest.raises(TelemetryReplacedError, match="vanished after 2 lines"):
        follower.read_new()


def test_the_multi_agent_env_stamps_its_events_too(tiny_env_kwargs, tmp_path):
    from esper_env import multi_agent

    env = multi_agent.parallel_env(
        preset="Esper-CIFAR-Mini-v0",
        **tiny_env_kwargs,
        telemetry_dir=str(tmp_path),
        telemetry_name="team.1",
    )
    try:
        _, infos = env.reset(seed=3)
        env.step({a: np.zeros(len(env.action_space(a).nvec), dtype=np.int64) for a in env.agents})
    finally:
        env.close()
    events = read_events(tmp_path / "team.1.jsonl")
    assert events and all(event.env == "team.1" and event.seed == 3 for event in events)
    assert {event.episode_seed for event in events} == {infos["tamiyo"]["episode_seed"]}
