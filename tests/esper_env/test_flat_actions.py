from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.callbacks import BaseCallback
from tiny_data import tiny_kwargs

import esper_env  # noqa: F401
from agents.zoo.envs import make_vec_env
from agents.zoo.policy import SB3Policy
from esper_env.contracts import Op
from esper_env.wrappers import FLAT_ACTIONS_VERSION, MULTI_DISCRETE_MASK_KEY, FlatMaskedActions

ENV = "Esper-CIFAR-Mini-v0"
# A refusal by the lifecycle table itself: the (op, slot) pair is illegal in the slot's stage.
TABLE = "lifecycle"


def make(**kwargs: Any) -> FlatMaskedActions:
    return FlatMaskedActions(gym.make(ENV, **kwargs))


@pytest.fixture(scope="module")
def env(tiny_cifar_dir: str) -> Iterator[FlatMaskedActions]:
    # One env for the module (hypothesis examples reuse it): `reset(seed=...)` fixes an episode.
    env = make(**tiny_kwargs(tiny_cifar_dir))
    yield env
    env.close()


def expected_mask(env: FlatMaskedActions, op_slot_mask: np.ndarray) -> np.ndarray:
    """The flat mask spelt out index by index from the (op, slot) legality."""
    return np.array(
        [
            op_slot_mask[Op.WAIT].any() if op == Op.WAIT else op_slot_mask[op, slot]
            for op, slot, _, _ in (env.decode(i) for i in range(env.n))
        ]
    )


def check_masks(env: FlatMaskedActions, info: dict[str, Any]) -> np.ndarray:
    """Asserts that the info's flat mask, the method's and the (op, slot) legality agree."""
    inner = env.unwrapped
    per_dimension = inner.action_masks()
    n_ops, n_slots = len(Op), env.n_slots
    # The single-agent env allows every blueprint and speed: the pair decides alone.
    assert per_dimension[n_ops + n_slots :].all()
    np.testing.assert_array_equal(info["op_slot_mask"], inner.op_slot_mask())
    mask = env.action_masks()
    assert mask.dtype == np.bool_ and mask.shape == (env.n,)
    np.testing.assert_array_equal(mask, expected_mask(env, info["op_slot_mask"]))
    np.testing.assert_array_equal(info["action_mask"], mask)
    np.testing.assert_array_equal(info[MULTI_DISCRETE_MASK_KEY], per_dimension)
    return mask


def sample_episode(env: FlatMaskedActions, seed: int) -> list[dict[str, Any]]:
    """One episode of uniform choices among the legal flat actions; returns the step infos."""
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    infos = []
    done = False
    while not done:
        mask = check_masks(env, info)
        action = int(rng.choice(np.flatnonzero(mask)))
        _, _, terminated, truncated, info = env.step(action)
        infos.append(info)
        done = terminated or truncated
    return infos


def table_refusals(infos: list[dict[str, Any]]) -> int:
    return sum(1 for info in infos if info["refused"] and info["transition"]["gate"] == TABLE)


# --- the order ---------------------------------------------------------------------------


def test_count_follows_the_formula_and_the_space_wraps_the_env(env):
    slots, blueprints, speeds = (int(v) for v in env.unwrapped.action_space.nvec[1:])
    assert (slots, blueprints, speeds) == (3, 6, 3)
    assert env.n == 1 + slots * blueprints * speeds + 3 * slots == 64
    assert env.action_space == gym.spaces.Discrete(64)
    assert env.observation_space == env.unwrapped.observation_space
    assert FLAT_ACTIONS_VERSION == 1


def test_count_follows_the_config(tiny_cifar_dir):
    kwargs = tiny_kwargs(tiny_cifar_dir)
    lifecycle = {**kwargs["lifecycle"], "blend_epochs": (1, 3)}
    env = make(**{**kwargs, "blueprints": ("norm", "bottleneck"), "lifecycle": lifecycle})
    try:
        assert env.n == 1 + 3 * 2 * 2 + 3 * 3 == 22
    finally:
        env.close()


