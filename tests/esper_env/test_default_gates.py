"""The default gates on small synthetic tasks: a seed that adds needed capacity goes all the
way to FOSSILIZED; one on a task it cannot help (random labels) never does."""

from __future__ import annotations

import torch

from blueprints.catalog import CATALOG
from blueprints.compiler import Compiler
from esper_env.contracts import HostConfig, SeedStage, TrainConfig, TransitionResult
from esper_env.data import DeviceBatches
from esper_env.kasmina import build_host
from esper_env.tolaria import Trainer

#: Too narrow to read the band position well: a residual block at the last stage helps.
NARROW = HostConfig(widths=(4, 4, 4))
CONFIG = TrainConfig(
    batch_size=32, eval_batch_size=500, lr=0.05, seed_lr=0.05, epochs=12, device="cpu"
)


def _split(n: int, seed: int, random_labels: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images whose class sets which of ten bands is bright (or labels at random)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=gen)
    images = torch.randint(0, 120, (n, 32, 32, 3), generator=gen, dtype=torch.uint8)
    rows = torch.arange(32).view(1, 32) // 3
    band = (rows == labels.view(n, 1)).view(n, 32, 1, 1)
    images = images + band.to(torch.uint8) * 120
    if random_labels:
        labels = torch.randint(0, 10, (n,), generator=gen)
    return images, labels


def _grow(random_labels: bool) -> tuple[SeedStage, list[TransitionResult]]:
    """Pushes one residual seed along every epoch under the default lifecycle."""
    x, y = _split(1024, 0, random_labels)
    vx, vy = _split(500, 1, random_labels)
    train = DeviceBatches(x, y, batch_size=32, shuffle=True)
    val = DeviceBatches(vx, vy, batch_size=500)
    torch.manual_seed(0)
    model = build_host(NARROW)  # the default LifecycleConfig
    trainer = Trainer(model, train, val, CONFIG, seed=0)
    seed = Compiler().build(CATALOG["residual_block"], 4, seed=0, device=torch.device("cpu"))
    assert model.germinate("slot2", seed, "residual_block", 1).ok
    slot = model.slots["slot2"]
    results = []
    for _ in range(CONFIG.epochs):
        if slot.stage is SeedStage.HOLDING:
            results.append(model.fossilize("slot2"))
        elif slot.stage in (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING):
            results.append(model.advance("slot2"))
        trainer.train_epoch()
        model.end_epoch()
    return slot.stage, results


def test_a_seed_that_adds_needed_capacity_passes_the_default_gates_and_fossilizes() -> None:
    stage, results = _grow(random_labels=False)
    assert stage is SeedStage.FOSSILIZED
    passed = {r.gate for r in results if r.ok}
    assert {"G1", "G2", "G3", "G4"} <= passed


def test_a_seed_that_cannot_help_is_never_fossilized() -> None:
    stage, results = _grow(random_labels=True)
    assert stage is not SeedStage.FOSSILIZED
    g4 = [r for r in results if r.gate == "G4"]
    assert g4 and not any(r.ok for r in g4)
    assert all("<= min_contribution" in r.reason for r in g4)
