import base64
import itertools
import json
import os
import shlex
import zipfile

import cloudpickle
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import PPO

from agents.multi_agent_policies import WaitPolicy
from agents.multi_agent_sb3 import AgentView, make_agent_view
from agents.zoo.policy import SB3Policy, load_sb3_policy, stamp_semantics
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
    karn = SB3Policy(model)
    assert karn.algo == "maskable_ppo"  # inferred from the model's class
    obs, info = view.reset(seed=1)
    action = karn.act(obs, info)
    mask = view.action_space.split_mask(info["action_mask"])
    assert all(part[a] for part, a in zip(mask, action, strict=True))
    # The team env's infos hold int8 masks: only the last op left legal, it is always taken.
    assert info["action_mask"].dtype == np.int8
    ops = view.action_space.nvec[0]
    only_last = info["action_mask"].copy()
    only_last[:ops] = 0
    only_last[ops - 1] = 1
    sampling = SB3Policy(model, deterministic=False)
    sampling.reset(seed=0)
    assert {int(sampling.act(obs, {**info, "action_mask": only_last})[0]) for _ in range(20)} == {
        ops - 1
    }
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

    karn = load_sb3_policy("maskable_ppo", tmp_path / "hostile.zip", view)
    assert not marker.exists()
    assert karn.model.action_space == view.action_space
    obs, info = view.reset(seed=1)
    assert np.array_equal(karn.act(obs, info), SB3Policy(model).act(obs, info))
    data["esper_backdoor"] = {":type:": "<class 'int'>", ":serialized:": blob}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(tmp_path / "unknown.zip", "w") as new:
        for name, content in members.items():
            new.writestr(name, content)
    with pytest.raises(UntrustedAgentError, match="esper_backdoor"):
        load_sb3_policy("maskable_ppo", tmp_path / "unknown.zip", view)
    assert not marker.exists()
    view.close()


class PredictSpy:
    """Stands in for a model's `predict`: records each call's inputs and outputs, passes it on."""

    def __init__(self, model):
        self.predict = model.predict
        self.calls = []

    def __call__(self, obs, state=None, episode_start=None, deterministic=False):
        action, returned = self.predict(
            obs, state=state, episode_start=episode_start, deterministic=deterministic
        )
        self.calls.append(
            {
                "obs": np.array(obs),
                "state": state,
                "episode_start": None if episode_start is None else np.array(episode_start),
                "action": np.array(action),
                "returned": returned,
            }
        )
        return action, returned


@unbounded_ok
def test_a_recurrent_partner_keeps_its_memory_through_the_episode(kwargs, tmp_path, monkeypatch):
    tamiyo_view = make_agent_view("tamiyo", **kwargs)
    model = RecurrentPPO(
        "MlpLstmPolicy", tamiyo_view, n_steps=4, batch_size=4, seed=0, device="cpu"
    )
    stamp_semantics(model)
    model.save(tmp_path / "tamiyo.zip")
    spy = PredictSpy(model)
    monkeypatch.setattr(model, "predict", spy)
    tamiyo = SB3Policy(model)
    assert tamiyo.algo == "recurrent_ppo"
    view = make_agent_view("emrakul", partners={"tamiyo": tamiyo, "karn": WaitPolicy(3)}, **kwargs)
    wait = np.zeros(len(view.action_space.nvec), dtype=np.int64)
    view.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = view.step(wait)
        done = terminated or truncated
    calls = list(spy.calls)
    assert len(calls) >= 3
    # Each step is given the LSTM state the step before returned; only the first starts.
    assert calls[0]["state"] is None and calls[0]["episode_start"].tolist() == [True]
    for before, call in itertools.pairwise(calls):
        assert call["state"] is before["returned"]
        assert call["episode_start"].tolist() == [False]
    assert not np.array_equal(calls[1]["state"][0], np.zeros_like(calls[1]["state"][0]))
    # The same actions as threading the state through `predict` by hand.
    state, start = None, np.ones((1,), dtype=bool)
    for call in calls:
        action, state = spy.predict(
            call["obs"], state=state, episode_start=start, deterministic=True
        )
        start = np.zeros((1,), dtype=bool)
        assert np.array_equal(action, call["action"])
    # A new episode forgets the memory and starts again.
    view.reset(seed=1)
    assert tamiyo._state is None and tamiyo._episode_start.tolist() == [True]
    view.step(wait)
    assert spy.calls[-1]["state"] is None and spy.calls[-1]["episode_start"].tolist() == [True]
    assert spy.calls[-1]["returned"] is tamiyo._state
    # The partner loaded from its file acts, and remembers, as the one in memory.
    loaded = load_sb3_policy("recurrent_ppo", tmp_path / "tamiyo.zip", tamiyo_view)
    assert loaded.algo == "recurrent_ppo"
    loaded.reset(seed=0)
    for call in calls:
        assert np.array_equal(loaded.act(call["obs"], {}), call["action"])
    assert all(
        np.allclose(mine, theirs)
        for mine, theirs in zip(loaded._state, calls[-1]["returned"], strict=True)
    )
    view.close()
    tamiyo_view.close()


class Touch:
    """Unpickles into `touch MARKER`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)
