"""Multi-agent morphogenesis: Tamiyo, Emrakul and Karn act on one host in the same step.

A PettingZoo `ParallelEnv` over the single-agent env's `World` (same host,
trainer, blueprint library, telemetry and Simic economy). Every step, each live
agent sends one action; they are applied in the order emrakul, tamiyo, karn,
then one epoch (or `train.epoch_fraction` of one) trains. All agents end
together (the episode's truncation or the host's unrecoverable termination).

Agents and actions (`MaskedMultiDiscrete`, a `MultiDiscrete` whose `sample` also
takes the flat mask below):

* `tamiyo` (growth): `[op, slot, blueprint, blend_speed]` exactly as in the
  single-agent env, except that the blueprint dimension indexes a
  fixed-capacity *pool*: the configured blueprints, then `karn_places` places
  for Karn's designs, empty (masked) until Karn fills them, in order. The pool's
  Karn places start empty every episode so that `reset(seed)` fixes the episode;
  accepted designs stay in the blueprint library (Urza). A GERMINATE naming an
  empty place is refused (a no-op, gate "pool").
* `emrakul` (maintenance of committed structure): `[op, slot]`, ops
  `MaintenanceOp`: WAIT; PROBE a fossilized seed (its worth now: validation
  accuracy with it at alpha 1 minus at alpha 0, two evaluation passes with
  batch statistics); SEDATE
  it (alpha forced to 0, reversible; a sedated seed costs no compute in
  training); WAKE it; LYSE it (FOSSILIZED -> PRUNED through gate G5, which needs
  its measured contribution, minus `lifecycle.fossilize_significance` standard errors, to be
  <= `lifecycle.min_contribution`; the slot is then
  embargoed and frees up like a pruned one). SEDATE and LYSE probe the seed's
  worth first: it is what Emrakul's accuracy term charges.
* `karn` (architect): `[op, parent, mutation]`, ops `DesignOp`: WAIT, or
  PROPOSE a mutant (`blueprints.mutate`, operator `MUTATIONS[mutation]`, site
  and value drawn from the episode's generator) of pool place `parent`. The
  proposal is stored in the library with provenance `karn:<episode>:<step>` and
  judged (`BlueprintLibrary.settle`: Tezzeret lowers it, Urabrask evaluates it at
  every slot width; a remote library's server judges it instead): validated
  and placed in the pool (offered to Tamiyo from the next step on), or
  rejected and never offered. `submit_design(ir)` does the same for any design.
  PROPOSE is legal while Karn places are left; a proposal identical (same
  canonical hash) to a pool entry is refused.

Masks: each observation is a dict `{"observation": float32 vector,
"action_mask": int8 vector}`; `action_mask` is the per-dimension mask of the
agent's `MultiDiscrete`, concatenated (sb3-contrib's form; what
`parallel_api_test` reads). A per-dimension mask cannot say "this slot only for
that op", so the exact legal pairs are in the infos: `op_slot_mask` (tamiyo,
emrakul: `(n_ops, n_slots)`) and `parent_mutation_mask` (karn: `(pool,
n_mutations)`). Like Tamiyo's, the masks follow the lifecycle stage and the
budget; a measured gate (G2, G4, G5) may still refuse, as a no-op reported in
`info["transition"]`. Every info also holds `action_mask`.

Observations (float32; `EsperMultiAgentEnv.observation_names(agent)` names
every index):

* tamiyo: the single-agent layout (`esper_env.observation`, version 1) over the
  pool: the per-slot blueprint one-hot has one entry per pool place, Karn's
  named `karn0..karnN-1`;
* emrakul: the global block, then per slot `EMRAKUL_SLOT_FEATURES`: the
  single-agent slot features (stage one-hot, alpha, age, epochs in stage,
  parameters, contribution, loss trend), then sedated (0/1), probed (0/1: probed
  since it fossilized), probed worth, epochs since the probe (over the episode
  length), and the seed's forward FLOPs over the bare host's;
* karn: the global block, `KARN_GLOBAL_FEATURES` (Karn places left over their
  number; proposals and rejections so far over the episode length), then per
  pool place `KARN_PLACE_FEATURES`: filled, designed by Karn, parameters and
  FLOPs (mean over slot widths, over the bare host's), germinations this
  episode (over the episode length), summed contribution of its seeds now, and
  the best contribution one of its seeds has reached.

Rewards: every agent gets the shared team term, the single-agent Simic economy
(`World.reward_terms`), plus its own terms (`MultiAgentConfig` weights), all in
`info["reward_terms"]` as `team.<term>` and `<agent>.<term>` (they sum to the
reward). Emrakul: `params_saved` (parameters of the seeds it lysed this episode
over the bare host's), `compute_saved` (FLOPs of the seeds it lysed or keeps
sedated over the host's), `accuracy_loss` (minus the probed worth, when
positive, of those seeds), `probe` (a cost per PROBE). Karn: `contribution`
(summed measured contribution of live and fossilized seeds grown from its
designs) and `proposal` (a cost per evaluated proposal). The flows are paid
every step while they hold, like the team's rent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pydantic import Field
from torch import nn

from blueprints.evaluate import estimate_flops
from blueprints.ir import BlueprintIR
from blueprints.library import BlueprintStatus
from blueprints.mutate import MUTATIONS, Mutation, edits, mutate
from esper_env.contracts import (
    ACTIVE_STAGES,
    EnvConfig,
    Op,
    SeedStage,
    SlotReport,
    StrictModel,
    TransitionResult,
)
from esper_env.envs.presets import ENV_SEMANTICS_VERSION
from esper_env.envs.world import World
from esper_env.kasmina.host import IMAGE_SIZE
from esper_env.observation import GLOBAL_FEATURES, OBS_VERSION, SLOT_FEATURES, ObservationLayout

AGENTS = ("tamiyo", "emrakul", "karn")


class MaintenanceOp(IntEnum):
    """Emrakul's operations: the first dimension of its action."""

    WAIT = 0
    PROBE = 1
    SEDATE = 2
    WAKE = 3
    LYSE = 4


