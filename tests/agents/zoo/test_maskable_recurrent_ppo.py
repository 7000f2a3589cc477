"""Tests of `agents.zoo.maskable_recurrent_ppo` on a tiny env whose masks change every step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from sb3_contrib.common.maskable.evaluation import evaluate_policy as upstream_evaluate_policy
from sb3_contrib.common.recurrent.type_aliases import RecurrentRolloutBufferSamples, RNNStates
from stable_baselines3.common.vec_env import DummyVecEnv
from torch.distributions import Categorical

from agents.zoo.maskable_recurrent_ppo import (
    MaskableRecurrentActorCriticPolicy,
    MaskableRecurrentPPO,
    MaskableRecurrentRolloutBuffer,
    MaskableRecurrentRolloutBufferSamples,
    action_mask_dims,
    evaluate_masked_policy,
)

DISCRETE = spaces.Discrete(5)
MULTI_DISCRETE = spaces.MultiDiscrete([3, 4, 2])
ACTION_SPACES = [DISCRETE, MULTI_DISCRETE]
SMALL_POLICY = {"lstm_hidden_size": 8, "net_arch": [16]}


def nvec_of(action_space: spaces.Space) -> list[int]:
    if isinstance(action_space, spaces.Discrete):
        return [int(action_space.n)]
    return [int(n) for n in action_space.nvec]


def is_legal(action: np.ndarray, mask: np.ndarray, nvec: list[int]) -> bool:
    offsets = np.cumsum([0, *nvec[:-1]])
    return all(
        bool(mask[offset + a]) for offset, a in zip(offsets, np.atleast_1d(action), strict=True)
    )


class MaskedToyEnv(gym.Env):
    """Each step draws a new random mask (at least one legal action per dimension).

    The observation is the mask itself plus the time, so stored observations tell which masks
    were in force; illegal actions are counted (and punished).
    """

    def __init__(self, action_space: spaces.Space, episode_length: int = 7, seed: int = 0) -> None:
        self.action_space = action_space
        self.nvec = nvec_of(action_space)
        self.mask_dims = sum(self.nvec)
        self.observation_space = spaces.Box(0.0, 1.0, (self.mask_dims + 1,), np.float32)
        self.episode_length = episode_length
        self.illegal_actions = 0
        self._rng = np.random.default_rng(seed)
        self._t = 0
        self._mask = self._draw_mask()

    def _draw_mask(self) -> np.ndarray:
        parts = []
        for n in self.nvec:
            part = self._rng.random(n) < 0.4
            part[self._rng.integers(n)] = True
            parts.append(part)
        return np.concatenate(parts)

    def _obs(self) -> np.ndarray:
        return np.append(self._mask, self._t / self.episode_length).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._t = 0
        self._mask = self._draw_mask()
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        legal = is_legal(np.asarray(action), self._mask, self.nvec)
        self.illegal_actions += not legal
        # Reward the first legal choice of the first dimension (something to learn).
        first_legal = int(np.flatnonzero(self._mask[: self.nvec[0]])[0])
        reward = -1.0 if not legal else float(np.atleast_1d(action)[0] == first_legal)
        self._t += 1
        self._mask = self._draw_mask()
        return self._obs(), reward, False, self._t >= self.episode_length, {}

    def action_masks(self) -> np.ndarray:
        return self._mask.copy()


def make_vec_env(action_space: spaces.Space, n_envs: int = 2) -> DummyVecEnv:
    return DummyVecEnv(
        [lambda i=i: MaskedToyEnv(action_space, seed=i) for i in range(n_envs)]  # type: ignore[misc]
    )


def make_model(action_space: spaces.Space, n_envs: int = 2, **kwargs: Any) -> MaskableRecurrentPPO:
    options: dict[str, Any] = {
        "n_steps": 16,
        "batch_size": 16,
        "n_epochs": 2,
        "seed": 0,
        "device": "cpu",
        "policy_kwargs": SMALL_POLICY,
    }
    options.update(kwargs)
    return MaskableRecurrentPPO("MlpLstmPolicy", make_vec_env(action_space, n_envs), **options)


def make_policy(action_space: spaces.Space) -> MaskableRecurrentActorCriticPolicy:
    th.manual_seed(0)
    observation_space = spaces.Box(0.0, 1.0, (action_mask_dims(action_space) + 1,), np.float32)
    policy = MaskableRecurrentActorCriticPolicy(
        observation_space, action_space, lambda _: 1e-3, **SMALL_POLICY
    )
    # Spread the logits so that unmasked choices differ clearly from masked ones.
    with th.no_grad():
        policy.action_net.weight.normal_(0.0, 1.0)
        policy.action_net.bias.normal_(0.0, 1.0)
    return policy.eval()


def zero_states(policy: MaskableRecurrentActorCriticPolicy, n: int) -> RNNStates:
    layers, _, size = policy.lstm_hidden_state_shape
    zeros = th.zeros(layers, n, size)
    return RNNStates((zeros, zeros.clone()), (zeros.clone(), zeros.clone()))


def random_masks(rng: np.random.Generator, nvec: list[int], n: int) -> np.ndarray:
    rows = []
    for _ in range(n):
        parts = []
        for size in nvec:
            part = rng.random(size) < 0.4
            part[rng.integers(size)] = True
            parts.append(part)
        rows.append(np.concatenate(parts))
    return np.stack(rows)


POLICIES = {repr(space): make_policy(space) for space in ACTION_SPACES}


@st.composite
def masks_and_obs(draw: st.DrawFn, nvec: list[int]) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 4))
    rows = []
    for _ in range(n):
        parts = []
        for size in nvec:
            part = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size)))
            part[draw(st.integers(0, size - 1))] = True
            parts.append(part)
        rows.append(np.concatenate(parts))
    obs = draw(
        st.lists(
            st.floats(0.0, 1.0, width=32),
            min_size=n * (sum(nvec) + 1),
            max_size=n * (sum(nvec) + 1),
        )
    )
    return np.stack(rows), np.array(obs, np.float32).reshape(n, sum(nvec) + 1)


@pytest.mark.parametrize("action_space", ACTION_SPACES, ids=["discrete", "multidiscrete"])
def test_no_masked_action_is_ever_chosen(action_space: spaces.Space) -> None:
    policy = POLICIES[repr(action_space)]
    nvec = nvec_of(action_space)

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(masks_and_obs(nvec), st.integers(0, 2**16))
    def check(masks_obs: tuple[np.ndarray, np.ndarray], torch_seed: int) -> None:
        masks, obs = masks_obs
        n = len(masks)
        th.manual_seed(torch_seed)
        with th.no_grad():
            sampled, _, log_prob, _ = policy(
                th.as_tensor(obs), zero_states(policy, n), th.zeros(n), action_masks=masks
            )
        assert th.isfinite(log_prob).all()
        greedy, _ = policy.predict(obs, deterministic=True, action_masks=masks)
        stochastic, _ = policy.predict(obs, action_masks=masks)
        for actions in (sampled.numpy(), greedy, stochastic):
            actions = actions.reshape(n, -1)
            assert all(is_legal(a, m, nvec) for a, m in zip(actions, masks, strict=True))

    check()


def categorical_parts(distribution: Any) -> list[Any]:
    """The per-dimension MaskableCategoricals of a masked (multi)categorical distribution."""
    if hasattr(distribution, "distributions"):
        return list(distribution.distributions)
    return [distribution.distribution]


@pytest.mark.parametrize("action_space", ACTION_SPACES, ids=["discrete", "multidiscrete"])
def test_masked_log_prob_and_entropy(action_space: spaces.Space) -> None:
    policy = POLICIES[repr(action_space)]
    nvec = nvec_of(action_space)
    rng = np.random.default_rng(1)
    n = 6
    obs = th.as_tensor(rng.random((n, sum(nvec) + 1)), dtype=th.float32)
    masks = random_masks(rng, nvec, n)
    masks[0, : nvec[0]] = False
    masks[0, 0] = True  # a row with a single legal first choice

    def distribution(action_masks: np.ndarray | None) -> Any:
        with th.no_grad():
            return policy.get_distribution(
                obs, zero_states(policy, n).pi, th.zeros(n), action_masks=action_masks
            )[0]

    # SB3 distributions are one object per policy, refilled by each call: copy what is needed.
    plain = distribution(None)
    raw_logits = [part.logits.clone() for part in categorical_parts(plain)]
    plain_mode = plain.mode().clone()
    plain_log_prob = plain.log_prob(plain_mode).clone()

    masked = distribution(masks)
    offsets = np.cumsum([0, *nvec[:-1]])
    for part, raw, offset, size in zip(
        categorical_parts(masked), raw_logits, offsets, nvec, strict=True
    ):
        legal = th.as_tensor(masks[:, offset : offset + size])
        table = th.stack([part.log_prob(th.full((n,), a)) for a in range(size)], dim=1)
        assert th.all(th.isfinite(table))
        entropy = part.entropy()
        for row in range(n):
            # MaskableCategorical puts -1e8 (not -inf) in place of masked logits and
            # renormalises: a masked action's log-prob is -1e8 - logsumexp(legal logits).
            very_negative = th.tensor(-1e8) - th.logsumexp(raw[row][legal[row]], dim=-1)
            assert th.all(table[row][~legal[row]] == very_negative)
            assert th.all(table[row][~legal[row]] < -9e7)
            legal_only = Categorical(logits=raw[row][legal[row]])
            # Legal actions: exactly a categorical over the legal logits only.
            th.testing.assert_close(table[row][legal[row]], legal_only.logits)
            assert entropy[row].item() == pytest.approx(legal_only.entropy().item(), abs=1e-6)
    assert categorical_parts(masked)[0].entropy()[0].item() == pytest.approx(0.0, abs=1e-6)
    masked_log_prob = masked.log_prob(plain_mode).clone()
    assert not th.allclose(masked_log_prob, plain_log_prob)

    # Without masks (and no mask source) the policy is unmasked again.
    assert th.equal(distribution(None).log_prob(plain_mode), plain_log_prob)


@pytest.mark.parametrize("action_space", ACTION_SPACES, ids=["discrete", "multidiscrete"])
def test_lstm_state_resets_at_episode_start(action_space: spaces.Space) -> None:
    policy = POLICIES[repr(action_space)]
    rng = np.random.default_rng(2)
    nvec = nvec_of(action_space)
    obs = rng.random((1, sum(nvec) + 1)).astype(np.float32)
    masks = random_masks(rng, nvec, 1)
    shape = policy.lstm_hidden_state_shape
    stale = (rng.normal(size=shape), rng.normal(size=shape))

    reset_actions, reset_state = policy.predict(
        obs, stale, np.array([True]), deterministic=True, action_masks=masks
    )
    zero_actions, zero_state = policy.predict(
        obs, None, np.array([False]), deterministic=True, action_masks=masks
    )
    _, kept_state = policy.predict(
        obs, stale, np.array([False]), deterministic=True, action_masks=masks
    )
    assert np.array_equal(reset_actions, zero_actions)
    assert reset_state is not None and zero_state is not None and kept_state is not None
    for reset_part, zero_part, kept_part in zip(reset_state, zero_state, kept_state, strict=True):
        np.testing.assert_allclose(reset_part, zero_part, rtol=0, atol=1e-7)
        assert not np.allclose(kept_part, zero_part)  # the stale state would have mattered


def test_mask_scopes() -> None:
    policy = POLICIES[repr(DISCRETE)]
    n = 3
    obs = th.rand(n, DISCRETE.n + 1)
    only_2 = np.zeros((n, DISCRETE.n), bool)
    only_2[:, 2] = True
    only_4 = np.zeros((n, DISCRETE.n), bool)
    only_4[:, 4] = True
    draws = []

    def source() -> np.ndarray:
        draws.append(1)
        return only_2

    with th.no_grad(), policy.mask_source(source):
        from_source = policy(obs, zero_states(policy, n), th.zeros(n))[0]
        assert np.array_equal(policy.last_masks, only_2)
        explicit = policy(obs, zero_states(policy, n), th.zeros(n), action_masks=only_4)[0]
        assert np.array_equal(policy.last_masks, only_4)
        uses = policy.n_mask_uses
        # predict/get_distribution never read the source nor touch last_masks.
        unmasked, _ = policy.predict(obs.numpy(), deterministic=True)
        assert policy.n_mask_uses == uses and np.array_equal(policy.last_masks, only_4)
    assert th.all(from_source == 2) and th.all(explicit == 4) and len(draws) == 1
    free, _ = policy.predict(obs.numpy(), deterministic=True)
    assert np.array_equal(unmasked, free)
    assert policy._mask_source is None and not policy._in_masking_scope


def test_buffer_refuses_ambiguous_mask_pairing() -> None:
    policy = POLICIES[repr(DISCRETE)]
    buffer = MaskableRecurrentRolloutBuffer(
        4, policy.observation_space, DISCRETE, (4, 1, 1, 8), "cpu", n_envs=1
    )
    obs = th.rand(1, DISCRETE.n + 1)
    masks = np.ones((1, DISCRETE.n), bool)
    step = (obs.numpy(), np.zeros((1, 1)), np.zeros(1), np.zeros(1), th.zeros(1, 1), th.zeros(1))
    with th.no_grad(), buffer.masks_from(policy):
        with pytest.raises(RuntimeError, match="exactly one"):
            buffer.add(*step, lstm_states=zero_states(policy, 1))
        policy(obs, zero_states(policy, 1), th.zeros(1), action_masks=masks)
        buffer.add(*step, lstm_states=zero_states(policy, 1))
        policy(obs, zero_states(policy, 1), th.zeros(1), action_masks=masks)
        policy(obs, zero_states(policy, 1), th.zeros(1), action_masks=masks)
        with pytest.raises(RuntimeError, match="but 2 ran"):
            buffer.add(*step, lstm_states=zero_states(policy, 1))


def test_samples_extend_the_recurrent_samples() -> None:
    fields = MaskableRecurrentRolloutBufferSamples._fields
    assert fields == (*RecurrentRolloutBufferSamples._fields, "action_masks")


@pytest.mark.parametrize("action_space", ACTION_SPACES, ids=["discrete", "multidiscrete"])
def test_masks_reach_buffer_and_update(action_space: spaces.Space) -> None:
    # lr 0: the update cannot move the policy, so its ratio must stay exactly 1.
    model = make_model(action_space, learning_rate=0.0, batch_size=8)
    model.learn(model.n_steps * model.n_envs)
    buffer = model.rollout_buffer
    mask_dims = action_mask_dims(action_space)

    # get() flattened observations and masks alike; the obs encodes the env's mask at that step.
    assert buffer.action_masks.shape == (model.n_steps * model.n_envs, mask_dims)
    np.testing.assert_array_equal(buffer.action_masks, buffer.observations[:, :mask_dims])
    assert (buffer.action_masks == 0).any()
    assert sum(model.env.get_attr("illegal_actions")) == 0

    # train() evaluated every sample under its masks: no clipping, no KL at lr 0.
    logged = model.logger.name_to_value
    assert logged["train/clip_fraction"] == 0.0
    assert logged["train/approx_kl"] < 1e-9
    assert buffer.samples_yielded == 2 * (model.n_steps * model.n_envs) // 8  # n_epochs batches
    assert model.policy.last_masks is buffer.sample_masks  # train's last evaluate_actions

    # Direct check: with the stored masks log-probs reproduce the rollout's; without, they don't.
    with th.no_grad():
        for sample in buffer.get(8):
            assert isinstance(sample, MaskableRecurrentRolloutBufferSamples)
            actions = sample.actions
            if isinstance(action_space, spaces.Discrete):
                actions = actions.long().flatten()
            real = sample.mask > 1e-8
            args = (sample.observations, actions, sample.lstm_states, sample.episode_starts)
            _, log_prob, _ = model.policy.evaluate_actions(*args, action_masks=sample.action_masks)
            _, unmasked, _ = model.policy.evaluate_actions(*args)
            assert th.isfinite(log_prob).all()
            th.testing.assert_close(log_prob[real], sample.old_log_prob[real])
            assert th.all(sample.action_masks[~real] == 1.0)
            if (sample.action_masks[real] == 0).any():
                assert not th.allclose(unmasked[real], sample.old_log_prob[real])


@pytest.mark.parametrize("action_space", ACTION_SPACES, ids=["discrete", "multidiscrete"])
def test_short_learn_with_two_envs(action_space: spaces.Space) -> None:
    model = make_model(action_space, n_envs=2)
    model.learn(256)
    assert model.num_timesteps == 256
    assert sum(model.env.get_attr("illegal_actions")) == 0
    mean, std = evaluate_masked_policy(model, make_vec_env(action_space), n_eval_episodes=3)
    assert np.isfinite(mean) and np.isfinite(std) and mean >= 0.0  # never punished


def test_save_load_round_trips_predictions(tmp_path: Any) -> None:
    model = make_model(MULTI_DISCRETE, n_envs=1)
    model.learn(32)
    model.save(tmp_path / "model.zip")
    loaded = MaskableRecurrentPPO.load(tmp_path / "model.zip", device="cpu")
    assert isinstance(loaded.policy, MaskableRecurrentActorCriticPolicy)

    env = MaskedToyEnv(MULTI_DISCRETE, seed=5)
    obs, _ = env.reset(seed=5)
    states: dict[str, Any] = {"saved": None, "loaded": None}
    start = np.array([True])
    for step in range(10):
        masks = env.action_masks()
        results = {}
        for name, agent in (("saved", model), ("loaded", loaded)):
            th.manual_seed(step)
            actions, states[name] = agent.predict(
                obs, states[name], start, deterministic=step % 2 == 0, action_masks=masks
            )
            results[name] = actions
        assert np.array_equal(results["saved"], results["loaded"])
        for saved_part, loaded_part in zip(states["saved"], states["loaded"], strict=True):
            assert np.array_equal(saved_part, loaded_part)
        obs, *_ = env.step(results["saved"])
        start = np.array([False])


class PredictRecorder(MaskableRecurrentPPO):
    """Records the state each `predict` call gets and returns."""

    calls: list[tuple[Any, Any]]

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        actions, state = super().predict(*args, **kwargs)
        self.calls.append((kwargs.get("state"), state))
        return actions, state


def test_evaluation_carries_lstm_state_unlike_upstream() -> None:
    model = PredictRecorder(
        "MlpLstmPolicy",
        make_vec_env(DISCRETE, 1),
        n_steps=8,
        device="cpu",
        policy_kwargs=SMALL_POLICY,
    )
    model.calls = []
    evaluate_masked_policy(model, MaskedToyEnv(DISCRETE), n_eval_episodes=2)
    assert len(model.calls) == 2 * 7
    assert model.calls[0][0] is None
    for (_, returned), (given_next, _) in zip(model.calls, model.calls[1:], strict=False):
        assert given_next is returned

    # The upstream bug this works around: masked evaluate_policy never passes a state on.
    model.calls = []
    upstream_evaluate_policy(model, MaskedToyEnv(DISCRETE), n_eval_episodes=1, warn=False)  # type: ignore[arg-type]
    assert model.calls and all(given is None for given, _ in model.calls)


def test_refuses_what_it_does_not_support() -> None:
    box = spaces.Box(0.0, 1.0, (3,), np.float32)
    with pytest.raises(ValueError, match="Discrete"):
        MaskableRecurrentActorCriticPolicy(box, spaces.MultiBinary(3), lambda _: 1e-3)
    with pytest.raises(ValueError, match="Dict"):
        MaskableRecurrentRolloutBuffer(4, spaces.Dict({"x": box}), DISCRETE, (4, 1, 1, 8), "cpu")
    with pytest.raises(ValueError, match="gSDE"):
        MaskableRecurrentActorCriticPolicy(box, DISCRETE, lambda _: 1e-3, use_sde=True)
