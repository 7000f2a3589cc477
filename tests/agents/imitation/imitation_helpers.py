"""A tiny env that needs memory, with Esper's action interface, and its scripted expert.

`MemoryEnv`: each observation is a one-hot cue (4 values); the expert's action is a fixed
function of the PREVIOUS observation's cue (WAIT on the first step), so a policy must
remember. Its action space is Esper's, `MultiDiscrete([len(Op), 2 slots, 2 blueprints,
2 speeds])`, with random exact (op, slot) masks in which the expert's action is always
legal, and Esper's per-dimension mask derived from them; so `FlatMaskedActions` wraps it.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from esper_env.contracts import Op

ENV_ID = "EsperImitationMemory-v0"
CUES = 4
SLOTS = BLUEPRINTS = SPEEDS = 2
#: The expert's action after each cue: WAIT, GERMINATE(1, 1, 0), ADVANCE(0), FOSSILIZE(1).
EXPERT_ACTIONS = np.array([[0, 0, 0, 0], [1, 1, 1, 0], [2, 0, 0, 0], [4, 1, 0, 0]], dtype=np.int64)


class MemoryEnv(gym.Env[np.ndarray, np.ndarray]):
    """Cues to remember for one step; reward 1 when the action is the expert's.

    Args:
        episode_steps: Steps per episode (then truncated).
    """

    def __init__(self, episode_steps: int = 10) -> None:
        self.episode_steps = episode_steps
        self.observation_space = spaces.Box(0.0, 1.0, shape=(CUES,), dtype=np.float32)
        self.action_space = spaces.MultiDiscrete([len(Op), SLOTS, BLUEPRINTS, SPEEDS])
        self._t = 0
        self._cue = 0
        self._previous = 0
        self._pairs = np.ones((len(Op), SLOTS), dtype=bool)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts an episode; the first expert action is WAIT."""
        super().reset(seed=seed)
        self._t, self._previous = 0, 0
        self._cue = int(self.np_random.integers(CUES))
        self._draw_masks()
        return self._obs(), self._info()

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Pays 1 for the expert's action, then shows the next cue."""
        reward = float(np.array_equal(np.asarray(action), self.expert_action()))
        self._previous = self._cue
        self._cue = int(self.np_random.integers(CUES))
        self._t += 1
        self._draw_masks()
        return self._obs(), reward, False, self._t >= self.episode_steps, self._info()

    def expert_action(self) -> np.ndarray:
        """The expert's action now: a function of the previous cue."""
        return EXPERT_ACTIONS[self._previous].copy()

    def op_slot_mask(self) -> np.ndarray:
        """Exact legality of each (op, slot) pair."""
        return self._pairs.copy()

    def action_masks(self) -> np.ndarray:
        """Per-dimension masks, concatenated (as Esper derives them from the pairs)."""
        slots = self._pairs[1:].any(axis=0)
        if not slots.any():
            slots[:] = True
        return np.concatenate(
            [self._pairs.any(axis=1), slots, np.ones(BLUEPRINTS, bool), np.ones(SPEEDS, bool)]
        )

    def _draw_masks(self) -> None:
        pairs = self.np_random.random((len(Op), SLOTS)) < 0.5
        pairs[Op.WAIT] = True
        op, slot = (int(v) for v in EXPERT_ACTIONS[self._previous][:2])
        pairs[op, slot] = True
        self._pairs = pairs

    def _obs(self) -> np.ndarray:
        obs = np.zeros(CUES, dtype=np.float32)
        obs[self._cue] = 1.0
        return obs

    def _info(self) -> dict[str, Any]:
        return {"action_mask": self.action_masks(), "op_slot_mask": self.op_slot_mask()}


class ScriptedExpert:
    """The expert as a `Policy`: it acts on the previous observation's cue."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> None:
        """Forgets the previous observation."""
        self._previous = None

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """WAIT first, then the action of the previous cue."""
        cue = 0 if self._previous is None else int(np.argmax(self._previous))
        self._previous = np.asarray(obs).copy()
        return EXPERT_ACTIONS[cue].copy()


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=f"{__name__}:MemoryEnv", kwargs={"episode_steps": 10})