class DesignOp(IntEnum):
    """Karn's operations: the first dimension of its action."""

    WAIT = 0
    PROPOSE = 1


EMRAKUL_SLOT_FEATURES = (
    *SLOT_FEATURES,
    "sedated",
    "probed",
    "probed_worth",
    "since_probe",
    "flops_fraction",
)
KARN_GLOBAL_FEATURES = ("places_left", "proposals", "rejections")
KARN_PLACE_FEATURES = (
    "filled",
    "by_karn",
    "param_fraction",
    "flops_fraction",
    "uses",
    "contribution",
    "best_contribution",
)
EMRAKUL_TERMS = ("params_saved", "compute_saved", "accuracy_loss", "probe")
KARN_TERMS = ("contribution", "proposal")


class MultiAgentConfig(StrictModel):
    """Settings of the multi-agent env beyond `EnvConfig`: the pool and the per-agent rewards.

    Attributes:
        karn_places: Places for Karn's designs in Tamiyo's blueprint pool.
        params_saved: Emrakul: weight on lysed parameters over the bare host's.
        compute_saved: Emrakul: weight on lysed or sedated FLOPs over the host's.
        accuracy_loss: Emrakul: weight on the probed worth of what it lysed or sedated.
        probe_cost: Emrakul: cost of one PROBE (two evaluation passes).
        karn_contribution: Karn: weight on the contribution of seeds from its designs.
        proposal_cost: Karn: cost of one evaluated proposal.
    """

    karn_places: int = Field(default=4, ge=1, le=64)
    params_saved: float = 1.0
    compute_saved: float = 1.0
    accuracy_loss: float = 10.0
    probe_cost: float = 0.01
    karn_contribution: float = 1.0
    proposal_cost: float = 0.01


class MaskedMultiDiscrete(spaces.MultiDiscrete):
    """A `MultiDiscrete` whose `sample(mask)` also takes the flat per-dimension mask.

    Gymnasium's `MultiDiscrete.sample` wants a tuple of per-dimension int8 masks;
    PettingZoo's tests pass `obs["action_mask"]` as it is, here the flat
    concatenation of those masks. `split_mask` converts one into the other.
    """

    def split_mask(self, flat: np.ndarray) -> tuple[np.ndarray, ...]:
        """Splits a flat per-dimension mask into Gymnasium's tuple of int8 masks."""
        flat = np.asarray(flat)
        sizes = [int(n) for n in self.nvec]
        if flat.ndim != 1 or flat.shape[0] != sum(sizes):
            raise ValueError(
                f"flat mask of shape {flat.shape} does not fit {self}: expected ({sum(sizes)},)"
            )
        return tuple(part.astype(np.int8) for part in np.split(flat, np.cumsum(sizes)[:-1]))

    def sample(
        self,
        mask: tuple[np.ndarray, ...] | np.ndarray | None = None,
        probability: tuple[np.ndarray, ...] | None = None,
    ) -> np.ndarray:
        """Samples an action; `mask` may be a tuple (Gymnasium's form) or the flat mask."""
        if isinstance(mask, np.ndarray):
            mask = self.split_mask(mask)
        return super().sample(mask=mask, probability=probability)


