"""esper-report: one self-contained HTML page whose figures are the telemetry's (or a board's)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from benchmarks.leaderboard import read_board, run_board
from esper_env.telemetry import (
    EpisodeEnded,
    EpisodeStarted,
    Fossilized,
    GateRefused,
    Germinated,
    GovernorRollback,
    Pruned,
    StepEnded,
    TelemetryFormatError,
    read_events,
)
from karn import report

PNG_PREFIX = "data:image/png;base64,"
#: The plots of one episode's detail, in page order.
DETAIL_PLOTS = [
    "validation accuracy",
    "slot stages",
    "alpha per slot",
    "seed contribution",
    "parameters added",
    "reward terms",
]


class Page(HTMLParser):
    """Collects what the tests look at: every tag, the images, every table's rows of cells."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.images: list[tuple[str, str]] = []
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action")]
        if tag == "img":
            self.images.append((values.get("alt") or "", values.get("src") or ""))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h3":
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "h3" and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._heading is not None:
            self._heading.append(data)


def _assert_self_contained(text: str) -> Page:
    page = Page(text)
    assert "http" not in text
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    assert "url(" not in text and "@import" not in text
    assert all(url.startswith(PNG_PREFIX) for url in page.urls)
    for _, src in page.images:
        data = base64.b64decode(src.removeprefix(PNG_PREFIX), validate=True)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    return page


def _expected_rows(events: list[Any]) -> list[list[str]]:
    """The episode table, counted here from the raw events by (env, episode)."""
    episodes: dict[tuple[str, int], list[Any]] = {}
    for event in events:
        episodes.setdefault((event.env, event.episode), []).append(event)
    rows = []
    for (env, number), group in episodes.items():
        (started,) = [e for e in group if isinstance(e, EpisodeStarted)]
        (ended,) = [e for e in group if isinstance(e, EpisodeEnded)]
        rollbacks = [e for e in group if isinstance(e, GovernorRollback)]

        def count(kind: type, group: list[Any] = group) -> str:
            return str(sum(isinstance(e, kind) for e in group))

        pruned = sum(isinstance(e, Pruned) for e in group) + sum(
            r.pruned_slot is not None for r in rollbacks
        )
        rows.append(
            [
                env,
                str(number),
                str(started.seed),
                str(started.episode_seed),
                started.policy,
                count(StepEnded),
                f"{ended.episode_return:.3f}",
                f"{100 * ended.final_val_accuracy:.2f}",
                f"{100 * ended.final_test_accuracy:.2f}",
                count(Germinated),
                count(Fossilized),
                str(pruned),
                str(len(rollbacks)),
                count(GateRefused),
                f"{ended.seconds:.1f}",
                "terminated" if ended.terminated else "truncated",
            ]
        )
    return rows


@pytest.fixture(scope="module")
def run_page(run_telemetry: Path) -> str:
    return report.build_report(run_telemetry)


def test_the_report_of_a_run_is_one_self_contained_page_of_its_plots(run_page: str) -> None:
    page = _assert_self_contained(run_page)
    expected = ["episodes of the run"]
    for env in ("events.0", "events.1"):
        expected += [f"validation curves of {env}", *DETAIL_PLOTS]
    assert [alt for alt, _ in page.images] == expected
    # Each env shows its latest episode in detail.
    assert page.headings == [
        "events.0 episode 1 in detail: heuristic, seed 2, truncated",
        "events.1 episode 0 in detail: heuristic, seed 3, truncated",
    ]


def test_the_episode_table_holds_the_telemetrys_values(run_page: str, run_telemetry: Path) -> None:
    events = read_events(run_telemetry)
    header, *rows = Page(run_page).tables[0]
    assert header == list(report.EPISODE_HEADER)
    assert rows == _expected_rows(events)
    assert sum(int(r[9]) for r in rows) > 0  # the heuristic grew seeds: the counts are not all 0
    # The step logs: one row per step of each detailed episode (the header first).
    step_logs = [t for t in Page(run_page).tables if t[0][:2] == ["step", "actions"]]
    assert [len(t) - 1 for t in step_logs] == [6, 6]
    last = [e for e in events if isinstance(e, StepEnded) and e.env == "events.1"][-1]
    assert step_logs[1][-1][1] == f"tamiyo: {last.actions['tamiyo']}"
    assert step_logs[1][-1][3] == f"{last.reward:.3f}"


