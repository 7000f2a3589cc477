import base64
import json
import os
import shlex
import zipfile

import cloudpickle
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO

from agents.multi_agent_policies import WaitPolicy
from agents.multi_agent_sb3 import AgentView, SB3AgentPolicy, make_agent_view
from agents.zoo.policy import stamp_semantics
from agents.zoo.safe_load import UntrustedAgentError
from esper_env.envs.multi_agent import AGENTS

PRESET = "Esper-CIFAR-Mini-v0"

# Esper's observations are unbounded floats, as in the single-agent env.
unbounded_ok = pytest.mark.filterwarnings("ignore:.*Box observation space.*infinity")


@pytest.fixture
def kwargs(tiny_env_kwargs):
    return {**tiny_env_kwargs, "preset": PRESET, "episode_epochs": 3}


@unbounded_ok
@pytest.mark.parametrize("agent", AGENTS)
def test_each_agent_view_is_a_valid_gymnasium_env(agent, kwargs):
    view = make_agent_view(agent, partners="heuristic", seed=0, **kwargs)
    check_env(view, skip_render_check=True)
    obs, info = view.reset(seed=0)
    assert obs.shape == view.observation_space.shape
    assert np.array_equal(view.action_masks(), info["action_mask"] == 1)
    view.close()


@unbounded_ok
def test_maskable_ppo_trains_one_agent_and_serves_as_a_partner(kwargs):
    view = make_agent_view("karn", partners="heuristic", seed=0, **kwargs)
    model = MaskablePPO("MlpPolicy", view, n_steps=6, batch_size=6, n_epochs=1, seed=0)
    model.learn(6)
    karn = SB3AgentPolicy(model)
    obs, info = view.reset(seed=1)
    action = karn.act(obs, info)
    mask = view.action_space.split_mask(info["action_mask"])
    assert all(part[a] for part, a in zip(mask, action, strict=True))
    # The trained Karn now drives its part while Emrakul learns with plain PPO.
    emrakul_view = make_agent_view(
        "emrakul", partners={"tamiyo": WaitPolicy(4), "karn": karn}, **kwargs
    )
    PPO("MlpPolicy", emrakul_view, n_steps=6, batch_size=6, n_epochs=1, seed=0).learn(6)
    view.close()
    emrakul_view.close()


def test_bad_views_are_refused(kwargs):
    with pytest.raises(ValueError, match="no agent"):
        make_agent_view("urza", **kwargs)
    with pytest.raises(ValueError, match="partners must be one of"):
        make_agent_view("tamiyo", partners="random", **kwargs)
    view = make_agent_view("tamiyo", **kwargs)
    with pytest.raises(ValueError, match="needs exactly"):
        AgentView(view.env, "tamiyo", {"karn": WaitPolicy(3)})
    view.close()


@unbounded_ok
def test_a_saved_partner_loads_without_running_code_from_its_file(kwargs, tmp_path):
    view = make_agent_view("karn", partners="heuristic", seed=0, **kwargs)
    model = MaskablePPO("MlpPolicy", view, n_steps=6, batch_size=6, n_epochs=1, seed=0)
    stamp_semantics(model)
    model.save(tmp_path / "karn.zip")
    marker = tmp_path / "MARKER"
    with zipfile.ZipFile(tmp_path / "karn.zip") as old:
        members = {name: old.read(name) for name in old.namelist()}
    data = json.loads(members["data"])
    blob = base64.b64encode(cloudpickle.dumps(Touch(marker))).decode()
    data["lr_schedule"][":serialized:"] = blob  # a crafted file, its pickle swapped
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(tmp_path / "hostile.zip", "w") as new:
        for name, content in members.items():
            new.writestr(name, content)

    karn = SB3AgentPolicy.load("maskable_ppo", tmp_path / "hostile.zip", view)
    assert not marker.exists()
    assert karn.model.action_space == view.action_space
    obs, info = view.reset(seed=1)
    assert np.array_equal(karn.act(obs, info), SB3AgentPolicy(model).act(obs, info))
    data["esper_backdoor"] = {":type:": "<class 'int'>", ":serialized:": blob}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(tmp_path / "unknown.zip", "w") as new:
        for name, content in members.items():
            new.writestr(name, content)
    with pytest.raises(UntrustedAgentError, match="esper_backdoor"):
        SB3AgentPolicy.load("maskable_ppo", tmp_path / "unknown.zip", view)
    assert not marker.exists()
    view.close()


class Touch:
    """Unpickles into `touch MARKER`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)
