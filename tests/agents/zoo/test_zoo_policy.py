from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import A2C, PPO

from agents.rollout import load_policy
from agents.zoo.envs import make_esper_env
from agents.zoo.policy import SB3Policy, load_sb3_policy, stamp_semantics
from esper_env.contracts import Op
from esper_env.envs.presets import ENV_SEMANTICS_VERSION


@pytest.fixture
def env(tiny_env_kwargs: dict[str, Any]):
    env = make_esper_env("Esper-CIFAR-Mini-v0", tiny_env_kwargs)
    yield env
    env.close()


def test_recurrent_policy_carries_and_resets_its_state(env) -> None:
    model = RecurrentPPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=0, device="cpu")
    policy = SB3Policy(model, "recurrent_ppo", deterministic=False)
    obs, info = env.reset(seed=0)

    def actions() -> list[list[int]]:
        policy.reset(seed=3)
        # The same observation three times: only the LSTM state differs between calls.
        return [policy.act(obs, info).tolist() for _ in range(3)]

    first = actions()
    assert policy._state is not None and not policy._episode_start.any()
    assert actions() == first  # reset forgets the state and reseeds the sampling
    hidden = policy._state[0].copy()
    policy.act(obs, info)
    assert not np.array_equal(policy._state[0], hidden)  # the state moves on


def test_the_algo_is_inferred_from_the_model_or_checked_against_it(env) -> None:
    ppo = PPO("MlpPolicy", env, n_steps=8, batch_size=8, seed=0, device="cpu")
    assert SB3Policy(ppo).algo == "ppo"
    with pytest.raises(ValueError, match="needs a RecurrentPPO model, got a PPO"):
        SB3Policy(ppo, "recurrent_ppo")
    with pytest.raises(ValueError, match="unknown algo 'sac'"):
        SB3Policy(ppo, "sac")
    a2c = A2C("MlpPolicy", env, n_steps=8, seed=0, device="cpu")
    with pytest.raises(ValueError, match="cannot tell the algo of a A2C model"):
        SB3Policy(a2c)


def test_maskable_policy_never_takes_a_masked_action(env) -> None:
    model = MaskablePPO("MlpPolicy", env, n_steps=8, batch_size=8, seed=0, device="cpu")
    policy = SB3Policy(model, "maskable_ppo", deterministic=False)
    obs, info = env.reset(seed=0)
    mask = info["action_mask"].copy()
    mask[: len(Op)] = False
    mask[int(Op.PRUNE)] = True  # only PRUNE allowed in the op dimension
    policy.reset(seed=0)
    ops = {int(policy.act(obs, {**info, "action_mask": mask})[0]) for _ in range(20)}
    assert ops == {int(Op.PRUNE)}


def test_load_policy_parses_algo_and_path(env, tmp_path: Path) -> None:
    model = RecurrentPPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=0, device="cpu")
    stamp_semantics(model)
    model.save(tmp_path / "agent.zip")
    policy = load_policy(f"recurrent_ppo:{tmp_path / 'agent.zip'}", env)
    assert isinstance(policy, SB3Policy) and policy.algo == "recurrent_ppo"
    with pytest.raises(ValueError, match="ALGO:PATH"):
        load_policy(f"a2c:{tmp_path / 'agent.zip'}", env)
    with pytest.raises(FileNotFoundError, match=r"missing\.zip"):
        load_sb3_policy("ppo", tmp_path / "missing.zip")


def test_an_agent_of_other_env_semantics_is_refused(env, tmp_path: Path) -> None:
    model = MaskablePPO("MlpPolicy", env, n_steps=8, batch_size=8, seed=0, device="cpu")
    model.save(tmp_path / "unstamped.zip")  # saved before semantics versions were recorded
    with pytest.raises(
        ValueError,
        match=rf"version 1 \(unrecorded\), this Esper runs version {ENV_SEMANTICS_VERSION}",
    ):
        load_sb3_policy("maskable_ppo", tmp_path / "unstamped.zip")
    model.env_semantics_version = ENV_SEMANTICS_VERSION + 1
    model.save(tmp_path / "future.zip")
    with pytest.raises(ValueError, match=f"version {ENV_SEMANTICS_VERSION + 1}, this Esper"):
        load_sb3_policy("maskable_ppo", tmp_path / "future.zip")
    stamp_semantics(model)
    model.save(tmp_path / "current.zip")
    policy = load_sb3_policy("maskable_ppo", tmp_path / "current.zip")
    assert policy.algo == "maskable_ppo"
