"""The install: console scripts from a built, non-editable wheel, and a slim install's errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from zoo_helpers import as_key_values

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = (
    "esper-train",
    "esper-eval",
    "esper-run",
    "esper-leaderboard",
    "esper-watch",
    "esper-report",
    "esper-urza",
)
#: The packages of the extras; a slim install (`pip install esper`) has none of them.
EXTRA_MODULES = (
    "wandb",
    "tensorboard",
    "triton",
    "optuna",
    "matplotlib",
    "rliable",
    "textual",
    "minari",
    "fastapi",
    "uvicorn",
)


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with Esper installed from a wheel built from a copy of the sources.

    The copy keeps the build's `build/` and `*.egg-info` out of the checkout. The venv
    finds the dependencies in this interpreter's site-packages through a `.pth` line
    (which, unlike a site directory, runs none of the `.pth` files there, so the
    editable install of the checkout stays invisible).
    """
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("esper_env", "agents", "blueprints", "benchmarks", "karn", "urza"):
        shutil.copytree(
            REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root), str(source)])
    (wheel,) = root.glob("esper-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    Path(purelib.stdout.strip(), "dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n", encoding="utf-8"
    )
    _run([*pip, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)])
    return venv


def test_console_scripts_run_from_the_wheel(
    wheel_venv: Path, tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": ""}
    where = _run(
        [
            str(wheel_venv / "bin" / "python"),
            "-c",
            "import agents, benchmarks; print(agents.__file__)",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert Path(where.stdout.strip()).is_relative_to(wheel_venv)  # the wheel, not the checkout
    for script in SCRIPTS:
        assert "usage: " + script in _run([str(wheel_venv / "bin" / script), "--help"]).stdout

    kwargs = as_key_values(tiny_env_kwargs)
    out = tmp_path / "episodes.jsonl"
    bin_dir = wheel_venv / "bin"
    _run(
        [
            str(bin_dir / "esper-run"),
            "--policy",
            "heuristic",
            "--out",
            str(out),
            "--env-kwargs",
            *kwargs,
        ],
        cwd=tmp_path,
        env=env,
    )
    assert json.loads(out.read_text())["policy"] == "heuristic"
    _run(
        [
            str(bin_dir / "esper-train"),
            "--algo",
            "ppo",
            "-n",
            "16",
            "--seed",
            "0",
            "--eval-freq",
            "-1",
            "--no-progress",
            "--verbose",
            "0",
            "--num-threads",
            "1",
            "-params",
            "n_steps:16",
            "batch_size:16",
            "n_epochs:1",
            "-f",
            "logs",
            "--env-kwargs",
            *kwargs,
        ],
        cwd=tmp_path,
        env=env,
    )
    model = tmp_path / "logs" / "ppo" / "Esper-CIFAR-Mini-v0_1" / "Esper-CIFAR-Mini-v0.zip"
    _run(
        [str(bin_dir / "esper-eval"), "--algo", "ppo", "--model", str(model), "--episodes", "1"],
        cwd=tmp_path,
        env=env,
    )


def test_a_bad_argument_is_one_line_with_exit_status_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agents.zoo.train", "--env-kwargs", "episode_epochz:3"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("esper-train: error: ")
    assert "episode_epochz" in result.stderr and "Traceback" not in result.stderr


SLIM = f"""
import sys
for name in {EXTRA_MODULES!r}:
    sys.modules[name] = None  # what `import name` meets when the extra is not installed
"""


def _slim(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SLIM + code],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )


def test_a_slim_install_has_the_envs_and_the_zoo(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    result = _slim(
        f"""
import gymnasium as gym
import esper_env
from agents.zoo import train
from agents.zoo.algos import ALGOS
env = gym.make("Esper-CIFAR-Mini-v0", **{tiny_env_kwargs!r})
obs, info = env.reset(seed=0)
env.step(env.action_space.sample() * 0)
print("ok", sorted(ALGOS))
""",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        ("from agents.zoo.train import main; main(['--track'])", "wandb"),
        ("from agents.zoo.train import main; main(['-tb', 'tb'])", "tensorboard"),
        ("from agents.zoo.train import main; main(['-optimize'])", "optuna"),
        ("import agents.zoo.tracking", "wandb"),
        ("import agents.zoo.optimize", "optuna"),
        ("import benchmarks.leaderboard", "benchmarks"),
        ("import blueprints.kernels.triton_blend", "triton"),
        ("import karn.watch", "dashboard"),
        ("import karn.report", "benchmarks"),
        ("import agents.imitation.dataset", "imitation"),
        ("import urza.app", "urza"),
        ("from urza.cli import main; main(['serve', '--db', 'library.sqlite'])", "urza"),
    ],
)
def test_a_missing_extra_is_named_with_its_install_line(
    code: str, extra: str, tmp_path: Path
) -> None:
    result = _slim(code, tmp_path)
    assert result.returncode != 0
    assert f"pip install 'esper[{extra}]'" in result.stderr
