"""The world every Esper environment acts on: one host with seed slots, its data and its trainer.

The single-agent env and the multi-agent env are thin facades over `World`, so the
lifecycle, the training step, the reward economy and the telemetry are written
once. The data is loaded once per process and shared by every world in it.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from blueprints.compiler import Compiler
from blueprints.ir import BlueprintIR
from esper_env.contracts import (
    ACTIVE_STAGES,
    EnvConfig,
    EpochMetrics,
    Op,
    SeedStage,
    TransitionResult,
)
from esper_env.data import (
    DeviceBatches,
    cached_cifar10,
    class_interleaved,
    stratified_split,
    stratified_subset,
)
from esper_env.envs.presets import preset_config
from esper_env.kasmina import MorphogeneticModel, build_host
from esper_env.observation import OBS_VERSION, GlobalSignals
from esper_env.reward import reward_terms
from esper_env.telemetry import (
    EpisodeEnded,
    EpisodeStarted,
    EpochEnd,
    EventBus,
    Fossilized,
    GateRefused,
    Germinated,
    GovernorRollback,
    JsonlSink,
    Pruned,
    StageChanged,
    StepEnded,
)
from esper_env.tolaria import Trainer
from urza.client import open_library


@dataclass(frozen=True)
class Splits:
    """Train, validation and test batches on the training device."""

    train: DeviceBatches
    val: DeviceBatches
    test: DeviceBatches


@dataclass(frozen=True)
class StepOutcome:
    """What one world step did (one epoch after the agents' operations)."""

    transition: dict[str, Any] | None
    refused: bool
    metrics: EpochMetrics
    reward_terms: dict[str, float]
    terminated: bool
    truncated: bool
    final_test_accuracy: float | None


def resolve_device(name: str) -> torch.device:
    """Maps "auto" to CUDA when present, else CPU; passes other names to `torch.device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@functools.lru_cache(maxsize=8)
def load_splits(
    data_dir: str | None,
    val_per_class: int,
    train_per_class: int | None,
    test_per_class: int | None,
    split_seed: int,
    batch_size: int,
    eval_batch_size: int,
    augment: bool,
    device: str,
) -> Splits:
    """Loads CIFAR-10 once per process and carves the env's splits (memoised per settings)."""
    data = cached_cifar10(data_dir)
    train_x, train_y, val_x, val_y = stratified_split(
        data.train_images, data.train_labels, val_per_class=val_per_class, seed=split_seed
    )
    if train_per_class is not None:
        train_x, train_y = stratified_subset(train_x, train_y, per_class=train_per_class)
    # Counterfactuals normalise with each validation batch's statistics: keep batches balanced.
    val_x, val_y = class_interleaved(val_x, val_y)
    test_x, test_y = data.test_images, data.test_labels
    if test_per_class is not None:
        test_x, test_y = stratified_subset(test_x, test_y, per_class=test_per_class)
    return Splits(
        train=DeviceBatches(
            train_x, train_y, batch_size=batch_size, device=device, augment=augment, shuffle=True
        ),
        val=DeviceBatches(val_x, val_y, batch_size=eval_batch_size, device=device),
        test=DeviceBatches(test_x, test_y, batch_size=eval_batch_size, device=device),
    )


class World:
    """One host, its data, trainer, blueprint library, counters and telemetry.

    Args:
        config: The validated environment config.
    """

    def __init__(self, config: EnvConfig) -> None:
        if config.obs_version != OBS_VERSION:
            raise ValueError(
                f"obs_version={config.obs_version} requested, but this Esper provides version "
                f"{OBS_VERSION}; pin the esper release that provides it"
            )
        train_config = config.train
        if "epochs" not in train_config.model_fields_set:
            train_config = train_config.model_copy(update={"epochs": config.episode_epochs})
        self.config = config.model_copy(update={"train": train_config})
        self.device = resolve_device(train_config.device)
        self.splits = load_splits(
            config.data_dir,
            config.val_per_class,
            config.train_per_class,
            config.test_per_class,
            config.split_seed,
            train_config.batch_size,
            train_config.eval_batch_size,
            train_config.augment,
            str(self.device),
        )
        self.library = open_library(config.library_path)
        self.library.ensure_builtins()
        offered = {entry.name: entry for entry in self.library.offered()}
        missing = [name for name in config.blueprints if name not in offered]
        if missing:
            raise ValueError(
                f"blueprints {missing} are not validated in the library; offered: {list(offered)}"
            )
        self.blueprint_irs = [offered[name].ir for name in config.blueprints]
        self.bus = EventBus()
        self._sink: JsonlSink | None = None
        if config.telemetry_dir is not None:
            self._sink = JsonlSink(config.telemetry_dir, config.telemetry_name)
            self.bus.subscribe(self._sink)
        self.episode = -1
        self.policy_name: str | None = None
        self.model: MorphogeneticModel = self._build_model(seed=0)
        self.slot_names = tuple(self.model.slots)
        self.base_params = self.model.base_param_count()
        # One compiler for the world's lifetime, prewarmed, so germination is a cache hit.
        self.compiler = Compiler()
        for ir in self.blueprint_irs:
            for slot in self.model.slots.values():
                self.compiler.plan(ir, slot.channels, device=self.device)
        self.trainer: Trainer | None = None

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> World:
        """Builds a world from a registered id's config with `overrides` merged in."""
        return cls(preset_config(preset, **overrides))

    # --- episode --------------------------------------------------------------------------

    def _build_model(self, seed: int) -> MorphogeneticModel:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_host(self.config.host_config(), self.config.lifecycle)
        return model.to(self.device)

    def start_episode(self, seed: int, *, reset_seed: int | None = None) -> None:
        """Re-initialises host, trainer and counters; everything after depends only on `seed`.

        Args:
            seed: The episode seed.
            reset_seed: The seed the env's `reset` was given, from which it drew `seed`
                (None: reset without one); telemetry records it beside `seed`.
        """
        self.episode += 1
        self.epoch = 0
        self.seed = seed
        self.reset_seed = reset_seed
        self.model = self._build_model(seed)
        self.trainer = Trainer(
            self.model, self.splits.train, self.splits.val, self.config.train, seed=seed
        )
        val_loss, val_accuracy = self.trainer.evaluate(self.splits.val)
        self.metrics = EpochMetrics(
            epoch=0,
            train_loss=val_loss,
            train_accuracy=val_accuracy,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
        )
        self.prev_val = (val_loss, val_accuracy)
        self.best_val_accuracy = val_accuracy
        self.best_epoch = 0
        self.consecutive_rollbacks = 0
        self._counters = dict.fromkeys(
            (
                "seeds_germinated",
                "seeds_fossilized",
                "seeds_pruned",
                "governor_rollbacks",
                "refused_actions",
            ),
            0,
        )
        self._pruned_this_step = 0
        self._episode_return = 0.0
        self._episode_started = time.perf_counter()
        self._step_started = self._episode_started
        self.bus.publish(
            EpisodeStarted(
                **self._stamp(),
                episode_epochs=self.config.episode_epochs,
                slots=list(self.slot_names),
                host_params=self.base_params,
                param_budget=self.config.param_budget,
                val_accuracy=val_accuracy,
                policy=self.policy_name,
                time=time.time(),
            )
        )

    def set_policy_name(self, name: str | None) -> None:
        """Names the acting policy in the telemetry of the episodes that start from now on."""
        self.policy_name = name

    # --- operations -----------------------------------------------------------------------

    def begin_step(self) -> None:
        """Clears the per-step counters; call before applying a step's operations."""
        self._pruned_this_step = 0
        self._step_started = time.perf_counter()

    def describe_tamiyo(self, op: Op, slot_index: int, blueprint: str, speed_index: int) -> str:
        """Tamiyo's action in words, as `StepEnded` records it."""
        if op is Op.WAIT:
            return "wait"
        words = f"{op.name.lower()} {self.slot_names[slot_index]}"
        if op is Op.GERMINATE:
            words += f" {blueprint} blend {self.config.lifecycle.blend_epochs[speed_index]}"
        return words

    def end_step(
        self,
        actions: dict[str, str],
        refused: list[str],
        terms: dict[str, float],
        *,
        terminated: bool,
        final_test_accuracy: float | None,
    ) -> None:
        """Publishes the step's `StepEnded`, and `EpisodeEnded` when it was the last one.

        Args:
            actions: Each agent's action in words.
            refused: The agents whose action a gate refused.
            terms: Tamiyo's reward terms of the step.
            terminated: The host became unrecoverable.
            final_test_accuracy: The test accuracy when the episode ended (else None).
        """
        now = time.perf_counter()
        reward = float(sum(terms.values()))
        self._episode_return += reward
        self.bus.publish(
            StepEnded(
                **self._stamp(),
                actions=actions,
                refused=refused,
                reward=reward,
                reward_terms=terms,
                val_accuracy=self.metrics.val_accuracy,
                params_added=self.added_params(),
                slots=self.model.reports(),
                seconds=now - self._step_started,
                time=time.time(),
            )
        )
        if final_test_accuracy is not None:
            self.bus.publish(
                EpisodeEnded(
                    **self._stamp(),
                    terminated=terminated,
                    episode_return=self._episode_return,
                    final_val_accuracy=self.metrics.val_accuracy,
                    final_test_accuracy=final_test_accuracy,
                    seconds=now - self._episode_started,
                    time=time.time(),
                )
            )

    def add_blueprint(self, ir: BlueprintIR) -> int:
        """Offers one more blueprint (e.g. Karn's design); returns its blueprint index.

        The caller validates `ir` first (Urabrask); its name must be new, since slot
        reports and observations identify a seed's blueprint by name.
        """
        name = ir.metadata.name
        if any(known.metadata.name == name for known in self.blueprint_irs):
            raise ValueError(f"a blueprint named {name!r} is already offered; rename the design")
        self.blueprint_irs.append(ir)
        for slot in self.model.slots.values():
            self.compiler.plan(ir, slot.channels, device=self.device)
        return len(self.blueprint_irs) - 1

    def remove_added_blueprints(self) -> None:
        """Forgets the blueprints added with `add_blueprint`; the configured ones stay."""
        del self.blueprint_irs[len(self.config.blueprints) :]

    def maintain(self, op: str, slot_index: int) -> TransitionResult:
        """Applies a maintenance operation on committed structure (Emrakul) and records it.

        Args:
            op: "sedate" (alpha forced to 0, reversible), "wake" (undo it) or "remove"
                (FOSSILIZED -> PRUNED through G5, the seed dropped for good).
            slot_index: Index of the slot.
        """
        slot = self.slot_names[slot_index]
        if op == "sedate":
            result = self.model.sedate(slot)
        elif op == "wake":
            result = self.model.wake(slot)
        elif op == "remove":
            result = self.model.remove(slot)
        else:
            raise ValueError(f"unknown maintenance op {op!r}; use 'sedate', 'wake' or 'remove'")
        # A sedation keeps the stage FOSSILIZED: recording it would count a new fossil.
        if op == "remove" or not result.ok:
            self.record(result)
        return result

    def probe(self, slot_index: int) -> float:
        """Worth of a slot's seed now: validation accuracy with it at alpha 1 minus at alpha 0.

        Unlike the contribution measured each epoch (at the current alpha), this is
        the seed's worth even while it is sedated. Two full evaluation passes, both
        with BatchNorm batch statistics, so that neither alpha is judged under running
        statistics gathered at the other.

        Raises:
            ValueError: The slot holds no seed.
        """
        assert self.trainer is not None, "call start_episode first"
        slot = self.slot_names[slot_index]
        if self.model.slots[slot].seed is None:
            raise ValueError(f"slot {slot!r} holds no seed to probe")
        accuracy = {}
        for alpha in (0.0, 1.0):
            with self.model.force_alpha({slot: alpha}):
                # Batch statistics: the running ones have seen only the current alpha.
                accuracy[alpha] = self.trainer.evaluate(self.splits.val, batch_statistics=True)[1]
        return accuracy[1.0] - accuracy[0.0]

    def apply(
        self, op: Op, slot_index: int, blueprint_index: int = 0, speed_index: int = 0
    ) -> TransitionResult | None:
        """Applies one Tamiyo operation; WAIT returns None, a refusal a result with `ok=False`."""
        if op is Op.WAIT:
            return None
        slot = self.slot_names[slot_index]
        if op is Op.GERMINATE:
            result = self._germinate(slot, blueprint_index, speed_index)
        elif op is Op.ADVANCE:
            result = self.model.advance(slot)
        elif op is Op.PRUNE:
            result = self.model.prune(slot)
        else:
            result = self.model.fossilize(slot)
        self.record(result)
        return result

    def _germinate(self, slot: str, blueprint_index: int, speed_index: int) -> TransitionResult:
        name = self.blueprint_irs[blueprint_index].metadata.name
        seed = self.compiler.build(
            self.blueprint_irs[blueprint_index],
            self.model.slots[slot].channels,
            seed=self.seed * 7919 + self.epoch * 31 + self.slot_names.index(slot),
            device=self.device,
            compile=self.config.compile_seeds,
        )
        new_params = sum(p.numel() for p in seed.parameters())
        budget = self.config.param_budget * self.base_params
        if self.added_params() + new_params > budget:
            stage = self.model.slots[slot].stage
            return TransitionResult(
                ok=False,
                slot=slot,
                op="germinate",
                from_stage=stage,
                to_stage=stage,
                gate="budget",
                reason=f"{name} adds {new_params} parameters; "
                f"{budget - self.added_params():.0f} left of the budget",
            )
        return self.model.germinate(
            slot, seed, name, self.config.lifecycle.blend_epochs[speed_index]
        )

    def _stamp(self) -> dict[str, Any]:
        """The provenance fields of an event published now."""
        return {
            "env": self.config.telemetry_name,
            "seed": self.reset_seed,
            "episode_seed": self.seed,
            "episode": self.episode,
            "step": self.epoch,
        }

    def record(self, result: TransitionResult) -> None:
        """Counts a transition result and publishes its telemetry events."""
        stamp = self._stamp()
        if not result.ok:
            self._counters["refused_actions"] += 1
            self.bus.publish(
                GateRefused(
                    **stamp,
                    slot=result.slot,
                    op=result.op,
                    stage=result.from_stage,
                    gate=result.gate,
                    reason=result.reason,
                )
            )
            return
        slot = self.model.slots[result.slot]
        self.bus.publish(
            StageChanged(
                **stamp,
                slot=result.slot,
                from_stage=result.from_stage,
                to_stage=result.to_stage,
                gate=result.gate,
                reason=result.reason,
            )
        )
        if result.to_stage is SeedStage.GERMINATED:
            self._counters["seeds_germinated"] += 1
            report = slot.report()
            self.bus.publish(
                Germinated(
                    **stamp,
                    slot=result.slot,
                    blueprint=report.blueprint or "",
                    params=report.params,
                )
            )
        elif result.to_stage is SeedStage.FOSSILIZED:
            self._counters["seeds_fossilized"] += 1
            report = slot.report()
            self.bus.publish(
                Fossilized(
                    **stamp, slot=result.slot, blueprint=report.blueprint, params=report.params
                )
            )
        elif result.to_stage is SeedStage.PRUNED:
            self._counters["seeds_pruned"] += 1
            self._pruned_this_step += 1
            self.bus.publish(
                Pruned(**stamp, slot=result.slot, blueprint=None, reason=result.reason)
            )

    def train_epoch(self) -> EpochMetrics:
        """Trains one epoch, runs the automatic lifecycle transitions, and publishes telemetry."""
        assert self.trainer is not None, "call start_episode first"
        self.prev_val = (self.metrics.val_loss, self.metrics.val_accuracy)
        metrics = self.trainer.train_epoch()
        self.epoch += 1
        if metrics.rolled_back:
            self._counters["governor_rollbacks"] += 1
            self.consecutive_rollbacks += 1
            self.bus.publish(
                GovernorRollback(
                    **self._stamp(),
                    reason=metrics.rollback_reason or "",
                    pruned_slot=metrics.rollback_pruned,
                )
            )
            if metrics.rollback_pruned is not None:
                self._counters["seeds_pruned"] += 1
                self._pruned_this_step += 1
        else:
            self.consecutive_rollbacks = 0
        for result in self.model.end_epoch():
            self.record(result)
        self.metrics = metrics
        if metrics.val_accuracy > self.best_val_accuracy:
            self.best_val_accuracy = metrics.val_accuracy
            self.best_epoch = self.epoch
        self.bus.publish(
            EpochEnd(
                **self._stamp(),
                train_loss=metrics.train_loss,
                train_accuracy=metrics.train_accuracy,
                val_loss=metrics.val_loss,
                val_accuracy=metrics.val_accuracy,
                host_params=self.model.host_param_count(),
                seed_params=self.model.seed_param_count(),
            )
        )
        return metrics

    def step(self, op: Op, slot_index: int, blueprint_index: int, speed_index: int) -> StepOutcome:
        """One single-agent step: apply the operation, train an epoch, pay the reward."""
        self.begin_step()
        result = self.apply(op, slot_index, blueprint_index, speed_index)
        metrics = self.train_epoch()
        terminated = self.unrecoverable()
        truncated = not terminated and self.epoch >= self.config.episode_epochs
        terms = self.reward_terms(terminal=terminated or truncated)
        final_test = None
        if terminated or truncated:
            final_test = self.test_accuracy()
        name = self.blueprint_irs[blueprint_index].metadata.name
        self.end_step(
            {"tamiyo": self.describe_tamiyo(op, slot_index, name, speed_index)},
            ["tamiyo"] if result is not None and not result.ok else [],
            terms,
            terminated=terminated,
            final_test_accuracy=final_test,
        )
        return StepOutcome(
            transition=None if result is None else result.model_dump(mode="json"),
            refused=result is not None and not result.ok,
            metrics=metrics,
            reward_terms=terms,
            terminated=terminated,
            truncated=truncated,
            final_test_accuracy=final_test,
        )

    # --- measurements ---------------------------------------------------------------------

    def unrecoverable(self) -> bool:
        """True when the host cannot be trained on: repeated rollbacks or a non-finite loss."""
        return self.consecutive_rollbacks >= self.config.max_rollbacks or not math.isfinite(
            self.metrics.val_loss
        )

    def reward_terms(self, terminal: bool) -> dict[str, float]:
        """The Simic terms of the step that just trained."""
        contributions = {
            r.name: r.contribution
            for r in self.model.reports()
            if r.stage in ACTIVE_STAGES and r.alpha > 0
        }
        return reward_terms(
            self.config.reward,
            val_accuracy=self.metrics.val_accuracy,
            prev_val_accuracy=self.prev_val[1],
            contributions=contributions,
            added_param_fraction=self.added_params() / self.base_params,
            pruned=self._pruned_this_step,
            terminal=terminal,
            episode_epochs=self.config.episode_epochs,
        )

    def test_accuracy(self) -> float:
        """Accuracy on the official test split; the env calls it once, at episode end."""
        assert self.trainer is not None, "call start_episode first"
        return self.trainer.evaluate(self.splits.test)[1]

    def added_params(self) -> int:
        """Parameters added by seeds, live and fossilized, over the bare host."""
        return self.model.host_param_count() + self.model.seed_param_count() - self.base_params

    def counters(self) -> dict[str, int]:
        """Episode counters: seeds germinated/fossilized/pruned, rollbacks, refused actions."""
        return dict(self._counters)

    def signals(self) -> GlobalSignals:
        """The global block of the observation."""
        budget = self.config.param_budget * self.base_params
        return GlobalSignals(
            epoch=self.epoch,
            train_loss=self.metrics.train_loss,
            train_accuracy=self.metrics.train_accuracy,
            val_loss=self.metrics.val_loss,
            val_accuracy=self.metrics.val_accuracy,
            delta_val_loss=self.metrics.val_loss - self.prev_val[0],
            delta_val_accuracy=self.metrics.val_accuracy - self.prev_val[1],
            plateau=self.epoch - self.best_epoch,
            best_val_accuracy=self.best_val_accuracy,
            added_param_fraction=self.added_params() / self.base_params,
            param_budget_left=max(0.0, 1.0 - self.added_params() / budget),
        )

    # --- masks ----------------------------------------------------------------------------

    def op_slot_mask(self) -> np.ndarray:
        """Legality of each (op, slot) pair by stage and budget, shape (n_ops, n_slots)."""
        mask = np.zeros((len(Op), len(self.slot_names)), dtype=bool)
        mask[Op.WAIT] = True
        budget_left = self.added_params() < self.config.param_budget * self.base_params
        for index, name in enumerate(self.slot_names):
            for op in self.model.allowed_ops(name):
                if op is not Op.GERMINATE or budget_left:
                    mask[op, index] = True
        return mask

    def action_mask(self) -> np.ndarray:
        """Per-dimension masks of `MultiDiscrete([op, slot, blueprint, speed])`, concatenated."""
        pairs = self.op_slot_mask()
        ops = pairs.any(axis=1)
        slots = pairs[1:].any(axis=0)
        if not slots.any():
            slots[:] = True  # only WAIT is legal; the slot dimension is then irrelevant
        return np.concatenate(
            [
                ops,
                slots,
                np.ones(len(self.config.blueprints), dtype=bool),
                np.ones(len(self.config.lifecycle.blend_epochs), dtype=bool),
            ]
        )

    def slot_table(self) -> str:
        """A small text table of the slots: stage, blueprint, alpha, parameters, contribution."""
        header = f"epoch {self.epoch}/{self.config.episode_epochs}"
        rows = [f"{header}  val_acc {self.metrics.val_accuracy:.3f}"]
        rows.append(
            f"{'slot':<8}{'stage':<12}{'blueprint':<22}{'alpha':>6}{'params':>9}{'contrib':>9}"
        )
        for r in self.model.reports():
            rows.append(
                f"{r.name:<8}{r.stage.name:<12}{r.blueprint or '-':<22}"
                f"{r.alpha:>6.2f}{r.params:>9}{r.contribution:>9.3f}"
            )
        return "\n".join(rows)

    def close(self) -> None:
        """Closes the telemetry sink, the compiler and the library."""
        self.compiler.close(wait=False)
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        self.library.close()
