import base64
import json
import os
import shlex
import zipfile
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from sb3_contrib import MaskablePPO

from agents.zoo.envs import make_esper_env
from agents.zoo.policy import stamp_semantics
from agents.zoo.safe_load import UntrustedAgentError
from scripts.run_policy import main as run_policy


class Touch:
    """Unpickles into `touch MARKER`: what a hostile agent file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def hostile_agent(env_kwargs: dict[str, Any], folder: Path, marker: Path) -> Path:
    """A MaskablePPO agent file with a pickled entry Esper does not know, creating `marker`."""
    env = make_esper_env("Esper-CIFAR-Mini-v0", env_kwargs)
    model = MaskablePPO("MlpPolicy", env, n_steps=8, batch_size=8, seed=0, device="cpu")
    stamp_semantics(model)
    model.save(folder / "agent.zip")
    env.close()
    with zipfile.ZipFile(folder / "agent.zip") as old:
        members = {name: old.read(name) for name in old.namelist()}
    data = json.loads(members["data"])
    blob = base64.b64encode(cloudpickle.dumps(Touch(marker))).decode()
    data["esper_backdoor"] = {":type:": "<class 'int'>", ":serialized:": blob}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(folder / "hostile.zip", "w") as new:
        for name, content in members.items():
            new.writestr(name, content)
    return folder / "hostile.zip"


def test_a_crafted_agent_is_refused_unless_trusted(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    marker = tmp_path / "MARKER"
    hostile = hostile_agent(tiny_env_kwargs, tmp_path, marker)
    args = [
        "--policy",
        f"maskable_ppo:{hostile}",
        "--episodes",
        "1",
        "--env-kwargs",
        *(f"{k}:{json.dumps(v)}" for k, v in tiny_env_kwargs.items()),
    ]
    with pytest.raises(UntrustedAgentError, match=r"esper_backdoor[\s\S]*--trust-agent"):
        run_policy(args)
    assert not marker.exists()

    (result,) = run_policy([*args, "--trust-agent"])
    assert marker.exists()  # trusting does run the file's code: the flag is the only way in
    assert result.steps == tiny_env_kwargs["episode_epochs"]


def test_help_says_trusting_runs_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_policy(["--help"])
    assert "RUNS CODE FROM THE FILE" in " ".join(capsys.readouterr().out.split())
