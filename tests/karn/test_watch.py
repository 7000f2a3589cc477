import asyncio
import html
import re
import shutil
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from esper_env.contracts import SeedStage
from esper_env.telemetry import (
    EpisodeEnded,
    Fossilized,
    GateRefused,
    Germinated,
    GovernorRollback,
    Pruned,
    StageChanged,
    StepEnded,
    read_events,
)
from karn import watch
from karn.history import EpisodeHistory, RunHistory, TelemetryFollower
from karn.watch import (
    WatchApp,
    alpha_bar,
    curve_lines,
    duration,
    event_lines,
    rollback_lines,
    run_figures,
    slot_row,
    slot_rows,
    spark,
)

QUIET = 3600.0  # a poll interval that never fires within a test: it follows only when told


def history_of(path: Path) -> RunHistory:
    return RunHistory.of(read_events(path))


def copy_run(run_telemetry: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_telemetry, tmp_path / "telemetry"))


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def table_rows(app: WatchApp) -> list[tuple[str, ...]]:
    table = app.query_one("#slots", DataTable)
    return [tuple(str(cell) for cell in table.get_row_at(i)) for i in range(table.row_count)]


def text(app: WatchApp, widget_id: str) -> str:
    return str(app.query_one(f"#{widget_id}", Static).content)


def screen_text(app: WatchApp) -> str:
    """What the terminal shows: the screenshot's text, without its SVG markup."""
    return html.unescape(re.sub(r"<[^>]+>", "", app.export_screenshot())).replace("\xa0", " ")


def assert_rows_are_slots(rows: list[tuple[str, ...]], step: StepEnded) -> None:
    assert len(rows) == len(step.slots)
    for row, slot in zip(rows, step.slots, strict=True):
        name, stage, blueprint, alpha, epochs, contribution, improvement, params = row
        assert (name, stage, blueprint) == (slot.name, slot.stage.name, slot.blueprint or "—")
        assert float(alpha.split()[-1]) == pytest.approx(slot.alpha, abs=0.005)
        assert int(epochs) == slot.epochs_in_stage
        assert float(contribution.split()[0]) == pytest.approx(slot.contribution, abs=5e-5)
        assert float(improvement.split()[0]) == pytest.approx(slot.improvement, abs=5e-5)
        assert int(params.replace(",", "")) == slot.params


def crafted_events(ended: EpisodeEnded) -> list[GateRefused | GovernorRollback]:
    ids = {
        "env": ended.env,
        "seed": ended.seed,
        "episode_seed": ended.episode_seed,
        "episode": ended.episode,
        "step": ended.step,
    }
    return [
        GateRefused(
            **ids,
            slot="slot0",
            op="advance",
            stage=SeedStage.TRAINING,
            gate="G2",
            reason="val loss change +0.0100 not below -0.0000",
        ),
        GovernorRollback(**ids, reason="val loss 9.1 > 3 x its mean", pruned_slot="slot2"),
    ]


# The pure functions behind the panels.


def test_the_slot_rows_are_the_latest_step_s_slots(run_telemetry: Path) -> None:
    for env in history_of(run_telemetry).envs.values():
        episode = env.current
        assert episode is not None
        assert_rows_are_slots(slot_rows(episode), episode.steps[-1])
    assert slot_rows(None) == []
    assert slot_rows(EpisodeHistory(env="events.0", episode=0)) == []  # no step yet: no guess


def test_alpha_bars_and_sparklines_draw_the_values() -> None:
    assert alpha_bar(0.5) == "█████····· " + " 0.50"
    assert alpha_bar(0.0, 4) == "···· " + " 0.00"
    assert alpha_bar(1.0, 4) == "████ " + " 1.00"
    assert alpha_bar(1 / 16, 2) == "▏· " + " 0.06"  # an eighth of a cell
    assert spark([0.0, 1.0, None, 0.5]) == "▁█ ▅"  # scaled min..max, None is a gap
    assert spark([2.0, 2.0]) == "▁▁"
    assert spark([None]) == " "


