"""The seed-paper comparison: the four rows of the original Esper proof of concept.

Rows, all on one `Esper-CIFAR-v0` configuration, each run on the same evaluation
seeds (`--seeds`, default 3) so that every row is compared with the baseline pairwise:

1. baseline: the host alone (`noop`);
2. fixed schedule (`fixed`);
3. Tamiyo-driven (`heuristic`, HeuristicTamiyo);
4. from scratch: the final architecture grown in row 3, exported as a static
   `nn.Module` (`export_static`: seeds baked in, no slots), every parameter
   re-initialised, and retrained for the same number of epochs with the same
   Tolaria settings (optimiser, cosine schedule, batches, augmentation, governor):
   the static-final row, the grown architecture trained from epoch 0.

Each row is appended to `<out-dir>/seed_paper.jsonl` as soon as it finishes and
the Markdown table `<out-dir>/seed_paper.md` is rewritten, so an interrupted run
keeps the finished rows; a rerun skips (row, seed) pairs already in the JSONL.
Progress bars (stderr, in a terminal: episodes to run, and each episode's epochs) and
a line per row show while it runs; `--quiet` prints neither.

Usage:
    ESPER_DATA_DIR=../shared/datasets python -m benchmarks.seed_paper \
        --env-kwargs episode_epochs:8 train_per_class:2000
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch
from pydantic import Field

import esper_env  # noqa: F401  (registers the envs)
from agents.cli import parse_key_values
from agents.progress import QUIET_HELP, EpisodeSink, Progress
from agents.rollout import load_policy, run_episode
from benchmarks.machine import fix_threads
from benchmarks.robust_stats import iqm, probability_of_improvement
from benchmarks.stats import paired_difference, t_interval
from blueprints.compiler import BlueprintModule
from esper_env.contracts import StrictModel
from esper_env.envs.world import World
from esper_env.kasmina import MorphogeneticModel, export_static
from esper_env.tolaria import Trainer

ENV_ID = "Esper-CIFAR-v0"
RESULTS_DIR = Path(__file__).parent / "results"
#: The original proof of concept's CIFAR-10 test accuracies (%), by row.
ORIGINAL = {
    "baseline (noop)": 69.31,
    "fixed schedule": 80.16,
    "Tamiyo-driven (heuristic)": 82.16,
    "from scratch (grown architecture)": 65.97,
}
POLICY_ROWS = {
    "baseline (noop)": "noop",
    "fixed schedule": "fixed",
    "Tamiyo-driven (heuristic)": "heuristic",
}
SCRATCH_ROW = "from scratch (grown architecture)"
#: The row whose final architecture the scratch row retrains.
GROWN_ROW = "Tamiyo-driven (heuristic)"
#: Command-line keys of the rows (`--rows`), in the table's order.
ROW_KEYS = dict(zip(("noop", "fixed", "heuristic", "scratch"), ORIGINAL, strict=True))


class SeedPaperRow(StrictModel):
    """One row of the comparison.

    Attributes:
        row: Row name (a key of `ORIGINAL`).
        seed: Evaluation seed of the episode.
        test_accuracy: Final test accuracy (0..1), full test split.
        val_accuracy: Final validation accuracy (0..1).
        params: Parameters of the final network.
        params_added: Parameters added to the bare host.
        epochs: Training epochs.
        wall_seconds: Wall time of the row.
        val_accuracy_curve: Validation accuracy after each epoch.
        architecture: What the network was (seeds and their slots).
    """

    row: str
    seed: int
    test_accuracy: float
    val_accuracy: float
    params: int
    params_added: int
    epochs: int
    wall_seconds: float
    val_accuracy_curve: list[float] = Field(default_factory=list)
    architecture: str


def describe(model: MorphogeneticModel) -> str:
    """Names the seeds acting in `model`: `slot:blueprint@stage(alpha)`, or "bare host"."""
    parts = [
        f"{r.name}:{r.blueprint}@{r.stage.name}(alpha {r.alpha:.2f})"
        for r in model.reports()
        if r.blueprint is not None and r.alpha > 0
    ]
    return ", ".join(parts) or "bare host"


def reinitialise(module: torch.nn.Module, seed: int) -> None:
    """Draws every parameter and buffer afresh, seeded.

    Torch layers use their own `reset_parameters()`; blueprint seeds
    (`BlueprintModule`) their blueprint's initialisers (`plan.init_tensors`).

    Raises:
        ValueError: A submodule owns parameters but has no way to re-initialise them.
    """
    torch.manual_seed(seed)
    covered: set[str] = set()
    for name, sub in module.named_modules():
        if any(name.startswith(prefix) for prefix in covered):
            continue
        if isinstance(sub, BlueprintModule):
            covered.add(f"{name}.")
            fresh = sub.plan.init_tensors(seed)
            with torch.no_grad():
                for spec, value in zip(sub.plan.tensors, fresh, strict=True):
                    getattr(sub.nodes[spec.node], spec.attr).copy_(value)
            continue
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
        elif any(True for _ in sub.parameters(recurse=False)):
            raise ValueError(f"cannot re-initialise {name!r}: it has no reset_parameters()")


def from_scratch(
    world: World, seed: int, epochs: int, progress: EpisodeSink | None = None
) -> SeedPaperRow:
    """Exports `world.model` statically, re-initialises it and retrains it like the env does.

    The static network is given one dormant slot after its stem only so that
    Tolaria's `Trainer` (which trains `MorphogeneticModel`s) can drive it; a dormant
    slot computes nothing. `progress` is told of each epoch.
    """
    start = time.perf_counter()
    architecture = describe(world.model)
    static = export_static(world.model)
    reinitialise(static, seed)
    probe = torch.zeros(1, 3, 32, 32, device=world.device)
    model = MorphogeneticModel(
        static, {"stem": "stem"}, world.config.lifecycle, example_input=probe
    )
    trainer = world_trainer(world, model, seed)
    if progress is not None:
        progress.start_episode(f"from scratch seed {seed}", epochs)
    curve: list[float] = []
    for _ in range(epochs):
        curve.append(trainer.train_epoch().val_accuracy)
        if progress is not None:
            progress.step(curve[-1])
    if progress is not None:
        progress.end_episode()
    _, test_accuracy = trainer.evaluate(world.splits.test)
    params = sum(p.numel() for p in static.parameters())
    return SeedPaperRow(
        row=SCRATCH_ROW,
        seed=seed,
        test_accuracy=test_accuracy,
        val_accuracy=curve[-1],
        params=params,
        params_added=params - world.base_params,
        epochs=epochs,
        wall_seconds=time.perf_counter() - start,
        val_accuracy_curve=curve,
        architecture=architecture,
    )


def world_trainer(world: World, model: MorphogeneticModel, seed: int) -> Trainer:
    """A Tolaria trainer with the world's data and training settings."""
    return Trainer(model, world.splits.train, world.splits.val, world.config.train, seed=seed)


