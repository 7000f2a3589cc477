"""Wrappers of the single-agent Esper envs.

`FlatMaskedActions` turns Tamiyo's `MultiDiscrete([op, slot, blueprint, blend_speed])`
action into one `Discrete(n)` action over the tuples that mean something, so that
its action mask can be exact. The per-dimension mask of the `MultiDiscrete` action
(what `EsperCifarEnv.action_masks()` returns, the form sb3-contrib's MaskablePPO
takes) cannot say "this slot only for that op": a sampler that obeys it still
picks (op, slot) pairs the lifecycle table refuses. One flat index per meaningful
tuple can be masked exactly, with `op_slot_mask()`.

    >>> env = FlatMaskedActions(gym.make("Esper-CIFAR-Mini-v0"))
    >>> obs, info = env.reset(seed=0)
    >>> rng = np.random.default_rng(0)
    >>> index = rng.choice(np.flatnonzero(env.action_masks()))  # never a table refusal
    >>> obs, reward, terminated, truncated, info = env.step(index)

What the mask cannot foresee: it is exact for the lifecycle table (stage and
budget, as `op_slot_mask()` is), not for the measured conditions of the gates. A
legal ADVANCE can still be refused by G1..G4 (e.g. G3 while alpha is below 1),
a legal GERMINATE by G0 or by the budget when the blueprint adds more parameters
than are left. Such a refusal is a no-op with `info["refused"]` True and a
`info["transition"]["gate"]` other than "lifecycle"; a refusal by the table
itself (gate "lifecycle") never follows an action the flat mask allows.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from esper_env.contracts import Op

#: Version of the flat action order (`FlatMaskedActions`); it changes whenever an index
#: comes to mean another (op, slot, blueprint, blend_speed), so a policy trained on one
#: order is never replayed on another.
FLAT_ACTIONS_VERSION = 1

#: The info key under which `FlatMaskedActions` keeps the wrapped env's per-dimension mask.
MULTI_DISCRETE_MASK_KEY = "multi_discrete_action_mask"


class FlatMaskedActions(gym.Wrapper[np.ndarray, np.int64, np.ndarray, np.ndarray]):
    """One `Discrete(n)` action over Tamiyo's meaningful tuples, with an exact action mask.

    Action order (`FLAT_ACTIONS_VERSION` 1), with `S` slots, `B` blueprints and `V`
    blend speeds, indices counted from 0:

    * `0`: WAIT (its slot, blueprint and speed are irrelevant; it decodes to zeros);
    * `1 + (slot * B + blueprint) * V + speed`: GERMINATE, slot-major, then blueprint,
      then speed;
    * `1 + S*B*V + k * S + slot` for `k` = 0, 1, 2: ADVANCE, PRUNE, FOSSILIZE of the
      slot (blueprint and speed irrelevant; they decode to 0).

    So `n = 1 + S*B*V + 3*S` (Mini's 3 slots, 6 blueprints, 3 speeds: 64).

    Mask: `action_masks()` (what MaskablePPO's `get_action_masks` reaches through
    `env_method`, past `Monitor` and any other wrapper) is a bool vector of shape
    `(n,)`: an index is legal iff its (op, slot) pair is legal in the wrapped env's
    `op_slot_mask()` (WAIT: if any WAIT pair is) and, for GERMINATE, its blueprint
    and speed are legal in the blueprint and speed dimensions of the wrapped env's
    per-dimension `action_masks()` (the single-agent env allows them all). The
    measured gates stay outside any mask (see the module docstring).

    Infos: `info["action_mask"]` is the flat mask (so that a consumer of the infos,
    such as `agents.zoo.policy.SB3Policy`, passes a model the mask it was trained
    with); the wrapped env's per-dimension mask moves to
    `info["multi_discrete_action_mask"]` (`MULTI_DISCRETE_MASK_KEY`), and
    `info["op_slot_mask"]` and the other keys stay as they were. The observation
    space is unchanged.

    Args:
        env: A single-agent Esper env (or a wrapper of one): its action space must be
            `MultiDiscrete([len(Op), slots, blueprints, speeds])`, and it must provide
            `op_slot_mask()` and `action_masks()` and put `op_slot_mask` and
            `action_mask` into its infos.

    Raises:
        TypeError: if the action space is not a 4-dimensional `MultiDiscrete`.
        ValueError: if its first dimension is not `len(Op)` wide.
    """

    def __init__(self, env: gym.Env[np.ndarray, np.ndarray]) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, spaces.MultiDiscrete) or space.shape != (4,):
            raise TypeError(
                "FlatMaskedActions wraps an env with action space "
                f"MultiDiscrete([op, slot, blueprint, blend_speed]), got {space}"
            )
        n_ops, n_slots, n_blueprints, n_speeds = (int(v) for v in space.nvec)
        if n_ops != len(Op):
            raise ValueError(f"the op dimension has {n_ops} values, expected len(Op) = {len(Op)}")
        self.n_slots = n_slots
        self.n_blueprints = n_blueprints
        self.n_speeds = n_speeds
        self._table = _action_table(n_slots, n_blueprints, n_speeds)
        self._index_of = {tuple(int(v) for v in row): i for i, row in enumerate(self._table)}
        self.action_space = spaces.Discrete(len(self._table))

    @property
    def n(self) -> int:
        """Number of flat actions, `1 + S*B*V + 3*S`."""
        return len(self._table)

    # --- the order --------------------------------------------------------------------

    def decode(self, index: Any) -> np.ndarray:
        """Returns the wrapped env's action (int64, shape (4,)) for a flat index.

        Args:
            index: An int, a numpy integer, or an integer array of size 1 (as SB3 passes).

        Raises:
            ValueError: if `index` is not an integer in `[0, n)`.
        """
        return self._table[self._check_index(index)].copy()

    def encode(self, action: Any) -> int:
        """Returns the flat index of a wrapped-env action `[op, slot, blueprint, speed]`.

        The fields an op ignores are ignored here too: every WAIT encodes to 0, and an
        ADVANCE, PRUNE or FOSSILIZE to its slot's index whatever its blueprint and speed.

        Raises:
            ValueError: if `action` is not in the wrapped env's action space.
        """
        array = np.asarray(action)
        inner = self.env.action_space
        if (
            array.shape != inner.shape
            or not np.issubdtype(array.dtype, np.integer)
            or not inner.contains(array.astype(inner.dtype))
        ):
            raise ValueError(f"action {array.tolist()} is not in {inner}")
        op, slot, blueprint, speed = (int(v) for v in array)
        if op == Op.WAIT:
            key = (int(Op.WAIT), 0, 0, 0)
        elif op == Op.GERMINATE:
            key = (op, slot, blueprint, speed)
        else:
            key = (op, slot, 0, 0)
        return self._index_of[key]

    # --- masks ------------------------------------------------------------------------

    def action_masks(self) -> np.ndarray:
        """The exact legality of each flat action now, bool of shape `(n,)`."""
        op_slot = self.env.get_wrapper_attr("op_slot_mask")()
        per_dimension = self.env.get_wrapper_attr("action_masks")()
        return self.flat_mask(op_slot, per_dimension)

    def flat_mask(self, op_slot_mask: np.ndarray, per_dimension_mask: np.ndarray) -> np.ndarray:
        """Builds the flat mask from the wrapped env's two masks.

        Args:
            op_slot_mask: Legality of each (op, slot) pair, shape `(len(Op), S)`.
            per_dimension_mask: The per-dimension masks, concatenated, shape
                `(len(Op) + S + B + V,)`; only its blueprint and speed parts are read.

        Returns:
            The flat mask, bool of shape `(n,)`, in the action order of the class.

        Raises:
            ValueError: if a mask's shape does not fit the wrapped action space.
        """
        pairs = np.asarray(op_slot_mask, dtype=bool)
        dims = np.asarray(per_dimension_mask, dtype=bool)
        n_ops = len(Op)
        expected_dims = n_ops + self.n_slots + self.n_blueprints + self.n_speeds
        if pairs.shape != (n_ops, self.n_slots) or dims.shape != (expected_dims,):
            raise ValueError(
                f"masks of shapes {pairs.shape} and {dims.shape} do not fit the action space "
                f"{self.env.action_space}: expected {(n_ops, self.n_slots)} and {(expected_dims,)}"
            )
        start = n_ops + self.n_slots
        blueprints = dims[start : start + self.n_blueprints]
        speeds = dims[start + self.n_blueprints :]
        germinate = (
            pairs[Op.GERMINATE][:, None, None] & blueprints[None, :, None] & speeds[None, None, :]
        )
        return np.concatenate(
            [
                [pairs[Op.WAIT].any()],
                germinate.ravel(),
                pairs[Op.ADVANCE],
                pairs[Op.PRUNE],
                pairs[Op.FOSSILIZE],
            ]
        )

    # --- Gymnasium API ----------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Resets the wrapped env; the info carries the flat mask (see the class)."""
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, self._flat_info(info)

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Steps the wrapped env with `decode(action)`.

        Raises:
            ValueError: if `action` is not an integer in `[0, n)`.
        """
        obs, reward, terminated, truncated, info = self.env.step(self.decode(action))
        return obs, reward, terminated, truncated, self._flat_info(info)

    # --- internals --------------------------------------------------------------------

    def _flat_info(self, info: dict[str, Any]) -> dict[str, Any]:
        per_dimension = info["action_mask"]
        return {
            **info,
            "action_mask": self.flat_mask(info["op_slot_mask"], per_dimension),
            MULTI_DISCRETE_MASK_KEY: per_dimension,
        }

    def _check_index(self, index: Any) -> int:
        array = np.asarray(index)
        if array.size != 1 or array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"a flat action is one integer in [0, {self.n}), got {index!r}")
        value = int(array.reshape(()))
        if not 0 <= value < self.n:
            raise ValueError(
                f"flat action {value} is out of range: {self.action_space} has actions "
                f"0..{self.n - 1} (FLAT_ACTIONS_VERSION {FLAT_ACTIONS_VERSION})"
            )
        return value


def _action_table(n_slots: int, n_blueprints: int, n_speeds: int) -> np.ndarray:
    """The wrapped-env action of every flat index, int64 of shape `(n, 4)`, in version-1 order."""
    rows = [(int(Op.WAIT), 0, 0, 0)]
    rows += [
        (int(Op.GERMINATE), slot, blueprint, speed)
        for slot in range(n_slots)
        for blueprint in range(n_blueprints)
        for speed in range(n_speeds)
    ]
    rows += [
        (int(op), slot, 0, 0)
        for op in (Op.ADVANCE, Op.PRUNE, Op.FOSSILIZE)
        for slot in range(n_slots)
    ]
    return np.asarray(rows, dtype=np.int64)
