from pathlib import Path

import pytest

from esper_env.telemetry import EpisodeEnded, StepEnded, read_events
from karn.history import RunHistory, TelemetryFollower, telemetry_dir


def test_the_history_files_a_real_run_by_env_and_episode(run_telemetry: Path) -> None:
    events = read_events(run_telemetry)
    history = RunHistory.of(events)

    assert list(history.envs) == ["events.0", "events.1"]
    first, second = history.envs["events.0"].episodes
    assert (first.episode, second.episode) == (0, 1)
    assert first.policy == "heuristic" and first.started is not None
    assert [s.step for s in first.steps] == [1, 2, 3, 4, 5, 6]
    assert first.val_curve[0] == (0, first.started.val_accuracy)
    assert first.val_curve[1:] == [(s.step, s.val_accuracy) for s in first.steps]
    ended = [e for e in events if isinstance(e, EpisodeEnded) and e.env == "events.0"]
    assert [first.episode_return, second.episode_return] == [e.episode_return for e in ended]
    assert first.episode_return == pytest.approx(sum(s.reward for s in first.steps))
    assert any(e.event == "germinated" for e in first.lifecycle)  # the heuristic grew a seed
    env = history.envs["events.0"]
    assert env.mean_return() == pytest.approx((first.episode_return + second.episode_return) / 2)
    assert env.steps_per_second() is not None and env.steps_per_second() > 0
    assert first.remaining_seconds() is None  # ended
    assert len(history.episodes()) == 3


def test_a_running_episode_estimates_its_remaining_time(run_telemetry: Path) -> None:
    events = read_events(run_telemetry / "events.1.jsonl")
    cut = [e for e in events if not isinstance(e, EpisodeEnded)]
    steps = [e for e in cut if isinstance(e, StepEnded)]
    history = RunHistory.of(cut[: cut.index(steps[1]) + 1])  # two of six steps seen
    episode = history.envs["events.1"].current
    assert episode is not None and episode.ended is None
    mean = (steps[0].seconds + steps[1].seconds) / 2
    assert episode.remaining_seconds() == pytest.approx(4 * mean)


def test_the_follower_sees_new_files_and_lines(run_telemetry: Path, tmp_path: Path) -> None:
    follower = TelemetryFollower(tmp_path)
    assert follower.poll() == []
    lines = (run_telemetry / "events.0.jsonl").read_bytes().splitlines(keepends=True)
    target = tmp_path / "events.0.jsonl"
    target.write_bytes(b"".join(lines[:3]) + lines[3][:10])  # a writer mid-line
    assert len(follower.poll()) == 3
    with target.open("ab") as handle:
        handle.write(lines[3][10:])
    (tmp_path / "events.1.jsonl").write_bytes((run_telemetry / "events.1.jsonl").read_bytes())
    new = follower.poll()
    assert new[0] == read_events(run_telemetry / "events.0.jsonl")[3]
    assert {e.env for e in new} == {"events.0", "events.1"}


def test_telemetry_dir_takes_a_run_folder_and_names_what_is_missing(
    run_telemetry: Path, tmp_path: Path
) -> None:
    assert telemetry_dir(run_telemetry) == run_telemetry
    run = tmp_path / "run"
    (run / "telemetry").mkdir(parents=True)
    assert telemetry_dir(run) == run / "telemetry"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no telemetry"):
        telemetry_dir(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        telemetry_dir(tmp_path / "nowhere")
