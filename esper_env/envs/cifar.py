"""The single-agent environments `Esper-CIFAR-*-v0`: Tamiyo grows seeds into a CIFAR-10 host.

One step is one epoch (or `train.epoch_fraction` of one) of host training, after
the chosen lifecycle operation is applied. Observation: see
`esper_env.observation`. Action: `MultiDiscrete([op, slot, blueprint,
blend_speed])`; the legal subset is `info["action_mask"]` / `action_masks()`
(per-dimension, the form sb3-contrib's MaskablePPO takes) and the exact legal
(op, slot) pairs are `info["op_slot_mask"]`. An action outside the space raises;
a legal-looking action that a gate refuses is a no-op, reported in
`info["transition"]`. Reward: `esper_env.reward`, every term in
`info["reward_terms"]`.
"""

from __future__ import annotations

from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from esper_env.contracts import EnvConfig, Op
from esper_env.envs.presets import ENV_SEMANTICS_VERSION
from esper_env.envs.world import World
from esper_env.observation import OBS_VERSION, ObservationLayout


class EsperCifarEnv(gym.Env[np.ndarray, np.ndarray]):
    """Tamiyo's environment: a host CNN with seed slots, training on CIFAR-10.

    Args:
        preset: Registered id whose config is the starting point.
        render_mode: None or "ansi" (a table of slots and stages).
        **overrides: Keys of `EnvConfig`, nested dicts merged into the preset's.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self, preset: str = "Esper-CIFAR-v0", render_mode: str | None = None, **overrides: Any
    ) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        self.world = World.from_preset(preset, **overrides)
        config = self.world.config
        self.config: EnvConfig = config
        self.layout = ObservationLayout(
            slots=self.world.slot_names,
            blueprints=config.blueprints,
            episode_epochs=config.episode_epochs,
        )
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=(self.layout.size,), dtype=np.float32
        )
        self.action_space = spaces.MultiDiscrete(
            [
                len(Op),
                len(self.layout.slots),
                len(config.blueprints),
                len(config.lifecycle.blend_epochs),
            ]
        )

    # --- Gymnasium API -------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts an episode on a freshly initialised host; `seed` fixes the whole episode."""
        super().reset(seed=seed)
        if options:
            raise ValueError(f"reset takes no options, got {sorted(options)}")
        episode_seed = int(self.np_random.integers(0, 2**31 - 1))
        self.world.start_episode(episode_seed, reset_seed=seed)
        obs = self._observe()
        return obs, self._info(extra={"episode_seed": episode_seed})

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Applies one lifecycle operation, trains one epoch, and pays the Simic reward."""
        op, slot_index, blueprint_index, speed_index = self._check_action(action)
        outcome = self.world.step(op, slot_index, blueprint_index, speed_index)
        obs = self._observe()
        info = self._info(
            extra={
                "transition": outcome.transition,
                "refused": outcome.refused,
                "reward_terms": outcome.reward_terms,
                "rolled_back": outcome.metrics.rolled_back,
            }
        )
        if outcome.final_test_accuracy is not None:
            info["final_test_accuracy"] = outcome.final_test_accuracy
            info["final_val_accuracy"] = outcome.metrics.val_accuracy
        reward = float(sum(outcome.reward_terms.values()))
        return obs, reward, outcome.terminated, outcome.truncated, info

    def set_policy_name(self, name: str | None) -> None:
        """Names the acting policy in the telemetry (`episode_started`) from the next reset on.

        Runners call it (`agents.rollout.run_episodes`, `esper-train`), so that a
        dashboard of the telemetry can say who acts; it changes nothing else.
        """
        self.world.set_policy_name(name)

    def render(self) -> str | None:
        """Returns the slot table in "ansi" mode, else None."""
        if self.render_mode != "ansi":
            return None
        return self.world.slot_table()

    def close(self) -> None:
        """Closes the telemetry sink and the blueprint library."""
        self.world.close()

    # --- masks ----------------------------------------------------------------------------

    def action_masks(self) -> np.ndarray:
        """Per-dimension masks of the `MultiDiscrete` action, concatenated (sb3-contrib form)."""
        return self.world.action_mask()

    def op_slot_mask(self) -> np.ndarray:
        """Exact legality of each (op, slot) pair, shape (n_ops, n_slots)."""
        return self.world.op_slot_mask()

    # --- internals ------------------------------------------------------------------------

    def _check_action(self, action: np.ndarray) -> tuple[Op, int, int, int]:
        array = np.asarray(action)
        if array.shape != self.action_space.shape or not self.action_space.contains(
            array.astype(self.action_space.dtype)
        ):
            raise ValueError(
                f"action {array.tolist()} is outside {self.action_space}: expected 4 ints "
                f"[op < {len(Op)}, slot < {len(self.layout.slots)}, "
                f"blueprint < {len(self.config.blueprints)}, "
                f"blend_speed < {len(self.config.lifecycle.blend_epochs)}]"
            )
        op, slot, blueprint, speed = (int(v) for v in array)
        return Op(op), slot, blueprint, speed

    def _observe(self) -> np.ndarray:
        return self.layout.encode(
            self.world.signals(), self.world.model.reports(), self.world.base_params
        )

    def _info(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "obs_version": OBS_VERSION,
            "env_semantics_version": ENV_SEMANTICS_VERSION,
            "epoch": self.world.epoch,
            "val_accuracy": self.world.metrics.val_accuracy,
            "action_mask": self.world.action_mask(),
            "op_slot_mask": self.world.op_slot_mask(),
            "params_added": self.world.added_params(),
            "added_param_fraction": self.world.added_params() / self.world.base_params,
            **self.world.counters(),
            **extra,
        }
