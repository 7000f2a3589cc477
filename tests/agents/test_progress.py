import io

import pytest
from rich.console import Console
from rich.table import Table

from agents.progress import Progress


def _terminal() -> Console:
    """A console that renders the bars as a terminal would, and records what it wrote."""
    return Console(record=True, file=io.StringIO(), force_terminal=True, width=120)


def test_the_bars_count_episodes_and_steps_with_the_latest_val_accuracy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    console = _terminal()
    with Progress(console=console) as progress:
        progress.start_run(2)
        progress.start_episode("noop seed 0", 4)
        progress.step(0.25)
        progress.step(0.5)
        during = console.export_text()
        progress.end_episode()
        progress.echo("seed 0: test_acc 0.5000")
        after = console.export_text()
    assert "episodes" in during and "0/2" in during
    assert "noop seed 0" in during and "2/4" in during and "val_acc 0.5000" in during
    assert "1/2" in after
    # Results go to stdout, never into the bars' stream.
    assert capsys.readouterr().out == "seed 0: test_acc 0.5000\n"
    assert "test_acc" not in console.export_text()


def test_quiet_shows_no_bars_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    console = _terminal()
    with Progress(quiet=True, console=console) as progress:
        progress.start_run(1)
        progress.start_episode("noop seed 0", 2)
        progress.step(0.25)
        progress.end_episode()
        progress.echo("seed 0: test_acc 0.5000")
        progress.echo(Table("epoch"))
    assert console.export_text() == ""
    assert capsys.readouterr() == ("", "")


def test_no_bars_off_a_terminal_but_the_lines_are_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = io.StringIO()
    with Progress(console=Console(file=stream)) as progress:
        progress.start_run(1)
        progress.start_episode("noop seed 0", 2)
        progress.step(0.25)
        progress.end_episode()
        progress.echo("seed 0: [not markup] test_acc 0.5000")
    assert stream.getvalue() == ""
    assert capsys.readouterr().out == "seed 0: [not markup] test_acc 0.5000\n"


def test_a_step_needs_an_episode() -> None:
    with pytest.raises(RuntimeError, match="start_episode"):
        Progress(bars=False).step(0.5)
