"""`MaskableRecurrentPPO`: sb3-contrib's RecurrentPPO with MaskablePPO's invalid-action masks.

sb3-contrib has RecurrentPPO (memory, no masks) and MaskablePPO (masks, no memory); its
maskable recurrent PPO (upstream PR #287) is stuck on code duplication. This module subclasses
and reuses instead of copying:

* `MaskableRecurrentActorCriticPolicy` is a `RecurrentActorCriticPolicy` whose action
  distribution comes from `make_masked_proba_distribution`. The recurrent parent builds the
  distribution inside `forward`, `evaluate_actions`, `get_distribution` and `predict` through
  `_get_action_dist_from_latent`; rather than copy those methods to thread an `action_masks`
  argument through, each override opens a short masking scope (`_masking`) around the parent's
  method, and `_get_action_dist_from_latent` applies the scope's masks. Explicit masks win;
  without masks (and without a mask source, below) the policy is unmasked, as MaskablePPO's is.
* A *mask source* (`policy.mask_source(callable)`) lets RecurrentPPO's own `collect_rollouts`
  and `train` loops, which call `policy(obs, ...)` and `policy.evaluate_actions(...)` without
  masks, get them anyway: while a source is set, a `forward` or `evaluate_actions` call without
  explicit masks takes its masks from the callable, and the policy remembers them (`last_masks`,
  counted by `n_mask_uses`). `get_distribution` and `predict` never read the source, so an
  evaluation callback that calls `model.predict` mid-rollout neither consumes the training env's
  masks nor disturbs `last_masks`.
* `MaskableRecurrentPPO.collect_rollouts` sets the source to `get_action_masks(env)` and binds
  the rollout buffer to the policy, then runs RecurrentPPO's loop unchanged. In that loop (read
  in sb3-contrib 2.9.2 `ppo_recurrent.py`) each step makes exactly one `self.policy(...)` call on
  `self._last_obs` and then one `rollout_buffer.add(self._last_obs, ...)`; in between there is
  only `env.step`, the callback and, for truncated episodes, `policy.predict_values`, which builds
  no distribution. So `add` stores `policy.last_masks`, and it checks that exactly one masked
  forward ran since the previous `add` (`RuntimeError` otherwise: e.g. a callback that calls
  `policy.forward` mid-rollout would make the pairing ambiguous).
* `MaskableRecurrentPPO.train` sets the source to the masks of the buffer's current sample and
  runs RecurrentPPO's `train` unchanged. There (same file) each sample yielded by
  `rollout_buffer.get` is followed by exactly one `policy.evaluate_actions` (the `target_kl` early
  stop breaks after it). The source checks that one-to-one pairing as it goes and `train` checks
  that no sample was left unevaluated (`RuntimeError` otherwise).
* `MaskableRecurrentRolloutBuffer` is a `RecurrentRolloutBuffer` that also stores the masks,
  flattens them with the rest in `get` and pads them in `_get_samples` with the parent's own
  `self.pad` (padding value 1: padded rows are all-legal, and excluded by `mask` anyway).

What is copied, and why: the samples NamedTuple re-declares `RecurrentRolloutBufferSamples`'s nine
fields (a NamedTuple cannot be extended), and `_build` cannot set the masked distribution before
`ActorCriticPolicy._build` as one would like, because that method raises `NotImplementedError` for
any distribution that is not one of SB3's own classes. It therefore lets the parent build
`action_net` for SB3's plain (Multi)Categorical distribution, whose layer is the same
`Linear(latent, n)` / `Linear(latent, sum(nvec))` as the masked one's, and swaps the masked
distribution in afterwards (checking the width). That is also why only Discrete and MultiDiscrete
action spaces are supported: for MultiBinary the plain Bernoulli layer has `n` outputs and the
masked one `2n`. Dict observations are refused (the Dict recurrent buffer is not extended here).
Nothing else is copied.

`evaluate_masked_policy` replaces sb3-contrib's masked `evaluate_policy`, which drops the LSTM
state (see there).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, NamedTuple, TypeVar

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.maskable.distributions import (
    MaskableDistribution,
    make_masked_proba_distribution,
)
from sb3_contrib.common.maskable.evaluation import evaluate_policy
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from sb3_contrib.common.recurrent.buffers import RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import MaybeCallback, Schedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

#: Action masks as the env (numpy) or the rollout buffer (torch) gives them: True/1 = legal.
Masks = np.ndarray | th.Tensor

SelfMaskableRecurrentPPO = TypeVar("SelfMaskableRecurrentPPO", bound="MaskableRecurrentPPO")


def action_mask_dims(action_space: spaces.Space) -> int:
    """Returns the width of one action mask: `n` (Discrete) or `sum(nvec)` (MultiDiscrete).

    Raises:
        ValueError: Any other action space (see the module docstring for MultiBinary).
    """
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1:
        return int(action_space.nvec.sum())
    raise ValueError(
        f"MaskableRecurrentPPO supports Discrete and one-dimensional MultiDiscrete action "
        f"spaces, not {action_space}"
    )


class MaskableRecurrentActorCriticPolicy(RecurrentActorCriticPolicy):
    """A recurrent actor-critic policy whose action distribution honours action masks.

    Every argument of `RecurrentActorCriticPolicy` is accepted (by keyword), except
    `use_sde=True`. `forward`, `evaluate_actions`, `get_distribution` and `predict` take an extra
    `action_masks` (shape `(batch, action_mask_dims)` or `(action_mask_dims,)`, True = legal).

    Attributes:
        last_masks: The masks of the latest `forward`/`evaluate_actions` call (None: unmasked).
        n_mask_uses: How many `forward`/`evaluate_actions` calls have run (`last_masks`' count).
    """

    action_dist: MaskableDistribution

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        **kwargs: Any,
    ) -> None:
        action_mask_dims(action_space)
        if kwargs.get("use_sde", False):
            raise ValueError("masked distributions do not support gSDE (use_sde=True)")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
        self.last_masks: Masks | None = None
        self.n_mask_uses = 0
        self._mask_source: Callable[[], Masks] | None = None
        self._in_masking_scope = False
        self._scope_masks: Masks | None = None

    def _build(self, lr_schedule: Schedule) -> None:
        """Builds the networks, then swaps in the masked distribution (see the module docstring).

        Raises:
            RuntimeError: The parent built an action layer of another width than the masks'.
        """
        super()._build(lr_schedule)
        self.action_dist = make_masked_proba_distribution(self.action_space)
        width = action_mask_dims(self.action_space)
        if self.action_net.out_features != width:
            raise RuntimeError(
                f"action_net has {self.action_net.out_features} outputs but the masked "
                f"distribution of {self.action_space} needs {width}"
            )

    def _get_action_dist_from_latent(self, latent_pi: th.Tensor) -> MaskableDistribution:
        """Returns the action distribution, masked by the current masking scope's masks."""
        distribution = self.action_dist.proba_distribution(action_logits=self.action_net(latent_pi))
        if self._scope_masks is not None:
            distribution.apply_masking(self._scope_masks)
        return distribution

    @contextmanager
    def mask_source(self, source: Callable[[], Masks]) -> Iterator[None]:
        """Within this scope, `forward`/`evaluate_actions` calls without masks use `source()`.

        Args:
            source: Called once per such call; returns the masks for that call's batch.
        """
        previous = self._mask_source
        self._mask_source = source
        try:
            yield
        finally:
            self._mask_source = previous

    @contextmanager
    def _masking(self, action_masks: Masks | None, *, reads_source: bool) -> Iterator[None]:
        """Sets the masks `_get_action_dist_from_latent` applies while a parent method runs.

        Args:
            action_masks: Explicit masks; they win over the source and over an outer scope.
            reads_source: Whether this call takes masks from the mask source when given none and
                records them in `last_masks` (`forward`/`evaluate_actions` do).
        """
        if action_masks is None and self._in_masking_scope:
            # An inner call of a masked call (predict -> _predict -> get_distribution).
            yield
            return
        if reads_source:
            if action_masks is None and self._mask_source is not None:
                action_masks = self._mask_source()
            self.last_masks = action_masks
            self.n_mask_uses += 1
        outer = self._in_masking_scope, self._scope_masks
        self._in_masking_scope, self._scope_masks = True, action_masks
        try:
            yield
        finally:
            self._in_masking_scope, self._scope_masks = outer

    def forward(
        self,
        obs: th.Tensor,
        lstm_states: RNNStates,
        episode_starts: th.Tensor,
        deterministic: bool = False,
        action_masks: Masks | None = None,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, RNNStates]:
        """`RecurrentActorCriticPolicy.forward` under `action_masks` (or the mask source's).

        Returns:
            Actions, values, log probabilities of the actions, and the new LSTM states.
        """
        with self._masking(action_masks, reads_source=True):
            return super().forward(obs, lstm_states, episode_starts, deterministic)

    def evaluate_actions(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        lstm_states: RNNStates,
        episode_starts: th.Tensor,
        action_masks: Masks | None = None,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """`RecurrentActorCriticPolicy.evaluate_actions` under `action_masks` (or the source's).

        Returns:
            Values, log probabilities of `actions`, and entropies (over legal actions only).
        """
        with self._masking(action_masks, reads_source=True):
            return super().evaluate_actions(obs, actions, lstm_states, episode_starts)

    def get_distribution(
        self,
        obs: th.Tensor,
        lstm_states: tuple[th.Tensor, th.Tensor],
        episode_starts: th.Tensor,
        action_masks: Masks | None = None,
    ) -> tuple[MaskableDistribution, tuple[th.Tensor, ...]]:
        """`RecurrentActorCriticPolicy.get_distribution` under `action_masks` (never the source).

        Returns:
            The (masked) action distribution and the actor's new LSTM states.
        """
        with self._masking(action_masks, reads_source=False):
            distribution, states = super().get_distribution(obs, lstm_states, episode_starts)
        return distribution, states  # type: ignore[return-value]

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """`RecurrentActorCriticPolicy.predict` under `action_masks` (never the source).

        Returns:
            The actions and the next LSTM state (hidden, cell) of the actor.
        """
        with self._masking(action_masks, reads_source=False):
            return super().predict(observation, state, episode_start, deterministic)


class MaskableRecurrentRolloutBufferSamples(NamedTuple):
    """`RecurrentRolloutBufferSamples` (same fields, same order) plus the padded action masks."""

    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    lstm_states: RNNStates
    episode_starts: th.Tensor
    mask: th.Tensor
    action_masks: th.Tensor


class MaskableRecurrentRolloutBuffer(RecurrentRolloutBuffer):
    """A `RecurrentRolloutBuffer` that also stores the action masks of each step.

    Args:
        buffer_size: Steps per env.
        observation_space: A Box (or other non-Dict) observation space.
        action_space: Discrete or MultiDiscrete.
        hidden_state_shape: `(n_steps, lstm.num_layers, n_envs, lstm.hidden_size)`.
        device: Torch device of the samples.
        gae_lambda: GAE lambda.
        gamma: Discount factor.
        n_envs: Number of parallel envs.

    Attributes:
        action_masks: `(buffer_size, n_envs, mask_dims)` until `get` flattens it (as the rest).
        sample_masks: The padded masks of the latest sample `get` yielded.
        samples_yielded: How many samples `get` has yielded (`sample_masks`' count).

    Raises:
        ValueError: Dict observations, or an unsupported action space.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        hidden_state_shape: tuple[int, int, int, int],
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
    ) -> None:
        if isinstance(observation_space, spaces.Dict):
            raise ValueError("MaskableRecurrentRolloutBuffer does not support Dict observations")
        self.mask_dims = action_mask_dims(action_space)
        self.sample_masks: th.Tensor | None = None
        self.samples_yielded = 0
        self._mask_feed: MaskableRecurrentActorCriticPolicy | None = None
        self._fed_uses = 0
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            hidden_state_shape,
            device,
            gae_lambda,
            gamma,
            n_envs,
        )

    def reset(self) -> None:
        """Empties the buffer; masks default to all-legal."""
        self.action_masks = np.ones((self.buffer_size, self.n_envs, self.mask_dims), np.float32)
        self.sample_masks = None
        super().reset()

    @contextmanager
    def masks_from(self, policy: MaskableRecurrentActorCriticPolicy) -> Iterator[None]:
        """Within this scope, `add` without masks stores `policy.last_masks`.

        Each such `add` must follow exactly one `policy.forward`/`evaluate_actions` call.
        """
        self._mask_feed, self._fed_uses = policy, policy.n_mask_uses
        try:
            yield
        finally:
            self._mask_feed = None

    def _fed_masks(self, policy: MaskableRecurrentActorCriticPolicy) -> Masks:
        """Returns the masks of the one policy forward since the previous `add`.

        Raises:
            RuntimeError: Not exactly one forward since the previous `add`, or it was unmasked.
        """
        uses = policy.n_mask_uses - self._fed_uses
        if uses != 1:
            raise RuntimeError(
                f"MaskableRecurrentRolloutBuffer.add expects exactly one masked policy "
                f"forward/evaluate_actions since the previous add (RecurrentPPO.collect_rollouts "
                f"makes one per step), but {uses} ran: something (a callback?) called the policy "
                f"mid-step, so which masks belong to this step is ambiguous"
            )
        self._fed_uses = policy.n_mask_uses
        if policy.last_masks is None:
            raise RuntimeError("the policy forward before this add used no action masks")
        return policy.last_masks

    def add(
        self,
        *args: Any,
        lstm_states: RNNStates,
        action_masks: Masks | None = None,
        **kwargs: Any,
    ) -> None:
        """`RecurrentRolloutBuffer.add`, plus this step's masks.

        Args:
            *args: `RolloutBuffer.add`'s positional arguments (obs, action, reward, ...).
            lstm_states: The LSTM states before this step.
            action_masks: This step's masks, `(n_envs, mask_dims)`; by default those of the
                bound policy (`masks_from`), else all-legal.
            **kwargs: `RolloutBuffer.add`'s keyword arguments.
        """
        if action_masks is None and self._mask_feed is not None:
            action_masks = self._fed_masks(self._mask_feed)
        if action_masks is not None:
            if isinstance(action_masks, th.Tensor):
                action_masks = action_masks.cpu().numpy()
            self.action_masks[self.pos] = np.asarray(action_masks).reshape(
                (self.n_envs, self.mask_dims)
            )
        super().add(*args, lstm_states=lstm_states, **kwargs)

    def get(  # type: ignore[override]
        self, batch_size: int | None = None
    ) -> Generator[MaskableRecurrentRolloutBufferSamples, None, None]:
        """`RecurrentRolloutBuffer.get`, with the masks flattened in the same order as the rest.

        Raises:
            RuntimeError: The buffer is not full.
        """
        if not self.full:
            raise RuntimeError("the rollout buffer must be full before sampling from it")
        if not self.generator_ready:
            self.action_masks = self.swap_and_flatten(self.action_masks)
        yield from super().get(batch_size)  # type: ignore[misc]

    def _get_samples(  # type: ignore[override]
        self,
        batch_inds: np.ndarray,
        env_change: np.ndarray,
        env: VecNormalize | None = None,
    ) -> MaskableRecurrentRolloutBufferSamples:
        """`RecurrentRolloutBuffer._get_samples` plus the masks, padded with 1 (all-legal)."""
        samples = super()._get_samples(batch_inds, env_change, env)
        padded_batch_size = samples.mask.shape[0]
        # `self.pad` is the parent's padder for this very batch's sequences.
        action_masks = self.pad(self.action_masks[batch_inds], padding_value=1.0).reshape(
            (padded_batch_size, self.mask_dims)
        )
        self.sample_masks = action_masks
        self.samples_yielded += 1
        return MaskableRecurrentRolloutBufferSamples(*samples, action_masks=action_masks)


class _SampleMasksFeed:
    """The mask source of `train`: the current sample's masks, one `evaluate_actions` each."""

    def __init__(self, buffer: MaskableRecurrentRolloutBuffer) -> None:
        self._buffer = buffer
        self._evaluated = buffer.samples_yielded

    def __call__(self) -> th.Tensor:
        """Returns the masks of the sample just yielded.

        Raises:
            RuntimeError: The previous sample was not evaluated, or this one is evaluated twice.
        """
        pending = self._buffer.samples_yielded - self._evaluated
        if pending != 1 or self._buffer.sample_masks is None:
            raise RuntimeError(
                f"RecurrentPPO.train is expected to call evaluate_actions exactly once per "
                f"rollout sample, but this call comes {pending} samples after the last one"
            )
        self._evaluated += 1
        return self._buffer.sample_masks

    def check_all_evaluated(self) -> None:
        """Raises RuntimeError if the last yielded sample was never evaluated."""
        if self._buffer.samples_yielded != self._evaluated:
            raise RuntimeError("a rollout sample was yielded but never passed to evaluate_actions")


class MaskableRecurrentPPO(RecurrentPPO):
    """RecurrentPPO whose policy never samples an action the env's `action_masks()` forbids.

    Takes RecurrentPPO's arguments. The env (each sub-env) must expose `action_masks()`, as for
    MaskablePPO (e.g. through `sb3_contrib.common.wrappers.ActionMasker`); masks are read with
    `get_action_masks`. Only "MlpLstmPolicy" (`MaskableRecurrentActorCriticPolicy`) or a
    subclass of it, Box observations, and Discrete/MultiDiscrete actions.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpLstmPolicy": MaskableRecurrentActorCriticPolicy,
    }
    policy: MaskableRecurrentActorCriticPolicy
    rollout_buffer: MaskableRecurrentRolloutBuffer

    def _setup_model(self) -> None:
        """RecurrentPPO's setup, with the maskable rollout buffer.

        Raises:
            ValueError: Dict observations.
            TypeError: The policy is not a `MaskableRecurrentActorCriticPolicy`.
        """
        if isinstance(self.observation_space, spaces.Dict):
            raise ValueError("MaskableRecurrentPPO does not support Dict observations")
        super()._setup_model()
        if not isinstance(self.policy, MaskableRecurrentActorCriticPolicy):
            raise TypeError(
                f"MaskableRecurrentPPO needs a MaskableRecurrentActorCriticPolicy, "
                f"not {type(self.policy).__name__}"
            )
        plain = self.rollout_buffer
        self.rollout_buffer = MaskableRecurrentRolloutBuffer(
            plain.buffer_size,
            plain.observation_space,
            plain.action_space,
            plain.hidden_state_shape,
            plain.device,
            gae_lambda=plain.gae_lambda,
            gamma=plain.gamma,
            n_envs=plain.n_envs,
        )

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """RecurrentPPO's rollout, with the env's masks applied and stored (module docstring).

        Returns:
            False if the callback stopped the rollout early, else True.

        Raises:
            TypeError: The buffer is not a `MaskableRecurrentRolloutBuffer`.
            ValueError: The env has no `action_masks()`.
        """
        if not isinstance(rollout_buffer, MaskableRecurrentRolloutBuffer):
            raise TypeError(f"{type(rollout_buffer).__name__} stores no action masks")
        if not is_masking_supported(env):
            raise ValueError(
                "the env does not expose action_masks(); consider sb3_contrib's ActionMasker"
            )
        with (
            self.policy.mask_source(lambda: get_action_masks(env)),
            rollout_buffer.masks_from(self.policy),
        ):
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)

    def train(self) -> None:
        """RecurrentPPO's update, each sample evaluated under its stored masks."""
        feed = _SampleMasksFeed(self.rollout_buffer)
        with self.policy.mask_source(feed):
            super().train()
        feed.check_all_evaluated()

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Returns the policy's actions under `action_masks` (None: unmasked) and the next state.

        Args:
            observation: One observation, or a batch of them (one per env).
            state: The LSTM state `predict` returned last (None: zeros).
            episode_start: Per env, whether the observation starts an episode (resets state).
            deterministic: Take the most likely legal action rather than sample.
            action_masks: `(n_envs, mask_dims)` or `(mask_dims,)`, True = legal.
        """
        return self.policy.predict(
            observation, state, episode_start, deterministic, action_masks=action_masks
        )

    def learn(
        self: SelfMaskableRecurrentPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "MaskableRecurrentPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMaskableRecurrentPPO:
        """RecurrentPPO's `learn` (under its own TensorBoard name)."""
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )


class CarriedLstmState:
    """Stands in for a recurrent model in sb3-contrib's masked `evaluate_policy`: carries its state.

    Works around an sb3-contrib bug (checked in 2.9.2): with `use_masking=True`,
    `sb3_contrib.common.maskable.evaluation.evaluate_policy` assigns
    `actions, state = model.predict(...)` but passes `state=states`, which stays None, so a
    recurrent model would be evaluated from a zero LSTM state at every step. This proxy
    keeps the state the model returned and passes it on (rows restart where
    `episode_start` says, as the model's own `predict` does); everything else is the
    model's. Use a fresh one per evaluation.

    Args:
        model: The recurrent maskable model.
    """

    def __init__(self, model: MaskableRecurrentPPO) -> None:
        self._model = model
        self._state: tuple[np.ndarray, ...] | None = None

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The model's `predict` from the state this proxy carried (it ignores `state`)."""
        actions, self._state = self._model.predict(
            observation,
            state=self._state,
            episode_start=episode_start,
            deterministic=deterministic,
            action_masks=action_masks,
        )
        return actions, self._state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def evaluate_masked_policy(
    model: MaskableRecurrentPPO,
    env: gym.Env | VecEnv,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
) -> tuple[float, float]:
    """sb3-contrib's masked `evaluate_policy`, with the LSTM state carried (`CarriedLstmState`).

    Returns:
        Mean and standard deviation of the episode returns.
    """
    mean, std = evaluate_policy(
        CarriedLstmState(model),  # type: ignore[arg-type]
        env,
        n_eval_episodes=n_eval_episodes,
        deterministic=deterministic,
        warn=False,
        use_masking=True,
    )
    return float(mean), float(std)
