from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from zoo_helpers import read_monitor, tiny_train_args

from agents.multi_agent_sb3 import make_agent_view
from agents.zoo import train as train_agent
from agents.zoo.policy import SB3Policy, load_sb3_policy
from agents.zoo.train import MultiAgentTrainResult, main
from esper_env.envs.multi_agent import AGENTS

ENV = "Esper-CIFAR-Mini-v0"


def _multi_args(env_kwargs: dict[str, Any], log_folder: Path, algo: str) -> list[str]:
    return [*tiny_train_args(env_kwargs, log_folder, algo), "--multi-agent", "--rounds", "1"]


@pytest.mark.parametrize("algo", ["maskable_ppo", "recurrent_ppo"])
def test_multi_agent_saves_three_models_that_act_in_their_views(
    algo: str, tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    # 48 timesteps over 1 round x 3 agents: one 16-step rollout each.
    result = main([*_multi_args(tiny_env_kwargs, tmp_path / "logs", algo), "-n", "48"])

    run = tmp_path / "logs" / algo / f"{ENV}_multi_1"
    assert isinstance(result, MultiAgentTrainResult)
    assert result.log_path == run and not result.interrupted
    assert result.num_timesteps == dict.fromkeys(AGENTS, 16)
    saved_args = yaml.safe_load((run / ENV / "args.yml").read_text())
    assert saved_args["multi_agent"] and saved_args["algo"] == algo
    assert yaml.safe_load((run / ENV / "config.yml").read_text())["n_timesteps"] == 48
    epochs = tiny_env_kwargs["episode_epochs"]
    for agent in AGENTS:
        assert result.model_paths[agent] == run / f"{agent}.zip"
        episodes = read_monitor(run / f"{agent}.0.monitor.csv")
        assert len(episodes) == 16 // epochs
        assert all(0 < row["final_val_accuracy"] <= 1 for row in episodes)

        policy = load_sb3_policy(algo, run / f"{agent}.zip")
        view = make_agent_view(agent, partners="heuristic", seed=3, preset=ENV, **tiny_env_kwargs)
        assert policy.model.observation_space == view.observation_space
        assert policy.model.action_space == view.action_space
        obs, info = view.reset(seed=3)
        policy.reset(3)
        for step in range(epochs):
            action = policy.act(obs, info)
            assert view.action_space.contains(action)
            if algo == "maskable_ppo":  # a masked policy never picks an illegal value
                offsets = np.cumsum([0, *view.action_space.nvec[:-1]])
                assert view.action_masks()[offsets + action].all()
            obs, _reward, terminated, truncated, info = view.step(action)
            assert (terminated or truncated) == (step == epochs - 1)
        view.close()


def test_agents_left_out_keep_their_heuristics(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    args = _multi_args(tiny_env_kwargs, tmp_path / "logs", "ppo")
    result = main([*args, "-n", "16", "--agents", "karn"])

    assert isinstance(result, MultiAgentTrainResult)
    assert sorted(p.name for p in result.log_path.glob("*.zip")) == ["karn.zip"]
    assert result.num_timesteps == {"karn": 16}


def test_partners_are_heuristics_until_they_have_a_model(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    class CountingPolicy(SB3Policy):
        def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
            calls.append(type(self.model).__name__)
            return super().act(obs, info)

    monkeypatch.setattr(train_agent, "SB3Policy", CountingPolicy)
    args = _multi_args(tiny_env_kwargs, tmp_path / "logs", "ppo")
    main([*args, "-n", "32", "--agents", "tamiyo,emrakul"])

    # Tamiyo trains first beside heuristics; Emrakul's 16 steps then have Tamiyo's model
    # as a partner (Karn, left out, stays a heuristic).
    assert calls == ["PPO"] * 16


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shared-policy"], "identical observation and action spaces"),
        (["--agents", "tamiyo,urza"], "--agents 'tamiyo,urza'"),
        (["-n", "2"], "less than one timestep for each of the 3 stages"),
        (["--save-freq", "8"], "--save-freq: single-agent only"),
    ],
)
def test_bad_multi_agent_options_fail_before_any_run_folder(
    extra: list[str], message: str, tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        main([*_multi_args(tiny_env_kwargs, tmp_path / "logs", "ppo"), *extra])
    assert not (tmp_path / "logs").exists()
