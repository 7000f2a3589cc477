"""Running policies for whole episodes and recording results in one schema.

`EpisodeResult` is the record that `esper-run`, `esper-eval` and the leaderboards
all write, so trained agents and baselines are compared on equal terms. While an
episode runs, `run_episode` reports each step to an `agents.progress.EpisodeSink`
(the progress bars) and, as a `StepRecord`, to an optional callback (`esper-run`'s
table of the episode).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
from pydantic import Field
from rich import box
from rich.table import Table

from agents.policies import POLICY_NAMES, Policy, make_policy
from agents.progress import EpisodeSink, Progress
from agents.zoo.algos import ALGOS
from agents.zoo.policy import load_sb3_policy
from esper_env.contracts import Op, SeedStage, StrictModel


class LifecycleMark(StrictModel):
    """A lifecycle event on the validation-accuracy curve: which slot did what, when."""

    epoch: int
    slot: str
    op: str
    to_stage: str


class EpisodeResult(StrictModel):
    """One episode of one policy on one env with one seed.

    Attributes:
        env_id: Registered env id.
        policy: Policy name (`noop`, `heuristic`, `ppo:PATH`, ...).
        seed: The `reset` seed.
        final_test_accuracy: Test accuracy at episode end (the test split's only use).
        final_val_accuracy: Validation accuracy at episode end.
        params_added: Parameters added by seeds (live and fossilized).
        added_param_fraction: `params_added` over the bare host's parameters.
        episode_return: Sum of rewards.
        steps: Environment steps taken.
        seeds_germinated: Seeds germinated.
        seeds_fossilized: Seeds fossilized.
        seeds_pruned: Seeds pruned (by the policy or the governor).
        governor_rollbacks: Rollbacks by Tolaria's governor.
        refused_actions: Actions refused by a gate (no-ops).
        wall_seconds: Wall time of the episode.
        val_accuracy_curve: Validation accuracy after each step.
        lifecycle: Successful lifecycle transitions requested by the policy.
        reward_terms: Each reward term summed over the episode.
        actions: The action taken at each step, for replay (`benchmarks.leaderboard validate`).
        device: Torch device the episode trained on (filled in by the leaderboard runner).
        machine: The machine it ran on (filled in by the leaderboard runner).
    """

    env_id: str
    policy: str
    seed: int
    final_test_accuracy: float
    final_val_accuracy: float
    params_added: int
    added_param_fraction: float
    episode_return: float
    steps: int
    seeds_germinated: int
    seeds_fossilized: int
    seeds_pruned: int
    governor_rollbacks: int
    refused_actions: int
    wall_seconds: float
    val_accuracy_curve: list[float] = Field(default_factory=list)
    lifecycle: list[LifecycleMark] = Field(default_factory=list)
    reward_terms: dict[str, float] = Field(default_factory=dict)
    actions: list[list[int]] = Field(default_factory=list)
    device: str | None = None
    machine: str | None = None


@dataclass(frozen=True)
class StepRecord:
    """One step of an episode, in words: a row of `step_table`.

    Attributes:
        step: Step number within the episode (1-based).
        epoch: The env's epoch after the step.
        action: The policy's action in words, as the telemetry writes it (`wait`,
            `germinate slot1 residual_block blend 3`, ...).
        transition: What the lifecycle did with it (`DORMANT->GERMINATED`,
            `refused (G1): ...`; `-` when the action asked for none), and a governor
            rollback of the epoch.
        val_accuracy: Validation accuracy after the step.
        reward: The step's reward.
    """

    step: int
    epoch: int
    action: str
    transition: str
    val_accuracy: float
    reward: float


def describe_action(env: gym.Env, action: Sequence[int]) -> str:
    """Tamiyo's `[op, slot, blueprint, blend_speed]` in words, as the env's telemetry says it."""
    world = env.unwrapped.world
    op, slot, blueprint, speed = (int(a) for a in action)
    name = world.blueprint_irs[blueprint].metadata.name
    return world.describe_tamiyo(Op(op), slot, name, speed)


def describe_transition(transition: dict[str, Any] | None, *, rolled_back: bool) -> str:
    """A step's `info["transition"]` (and `info["rolled_back"]`) in words."""
    if transition is None:
        words = "-"
    else:
        if transition["ok"]:
            words = (
                f"{SeedStage(transition['from_stage']).name}->"
                f"{SeedStage(transition['to_stage']).name}"
            )
        else:
            words = f"refused ({transition['gate']}): {transition['reason']}"
    return f"{words}; governor rolled back" if rolled_back else words


