import functools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pydantic import ValidationError

import esper_env  # noqa: F401
from agents.policies import RandomMasked, make_policy
from esper_env.contracts import HOST_PRESETS, Op, SeedStage
from esper_env.envs import ENV_PRESETS
from esper_env.envs.presets import ENV_SEMANTICS_VERSION, preset_config
from esper_env.observation import OBS_VERSION
from esper_env.reward import REWARD_TERMS
from esper_env.telemetry import parse_event_line


def make(env_id="Esper-CIFAR-Mini-v0", **kwargs):
    return gym.make(env_id, **kwargs)


@pytest.mark.parametrize("env_id", list(ENV_PRESETS))
def test_check_env_passes_on_every_id(env_id, tiny_env_kwargs):
    env = make(env_id, **tiny_env_kwargs)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_registered_ids_leave_the_episode_length_to_the_env():
    assert gym.spec("Esper-CIFAR-v0").max_episode_steps is None
    assert preset_config("Esper-CIFAR-v0").episode_epochs == 25
    assert preset_config("Esper-CIFAR-Mini-v0").episode_epochs == 15


def test_an_episode_longer_than_the_preset_runs_to_its_end(tiny_env_kwargs):
    # Mini's preset is 15 epochs; a registered TimeLimit of 15 would cut this episode.
    env = make(**{**tiny_env_kwargs, "episode_epochs": 17})
    env.reset(seed=0)
    for step in range(1, 18):
        _, _, terminated, truncated, info = env.step(np.zeros(4, dtype=np.int64))
        assert not terminated and truncated is (step == 17)
    assert "final_test_accuracy" in info
    assert gym.spec("Esper-CIFAR-Deep-v0").kwargs == {"preset": "Esper-CIFAR-Deep-v0"}


def test_mini_preset_is_a_capacity_starved_host_on_more_data():
    config = preset_config("Esper-CIFAR-Mini-v0")
    assert config.episode_epochs == 15
    assert (config.train_per_class, config.val_per_class, config.test_per_class) == (320, 100, 300)
    assert config.param_budget == 2.5
    assert HOST_PRESETS["mini"].widths == (8, 16, 16)
    assert config.obs_version == OBS_VERSION == 2


def _rollout(env, seed, steps):
    policy = RandomMasked(*env.action_space.nvec[2:], seed=seed)
    obs, info = env.reset(seed=seed)
    trace = [obs]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        trace += [obs, np.array([reward])]
        if terminated or truncated:
            break
    return trace


def test_same_seed_same_episode_and_other_seed_differs(tiny_env_kwargs):
    env = make(**tiny_env_kwargs)
    first, second = _rollout(env, 3, 4), _rollout(env, 3, 4)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    other = _rollout(env, 4, 4)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=False))


def test_reward_terms_sum_to_the_reward_and_test_accuracy_only_at_the_end(tiny_env_kwargs):
    env = make(**tiny_env_kwargs)
    obs, info = env.reset(seed=0)
    assert "final_test_accuracy" not in info
    assert info["obs_version"] == OBS_VERSION
    assert info["env_semantics_version"] == ENV_SEMANTICS_VERSION == 3
    policy = make_policy("fixed", env)
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        assert tuple(info["reward_terms"]) == REWARD_TERMS
        assert reward == pytest.approx(sum(info["reward_terms"].values()), abs=1e-12)
        assert info["env_semantics_version"] == ENV_SEMANTICS_VERSION
        world = env.unwrapped.world
        fraction = world.added_params() / world.base_params
        # Rent is spread over the episode: each step pays a 1 / episode_epochs share.
        assert info["reward_terms"]["rent"] == pytest.approx(
            -world.config.reward.rent * fraction / world.config.episode_epochs, abs=1e-12
        )
        done = terminated or truncated
        assert ("final_test_accuracy" in info) == done
    assert truncated and not terminated
    assert 0.0 <= info["final_test_accuracy"] <= 1.0
    assert info["reward_terms"]["terminal_accuracy"] > 0


