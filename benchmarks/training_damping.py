"""How large a seed's output grows while it trains in isolation, with and without damping.

For each damping value, one seed per slot is germinated on Esper-CIFAR-Mini-v0
(seed 1000), advanced to TRAINING and left there; after every epoch the script
prints |s| / |h| on one validation batch (the seed's output against the host
activation it is added to) and the measured seed loss trend (validation loss at
alpha=1 minus at alpha=0; negative helps, and gate G2 needs it negative).

Example:
    ESPER_DATA_DIR=../shared/datasets python -m benchmarks.training_damping --damping 0 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import esper_env  # noqa: F401  (registers the envs)
from esper_env.contracts import Op

#: (slot index, blueprint index): residual_block at slot0, depthwise_separable at slot2.
PROBES = ((0, 2), (2, 1))


def trace(damping: float, epochs: int) -> list[str]:
    """One table row per probe: `|s|/|h| / trend` after each TRAINING epoch."""
    env = gym.make("Esper-CIFAR-Mini-v0", lifecycle={"training_damping": damping})
    world = env.unwrapped.world
    rows = []
    for slot_index, blueprint in PROBES:
        env.reset(seed=1000)
        env.step(np.array([Op.GERMINATE, slot_index, blueprint, 0]))
        env.step(np.array([Op.ADVANCE, slot_index, 0, 0]))
        name = world.slot_names[slot_index]
        slot = world.model.slots[name]
        x, _ = next(world.splits.val.iterate(None, 1))
        cells = []
        for _ in range(epochs):
            world.model.eval()
            with world.model.capture([name]), torch.no_grad():
                world.model(x)
                h, s = slot.captured
            cells.append(f"{float(s.norm() / h.norm()):.2f} / {slot.report().seed_loss_trend:+.3f}")
            env.step(np.array([Op.WAIT, 0, 0, 0]))
        rows.append(
            f"| {damping:g} | {name} ({world.config.blueprints[blueprint]}) | "
            + " | ".join(cells)
            + " |"
        )
    env.close()
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--damping", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    header = "| damping | seed | " + " | ".join(f"epoch {i + 2}" for i in range(args.epochs)) + " |"
    lines = [
        "# Seed output growth in TRAINING",
        "",
        f"Command: `python -m benchmarks.training_damping {' '.join(argv or sys.argv[1:])}`",
        "",
        "Each cell: |s| / |h| on one validation batch / seed loss trend (val loss at alpha=1 "
        "minus at alpha=0).",
        "",
        header,
        "| --- | --- | " + " | ".join("---" for _ in range(args.epochs)) + " |",
    ]
    for damping in args.damping:
        lines += trace(damping, args.epochs)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out is not None:
        args.out.write_text(report, encoding="utf-8")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