def test_every_index_round_trips_in_the_documented_order(env):
    slots, blueprints, speeds = env.n_slots, env.n_blueprints, env.n_speeds
    germinate = slots * blueprints * speeds
    for index in range(env.n):
        action = env.decode(index)
        assert action.dtype == np.int64 and action.shape == (4,)
        assert env.unwrapped.action_space.contains(action)
        assert env.encode(action) == index
        op, slot, blueprint, speed = (int(v) for v in action)
        if index == 0:
            assert (op, slot, blueprint, speed) == (Op.WAIT, 0, 0, 0)
        elif index <= germinate:
            assert op == Op.GERMINATE
            assert index == 1 + (slot * blueprints + blueprint) * speeds + speed
        else:
            k, expected_slot = divmod(index - 1 - germinate, slots)
            assert (op, slot, blueprint, speed) == (
                (Op.ADVANCE, Op.PRUNE, Op.FOSSILIZE)[k],
                expected_slot,
                0,
                0,
            )
    # Each meaningful tuple has exactly one index.
    assert len({tuple(env.decode(i)) for i in range(env.n)}) == env.n


def test_encode_ignores_the_fields_an_op_ignores(env):
    assert env.encode([Op.WAIT, 2, 5, 1]) == 0
    assert env.encode([Op.PRUNE, 1, 4, 2]) == env.encode([Op.PRUNE, 1, 0, 0])
    assert env.encode(np.array([Op.GERMINATE, 2, 5, 2])) == 54


@pytest.mark.parametrize("bad", [64, -1, 10**9, 1.5, True, np.array([1, 2]), "3"])
def test_a_bad_index_raises_a_value_error(env, bad):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"flat action"):
        env.step(bad)
    with pytest.raises(ValueError, match=r"flat action"):
        env.decode(bad)


def test_sb3_index_forms_are_accepted(env):
    for form in (7, np.int64(7), np.array(7), np.array([7])):
        np.testing.assert_array_equal(env.decode(form), env.decode(7))


@pytest.mark.parametrize(
    "bad", [[5, 0, 0, 0], [0, 3, 0, 0], [1, 0, 6, 0], [0, 0, 0], [1.5, 0, 0, 0]]
)
def test_encode_rejects_actions_outside_the_wrapped_space(env, bad):
    with pytest.raises(ValueError, match=r"is not in MultiDiscrete"):
        env.encode(bad)


def test_only_a_multi_discrete_tamiyo_env_is_wrapped(env):
    with pytest.raises(TypeError, match=r"MultiDiscrete"):
        FlatMaskedActions(env)


# --- the mask ----------------------------------------------------------------------------


def test_flat_mask_is_the_op_slot_legality_through_a_scripted_episode(tiny_cifar_dir):
    env = make(**{**tiny_kwargs(tiny_cifar_dir), "episode_epochs": 6})
    germinate_0, advance_0, prune_0, germinate_1, advance_1 = (
        env.encode(a)
        for a in (
            [Op.GERMINATE, 0, 1, 2],
            [Op.ADVANCE, 0, 0, 0],
            [Op.PRUNE, 0, 0, 0],
            [Op.GERMINATE, 1, 0, 0],
            [Op.ADVANCE, 1, 0, 0],
        )
    )
    try:
        _, info = env.reset(seed=0)
        masks = [check_masks(env, info)]
        per_dimension = [info[MULTI_DISCRETE_MASK_KEY]]
        for action in (germinate_0, advance_0, germinate_1, prune_0, 0, 0):
            assert masks[-1][action]
            _, _, terminated, truncated, info = env.step(action)
            assert not info["refused"], info["transition"]
            masks.append(check_masks(env, info))
            per_dimension.append(info[MULTI_DISCRETE_MASK_KEY])
        assert truncated and not terminated
    finally:
        env.close()
    # After germinating slot 0, the per-dimension mask allows op ADVANCE and slot 1 (slot 1
    # may germinate), so it lets (ADVANCE, 1) through; the flat mask forbids it.
    assert per_dimension[1][Op.ADVANCE] and per_dimension[1][len(Op) + 1]
    assert masks[1][advance_0] and not masks[1][advance_1]
    # The pruned slot is embargoed: nothing but WAIT on it until it resets.
    assert not masks[4][germinate_0] and not masks[4][prune_0]
    assert len({m.tobytes() for m in masks}) >= 4  # the mask did follow the stages


@settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
)
@given(seed=st.integers(0, 2**16))
def test_uniform_legal_flat_actions_are_never_refused_by_the_table(env, seed):
    infos = sample_episode(env, seed)
    assert len(infos) == 4
    assert table_refusals(infos) == 0


def test_the_per_dimension_mask_lets_refused_pairs_through_and_the_flat_one_does_not(env):
    # The same seeds, the same kind of sampler: uniform within each mask's legal set.
    seeds = range(8)
    flat = [info for seed in seeds for info in sample_episode(env, seed)]
    inner = env.unwrapped
    splits = np.cumsum(inner.action_space.nvec)[:-1]
    per_dimension = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        inner.reset(seed=seed)
        done = False
        while not done:
            parts = np.split(inner.action_masks(), splits)
            action = np.array([rng.choice(np.flatnonzero(part)) for part in parts])
            _, _, terminated, truncated, info = inner.step(action)
            per_dimension.append(info)
            done = terminated or truncated
    assert table_refusals(flat) == 0
    assert table_refusals(per_dimension) >= 1


def test_measured_gates_can_still_refuse_a_legal_flat_action(tiny_cifar_dir):
    # The mask is exact for the lifecycle table; a gate's measurement is not known before
    # the step. Here G4 refuses to fossilize a seed whose contribution is not significant.
    env = make(**{**tiny_kwargs(tiny_cifar_dir), "episode_epochs": 6})
    advance = env.encode([Op.ADVANCE, 0, 0, 0])
    try:
        env.reset(seed=0)
        gates = []
        for action in (env.encode([Op.GERMINATE, 0, 0, 0]), *[advance] * 5):
            assert env.action_masks()[action]
            *_, info = env.step(action)
            gates.append((info["transition"]["gate"], info["refused"]))
    finally:
        env.close()
    assert gates[:4] == [("G0", False), ("G1", False), ("G2", False), ("G3", False)]
    assert gates[4] == ("G4", True)


# --- SB3 ---------------------------------------------------------------------------------


class RecordSteps(BaseCallback):
    """Keeps each training step's infos, actions and the masks they were sampled under."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[dict[str, Any], int, np.ndarray]] = []

    def _on_step(self) -> bool:
        for info, action, mask in zip(
            self.locals["infos"], self.locals["actions"], self.locals["action_masks"], strict=True
        ):
            self.steps.append((info, int(action), mask))
        return True


def test_maskable_ppo_learns_on_a_vec_env_without_table_refusals(tiny_cifar_dir, tmp_path: Path):
    vec = make_vec_env(
        ENV,
        tiny_kwargs(tiny_cifar_dir),
        n_envs=1,
        seed=0,
        monitor_dir=tmp_path,
        wrappers=[FlatMaskedActions],
    )
    try:
        # `env_method` reaches the flat mask past Monitor, as MaskablePPO's get_action_masks does.
        (mask,) = vec.env_method("action_masks")
        assert mask.shape == (64,) and mask[0]
        assert get_action_masks(vec).shape == (1, 64)
        model = MaskablePPO(
            "MlpPolicy", vec, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu"
        )
        recorder = RecordSteps()
        model.learn(32, callback=recorder)
    finally:
        vec.close()
    assert len(recorder.steps) == 32
    for info, action, mask in recorder.steps:
        assert mask[action]
        assert not (info["refused"] and info["transition"]["gate"] == TABLE), info["transition"]
    episodes = [info["episode"] for info, _, _ in recorder.steps if "episode" in info]
    assert len(episodes) == 8  # 4-epoch episodes, through the monitor
    assert sum(e["refused_actions"] for e in episodes) == sum(
        i["refused"] for i, _, _ in recorder.steps
    )

    # The trained model acts on a gym.make env through the infos' flat mask.
    env = make(**tiny_kwargs(tiny_cifar_dir))
    policy = SB3Policy(model, "maskable_ppo", deterministic=False)
    try:
        obs, info = env.reset(seed=1)
        policy.reset(seed=1)
        done = False
        while not done:
            action = policy.act(obs, info)
            assert info["action_mask"][int(action)]
            obs, _, terminated, truncated, info = env.step(action)
            assert not (info["refused"] and info["transition"]["gate"] == TABLE)
            done = terminated or truncated
    finally:
        env.close()
