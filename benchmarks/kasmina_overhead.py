"""Kasmina/Tolaria overhead benchmark: epoch-time ratios against plain PyTorch loops.

Measures, in one run, on the same data and batches:

(a) Tolaria training the host with every slot dormant vs a plain loop on the
    bare host (target <= 1.03);
(b) Tolaria with one TRAINING seed vs a plain loop on the host with the same
    block attached statically as `h + seed(h)` (target <= 1.40: the seed learns
    from the blended loss, which costs one more forward and backward of the layers
    after its slot; for slot1 of the default host, stage 2 and the head);
(c) the cost of counterfactual evaluation, per active slot, relative to one
    ordinary evaluation pass, with and without reuse of the host prefix.

An epoch is one training pass plus one validation pass, both for Tolaria
(`Trainer.train_epoch`, which also measures live seeds counterfactually) and the
plain loops. Configurations run interleaved; the report gives the median and the
minimum of the rounds (the minimum is the least disturbed by other processes).

Usage:
    ESPER_DATA_DIR=../shared/datasets python benchmarks/kasmina_overhead.py \
        --out benchmarks/results/kasmina_overhead.md
"""

from __future__ import annotations

import argparse
import copy
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from esper_env.contracts import HOST_PRESETS, LifecycleConfig, SeedStage, TrainConfig
from esper_env.data import DeviceBatches, cached_cifar10, stratified_subset
from esper_env.kasmina import CifarHost, MorphogeneticModel, build_host
from esper_env.tolaria import Trainer, resolve_device

SEED_SLOT = "slot1"


def conv_seed(channels: int) -> nn.Module:
    """The seed of the benchmark: conv3x3-BN-ReLU, residual."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
    )


class StaticResidual(nn.Module):
    """`h + seed(h)`: a seed attached statically (the plain-loop reference of (b))."""

    def __init__(self, seed: nn.Module) -> None:
        super().__init__()
        self.seed = seed

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Returns `h + seed(h)`."""
        return h + self.seed(h)