def step_table(records: Sequence[StepRecord], title: str | None = None) -> Table:
    """One row per step: epoch, action, transition, validation accuracy and reward."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("epoch", justify="right")
    table.add_column("action")
    table.add_column("transition")
    table.add_column("val_acc", justify="right")
    table.add_column("reward", justify="right")
    for record in records:
        table.add_row(
            str(record.epoch),
            record.action,
            record.transition,
            f"{record.val_accuracy:.4f}",
            f"{record.reward:+.3f}",
        )
    return table


def run_episode(
    env: gym.Env,
    policy: Policy,
    *,
    seed: int,
    policy_name: str,
    progress: EpisodeSink | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> EpisodeResult:
    """Runs one episode to termination or truncation and records it.

    The env is told who acts (`set_policy_name`, for its telemetry) before the reset.

    Args:
        env: An Esper env (from `gym.make`).
        policy: The policy; it is reset with `seed` first.
        seed: Seed of `env.reset` and of the policy.
        policy_name: Name recorded in the result and in the env's telemetry.
        progress: Told of the episode (`{policy_name} seed {seed}`, `episode_epochs`
            steps) and of each step's validation accuracy.
        on_step: Called with each step's `StepRecord`.
    """
    start = time.perf_counter()
    env.unwrapped.set_policy_name(policy_name)
    policy.reset(seed)
    obs, info = env.reset(seed=seed)
    if progress is not None:
        progress.start_episode(f"{policy_name} seed {seed}", env.unwrapped.config.episode_epochs)
    total = 0.0
    curve: list[float] = []
    marks: list[LifecycleMark] = []
    terms: dict[str, float] = {}
    actions: list[list[int]] = []
    steps = 0
    done = False
    while not done:
        action = policy.act(obs, info)
        actions.append([int(a) for a in action])
        obs, reward, terminated, truncated, info = env.step(action)
        steps += 1
        total += float(reward)
        curve.append(info["val_accuracy"])
        for key, value in info["reward_terms"].items():
            terms[key] = terms.get(key, 0.0) + value
        transition: dict[str, Any] | None = info["transition"]
        if transition is not None and transition["ok"]:
            marks.append(
                LifecycleMark(
                    epoch=info["epoch"],
                    slot=transition["slot"],
                    op=transition["op"],
                    to_stage=SeedStage(transition["to_stage"]).name,
                )
            )
        if progress is not None:
            progress.step(info["val_accuracy"])
        if on_step is not None:
            on_step(
                StepRecord(
                    step=steps,
                    epoch=info["epoch"],
                    action=describe_action(env, actions[-1]),
                    transition=describe_transition(transition, rolled_back=info["rolled_back"]),
                    val_accuracy=info["val_accuracy"],
                    reward=float(reward),
                )
            )
        done = terminated or truncated
    if progress is not None:
        progress.end_episode()
    return EpisodeResult(
        env_id=env.spec.id if env.spec is not None else type(env.unwrapped).__name__,
        policy=policy_name,
        seed=seed,
        final_test_accuracy=info["final_test_accuracy"],
        final_val_accuracy=info["final_val_accuracy"],
        params_added=info["params_added"],
        added_param_fraction=info["added_param_fraction"],
        episode_return=total,
        steps=steps,
        seeds_germinated=info["seeds_germinated"],
        seeds_fossilized=info["seeds_fossilized"],
        seeds_pruned=info["seeds_pruned"],
        governor_rollbacks=info["governor_rollbacks"],
        refused_actions=info["refused_actions"],
        wall_seconds=time.perf_counter() - start,
        val_accuracy_curve=curve,
        lifecycle=marks,
        reward_terms=terms,
        actions=actions,
    )


def summary_line(result: EpisodeResult) -> str:
    """The one-line report of an episode that `run_episodes` prints."""
    return (
        f"seed {result.seed}: test_acc {result.final_test_accuracy:.4f} "
        f"val_acc {result.final_val_accuracy:.4f} params_added {result.params_added} "
        f"return {result.episode_return:.3f} germinated/fossilized/pruned "
        f"{result.seeds_germinated}/{result.seeds_fossilized}/{result.seeds_pruned} "
        f"refused {result.refused_actions} ({result.wall_seconds:.1f}s)"
    )


def run_episodes(
    env: gym.Env,
    policy: Policy,
    *,
    seeds: Sequence[int],
    policy_name: str,
    out: Path | None = None,
    progress: Progress | None = None,
    step_tables: bool = False,
) -> list[EpisodeResult]:
    """Runs one episode per seed, prints a line for each, and appends them to `out` as JSONL.

    Each result is written as soon as its episode ends, so an interrupted run keeps
    the episodes it finished.

    Args:
        env: An Esper env.
        policy: The policy.
        seeds: One episode per seed, in order.
        policy_name: Name recorded in the results and told to the env (its telemetry).
        out: JSONL file the results are appended to.
        progress: Shows the run's and each episode's bar and prints the lines (quiet:
            none); default: the lines only, no bars.
        step_tables: After each episode's line, print its `step_table`.
    """
    progress = progress or Progress(bars=False)
    progress.start_run(len(seeds))
    tables = step_tables and not progress.quiet
    results = []
    for seed in seeds:
        records: list[StepRecord] = []
        result = run_episode(
            env,
            policy,
            seed=seed,
            policy_name=policy_name,
            progress=progress,
            on_step=records.append if tables else None,
        )
        results.append(result)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a", encoding="utf-8") as handle:
                handle.write(result.model_dump_json() + "\n")
        progress.echo(summary_line(result))
        if tables:
            progress.echo(step_table(records, title=f"{policy_name} seed {seed}"))
    return results


def load_policy(
    spec: str,
    env: gym.Env,
    *,
    seed: int | None = None,
    deterministic: bool = True,
    trust: bool = False,
) -> Policy:
    """Builds a policy from its command-line name: a baseline from `POLICY_NAMES`, or `ALGO:PATH`.

    `ALGO:PATH` (e.g. `recurrent_ppo:logs/.../best_model.zip`) loads an agent saved by
    `esper-train`, with `ALGO` one of `agents.zoo.ALGOS`, without running code
    from the file (see `agents.zoo.safe_load`).

    Args:
        spec: Policy name.
        env: The env the policy will act in.
        seed: Seed of the policy's randomness.
        deterministic: For trained agents: greedy actions instead of sampled ones.
        trust: For trained agents: unpickle the file's entries as SB3 does, which runs
            code from the file (`--trust-agent`).

    Raises:
        ValueError: Unknown name or algo, or an agent that does not fit `env`.
        UntrustedAgentError: The agent file needs unpickling and `trust` is off.
        FileNotFoundError: `ALGO:PATH` names no file.
    """
    if spec in POLICY_NAMES:
        return make_policy(spec, env, seed=seed)
    algo, sep, path = spec.partition(":")
    if sep and algo in ALGOS:
        return load_sb3_policy(algo, path, env, deterministic=deterministic, trust=trust)
    raise ValueError(
        f"unknown policy {spec!r}; choose from {POLICY_NAMES} or ALGO:PATH with ALGO in "
        f"{sorted(ALGOS)}"
    )