def test_event_lines_give_each_refusal_its_reason_and_each_rollback_its_cause() -> None:
    ids = {"env": "events.0", "seed": 1, "episode_seed": 1, "episode": 0, "step": 3}
    ended = EpisodeEnded(
        **ids,
        terminated=False,
        episode_return=0.0,
        final_val_accuracy=0.5,
        final_test_accuracy=0.5,
        seconds=1.0,
        time=1.0,
    )
    refused, rollback = crafted_events(ended)
    episode = EpisodeHistory(
        env="events.0",
        episode=0,
        lifecycle=[
            Germinated(**ids, slot="slot1", blueprint="residual_block", params=4672),
            StageChanged(
                **ids,
                slot="slot1",
                from_stage=SeedStage.GERMINATED,
                to_stage=SeedStage.TRAINING,
                gate="G1",
                reason="all finite",
            ),
            refused,
            Pruned(**ids, slot="slot1", blueprint="residual_block", reason="hurts"),
            Fossilized(**ids, slot="slot2", blueprint="conv", params=10),
            rollback,
        ],
    )
    assert event_lines(episode, 10) == [
        "step 3 slot1: germinated residual_block (+4,672 params)",
        "step 3 slot1: GERMINATED → TRAINING (gate G1: all finite)",
        "step 3 slot0: advance refused at TRAINING by gate G2: "
        "val loss change +0.0100 not below -0.0000",
        "step 3 slot1: pruned residual_block: hurts",
        "step 3 slot2: fossilized conv (10 params)",
        "step 3 governor rollback: val loss 9.1 > 3 x its mean; pruned slot2",
    ]
    assert event_lines(episode, 2) == event_lines(episode, 10)[-2:]
    assert event_lines(episode, 0) == [] and event_lines(None, 5) == []
    assert rollback_lines(episode) == event_lines(episode, 1)


def test_the_curves_plot_the_telemetry_values_with_lifecycle_marks(run_telemetry: Path) -> None:
    first, second = history_of(run_telemetry).envs["events.0"].episodes
    lines = curve_lines(first)
    assert lines[0] == "episode 0, steps 0–6"
    accuracies = [v for _, v in first.val_curve]
    (val_line,) = [line for line in lines if line.startswith("val accuracy")]
    assert spark(accuracies) in val_line
    low, high = min(accuracies), max(accuracies)
    assert val_line.endswith(f"{accuracies[-1]:.4f} (min {low:.4f}, max {high:.4f})")
    (marks_line,) = [line for line in lines if line.startswith("lifecycle")]
    marks = marks_line.split()[1]
    germinated = {e.step for e in first.lifecycle if isinstance(e, Germinated)}
    assert germinated and {i for i, mark in enumerate(marks) if mark == "G"} == germinated
    second_marks = next(line for line in curve_lines(second) if line.startswith("lifecycle"))
    fossilized = [e.step for e in second.lifecycle if isinstance(e, Fossilized)]
    assert fossilized and second_marks.split()[1][fossilized[0]] == "F"
    last = first.steps[-1]
    for term, value in last.reward_terms.items():
        (line,) = [line for line in lines if line.split()[0] == term]
        total = sum(s.reward_terms[term] for s in first.steps)
        assert line.endswith(f"{value:+.4f} (Σ {total:+.4f})")
    (reward_line,) = [line for line in lines if line.startswith("reward")]
    assert reward_line.endswith(f"{last.reward:+.4f} (Σ {first.episode_return:+.4f})")
    assert lines[-2].startswith("params added") and lines[-2].endswith(f"{last.params_added:,}")
    assert lines[-1].startswith("marks: R rollback, P pruned, F fossilized, G germinated")
    assert curve_lines(first, width=3)[0] == "episode 0, steps 4–6"  # the latest steps
    assert curve_lines(None) == ["no step yet"]


def test_the_run_figures_are_the_history_s(run_telemetry: Path) -> None:
    env = history_of(run_telemetry).envs["events.0"]
    assert run_figures(env) == {
        "policy": "heuristic",
        "episode": "1, step 6/6 (ended)",
        "episodes done": "2",
        "mean return": f"{env.mean_return():+.4f}",
        "steps/s": f"{env.steps_per_second():.2f}",
        "elapsed": duration(env.elapsed_seconds()),
        "remaining": "—",
    }
    events = read_events(run_telemetry / "events.1.jsonl")
    running = RunHistory.of(events[: events.index(next(e for e in events if e.step == 3)) + 1])
    env = running.envs["events.1"]
    current = env.current
    assert current is not None
    figures = run_figures(env)
    assert figures["episodes done"] == "0" and figures["mean return"] == "—"
    assert figures["remaining"] == duration(current.remaining_seconds()) != "—"
    assert (duration(None), duration(3.21), duration(75.0)) == ("—", "3.2 s", "0:01:15")