def make_data(
    source: str, train_images: int, val_images: int, device: torch.device, config: TrainConfig
) -> tuple[DeviceBatches, DeviceBatches]:
    """Train and val batches from CIFAR-10 (`ESPER_DATA_DIR`) or uint8 noise of CIFAR shape."""
    if source == "cifar":
        data = cached_cifar10()
        tx, ty = stratified_subset(data.train_images, data.train_labels, train_images // 10)
        vx, vy = stratified_subset(data.test_images, data.test_labels, val_images // 10)
    else:
        gen = torch.Generator().manual_seed(0)
        tx = torch.randint(0, 256, (train_images, 32, 32, 3), generator=gen, dtype=torch.uint8)
        ty = torch.randint(0, 10, (train_images,), generator=gen)
        vx = torch.randint(0, 256, (val_images, 32, 32, 3), generator=gen, dtype=torch.uint8)
        vy = torch.randint(0, 10, (val_images,), generator=gen)
    train = DeviceBatches(
        tx, ty, batch_size=config.batch_size, device=device, augment=True, shuffle=True
    )
    val = DeviceBatches(vx, vy, batch_size=config.eval_batch_size, device=device)
    return train, val


class PlainLoop:
    """The reference: a textbook PyTorch epoch (train pass, then eval pass) on a plain model."""

    def __init__(
        self, model: nn.Module, train: DeviceBatches, val: DeviceBatches, config: TrainConfig
    ) -> None:
        self.model = model
        self.train = train
        self.val = val
        self.generator = torch.Generator().manual_seed(0)
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay,
        )

    def epoch(self) -> None:
        """One training pass and one evaluation pass, tracking loss and accuracy on device."""
        dev = self.train.device
        self.model.train()
        train_loss = torch.zeros((), device=dev)
        train_correct = torch.zeros((), dtype=torch.int64, device=dev)
        for x, y in self.train.iterate(self.generator):
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            train_loss = train_loss + loss.detach() * y.shape[0]
            train_correct = train_correct + (logits.argmax(1) == y).sum()
        self.model.eval()
        val_loss = torch.zeros((), device=dev)
        val_correct = torch.zeros((), dtype=torch.int64, device=dev)
        with torch.no_grad():
            for x, y in self.val.iterate():
                logits = self.model(x)
                val_loss = val_loss + F.cross_entropy(logits, y, reduction="sum")
                val_correct = val_correct + (logits.argmax(1) == y).sum()
        torch.stack([train_loss, val_loss, train_correct.float(), val_correct.float()]).tolist()


def synchronize(device: torch.device) -> None:
    """Waits for queued device work so that wall-clock times are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of `fn` takes."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def hosts(preset: str, lifecycle: LifecycleConfig) -> tuple[nn.Module, MorphogeneticModel]:
    """A bare host and a slotted host with identical initial weights."""
    torch.manual_seed(0)
    slotted = build_host(HOST_PRESETS[preset], lifecycle)
    bare = CifarHost(HOST_PRESETS[preset])
    bare.load_state_dict(slotted.host.state_dict())
    return bare, slotted


def overhead_rounds(
    preset: str,
    train: DeviceBatches,
    val: DeviceBatches,
    config: TrainConfig,
    rounds: int,
    device: torch.device,
) -> dict[str, list[float]]:
    """Epoch times of the four configurations of (a) and (b), interleaved."""
    lifecycle = LifecycleConfig()
    bare, dormant = hosts(preset, lifecycle)
    _, seeded = hosts(preset, lifecycle)
    channels = seeded.slots[SEED_SLOT].channels
    torch.manual_seed(1)
    seed = conv_seed(channels)
    static = copy.deepcopy(bare)
    index = int(SEED_SLOT.removeprefix("slot"))
    static.stages[index] = nn.Sequential(static.stages[index], StaticResidual(copy.deepcopy(seed)))
    assert seeded.germinate(SEED_SLOT, seed, "conv", 1).ok
    assert seeded.advance(SEED_SLOT).ok
    assert seeded.slots[SEED_SLOT].stage is SeedStage.TRAINING
    runners: dict[str, Callable[[], object]] = {
        "plain bare host": PlainLoop(bare.to(device), train, val, config).epoch,
        "tolaria, slots dormant": Trainer(dormant, train, val, config, seed=0).train_epoch,
        "plain static host + block": PlainLoop(static.to(device), train, val, config).epoch,
        "tolaria, one TRAINING seed": Trainer(seeded, train, val, config, seed=0).train_epoch,
    }
    for run in runners.values():  # warm-up: allocator, kernels, first-call costs
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            times[name].append(timed(run, device))
    return times


def counterfactual_rounds(
    preset: str,
    train: DeviceBatches,
    val: DeviceBatches,
    config: TrainConfig,
    rounds: int,
    device: torch.device,
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Times of one eval pass and of counterfactual passes (reused prefix / full forwards)."""
    _, model = hosts(preset, LifecycleConfig(min_training_epochs=0, holding_epochs=0))
    trainer = Trainer(model, train, val, config, seed=0)
    torch.manual_seed(2)
    names = list(model.slots)
    for name in names:
        assert model.germinate(name, conv_seed(model.slots[name].channels), "conv", 1).ok
        assert model.advance(name).ok
    # One TRAINING seed (1 variant), one BLENDING at alpha 0.5 (2), one HOLDING (1).
    training, blending, holding = names[0], names[1], names[2]
    model.slots[holding].record_measurement(0.0, -1.0, 1.0)
    assert model.advance(holding).ok
    while model.slots[holding].alpha < 1.0:
        model.step_blend()
    assert model.advance(holding).ok
    model.slots[blending].record_measurement(0.0, -1.0, 1.0)
    assert model.advance(blending).ok
    model.slots[blending].steps_per_epoch = 2
    model.step_blend()
    stages = [model.slots[n].stage for n in (training, blending, holding)]
    assert stages == [SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING]
    # Each seed at alpha 0, its own alpha and 1 (batch statistics: the base pass cannot stand in).
    variants = sum(len({0.0, model.slots[n].effective_alpha, 1.0}) for n in names)
    runners: dict[str, Callable[[], object]] = {
        "evaluate": lambda: trainer.evaluate(val),
        "counterfactual, prefix reused": lambda: trainer.counterfactual(val),
        "counterfactual, full forwards": lambda: trainer.counterfactual(val, reuse_prefix=False),
    }
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            times[name].append(timed(run, device))
    return times, {"slots": len(names), "variants": variants}


def report(args: argparse.Namespace) -> str:
    """Runs the benchmark and returns its markdown report."""
    device = resolve_device(args.device)
    config = TrainConfig(batch_size=128, eval_batch_size=500, device=str(device))
    train, val = make_data(args.data, args.train_images, args.val_images, device, config)
    epoch_times = overhead_rounds(args.host, train, val, config, args.rounds, device)
    cf_times, counts = counterfactual_rounds(args.host, train, val, config, args.rounds, device)
    everything = {**epoch_times, **cf_times}
    med = {name: statistics.median(t) for name, t in everything.items()}
    low = {name: min(t) for name, t in everything.items()}

    def ratio(stat: dict[str, float], a: str, b: str) -> float:
        return stat[a] / stat[b]

    def extra_per_slot(stat: dict[str, float], name: str) -> float:
        return (stat[name] - stat["evaluate"]) / stat["evaluate"] / counts["slots"]

    slots, variants = counts["slots"], counts["variants"]
    dormant, bare = "tolaria, slots dormant", "plain bare host"
    seeded, static = "tolaria, one TRAINING seed", "plain static host + block"
    reused, full = "counterfactual, prefix reused", "counterfactual, full forwards"
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    lines = [
        "# Kasmina / Tolaria overhead",
        "",
        f"Command: `{command}`",
        "",
        f"Data: {args.data} ({train.num_samples} train images, batch 128, augmented; "
        f"{val.num_samples} val images, eval batch 500). Host: `{args.host}` preset "
        f"{HOST_PRESETS[args.host].widths}. Seed: conv3x3-BN-ReLU at {SEED_SLOT}. "
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, device {device}. Median of {args.rounds} interleaved "
        "rounds after one warm-up round each.",
        "",
        "An epoch is a training pass and a validation pass; Tolaria's epoch also runs its",
        "governor and measures live seeds counterfactually (in (b): one extra suffix pass).",
        "Other processes may share the CPUs during a run; the minima are the rounds they",
        "disturbed least, so the ratio of minima is the headline figure.",
        "",
        "| measure | median (s) | min (s) | ratio of medians | ratio of minima | target |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| plain loop, bare host | {med[bare]:.3f} | {low[bare]:.3f} | 1 | 1 | |",
        f"| (a) Tolaria, all slots dormant | {med[dormant]:.3f} | {low[dormant]:.3f} "
        f"| {ratio(med, dormant, bare):.3f} | {ratio(low, dormant, bare):.3f} | <= 1.03 |",
        f"| plain loop, host + block attached statically | {med[static]:.3f} "
        f"| {low[static]:.3f} | 1 | 1 | |",
        f"| (b) Tolaria, one TRAINING seed | {med[seeded]:.3f} | {low[seeded]:.3f} "
        f"| {ratio(med, seeded, static):.3f} | {ratio(low, seeded, static):.3f} | <= 1.40 |",
        "",
        f"(c) Counterfactual evaluation, {slots} active slots (TRAINING, BLENDING at alpha "
        f"0.5, HOLDING: {variants} alpha variants). Extra cost over one evaluation pass "
        "(which the counterfactual pass includes), per active slot, in evaluation passes:",
        "",
        "| measure | median (s) | min (s) | extra per slot (medians) | extra per slot (minima) |",
        "| --- | --- | --- | --- | --- |",
        f"| one evaluation pass | {med['evaluate']:.3f} | {low['evaluate']:.3f} | | |",
        f"| counterfactual, host prefix reused | {med[reused]:.3f} | {low[reused]:.3f} "
        f"| {extra_per_slot(med, reused):.2f} | {extra_per_slot(low, reused):.2f} |",
        f"| counterfactual, full forward per variant | {med[full]:.3f} | {low[full]:.3f} "
        f"| {extra_per_slot(med, full):.2f} | {extra_per_slot(low, full):.2f} |",
        "",
        "All rounds (s): "
        + "; ".join(
            f"{name} " + ", ".join(f"{t:.3f}" for t in times) for name, times in everything.items()
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["cifar", "synthetic"], default="cifar")
    parser.add_argument("--host", choices=sorted(HOST_PRESETS), default="default")
    parser.add_argument("--train-images", type=int, default=2560)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    text = report(args)
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