def differences(world: World) -> str:
    """What separates our rows from the original's, from the world's own settings."""
    config = world.config
    host = config.host_config()
    full_train = 50_000 - world.splits.val.num_samples
    return f"""What differs from the original proof of concept:

- **Host**: Esper's `{config.host}` host CNN (stage widths {list(host.widths)},
  {host.blocks_per_stage} conv-BN-ReLU block per stage, {world.base_params:,} parameters)
  with seeds from Esper's blueprint catalog; the original used its own host and seeds.
- **Epochs**: {config.episode_epochs} per row, SGD (Nesterov momentum
  {config.train.momentum}, learning rate {config.train.lr}, cosine schedule over the
  episode), batch {config.train.batch_size}: the longest budget the shared 2-core CPU
  allowed for all four rows, far shorter than a full CIFAR-10 schedule.
- **Data**: CIFAR-10 read from an image-folder tarball of JPEG files (lossy
  re-encoding of the official images); {world.splits.train.num_samples:,} of the
  {full_train:,} training images left after the validation split
  ({world.splits.val.num_samples:,} images carved from the training set); the full
  {world.splits.test.num_samples:,}-image test set.
- **Repetitions**: a few evaluation seeds per row (the same for every row), so
  intervals are wide; the paired difference from the baseline is the figure to read.
- **From scratch**: the Tamiyo-driven row's final network exported with
  `export_static` (acting seeds baked in at their alpha), every parameter re-drawn
  (torch initialisers; blueprint initialisers for seeds) and trained for the same
  epochs with the same Tolaria settings (its own seeded batch order)."""