def test_a_bad_line_stops_only_its_own_file(run_telemetry: Path, tmp_path: Path) -> None:
    folder = copy_run(run_telemetry, tmp_path)
    bad = folder / "events.1.jsonl"
    good_lines = len(lines_of(bad))
    with bad.open("ab") as handle:
        handle.write(b'{"schema_version": 2, "event": "epoch_end"}\n')
    with (folder / "events.0.jsonl").open("ab") as handle:
        handle.write(b'{"schema_ver')  # a writer mid-line: not an error, left for later
    follower = TelemetryFollower(folder)
    events = follower.poll()
    assert events == read_events(run_telemetry / "events.0.jsonl")
    (error,) = follower.errors.values()
    assert error.line_number == good_lines + 1
    assert str(error).startswith(f"{bad}:{good_lines + 1}: telemetry schema_version 2")
    assert follower.poll() == [] and list(follower.errors) == [bad]  # tried again, not skipped


# The dashboard, driven by Textual's test pilot.


def test_the_dashboard_shows_the_selected_env_and_switches(run_telemetry: Path) -> None:
    history = history_of(run_telemetry)

    async def drive() -> None:
        app = WatchApp(run_telemetry, interval=QUIET)
        async with app.run_test(size=(150, 45)) as pilot:
            for key, name in (("", "events.0"), ("n", "events.1"), ("p", "events.0")):
                if key:
                    await pilot.press(key)
                env = history.envs[name]
                current = env.current
                assert current is not None
                assert app.selected_env == name
                assert_rows_are_slots(table_rows(app), current.steps[-1])
                assert table_rows(app) == [slot_row(s) for s in current.steps[-1].slots]
                figures = text(app, "figures")
                assert "policy heuristic" in figures
                assert f"episodes done {len(env.finished)}" in figures
                assert f"mean return {env.mean_return():+.4f}" in figures
                assert f"steps/s {env.steps_per_second():.2f}" in figures
                assert current.steps[-1].actions["tamiyo"] in figures
                assert f"[{name}]" in text(app, "envs")
                assert text(app, "curves") == "\n".join(curve_lines(current))
                assert text(app, "events").startswith("\n".join(event_lines(current, 12)))
                assert "governor rollbacks this episode: 0" in text(app, "events")
                assert not app.query_one("#errors").display
            assert "episodes done 2" in text(app, "figures")
            screen = screen_text(app)  # what the terminal shows, not only the widgets
            assert "policy heuristic" in screen and "episodes done 2" in screen
            assert "residual_block" in screen and "HOLDING" in screen and "val accuracy" in screen
            await pilot.press("tab")
            assert app.selected_env == "events.1"
            await pilot.press("q")
            await pilot.pause()
            assert not app.is_running
        assert app.return_code == 0

    asyncio.run(drive())


def test_it_follows_the_files_and_pause_stops_the_follow(
    run_telemetry: Path, tmp_path: Path
) -> None:
    lines = lines_of(run_telemetry / "events.0.jsonl")
    events = read_events(run_telemetry / "events.0.jsonl")
    first_end = next(i for i, e in enumerate(events) if isinstance(e, EpisodeEnded))
    cut = next(i for i, e in enumerate(events) if isinstance(e, StepEnded) and e.step == 3)
    target = tmp_path / "events.0.jsonl"
    target.write_bytes(b"".join(lines[: cut + 1]))
    history = RunHistory.of(events)

    def append(start: int, stop: int) -> None:
        with target.open("ab") as handle:
            handle.write(b"".join(lines[start:stop]))

    async def drive() -> None:
        app = WatchApp(tmp_path, interval=0.05)
        async with app.run_test() as pilot:
            assert "step 3/6" in text(app, "figures") and "episodes done 0" in text(app, "figures")
            assert "remaining" in text(app, "figures")
            append(cut + 1, first_end + 1)
            for _ in range(100):  # the interval timer reads the new lines
                await pilot.pause(0.02)
                if "episodes done 1" in text(app, "figures"):
                    break
            assert "episodes done 1" in text(app, "figures")
            await pilot.press("space")
            assert app.paused and "PAUSED" in text(app, "envs")
            append(first_end + 1, len(lines))
            await pilot.pause(0.3)  # six intervals: nothing is read while paused
            assert "episodes done 1" in text(app, "figures")
            assert_rows_are_slots(table_rows(app), history.envs["events.0"].episodes[0].steps[-1])
            await pilot.press("space")
            assert not app.paused and "following every 0.05 s" in text(app, "envs")
            assert "episodes done 2" in text(app, "figures")
            assert_rows_are_slots(table_rows(app), history.envs["events.0"].episodes[1].steps[-1])

    asyncio.run(drive())


def test_it_waits_for_the_first_file_then_selects_its_env(
    run_telemetry: Path, tmp_path: Path
) -> None:
    async def drive() -> None:
        app = WatchApp(tmp_path, interval=QUIET)
        async with app.run_test() as pilot:
            assert text(app, "figures") == f"waiting for telemetry in {tmp_path}"
            assert "no telemetry yet" in text(app, "envs") and table_rows(app) == []
            await pilot.press("n")  # nothing to switch to: no harm
            shutil.copy(run_telemetry / "events.1.jsonl", tmp_path)
            app.follow()
            assert app.selected_env == "events.1" and "episodes done 1" in text(app, "figures")

    asyncio.run(drive())