def test_an_episode_an_env_or_one_file_can_be_chosen(run_telemetry: Path) -> None:
    page = Page(report.build_report(run_telemetry, episode=0, env="events.0"))
    assert page.headings == ["events.0 episode 0 in detail: heuristic, seed 1, truncated"]
    assert [row[0] for row in page.tables[0][1:]] == ["events.0", "events.0"]
    one_file = run_telemetry / "events.1.jsonl"
    assert not report.is_board(one_file)
    page = Page(report.build_report(one_file))
    assert [alt for alt, _ in page.images] == [
        "episodes of the run",
        "validation curves of events.1",
        *DETAIL_PLOTS,
    ]
    with pytest.raises(ValueError, match="has episode 5"):
        report.build_report(run_telemetry, episode=5)
    with pytest.raises(ValueError, match=re.escape("no env 'events.7'")):
        report.build_report(run_telemetry, env="events.7")


def test_a_run_folder_is_written_atomically_to_the_same_page(
    run_page: str, run_telemetry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_telemetry, run / "telemetry")
    out = tmp_path / "out" / "report.html"
    assert report.main([str(run), "-o", str(out)]) == out
    assert capsys.readouterr().out.startswith(f"wrote {out} (")
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind
    text = out.read_text(encoding="utf-8")
    # The same page as of the telemetry directory itself, but for the path it names.
    assert text.replace(str(run / "telemetry"), "SOURCE") == run_page.replace(
        str(run_telemetry), "SOURCE"
    )


def test_a_corrupt_line_fails_naming_its_file_and_line(
    run_telemetry: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "telemetry"
    shutil.copytree(run_telemetry, folder)
    broken = folder / "events.1.jsonl"
    lines = broken.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = '{"schema_version": 3, "event": "no_such_event"}\n'
    broken.write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "report.html"
    out.write_text("the previous report", encoding="utf-8")
    with pytest.raises(TelemetryFormatError) as error:
        report.write_report(folder, out)
    assert str(error.value).startswith(f"{broken}:3: ")
    monkeypatch.setattr(sys, "argv", ["esper-report", str(folder), "-o", str(out)])
    with pytest.raises(SystemExit) as exit_:
        report.cli()
    assert exit_.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith(f"esper-report: error: {broken}:3: ")
    assert message.count("\n") == 1
    assert out.read_text(encoding="utf-8") == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "telemetry"]


@pytest.fixture(scope="module")
def board_file(tmp_path_factory: pytest.TempPathFactory, board_kwargs: dict[str, Any]) -> Path:
    """A Mini board of one heuristic and one random episode on the tiny data (as
    `tests/benchmarks/conftest.py`'s `recorded_board`, whose fixtures this folder cannot see)."""
    out = tmp_path_factory.mktemp("board")
    run_board(
        "Esper-CIFAR-Mini-v0", ["heuristic", "random"], [1000], env_kwargs=board_kwargs, out_dir=out
    )
    return out / "Esper-CIFAR-Mini-v0.jsonl"


def test_a_board_file_is_reported_from_its_records(board_file: Path) -> None:
    assert report.is_board(board_file)
    page = _assert_self_contained(report.build_report(board_file))
    assert [alt for alt, _ in page.images] == ["validation curves", "reward terms", "operations"]
    policies, episodes = page.tables
    assert sorted(row[:2] for row in policies[1:]) == [["heuristic", "1"], ["random", "1"]]
    entries = read_board(board_file)
    assert episodes[0] == list(report.BOARD_EPISODE_HEADER)
    assert episodes[1:] == [
        [
            e.env_id,
            e.policy,
            str(e.seed),
            str(e.steps),
            f"{e.episode_return:.3f}",
            f"{100 * e.final_val_accuracy:.2f}",
            f"{100 * e.final_test_accuracy:.2f}",
            f"{100 * e.added_param_fraction:.1f}",
            str(e.seeds_germinated),
            str(e.seeds_fossilized),
            str(e.seeds_pruned),
            str(e.governor_rollbacks),
            str(e.refused_actions),
            f"{e.wall_seconds:.1f}",
            e.device,
        ]
        for e in entries
    ]
    with pytest.raises(ValueError, match="a board has neither"):
        report.build_report(board_file, episode=0)


def test_a_corrupt_board_line_fails_naming_its_line(board_file: Path, tmp_path: Path) -> None:
    broken = tmp_path / "Esper-CIFAR-Mini-v0.jsonl"
    first, *_ = board_file.read_text(encoding="utf-8").splitlines(keepends=True)
    broken.write_text(first + first.replace('"steps":', '"stepz":'), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{broken}:2 is not a leaderboard line")):
        report.build_report(broken)
    with pytest.raises(ValueError) as error:  # the command line's message is one line
        report.main([str(broken), "-o", str(tmp_path / "report.html")])
    assert str(error.value).startswith(f"{broken}:2 is not a leaderboard line: ")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "report.html").exists()
