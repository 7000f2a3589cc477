import json
from pathlib import Path
from typing import Any

import pytest
from zoo_helpers import hostile_agent

from agents.run import main as run_policy
from agents.zoo.safe_load import UntrustedAgentError


def test_a_crafted_agent_is_refused_unless_trusted(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    marker = tmp_path / "MARKER"
    hostile = hostile_agent("maskable_ppo", tiny_env_kwargs, tmp_path, marker)
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