def test_a_line_that_does_not_fit_is_shown_with_its_file_and_line(
    run_telemetry: Path, tmp_path: Path
) -> None:
    folder = copy_run(run_telemetry, tmp_path)
    bad = folder / "events.1.jsonl"
    lines = lines_of(bad)

    async def drive() -> None:
        app = WatchApp(folder, interval=QUIET)
        async with app.run_test(size=(200, 45)) as pilot:
            with bad.open("ab") as handle:
                handle.write(lines[3][:25] + b"\n")  # a truncated line, then a newline
            app.follow()
            await pilot.pause()
            errors = app.query_one("#errors", Static)
            assert errors.display
            assert f"telemetry error: {bad}:{len(lines) + 1}: not a JSON line" in text(
                app, "errors"
            )
            assert "episodes done 2" in text(app, "figures")  # the other env still shows
            await pilot.press("n")
            assert "episodes done 1" in text(app, "figures")  # what came before still shows
            assert f"telemetry error: {bad}:{len(lines) + 1}" in screen_text(app)

    asyncio.run(drive())


def test_a_file_that_another_run_replaced_is_reported_not_followed(
    run_telemetry: Path, tmp_path: Path
) -> None:
    folder = copy_run(run_telemetry, tmp_path)
    replaced = folder / "events.1.jsonl"

    async def drive() -> None:
        app = WatchApp(folder, interval=QUIET)
        async with app.run_test(size=(200, 45)) as pilot:
            replaced.write_bytes(lines_of(replaced)[0])  # a new run starts the file again
            app.follow()
            await pilot.pause()
            assert app.query_one("#errors", Static).display
            assert f"telemetry error: {replaced}: shrank to" in text(app, "errors")
            assert "restart esper-watch to read the new run" in text(app, "errors")
            assert "episodes done 2" in text(app, "figures")  # the other env still shows

    asyncio.run(drive())


def test_refusals_and_rollbacks_show_with_their_reasons(
    run_telemetry: Path, tmp_path: Path
) -> None:
    lines = lines_of(run_telemetry / "events.1.jsonl")
    ended = read_events(run_telemetry / "events.1.jsonl")[-1]
    assert isinstance(ended, EpisodeEnded)
    extra = [e.model_dump_json().encode() + b"\n" for e in crafted_events(ended)]
    (tmp_path / "events.1.jsonl").write_bytes(b"".join([*lines[:-1], *extra, lines[-1]]))

    async def drive() -> None:
        app = WatchApp(tmp_path / "events.1.jsonl", interval=QUIET)  # one file also works
        async with app.run_test():
            events = text(app, "events")
            assert (
                f"step {ended.step} slot0: advance refused at TRAINING by gate G2: "
                "val loss change +0.0100 not below -0.0000"
            ) in events
            assert "governor rollbacks this episode: 1" in events
            rollback = f"step {ended.step} governor rollback: val loss 9.1 > 3 x its mean"
            assert events.endswith(f"{rollback}; pruned slot2")
            marks = next(
                line for line in text(app, "curves").splitlines() if line.startswith("lifecycle")
            )
            assert marks.split()[1][ended.step] == "R"  # a rollback outranks the refusal

    asyncio.run(drive())


def test_main_takes_a_run_folder_and_a_bad_path_ends_with_one_line(
    run_telemetry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_telemetry, run / "telemetry")
    started: list[tuple[Path, float]] = []
    monkeypatch.setattr(
        WatchApp, "run", lambda self: started.append((self.telemetry_path, self.poll_interval))
    )
    watch.main([str(run), "--interval", "0.25"])
    assert started == [(run / "telemetry", 0.25)]
    with pytest.raises(ValueError, match="--interval must be positive"):
        watch.main([str(run), "--interval", "0"])
    monkeypatch.setattr(sys, "argv", ["esper-watch", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as exit_info:
        watch.cli()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"esper-watch: error: {tmp_path / 'nowhere'} does not exist\n"


def test_a_poll_after_the_app_stops_draws_nothing(run_telemetry: Path) -> None:
    async def drive() -> WatchApp:
        app = WatchApp(run_telemetry, interval=QUIET)
        async with app.run_test() as pilot:
            await pilot.press("q")
        return app

    app = asyncio.run(drive())
    assert not app.is_running  # "q" quit the app
    app.follow()  # what a timer tick during Textual's shutdown does: no panel is left to draw