def render(rows: list[SeedPaperRow], header: str) -> str:
    """The Markdown report: ours beside the original figures, with paired differences."""
    lines = [
        header,
        "",
        "Ours: mean over the seeds ± half-width of the 95% t interval, and the IQM with its",
        "95% stratified-bootstrap interval [low, high]; row - baseline: the mean per-seed",
        "difference ± its 95% paired t interval; P(row > baseline): the probability of",
        "improvement with its 95% bootstrap interval.",
        "",
        "| row | original test acc (%) | ours test acc (%) | ours IQM (%) "
        "| row - baseline (points) | P(row > baseline) | seeds | params added | epochs "
        "| wall (s) | architecture (first seed) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    by_row: dict[str, dict[int, SeedPaperRow]] = {}
    for r in rows:
        by_row.setdefault(r.row, {})[r.seed] = r
    baseline = by_row.get("baseline (noop)", {})
    base = {seed: run.test_accuracy for seed, run in baseline.items()}
    for name, original in ORIGINAL.items():
        runs = by_row.get(name)
        if not runs:
            lines.append(f"| {name} | {original:.2f} | (not run) | | | | | | | | |")
            continue
        seeds = sorted(runs)
        tests = {s: runs[s].test_accuracy for s in seeds}
        paired = paired_difference(tests, base) if name != "baseline (noop)" else None
        diff_text, chance = "", ""
        if paired is not None:
            diff_text = paired.difference.plus_minus(100, signed=True)
            chance = probability_of_improvement(
                [tests[s] for s in paired.seeds], [base[s] for s in paired.seeds]
            ).bounds()
        added = statistics.fmean(runs[s].params_added for s in seeds)
        wall = statistics.fmean(runs[s].wall_seconds for s in seeds)
        first = runs[seeds[0]]
        lines.append(
            f"| {name} | {original:.2f} | {t_interval(list(tests.values())).plus_minus(100)} "
            f"| {iqm(list(tests.values())).bounds(100)} | {diff_text} | {chance} | {len(seeds)} "
            f"| {added:,.0f} | {first.epochs} | {wall:.0f} | {first.architecture} |"
        )
    same = sorted(
        f"{name} (seed {seed})"
        for name in list(POLICY_ROWS)[1:]
        for seed, run in by_row.get(name, {}).items()
        if seed in baseline and run.val_accuracy_curve == baseline[seed].val_accuracy_curve
    )
    if same:
        lines += [
            "",
            f"Rows with exactly the baseline's validation curve: {', '.join(same)}. No seed "
            "acted on the host's output in them (a seed that never leaves GERMINATED or "
            "TRAINING, or is pruned before blending, keeps the host's outputs and gradients "
            "bit-identical), so they train the bare host with the baseline's batches.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[SeedPaperRow]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=ENV_ID, help="registered env id")
    parser.add_argument("--seed", type=int, default=1000, help="first evaluation seed (>= 1000)")
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds per row")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (recorded)")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--rows",
        nargs="+",
        default=list(ROW_KEYS),
        choices=list(ROW_KEYS),
        help="rows to run (scratch reruns the heuristic episode unless this run made it)",
    )
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    args = parser.parse_args(argv)
    fix_threads(args.threads)
    kwargs = parse_key_values(args.env_kwargs)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = args.out_dir / "seed_paper.jsonl"
    finished = {(r.row, r.seed) for r in read_rows(jsonl)}
    wanted = {ROW_KEYS[key] for key in args.rows}
    seeds = list(range(args.seed, args.seed + args.seeds))
    command = "python -m benchmarks.seed_paper " + shlex.join(argv if argv is not None else [])
    start = time.perf_counter()

    env = gym.make(args.env, **kwargs)
    world: World = env.unwrapped.world
    config = world.config
    header = (
        f"# The seed-paper comparison\n\nCommand: `{command}`\n\n"
        f"Env: `{args.env}` with kwargs `{json.dumps(kwargs)}`: host `{config.host}`, "
        f"{config.episode_epochs} epochs, {world.splits.train.num_samples:,} training images "
        f"({config.train_per_class or 'all'} per class), "
        f"{world.splits.val.num_samples:,} validation, {world.splits.test.num_samples:,} test; "
        f"evaluation seeds {seeds[0]}-{seeds[-1]}. Machine: {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"device {world.device}.\n\n{differences(world)}"
    )

    def save(row: SeedPaperRow, progress: Progress) -> None:
        with jsonl.open("a", encoding="utf-8") as handle:
            handle.write(row.model_dump_json() + "\n")
        # Re-read: another run may have appended rows meanwhile.
        (args.out_dir / "seed_paper.md").write_text(render(read_rows(jsonl), header), "utf-8")
        progress.echo(
            f"{row.row} seed {row.seed}: test {100 * row.test_accuracy:.2f}% "
            f"({row.wall_seconds:.0f}s)"
        )

    todos = {seed: {name for name in wanted if (name, seed) not in finished} for seed in seeds}
    # Each row is an episode, and the scratch row needs this run's heuristic episode.
    planned = sum(len(t) + (SCRATCH_ROW in t and GROWN_ROW not in t) for t in todos.values())
    with Progress(quiet=args.quiet) as progress:
        progress.start_run(planned)
        for seed, todo in todos.items():
            for name, spec in POLICY_ROWS.items():
                needs_model = name == GROWN_ROW and SCRATCH_ROW in todo
                if name not in todo and not needs_model:
                    continue
                policy = load_policy(spec, env, seed=seed)
                result = run_episode(env, policy, seed=seed, policy_name=spec, progress=progress)
                if name in todo:
                    save(
                        SeedPaperRow(
                            row=name,
                            seed=seed,
                            test_accuracy=result.final_test_accuracy,
                            val_accuracy=result.final_val_accuracy,
                            params=world.base_params + result.params_added,
                            params_added=result.params_added,
                            epochs=result.steps,
                            wall_seconds=result.wall_seconds,
                            val_accuracy_curve=result.val_accuracy_curve,
                            architecture=describe(world.model),
                        ),
                        progress,
                    )
            if SCRATCH_ROW in todo:
                # The world still holds this seed's heuristic episode's final model.
                save(from_scratch(world, seed, config.episode_epochs, progress), progress)
    env.close()
    rows = read_rows(jsonl)
    (args.out_dir / "seed_paper.md").write_text(render(rows, header), encoding="utf-8")
    print(f"total wall {time.perf_counter() - start:.0f}s")
    return rows


def read_rows(path: Path) -> list[SeedPaperRow]:
    """The rows recorded in `path`, in the table's order (an absent file has none)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [SeedPaperRow.model_validate_json(line) for line in lines if line]
    order = list(ORIGINAL)
    return sorted(rows, key=lambda r: (order.index(r.row), r.seed))


if __name__ == "__main__":
    main(sys.argv[1:])
