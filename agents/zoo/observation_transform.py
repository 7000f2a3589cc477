"""rl-zoo's `normalize` and `frame_stack`, carried by the agent file itself.

Training wraps the VecEnv in `VecNormalize` and `VecFrameStack` as the hyperparameters
say (`wrap_vec_env`). What they do to an observation (the running mean and variance,
the clip, the stack depth) is stamped on the model as plain JSON
(`ObservationTransform.stamp`, kept fresh by `StampObservationTransform`), so the
saved `.zip` holds it: `-i` restores the statistics from it, and an evaluator that
acts on one unwrapped env (`SB3Policy`) replays it with `ObservationPipeline`.
rl-zoo keeps the statistics in a pickled `vecnormalize.pkl` instead; Esper loads
nothing pickled from an agent it did not write.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pydantic import Field
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecFrameStack, VecNormalize

from agents.zoo.hyperparams import Hyperparams
from esper_env.contracts import StrictModel

#: The model attribute (saved in the zip's `data` JSON) that holds the transform.
TRANSFORM_ATTRIBUTE = "esper_observation_transform"


class NormalizeStats(StrictModel):
    """A `VecNormalize`'s settings and running statistics, as plain numbers.

    Attributes:
        obs_mean: Running mean of the observations.
        obs_var: Running variance of the observations.
        obs_count: Observations counted.
        ret_mean: Running mean of the discounted returns.
        ret_var: Running variance of the discounted returns.
        ret_count: Returns counted.
        norm_obs: Observations are normalised.
        norm_reward: Rewards are normalised (training only).
        clip_obs: Bound of a normalised observation.
        clip_reward: Bound of a normalised reward.
        gamma: Discount of the returns.
        epsilon: Added to the variance before the square root.
    """

    obs_mean: list[float]
    obs_var: list[float]
    obs_count: float
    ret_mean: float
    ret_var: float
    ret_count: float
    norm_obs: bool
    norm_reward: bool
    clip_obs: float
    clip_reward: float
    gamma: float
    epsilon: float

    @classmethod
    def of(cls, venv: VecNormalize) -> NormalizeStats:
        """The statistics of a `VecNormalize` with a flat Box observation."""
        return cls(
            obs_mean=np.asarray(venv.obs_rms.mean, dtype=np.float64).ravel().tolist(),
            obs_var=np.asarray(venv.obs_rms.var, dtype=np.float64).ravel().tolist(),
            obs_count=float(venv.obs_rms.count),
            ret_mean=float(np.asarray(venv.ret_rms.mean)),
            ret_var=float(np.asarray(venv.ret_rms.var)),
            ret_count=float(venv.ret_rms.count),
            norm_obs=venv.norm_obs,
            norm_reward=venv.norm_reward,
            clip_obs=float(venv.clip_obs),
            clip_reward=float(venv.clip_reward),
            gamma=float(venv.gamma),
            epsilon=float(venv.epsilon),
        )

    def restore(self, venv: VecNormalize) -> None:
        """Puts these running statistics into `venv` (a resumed run goes on from them).

        Raises:
            ValueError: `venv` normalises observations of another size.
        """
        shape = venv.obs_rms.mean.shape
        if int(np.prod(shape)) != len(self.obs_mean):
            raise ValueError(
                f"the agent normalised {len(self.obs_mean)} observation values, the env has "
                f"{int(np.prod(shape))}: resume it on the env it was trained on"
            )
        venv.obs_rms.mean = np.asarray(self.obs_mean).reshape(shape)
        venv.obs_rms.var = np.asarray(self.obs_var).reshape(shape)
        venv.obs_rms.count = self.obs_count
        venv.ret_rms.mean = np.asarray(self.ret_mean)
        venv.ret_rms.var = np.asarray(self.ret_var)
        venv.ret_rms.count = self.ret_count

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """`obs` as `VecNormalize` hands it to the policy."""
        if not self.norm_obs:
            return obs
        mean = np.asarray(self.obs_mean).reshape(obs.shape)
        var = np.asarray(self.obs_var).reshape(obs.shape)
        scaled = (obs - mean) / np.sqrt(var + self.epsilon)
        return np.clip(scaled, -self.clip_obs, self.clip_obs).astype(obs.dtype)


class ObservationTransform(StrictModel):
    """What training's VecEnv wrappers do to an observation, in order: normalise, then stack.

    Attributes:
        normalize: The `VecNormalize` statistics (None: not normalised).
        frame_stack: `VecFrameStack`'s depth (None: not stacked).
    """

    normalize: NormalizeStats | None = None
    frame_stack: int | None = Field(default=None, ge=1)

    @classmethod
    def of_vec_env(cls, venv: VecEnv) -> ObservationTransform | None:
        """The transform of `venv`'s wrappers (None when it has neither)."""
        normalize: NormalizeStats | None = None
        frame_stack: int | None = None
        layer: VecEnv = venv
        while isinstance(layer, VecEnvWrapper):
            if isinstance(layer, VecNormalize):
                normalize = NormalizeStats.of(layer)
            elif isinstance(layer, VecFrameStack):
                frame_stack = layer.stacked_obs.n_stack
            layer = layer.venv
        if normalize is None and frame_stack is None:
            return None
        return cls(normalize=normalize, frame_stack=frame_stack)

    @classmethod
    def of_record(cls, record: Any) -> ObservationTransform | None:
        """The transform a model (or a saved agent's data) records, if any."""
        return None if record is None else cls.model_validate(record)

    def stamp(self, model: BaseAlgorithm) -> None:
        """Records the transform on `model`; SB3 saves it in the zip's `data` JSON."""
        setattr(model, TRANSFORM_ATTRIBUTE, self.model_dump())

    def stacked_space(self, space: spaces.Space[Any]) -> spaces.Space[Any]:
        """The observation space the policy sees for an env's `space` (`VecFrameStack`'s).

        Raises:
            ValueError: Frame stacking of a space other than a flat Box.
        """
        if self.frame_stack is None:
            return space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"frame_stack applies to flat Box observations, not {space}")
        return spaces.Box(
            low=np.repeat(space.low, self.frame_stack, axis=-1),
            high=np.repeat(space.high, self.frame_stack, axis=-1),
            dtype=space.dtype,  # type: ignore[arg-type]
        )