def test_masks_agree_with_what_the_env_accepts(tiny_env_kwargs):
    env = make(**{**tiny_env_kwargs, "episode_epochs": 6})
    world = env.unwrapped.world
    obs, info = env.reset(seed=1)
    policy = RandomMasked(*env.action_space.nvec[2:], seed=1)
    done = False
    while not done:
        pairs = info["op_slot_mask"]
        np.testing.assert_array_equal(pairs, env.unwrapped.op_slot_mask())
        for op in list(Op)[1:]:
            for slot in range(pairs.shape[1]):
                if not pairs[op, slot]:
                    stages = [r.stage for r in world.model.reports()]
                    result = world.apply(op, slot)
                    assert not result.ok, (op, slot)
                    assert result.gate in ("lifecycle", "budget"), result
                    assert [r.stage for r in world.model.reports()] == stages
        flat = env.get_wrapper_attr("action_masks")()
        n_ops = pairs.shape[0]
        np.testing.assert_array_equal(flat[:n_ops], pairs.any(axis=1))
        action = policy.act(obs, info)
        obs, _, terminated, truncated, info = env.step(action)
        if info["transition"] is not None and not info["transition"]["ok"]:
            assert info["transition"]["gate"] not in ("lifecycle",), info["transition"]
        done = terminated or truncated


def test_out_of_space_action_and_unknown_key_fail_clearly(tiny_env_kwargs):
    env = make(**tiny_env_kwargs)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside"):
        env.step(np.array([len(Op), 0, 0, 0]))
    with pytest.raises(ValueError, match="outside"):
        env.step(np.array([0, 0, 0]))
    with pytest.raises(ValidationError, match="episode_epoch"):
        make(**tiny_env_kwargs, episode_epoch=3)
    with pytest.raises(ValidationError, match="batchsize"):
        make(**{**tiny_env_kwargs, "train": {"batchsize": 3}})
    with pytest.raises(ValidationError, match="unknown host preset"):
        make(**tiny_env_kwargs, host="huge")
    with pytest.raises(
        ValueError, match="obs_version=1 requested, but this Esper provides version 2"
    ):
        make(**tiny_env_kwargs, obs_version=1)


def test_a_fixed_schedule_grows_a_seed_and_the_observation_shows_it(tiny_env_kwargs):
    env = make(**{**tiny_env_kwargs, "episode_epochs": 3}, render_mode="ansi")
    obs, info = env.reset(seed=0)
    layout = env.unwrapped.layout
    obs, *_, info = env.step(np.array([Op.GERMINATE, 1, 0, 0]))
    assert info["transition"]["ok"], info["transition"]
    assert layout.slot_stages(obs)[1] is SeedStage.GERMINATED
    assert info["params_added"] > 0 and info["seeds_germinated"] == 1
    assert "GERMINATED" in env.render()
    obs, *_, info = env.step(np.array([Op.GERMINATE, 1, 0, 0]))
    assert info["refused"] and info["refused_actions"] == 1


def test_telemetry_lines_validate(tiny_env_kwargs, tmp_path):
    env = make(**tiny_env_kwargs, telemetry_dir=str(tmp_path))
    env.reset(seed=0)
    env.step(np.array([Op.GERMINATE, 0, 0, 0]))
    env.step(np.array([Op.ADVANCE, 0, 0, 0]))
    env.step(np.array([Op.GERMINATE, 0, 0, 0]))
    env.close()
    events = [
        parse_event_line(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()
    ]
    kinds = [e.event for e in events]
    assert kinds.count("epoch_end") == 3
    assert "germinated" in kinds and "gate_refused" in kinds and "stage_changed" in kinds


@pytest.mark.parametrize(
    "vector_cls",
    [gym.vector.SyncVectorEnv, functools.partial(gym.vector.AsyncVectorEnv, context="spawn")],
)
def test_vector_envs_step(vector_cls, tiny_env_kwargs):
    kwargs = {**tiny_env_kwargs, "episode_epochs": 2}
    # "esper_env:" imports the package (and so registers the ids) in spawned workers too.
    envs = vector_cls([lambda: gym.make("esper_env:Esper-CIFAR-Mini-v0", **kwargs)] * 2)
    obs, _ = envs.reset(seed=[0, 1])
    assert obs.shape == (2, envs.single_observation_space.shape[0])
    assert not np.array_equal(obs[0], obs[1])  # different seeds, different hosts
    for _ in range(2):
        obs, rewards, _, truncated, _ = envs.step(np.zeros((2, 4), dtype=np.int64))
    assert truncated.all()
    assert np.isfinite(rewards).all()
    envs.close()


@pytest.mark.cifar
def test_heuristic_tamiyo_grows_a_seed_on_real_cifar(real_cifar_dir):
    env = make(data_dir=real_cifar_dir)
    policy = make_policy("heuristic", env)
    obs, info = env.reset(seed=0)
    stages_seen = set()
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        stages_seen.update(r.stage for r in env.unwrapped.world.model.reports())
        done = terminated or truncated
    assert info["seeds_germinated"] >= 1
    assert SeedStage.BLENDING in stages_seen
    assert info["seeds_fossilized"] >= 1, env.render()
