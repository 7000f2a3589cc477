"""Headroom of a world: the bare host against the same host with seeds attached from epoch 0.

A world can reward growth only if growth can pay in it: the host with the seeds
grafted in from the start (a static architecture, trained jointly with the same
Tolaria settings, data and epochs) must beat the bare host beyond the noise. Each
arm runs on the same episode seeds, so the comparison is paired: the report gives
every arm's mean test accuracy and IQM, its paired difference from the bare host
with a 95% t interval, and its probability of improvement over the bare host
(`benchmarks.stats`).

Rows are appended to `<out>.jsonl` as they finish (a rerun skips finished ones)
and `<out>.md` is rewritten after each. Progress bars (stderr, in a terminal: episodes
to run, and each episode's epochs) and a line per row show while it runs; `--quiet`
prints neither.

Usage:
    ESPER_DATA_DIR=../shared/datasets python -m benchmarks.headroom \
        --env Esper-CIFAR-Mini-v0 --seeds 1 2 3 4 5 \
        --arm all3=residual_block@slot0,slot1,slot2 --arm s2=residual_block@slot2
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from agents.cli import parse_key_values
from agents.progress import QUIET_HELP, EpisodeSink, Progress
from benchmarks.machine import fix_threads, machine_record
from benchmarks.robust_stats import iqm, probability_of_improvement
from benchmarks.stats import paired_difference, t_interval
from esper_env.contracts import StrictModel
from esper_env.envs.presets import ENV_SEMANTICS_VERSION
from esper_env.envs.world import World

RESULTS_DIR = Path(__file__).parent / "results"


class Arm(StrictModel):
    """One architecture: seeds of one blueprint grafted into some slots (none: the bare host)."""

    name: str
    blueprint: str | None = None
    slots: tuple[str, ...] = ()


class HeadroomRow(StrictModel):
    """One arm trained for one episode seed, under env semantics `env_semantics_version`."""

    env_id: str
    env_semantics_version: int
    env_kwargs: dict[str, object]
    arm: str
    seed: int
    final_val_accuracy: float
    final_test_accuracy: float
    added_params: int
    wall_seconds: float
    machine: dict[str, object]


def read_rows(path: Path) -> list[HeadroomRow]:
    """The rows of a headroom `.jsonl` (none when it is absent).

    Raises:
        ValueError: A row was measured under other env semantics (rerun it).
    """
    if not path.exists():
        return []
    rows = [HeadroomRow.model_validate_json(line) for line in path.open() if line.strip()]
    stale = sorted({r.env_semantics_version for r in rows} - {ENV_SEMANTICS_VERSION})
    if stale:
        raise ValueError(
            f"{path} holds rows of env semantics version(s) {stale}, this Esper runs "
            f"version {ENV_SEMANTICS_VERSION}: they measured another world; delete the file "
            "and run the headroom again"
        )
    return rows


def parse_arm(text: str) -> Arm:
    """Parses `NAME=BLUEPRINT@SLOT[,SLOT...]` (or `bare`).

    Raises:
        ValueError: on any other shape.
    """
    if text == "bare":
        return Arm(name="bare")
    name, sep, rest = text.partition("=")
    blueprint, at, slots = rest.partition("@")
    if not (sep and at and name and blueprint and slots):
        raise ValueError(f"expected bare or NAME=BLUEPRINT@SLOT[,SLOT...], got {text!r}")
    return Arm(name=name, blueprint=blueprint, slots=tuple(slots.split(",")))


def run_arm(
    world: World, arm: Arm, seed: int, progress: EpisodeSink | None = None
) -> tuple[float, float, int]:
    """Trains the arm's architecture for one episode; returns (val acc, test acc, added params).

    `progress` is told of the episode and of each epoch's validation accuracy.
    """
    world.start_episode(seed)
    if arm.blueprint is not None:
        irs = {ir.metadata.name: ir for ir in world.blueprint_irs}
        if arm.blueprint not in irs:
            raise ValueError(f"blueprint {arm.blueprint!r} not offered; offered: {list(irs)}")
        for index, slot in enumerate(arm.slots):
            seed_module = world.compiler.build(
                irs[arm.blueprint],
                world.model.slots[slot].channels,
                seed=seed * 7919 + index,
                device=world.device,
            )
            result = world.model.graft(slot, seed_module, arm.blueprint)
            if not result.ok:
                raise ValueError(f"graft into {slot} refused: {result.reason}")
    epochs = world.config.episode_epochs
    if progress is not None:
        progress.start_episode(f"{arm.name} seed {seed}", epochs)
    for _ in range(epochs):
        world.train_epoch()
        if progress is not None:
            progress.step(world.metrics.val_accuracy)
    if progress is not None:
        progress.end_episode()
    return world.metrics.val_accuracy, world.test_accuracy(), world.added_params()


def render(rows: list[HeadroomRow], command: str) -> str:
    """The Markdown report: per arm test accuracy and its paired comparison with bare."""
    by_arm: dict[str, dict[int, HeadroomRow]] = {}
    for row in rows:
        by_arm.setdefault(row.arm, {})[row.seed] = row
    bare = {seed: row.final_test_accuracy for seed, row in by_arm.get("bare", {}).items()}
    first = rows[0]
    lines = [
        f"# Headroom: {first.env_id}",
        "",
        f"Command: `{command}`",
        "",
        f"env kwargs: `{json.dumps(first.env_kwargs, sort_keys=True)}`; "
        f"machine: {first.machine['cpu']}, torch threads {first.machine['torch_threads']}.",
        "Test accuracy in %: mean ± 95% t CI, and the IQM with its 95% stratified-bootstrap "
        "CI [low, high]; arm - bare: the mean per-seed difference on the same seeds ± its 95% "
        "paired t CI; P(arm > bare): the probability of improvement with its 95% bootstrap CI.",
        "",
        "| arm | seeds | test acc | test acc IQM | arm - bare | CI excludes 0 | P(arm > bare) "
        "| params added | s/episode |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, by_seed in by_arm.items():
        seeds = sorted(by_seed)
        tests = {s: by_seed[s].final_test_accuracy for s in seeds}
        paired = paired_difference(tests, bare) if arm != "bare" else None
        diff_text, sig, chance = "-", "-", "-"
        if paired is not None:
            diff_text = paired.difference.plus_minus(100, signed=True)
            sig = "yes" if paired.difference.excludes(0) else "no"
            chance = probability_of_improvement(
                [tests[s] for s in paired.seeds], [bare[s] for s in paired.seeds]
            ).bounds()
        wall = sum(by_seed[s].wall_seconds for s in seeds) / len(seeds)
        lines.append(
            f"| {arm} | {len(seeds)} | {t_interval(list(tests.values())).plus_minus(100)} "
            f"| {iqm(list(tests.values())).bounds(100)} | {diff_text} | {sig} | {chance} "
            f"| {by_seed[seeds[0]].added_params} | {wall:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[HeadroomRow]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Esper-CIFAR-Mini-v0")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--arm", action="append", default=[], metavar="NAME=BP@SLOTS")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (recorded)")
    parser.add_argument("--out", type=Path, default=None, help="report stem (no suffix)")
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    args = parser.parse_args(argv)
    fix_threads(args.threads)
    arms = [Arm(name="bare"), *(parse_arm(a) for a in args.arm)]
    kwargs = parse_key_values(args.env_kwargs)
    stem = args.out or RESULTS_DIR / f"headroom_{args.env}"
    jsonl, md = stem.with_suffix(".jsonl"), stem.with_suffix(".md")
    rows = read_rows(jsonl)
    done = {(r.arm, r.seed) for r in rows if r.env_kwargs == kwargs and r.env_id == args.env}
    command = "python -m benchmarks.headroom " + shlex.join(argv or sys.argv[1:])
    todo = [(seed, arm) for seed in args.seeds for arm in arms if (arm.name, seed) not in done]
    world = World.from_preset(args.env, **kwargs)
    try:
        with Progress(quiet=args.quiet) as progress:
            progress.start_run(len(todo))
            for seed, arm in todo:
                start = time.perf_counter()
                val, test, added = run_arm(world, arm, seed, progress)
                row = HeadroomRow(
                    env_id=args.env,
                    env_semantics_version=ENV_SEMANTICS_VERSION,
                    env_kwargs=kwargs,
                    arm=arm.name,
                    seed=seed,
                    final_val_accuracy=val,
                    final_test_accuracy=test,
                    added_params=added,
                    wall_seconds=time.perf_counter() - start,
                    machine=machine_record(world.device),
                )
                rows.append(row)
                jsonl.parent.mkdir(parents=True, exist_ok=True)
                with jsonl.open("a") as f:
                    f.write(row.model_dump_json() + "\n")
                md.write_text(render(rows, command))
                progress.echo(f"{arm.name} seed {seed}: test {test:.4f} ({row.wall_seconds:.1f}s)")
    finally:
        world.close()
    md.write_text(render(rows, command))  # also when every row was already there
    return rows


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