class ObservationPipeline:
    """Replays an `ObservationTransform` on the observations of one env, episode by episode.

    Args:
        transform: The recorded transform.
    """

    def __init__(self, transform: ObservationTransform) -> None:
        self.transform = transform
        self._stack: np.ndarray | None = None

    def reset(self) -> None:
        """Starts a new episode: the frame stack restarts from zeros."""
        self._stack = None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """The observation the policy saw in training for this step's `obs`."""
        if self.transform.normalize is not None:
            obs = self.transform.normalize.normalize(obs)
        depth = self.transform.frame_stack
        if depth is None:
            return obs
        width = obs.shape[-1]
        if self._stack is None:  # VecFrameStack: zeros, the newest observation last
            self._stack = np.zeros((*obs.shape[:-1], width * depth), dtype=obs.dtype)
        else:
            self._stack = np.roll(self._stack, -width, axis=-1)
        self._stack[..., -width:] = obs
        return self._stack.copy()


def wrap_vec_env(venv: VecEnv, hyperparams: Hyperparams, *, training: bool) -> VecEnv:
    """Wraps `venv` in `VecNormalize` and `VecFrameStack` as `normalize`/`frame_stack` say.

    As rl-zoo: an eval env's `VecNormalize` neither updates its statistics nor
    normalises rewards (SB3's `EvalCallback` copies the training env's into it).

    Args:
        venv: The vectorised envs.
        hyperparams: The run's hyperparameters.
        training: The envs train the agent (else they evaluate it).
    """
    kwargs = hyperparams.normalize_kwargs()
    if kwargs is not None:
        if not training:
            kwargs = {**kwargs, "training": False, "norm_reward": False}
        venv = VecNormalize(venv, **kwargs)
    if hyperparams.frame_stack is not None:
        venv = VecFrameStack(venv, hyperparams.frame_stack)
    return venv


class StampObservationTransform(BaseCallback):
    """Keeps the model's recorded transform current, so every save (best, checkpoint) has it.

    The statistics are those of the last finished rollout: refreshing them at every
    step would copy them once per step.
    """

    def _stamp(self) -> None:
        transform = ObservationTransform.of_vec_env(self.training_env)
        if transform is not None:
            transform.stamp(self.model)

    def _on_training_start(self) -> None:
        self._stamp()

    def _on_rollout_end(self) -> None:
        self._stamp()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._stamp()