@dataclass(frozen=True)
class DesignReport:
    """What became of one design submitted for Karn.

    Attributes:
        accepted: Validated and placed in the pool.
        name: Its name in the pool and the library (`karn_e<episode>_p<n>`).
        ir_hash: Canonical hash (the library key).
        provenance: `karn:<episode>:<step>`.
        reasons: Why it was rejected (empty when accepted).
        place: Its pool index when accepted, else None.
    """

    accepted: bool
    name: str
    ir_hash: str
    provenance: str
    reasons: tuple[str, ...]
    place: int | None


@dataclass(frozen=True)
class _Saved:
    """A seed Emrakul sedated or lysed: what it saves and what it was worth."""

    params: int
    flops: int
    worth: float


def host_flops(model: nn.Module, in_channels: int) -> int:
    """Forward FLOPs (multiply-add = 2) of the convolutions and linear layers on one image."""
    total = 0

    def count(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kernel = math.prod(module.kernel_size) * module.in_channels // module.groups
            total += 2 * kernel * output[0].numel()
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features

    handles = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, in_channels, IMAGE_SIZE, IMAGE_SIZE, device=device))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return total


class EsperMultiAgentEnv(ParallelEnv[str, dict[str, np.ndarray], np.ndarray]):
    """Tamiyo, Emrakul and Karn on one CIFAR-10 host (see the module docstring).

    Args:
        preset: Registered single-agent id whose config is the starting point.
        render_mode: None or "ansi" (the slot table and the pool).
        multi_agent: `MultiAgentConfig` or its keys.
        **overrides: Keys of `EnvConfig`, nested dicts merged into the preset's.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "name": "esper_multi_agent_v0",
        "render_modes": ["ansi"],
        "is_parallelizable": True,
    }

    def __init__(
        self,
        preset: str = "Esper-CIFAR-v0",
        render_mode: str | None = None,
        multi_agent: MultiAgentConfig | dict[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        self.team = (
            multi_agent
            if isinstance(multi_agent, MultiAgentConfig)
            else MultiAgentConfig.model_validate(multi_agent or {})
        )
        self.world = World.from_preset(preset, **overrides)
        config: EnvConfig = self.world.config
        self.config = config
        self.n_builtin = len(config.blueprints)
        self.place_names = (
            *config.blueprints,
            *(f"karn{k}" for k in range(self.team.karn_places)),
        )
        self.capacity = len(self.place_names)
        slots = self.world.slot_names
        self.layout = ObservationLayout(
            slots=slots, blueprints=self.place_names, episode_epochs=config.episode_epochs
        )
        self.host_flops = host_flops(self.world.model, config.host_config().in_channels)
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        n_speeds = len(config.lifecycle.blend_epochs)
        self.action_spaces = {
            "tamiyo": MaskedMultiDiscrete([len(Op), len(slots), self.capacity, n_speeds]),
            "emrakul": MaskedMultiDiscrete([len(MaintenanceOp), len(slots)]),
            "karn": MaskedMultiDiscrete([len(DesignOp), self.capacity, len(MUTATIONS)]),
        }
        self.observation_spaces = {
            agent: spaces.Dict(
                {
                    "observation": spaces.Box(
                        -np.inf,
                        np.inf,
                        shape=(len(self.observation_names(agent)),),
                        dtype=np.float32,
                    ),
                    "action_mask": spaces.MultiBinary(int(self.action_spaces[agent].nvec.sum())),
                }
            )
            for agent in AGENTS
        }
        self._seeder = np.random.default_rng()
        # Valid edits per blueprint hash: a pool entry's IR never changes, so once is enough.
        self._edits: dict[str, frozenset[Mutation]] = {}
        self._cost: dict[tuple[str, int], tuple[int, int]] = {}
        self._started = False

    # --- PettingZoo API -------------------------------------------------------------------

    def observation_space(self, agent: str) -> spaces.Dict:
        """The agent's observation space (the same object on every call)."""
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> MaskedMultiDiscrete:
        """The agent's action space (the same object on every call)."""
        return self.action_spaces[agent]

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
        """Starts an episode on a fresh host with an empty Karn part of the pool.

        Args:
            seed: Fixes the whole episode (None: continue the env's generator).
            options: Accepted for the PettingZoo API; this env defines none, so they
                are not read.
        """
        if seed is not None:
            self._seeder = np.random.default_rng(seed)
        episode_seed = int(self._seeder.integers(0, 2**31 - 1))
        self.world.start_episode(episode_seed, reset_seed=seed)
        self.world.remove_added_blueprints()
        self._karn_rng = np.random.default_rng([episode_seed, 1])
        self._karn_names: list[str] = []
        self._proposals = 0
        self._rejections = 0
        self._uses = np.zeros(self.capacity, dtype=np.int64)
        self._best = np.zeros(self.capacity, dtype=np.float64)
        self._probes: dict[int, tuple[int, float, int]] = {}
        self._sedated: dict[int, tuple[int, _Saved]] = {}
        self._lysed: list[_Saved] = []
        self._started = True
        self.agents = list(self.possible_agents)
        extra = {agent: {"episode_seed": episode_seed} for agent in AGENTS}
        return self._observe(), self._infos(extra)

    def step(
        self, actions: dict[str, np.ndarray]
    ) -> tuple[
        dict[str, dict[str, np.ndarray]],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """Applies the three agents' actions (emrakul, tamiyo, karn), trains one epoch, pays.

        Raises:
            RuntimeError: The episode is over (or never started): call `reset`.
            ValueError: An action is missing, unknown or outside its agent's space.
        """
        if not self.agents:
            raise RuntimeError("the episode is over (or not started): call reset() first")
        if set(actions) != set(self.agents):
            raise ValueError(
                f"actions for {sorted(actions)}, expected exactly the live agents {self.agents}"
            )
        parsed = {agent: self._check_action(agent, actions[agent]) for agent in AGENTS}
        world = self.world
        world.begin_step()
        emrakul, probed = self._emrakul_act(*parsed["emrakul"])
        tamiyo = self._tamiyo_act(*parsed["tamiyo"])
        karn, design = self._karn_act(*parsed["karn"])
        metrics = world.train_epoch()
        terminated = world.unrecoverable()
        truncated = not terminated and world.epoch >= self.config.episode_epochs
        done = terminated or truncated
        team = world.reward_terms(terminal=done)
        self._track_karn_designs()
        own = {
            "tamiyo": {},
            "emrakul": self._emrakul_terms(probed),
            "karn": self._karn_terms(design is not None),
        }
        terms = {
            agent: {
                **{f"team.{k}": v for k, v in team.items()},
                **{f"{agent}.{k}": v for k, v in own[agent].items()},
            }
            for agent in AGENTS
        }
        transitions = {"tamiyo": tamiyo, "emrakul": emrakul, "karn": karn}
        extra: dict[str, dict[str, Any]] = {}
        for agent in AGENTS:
            move = transitions[agent]
            extra[agent] = {
                "transition": move,
                "refused": move is not None and not move["ok"],
                "reward_terms": terms[agent],
                "rolled_back": metrics.rolled_back,
            }
        extra["karn"]["design"] = None if design is None else asdict(design)
        test_accuracy = world.test_accuracy() if done else None
        if test_accuracy is not None:
            for agent in AGENTS:
                extra[agent]["final_test_accuracy"] = test_accuracy
                extra[agent]["final_val_accuracy"] = metrics.val_accuracy
        world.end_step(
            self._describe(parsed),
            [agent for agent in AGENTS if extra[agent]["refused"]],
            team,
            terminated=terminated,
            final_test_accuracy=test_accuracy,
        )
        obs = self._observe()
        infos = self._infos(extra)
        rewards = {agent: float(sum(terms[agent].values())) for agent in AGENTS}
        terminations = dict.fromkeys(AGENTS, terminated)
        truncations = dict.fromkeys(AGENTS, truncated)
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def set_policy_name(self, name: str | None) -> None:
        """Names the acting team in the telemetry (`episode_started`) from the next reset on."""
        self.world.set_policy_name(name)

    def render(self) -> str | None:
        """Returns the slot table and the pool in "ansi" mode, else None."""
        if self.render_mode != "ansi":
            return None
        pool = ", ".join(ir.metadata.name for ir in self.world.blueprint_irs)
        return f"{self.world.slot_table()}\npool: {pool}"

    def close(self) -> None:
        """Closes the world: telemetry sink, compiler and blueprint library."""
        self.world.close()

    # --- Karn's designs -------------------------------------------------------------------

    def submit_design(self, ir: BlueprintIR) -> DesignReport:
        """Evaluates a design and, if it passes, offers it to Tamiyo from the next step on.

        The design is renamed `karn_e<episode>_p<n>`, stored in the library with
        provenance `karn:<episode>:<step>` and judged at every slot width (unless the
        library already holds its verdict; a remote library waits for its server's);
        a rejected design is never placed in the pool. Karn's PROPOSE action calls
        this with its mutant.

        Raises:
            RuntimeError: No episode has started, or every Karn place is filled.
        """
        if not self._started:
            raise RuntimeError("call reset() before submitting designs")
        if self._places_left() == 0:
            raise RuntimeError(f"all {self.team.karn_places} Karn places are filled this episode")
        world = self.world
        name = f"karn_e{world.episode}_p{self._proposals}"
        provenance = f"karn:{world.episode}:{world.epoch}"
        design = ir.model_copy(update={"metadata": ir.metadata.model_copy(update={"name": name})})
        self._proposals += 1
        ir_hash = design.canonical_hash
        pool_hashes = {known.canonical_hash: known.metadata.name for known in world.blueprint_irs}
        if ir_hash in pool_hashes:
            self._rejections += 1
            reason = f"computes the same as {pool_hashes[ir_hash]}, already in the pool"
            return DesignReport(False, name, ir_hash, provenance, (reason,), None)
        world.library.add(design, provenance)
        widths = sorted({slot.channels for slot in world.model.slots.values()})
        entry = world.library.settle(ir_hash, widths, device=world.device)
        if entry.status is not BlueprintStatus.VALIDATED:
            self._rejections += 1
            return DesignReport(False, name, ir_hash, provenance, entry.reasons, None)
        place = world.add_blueprint(design)
        self._karn_names.append(name)
        return DesignReport(True, name, ir_hash, provenance, (), place)

    def _places_left(self) -> int:
        return self.capacity - len(self.world.blueprint_irs)

    def _valid_mutations(self, ir: BlueprintIR) -> frozenset[Mutation]:
        key = ir.canonical_hash
        if key not in self._edits:
            self._edits[key] = frozenset(m for m in MUTATIONS if edits(ir, m))
        return self._edits[key]

    # --- costs of seeds -------------------------------------------------------------------

    def _blueprint_cost(self, ir: BlueprintIR, slot_index: int) -> tuple[int, int]:
        """(parameters, forward FLOPs per image) of `ir` grown in slot `slot_index`."""
        key = (ir.canonical_hash, slot_index)
        if key not in self._cost:
            slot = self.world.model.slots[self.world.slot_names[slot_index]]
            assert slot.sample_shape is not None  # the host is probed when built
            channels, height, width = slot.sample_shape
            plan = self.world.compiler.plan(ir, channels, device=self.world.device)
            self._cost[key] = (plan.param_count, estimate_flops(plan, height, width))
        return self._cost[key]

    def _seed_cost(self, slot_index: int) -> tuple[int, int]:
        blueprint = self.world.model.slots[self.world.slot_names[slot_index]].blueprint
        by_name = {ir.metadata.name: ir for ir in self.world.blueprint_irs}
        assert blueprint in by_name, "a seed's blueprint stays in the pool all episode"
        return self._blueprint_cost(by_name[blueprint], slot_index)

    # --- agents' operations ---------------------------------------------------------------

    def _check_action(self, agent: str, action: np.ndarray) -> tuple[int, ...]:
        space = self.action_spaces[agent]
        array = np.asarray(action)
        if array.shape != space.shape or not space.contains(array.astype(space.dtype)):
            raise ValueError(
                f"{agent}'s action {array.tolist()} is outside {space}: expected "
                f"{len(space.nvec)} ints below {space.nvec.tolist()}"
            )
        return tuple(int(v) for v in array)

    def _describe(self, parsed: dict[str, tuple[int, ...]]) -> dict[str, str]:
        """Each agent's action in words, for the `StepEnded` event."""
        world = self.world
        op, slot, blueprint, speed = parsed["tamiyo"]
        pool = [ir.metadata.name for ir in world.blueprint_irs]
        name = pool[blueprint] if blueprint < len(pool) else self.place_names[blueprint]
        described = {"tamiyo": world.describe_tamiyo(Op(op), slot, name, speed)}
        mop, target = parsed["emrakul"]
        described["emrakul"] = (
            "wait"
            if MaintenanceOp(mop) is MaintenanceOp.WAIT
            else f"{MaintenanceOp(mop).name.lower()} {world.slot_names[target]}"
        )
        dop, parent, mutation = parsed["karn"]
        described["karn"] = (
            "wait"
            if DesignOp(dop) is DesignOp.WAIT
            else f"{DesignOp(dop).name.lower()} {self.place_names[parent]} {MUTATIONS[mutation]}"
        )
        return described

    def _tamiyo_act(self, op: int, slot: int, blueprint: int, speed: int) -> dict[str, Any] | None:
        world = self.world
        if Op(op) is Op.GERMINATE and blueprint >= len(world.blueprint_irs):
            stage = world.model.slots[world.slot_names[slot]].stage
            result = TransitionResult(
                ok=False,
                slot=world.slot_names[slot],
                op="germinate",
                from_stage=stage,
                to_stage=stage,
                gate="pool",
                reason=f"pool place {blueprint} ({self.place_names[blueprint]}) is empty",
            )
            world.record(result)
        else:
            result = world.apply(Op(op), slot, blueprint, speed)
        if result is None:
            return None
        if result.ok and result.to_stage is SeedStage.GERMINATED:
            self._uses[blueprint] += 1
        return result.model_dump(mode="json")

    def _emrakul_act(self, op: int, slot_index: int) -> tuple[dict[str, Any] | None, bool]:
        """Applies Emrakul's operation; returns its transition and whether it probed."""
        mop = MaintenanceOp(op)
        if mop is MaintenanceOp.WAIT:
            return None, False
        world = self.world
        name = world.slot_names[slot_index]
        slot = world.model.slots[name]
        if not self.emrakul_op_slot_mask()[mop, slot_index]:
            needs = {MaintenanceOp.SEDATE: "an awake", MaintenanceOp.WAKE: "a sedated"}.get(
                mop, "a"
            )
            result = TransitionResult(
                ok=False,
                slot=name,
                op=mop.name.lower(),
                from_stage=slot.stage,
                to_stage=slot.stage,
                gate="lifecycle",
                reason=f"{mop.name.lower()} needs {needs} FOSSILIZED seed; the slot is "
                f"{slot.stage.name}{' (sedated)' if slot.sedated else ''}",
            )
            world.record(result)
            return result.model_dump(mode="json"), False
        if mop is MaintenanceOp.WAKE:
            result = world.maintain("wake", slot_index)
            if result.ok:
                self._sedated.pop(slot_index, None)
            return result.model_dump(mode="json"), False
        worth = world.probe(slot_index)
        self._probes[slot_index] = (slot.seed_uid, worth, world.epoch)
        if mop is MaintenanceOp.PROBE:
            result = TransitionResult(
                ok=True,
                slot=name,
                op="probe",
                from_stage=slot.stage,
                to_stage=slot.stage,
                gate="lifecycle",
                reason=f"worth {worth:+.4f} (val accuracy at alpha 1 minus at alpha 0)",
            )
            return result.model_dump(mode="json"), True
        params, flops = self._seed_cost(slot_index)
        saved = _Saved(params=params, flops=flops, worth=worth)
        if mop is MaintenanceOp.SEDATE:
            result = world.maintain("sedate", slot_index)
            if result.ok:
                self._sedated[slot_index] = (slot.seed_uid, saved)
        else:
            result = world.maintain("remove", slot_index)
            if result.ok:
                self._sedated.pop(slot_index, None)
                self._lysed.append(saved)
        return result.model_dump(mode="json"), False

    def _karn_act(
        self, op: int, parent: int, mutation: int
    ) -> tuple[dict[str, Any] | None, DesignReport | None]:
        if DesignOp(op) is DesignOp.WAIT:
            return None, None
        kind = MUTATIONS[mutation]
        move: dict[str, Any] = {
            "ok": False,
            "op": "propose",
            "parent": None,
            "mutation": kind.value,
        }
        pool = self.world.blueprint_irs
        if self._places_left() == 0:
            move["reason"] = f"all {self.team.karn_places} Karn places are filled"
        elif parent >= len(pool):
            move["reason"] = f"parent place {parent} ({self.place_names[parent]}) is empty"
        elif not self.parent_mutation_mask()[parent, mutation]:
            move["parent"] = pool[parent].metadata.name
            move["reason"] = f"mutation {kind.value!r} has no valid edit on {move['parent']}"
        else:
            move["parent"] = pool[parent].metadata.name
            design = self.submit_design(mutate(pool[parent], kind, self._karn_rng))
            move["ok"] = True
            verdict = "accepted" if design.accepted else "rejected: " + "; ".join(design.reasons)
            move["reason"] = f"{design.name} {verdict}"
            return move, design
        return move, None

    # --- rewards --------------------------------------------------------------------------

    def _emrakul_terms(self, probed: bool) -> dict[str, float]:
        team = self.team
        world = self.world
        sedated = [saved for _, saved in self._sedated.values()]
        lysed_params = sum(s.params for s in self._lysed)
        flops = sum(s.flops for s in [*self._lysed, *sedated])
        worth = sum(max(0.0, s.worth) for s in [*self._lysed, *sedated])
        return {
            "params_saved": team.params_saved * lysed_params / world.base_params,
            "compute_saved": team.compute_saved * flops / self.host_flops,
            "accuracy_loss": -team.accuracy_loss * worth,
            "probe": -team.probe_cost if probed else 0.0,
        }

    def _karn_terms(self, proposed: bool) -> dict[str, float]:
        karn = set(self._karn_names)
        contribution = sum(
            r.contribution
            for r in self.world.model.reports()
            if r.blueprint in karn and (r.stage in ACTIVE_STAGES or r.stage is SeedStage.FOSSILIZED)
        )
        return {
            "contribution": self.team.karn_contribution * contribution,
            "proposal": -self.team.proposal_cost if proposed else 0.0,
        }

    def _track_karn_designs(self) -> None:
        index = {ir.metadata.name: i for i, ir in enumerate(self.world.blueprint_irs)}
        for report in self.world.model.reports():
            if report.blueprint is not None and report.blueprint in index:
                place = index[report.blueprint]
                self._best[place] = max(self._best[place], report.contribution)

    # --- masks ----------------------------------------------------------------------------

    def tamiyo_action_mask(self) -> np.ndarray:
        """Tamiyo's per-dimension mask, with the blueprint part over the pool's places."""
        base = self.world.action_mask()
        head = len(Op) + len(self.world.slot_names)
        pool = np.zeros(self.capacity, dtype=bool)
        pool[: len(self.world.blueprint_irs)] = True
        return np.concatenate([base[:head], pool, base[head + self.n_builtin :]])

    def emrakul_op_slot_mask(self) -> np.ndarray:
        """Legality of each (maintenance op, slot) pair by stage, shape (n_ops, n_slots)."""
        slots = self.world.model.slots
        mask = np.zeros((len(MaintenanceOp), len(slots)), dtype=bool)
        mask[MaintenanceOp.WAIT] = True
        for index, slot in enumerate(slots.values()):
            if slot.stage is SeedStage.FOSSILIZED:
                mask[MaintenanceOp.PROBE, index] = True
                mask[MaintenanceOp.LYSE, index] = True
                mask[MaintenanceOp.WAKE if slot.sedated else MaintenanceOp.SEDATE, index] = True
        return mask

    def emrakul_action_mask(self) -> np.ndarray:
        """Emrakul's per-dimension mask."""
        pairs = self.emrakul_op_slot_mask()
        return np.concatenate([pairs.any(axis=1), _slot_dim(pairs[1:].any(axis=0))])

    def parent_mutation_mask(self) -> np.ndarray:
        """Which mutation has a valid edit on which pool place, shape (pool, n_mutations)."""
        mask = np.zeros((self.capacity, len(MUTATIONS)), dtype=bool)
        for place, ir in enumerate(self.world.blueprint_irs):
            valid = self._valid_mutations(ir)
            mask[place] = [m in valid for m in MUTATIONS]
        return mask

    def karn_action_mask(self) -> np.ndarray:
        """Karn's per-dimension mask."""
        pairs = self.parent_mutation_mask()
        can_propose = self._places_left() > 0 and bool(pairs.any())
        if not can_propose:
            pairs = np.ones_like(pairs)  # only WAIT is legal: the other dimensions are moot
        ops = np.array([True, can_propose])
        return np.concatenate([ops, pairs.any(axis=1), pairs.any(axis=0)])

    def action_mask(self, agent: str) -> np.ndarray:
        """The agent's per-dimension mask as bools (what `MaskablePPO` takes)."""
        if agent == "tamiyo":
            return self.tamiyo_action_mask()
        if agent == "emrakul":
            return self.emrakul_action_mask()
        if agent == "karn":
            return self.karn_action_mask()
        raise KeyError(f"no agent {agent!r}; agents are {AGENTS}")

    # --- observations ---------------------------------------------------------------------

    def observation_names(self, agent: str) -> list[str]:
        """Name of every index of the agent's observation vector."""
        if agent == "tamiyo":
            return self.layout.names()
        if agent == "emrakul":
            return list(GLOBAL_FEATURES) + [
                f"{slot}.{f}" for slot in self.world.slot_names for f in EMRAKUL_SLOT_FEATURES
            ]
        if agent == "karn":
            return (
                list(GLOBAL_FEATURES)
                + list(KARN_GLOBAL_FEATURES)
                + [f"{place}.{f}" for place in self.place_names for f in KARN_PLACE_FEATURES]
            )
        raise KeyError(f"no agent {agent!r}; agents are {AGENTS}")

    def _pool_reports(self) -> list[SlotReport]:
        """Slot reports with Karn's design names replaced by their pool place names."""
        rename = {
            name: self.place_names[self.n_builtin + k] for k, name in enumerate(self._karn_names)
        }
        reports = self.world.model.reports()
        return [
            r.model_copy(update={"blueprint": rename[r.blueprint]}) if r.blueprint in rename else r
            for r in reports
        ]

    def _observe(self) -> dict[str, dict[str, np.ndarray]]:
        world = self.world
        horizon = float(self.config.episode_epochs)
        tamiyo = self.layout.encode(world.signals(), self._pool_reports(), world.base_params)
        head = tamiyo[: len(GLOBAL_FEATURES)]
        rows = []
        for index, name in enumerate(world.slot_names):
            slot = world.model.slots[name]
            start = self.layout.slot_offset(index)
            probed, worth, since = 0.0, 0.0, 0.0
            probe = self._probes.get(index)
            # A probe describes the seed it measured; a later seed in the slot starts unprobed.
            if (
                probe is not None
                and slot.stage is SeedStage.FOSSILIZED
                and probe[0] == slot.seed_uid
            ):
                probed, worth, since = 1.0, probe[1], (world.epoch - probe[2]) / horizon
            flops = self._seed_cost(index)[1] if slot.seed is not None else 0
            rows.append(tamiyo[start : start + len(SLOT_FEATURES)])
            extra = (float(slot.sedated), probed, worth, since, flops / self.host_flops)
            rows.append(np.array(extra, dtype=np.float32))
        emrakul = np.concatenate([head, *rows]).astype(np.float32)
        karn = np.concatenate([head, self._karn_global(horizon), self._karn_places(horizon)])
        vectors = {"tamiyo": tamiyo, "emrakul": emrakul, "karn": karn.astype(np.float32)}
        return {
            agent: {
                "observation": vectors[agent],
                "action_mask": self.action_mask(agent).astype(np.int8),
            }
            for agent in AGENTS
        }

    def _karn_global(self, horizon: float) -> np.ndarray:
        return np.array(
            [
                self._places_left() / self.team.karn_places,
                self._proposals / horizon,
                self._rejections / horizon,
            ],
            dtype=np.float32,
        )

    def _karn_places(self, horizon: float) -> np.ndarray:
        world = self.world
        features = np.zeros((self.capacity, len(KARN_PLACE_FEATURES)), dtype=np.float32)
        karn = set(self._karn_names)
        contribution = np.zeros(self.capacity)
        index = {ir.metadata.name: i for i, ir in enumerate(world.blueprint_irs)}
        for report in world.model.reports():
            if report.blueprint in index:
                contribution[index[report.blueprint]] += report.contribution
        n_slots = len(world.slot_names)
        for place, ir in enumerate(world.blueprint_irs):
            costs = [self._blueprint_cost(ir, i) for i in range(n_slots)]
            features[place] = (
                1.0,
                float(ir.metadata.name in karn),
                sum(c[0] for c in costs) / n_slots / world.base_params,
                sum(c[1] for c in costs) / n_slots / self.host_flops,
                self._uses[place] / horizon,
                contribution[place],
                self._best[place],
            )
        return features.reshape(-1)

    def _infos(self, extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        world = self.world
        pool: list[str | None] = [ir.metadata.name for ir in world.blueprint_irs]
        pool += [None] * (self.capacity - len(pool))
        common = {
            "obs_version": OBS_VERSION,
            "env_semantics_version": ENV_SEMANTICS_VERSION,
            "epoch": world.epoch,
            "val_accuracy": world.metrics.val_accuracy,
            "params_added": world.added_params(),
            "added_param_fraction": world.added_params() / world.base_params,
            "blueprint_pool": pool,
            **world.counters(),
        }
        exact = {
            "tamiyo": {"op_slot_mask": world.op_slot_mask()},
            "emrakul": {"op_slot_mask": self.emrakul_op_slot_mask()},
            "karn": {"parent_mutation_mask": self.parent_mutation_mask()},
        }
        return {
            agent: {
                **common,
                "action_mask": self.action_mask(agent).astype(np.int8),
                **exact[agent],
                **extra[agent],
            }
            for agent in AGENTS
        }


def _slot_dim(slots: np.ndarray) -> np.ndarray:
    # Only WAIT is legal when no slot is: the slot dimension is then irrelevant.
    return slots if slots.any() else np.ones_like(slots)
