"""Cue then act: a learning benchmark that needs both memory and action masks.

`CueThenActEnv` (defaults: K = 4 cues, D = 4 delay steps, N = 32 actions) shows a cue at
the first step, hides it, and asks for it back at the last step, while most actions are
illegal at every step:

- Actions: 0 = *wait*; 1..K = *answer* cue 0..K-1; K+1..N-1 = *distractors* (never legal).
- Observation: a float32 Box of K + 1 values in [0, 1]: the one-hot cue at step 0 and
  zeros after it, then an *answer now* flag, 1 at the answer step only.
- Steps 0..D (the cue step and the D delay steps): only *wait* is legal; reward 0.
- Step D + 1 (the answer step): the K answers are legal (*wait* and the distractors are
  not); the right one gives +1, a wrong one 0, and the episode terminates.
- An illegal action (one `action_masks()` marks False) terminates the episode at once
  with reward -1 (`info["illegal"]` is True). Episodes never truncate; every episode
  takes at most D + 2 actions.

The optimal return is +1 (success rate 1): wait D + 1 times, then answer the cue.
Memory is needed because every cue leads to the same observations after step 0, so a
memoryless policy's answer cannot depend on the cue: its success rate, and its expected
return, are at most 1/K. Masks are needed because a uniformly random unmasked policy
survives the D + 1 waits with probability (1/N)^(D+1) (3e-8 by default): without masks,
nearly every early episode ends at once with -1 and the learner must first discover,
from those penalties alone, the one legal action of each step.

The benchmark trains `maskable_recurrent_ppo` (memory and masks,
`agents.zoo.maskable_recurrent_ppo`), `recurrent_ppo` (memory, no masks) and
`maskable_ppo` (masks, no memory) with the same hyperparameters where they apply
(`Hyperparams`), the same seeds and the same timesteps, then evaluates each trained
model greedily on the same evaluation episodes (fixed reset seeds, the cues taking
turns): the masked models with the env's masks, the recurrent ones with their LSTM state
carried through each episode (`evaluate`). The report gives, per algorithm, the mean
success rate, return and illegal-ending rate over the training seeds with 95% t
intervals, and the paired differences MaskableRecurrentPPO − each other algorithm over
the same seeds with 95% paired-t intervals (`benchmarks.stats`).

The default budget, 16384 timesteps per run, was chosen from probe runs (default task and
hyperparameters, one torch thread, evaluated every 4096 timesteps): MaskableRecurrentPPO
succeeded on every evaluation episode from 12288 timesteps on for each of seeds 0-4, while
RecurrentPPO (seeds 0-2) still ended every evaluation episode with an illegal action at
24576, and MaskablePPO cannot pass 1/K. A run of 16384 timesteps took about 12-14 s
(the recurrent algorithms) or 5 s (MaskablePPO) on one shared core: about 3 minutes for
3 algorithms × 5 seeds.

Each run (algorithm, seed) is appended to `<out>/memory_and_masks.jsonl` as soon as it
finishes and `<out>/memory_and_masks.md` is rewritten, so an interrupted benchmark keeps
its finished runs; a rerun skips the (algorithm, seed) pairs already recorded (and
refuses a JSONL recorded with another configuration).

Usage:
    python -m benchmarks.memory_and_masks --timesteps 16384 --seeds 0 1 2 3 4 \
        --threads 1 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.zoo.maskable_recurrent_ppo import MaskableRecurrentPPO
from benchmarks.machine import cpu_model, fix_threads
from benchmarks.stats import paired_difference, t_interval

NAME = "memory_and_masks"
RESULTS_DIR = Path(__file__).parent / "results"
#: The algorithms, in the report's order; the first is the one the others are compared with.
ALGOS = ("maskable_recurrent_ppo", "recurrent_ppo", "maskable_ppo")
#: Algorithms that get the env's action masks (in training and in evaluation).
MASKED = frozenset({"maskable_recurrent_ppo", "maskable_ppo"})
#: Algorithms with an LSTM, whose state is carried through each evaluation episode.
RECURRENT = frozenset({"maskable_recurrent_ppo", "recurrent_ppo"})
#: Reset seed of the first evaluation episode; episode i uses `EVAL_SEED + i`.
EVAL_SEED = 1_000_000
#: The metrics of a run, as (row key, table heading).
METRICS = (
    ("success_rate", "success rate"),
    ("mean_return", "return"),
    ("illegal_rate", "illegal endings"),
)

WAIT = 0
ILLEGAL_REWARD = -1.0
SUCCESS_REWARD = 1.0
WRONG_REWARD = 0.0


@dataclass(frozen=True)
class EnvConfig:
    """The size of a cue-then-act task.

    Attributes:
        n_cues: K, the number of cues (and of answers).
        delay: D, the steps during which the cue is hidden before the answer step.
        n_actions: N, all actions: wait, the K answers and N - K - 1 distractors.
    """

    n_cues: int = 4
    delay: int = 4
    n_actions: int = 32

    def __post_init__(self) -> None:
        """Checks the sizes.

        Raises:
            ValueError: Fewer than 2 cues, a negative delay, or fewer than K + 1 actions.
        """
        if self.n_cues < 2:
            raise ValueError(f"n_cues must be >= 2, got {self.n_cues}")
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")
        if self.n_actions < self.n_cues + 1:
            raise ValueError(f"n_actions must be >= n_cues + 1, got {self.n_actions}")

    @property
    def answer_step(self) -> int:
        """The step at which the answers are legal (D + 1)."""
        return self.delay + 1

    @property
    def memoryless_bound(self) -> float:
        """The best success rate (and expected return) of a memoryless policy: 1/K."""
        return 1.0 / self.n_cues

    @property
    def random_survival(self) -> float:
        """The chance that a uniformly random unmasked policy reaches the answer step."""
        return float((1.0 / self.n_actions) ** self.answer_step)

    def describe(self) -> str:
        """The task's definition as markdown bullets."""
        k, d, n = self.n_cues, self.delay, self.n_actions
        return "\n".join(
            [
                f"- `CueThenActEnv(n_cues={k}, delay={d}, n_actions={n})`: K = {k} cues, "
                f"D = {d} delay steps, N = {n} actions (0 = wait, 1..{k} = answer cue "
                f"0..{k - 1}, {k + 1}..{n - 1} = distractors, never legal).",
                f"- Observation: Box of {k + 1} float32 in [0, 1]: the one-hot cue at step 0, "
                "zeros after it, then an *answer now* flag (1 at the answer step only).",
                f"- Steps 0..{d}: only wait is legal, reward 0. Step {d + 1}: the {k} answers "
                f"are legal; the right one gives {SUCCESS_REWARD:+g}, a wrong one "
                f"{WRONG_REWARD:g}, and the episode terminates.",
                f"- An illegal action (masked False) terminates the episode at once with reward "
                f"{ILLEGAL_REWARD:+g}. Episodes take at most {d + 2} actions.",
                f"- Optimal return +1 (success 1); a memoryless policy succeeds with "
                f"probability <= 1/K = {self.memoryless_bound:.2f} (every cue gives the same "
                f"observations after step 0); a uniformly random unmasked policy reaches the "
                f"answer step with probability (1/N)^{d + 1} = {self.random_survival:.1e}.",
            ]
        )


class CueThenActEnv(gym.Env[np.ndarray, np.int64]):
    """Shows a cue, hides it for `delay` steps, then asks for it back (module docstring).

    The cue is drawn uniformly from the env's seeded generator at each reset, unless
    `reset(options={"cue": c})` fixes it. `info` holds `cue`, and on the terminating step
    `success` (the right answer) and `illegal` (ended by an illegal action). The env also
    counts its finished episodes (`episodes`, `successes`, `illegal_endings`), so a
    training run can tell how many of its episodes an illegal action wasted.

    Args:
        config: The task's size.
    """

    def __init__(self, config: EnvConfig | None = None) -> None:
        self.config = config or EnvConfig()
        self.action_space = spaces.Discrete(self.config.n_actions)
        self.observation_space = spaces.Box(0.0, 1.0, (self.config.n_cues + 1,), np.float32)
        self.episodes = 0
        self.successes = 0
        self.illegal_endings = 0
        self._cue = 0
        self._t = 0
        self._done = True

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.config.n_cues + 1, dtype=np.float32)
        if self._done:
            return obs
        if self._t == 0:
            obs[self._cue] = 1.0
        if self._t == self.config.answer_step:
            obs[-1] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts an episode with a random cue (or `options["cue"]`).

        Args:
            seed: Reseeds the env's generator.
            options: `{"cue": c}` fixes the cue (0 <= c < K).

        Returns:
            The first observation (the cue) and `{"cue": c}`.

        Raises:
            ValueError: The fixed cue is out of range.
        """
        super().reset(seed=seed)
        if options is not None and "cue" in options:
            cue = int(options["cue"])
            if not 0 <= cue < self.config.n_cues:
                raise ValueError(f"cue must be in [0, {self.config.n_cues}), got {cue}")
        else:
            cue = int(self.np_random.integers(self.config.n_cues))
        self._cue, self._t, self._done = cue, 0, False
        return self._obs(), {"cue": cue}

    def action_masks(self) -> np.ndarray:
        """The legal actions now (True = legal): wait before the answer step, answers at it."""
        mask = np.zeros(self.config.n_actions, dtype=bool)
        if self._t < self.config.answer_step:
            mask[WAIT] = True
        else:
            mask[1 : self.config.n_cues + 1] = True
        return mask

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Takes one action (the module docstring says how each is rewarded).

        Args:
            action: An action index in [0, N).

        Returns:
            Observation, reward, terminated, truncated (always False) and info.

        Raises:
            RuntimeError: The episode is over (call `reset`).
            ValueError: The action is outside the action space.
        """
        if self._done:
            raise RuntimeError("the episode is over: call reset()")
        action = int(action)
        if not 0 <= action < self.config.n_actions:
            raise ValueError(f"action must be in [0, {self.config.n_actions}), got {action}")
        info: dict[str, Any] = {"cue": self._cue}
        if not self.action_masks()[action]:
            reward, success, illegal = ILLEGAL_REWARD, False, True
        elif self._t < self.config.answer_step:
            self._t += 1
            return self._obs(), 0.0, False, False, info
        else:
            success, illegal = action - 1 == self._cue, False
            reward = SUCCESS_REWARD if success else WRONG_REWARD
        self._done = True
        self.episodes += 1
        self.successes += success
        self.illegal_endings += illegal
        info.update(success=success, illegal=illegal)
        return self._obs(), reward, True, False, info


@dataclass(frozen=True)
class Hyperparams:
    """The settings every algorithm trains with (the LSTM's only where there is one).

    Attributes:
        n_envs: Parallel envs (a `DummyVecEnv`).
        n_steps: Steps per env per rollout.
        batch_size: Minibatch size.
        n_epochs: Passes over each rollout.
        learning_rate: Adam's learning rate (constant).
        gamma: Discount factor.
        gae_lambda: GAE's lambda.
        ent_coef: Entropy bonus coefficient.
        net_arch: Hidden layers of the policy and value heads.
        lstm_hidden_size: LSTM width (recurrent algorithms only).
    """

    n_envs: int = 8
    n_steps: int = 32
    batch_size: int = 64
    n_epochs: int = 4
    learning_rate: float = 1e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    ent_coef: float = 0.01
    net_arch: tuple[int, ...] = (64,)
    lstm_hidden_size: int = 32


def make_vec_env(config: EnvConfig, n_envs: int) -> DummyVecEnv:
    """`n_envs` cue-then-act envs in a `DummyVecEnv` (the model's seed seeds them)."""
    return DummyVecEnv([lambda: CueThenActEnv(config) for _ in range(n_envs)])


def make_model(algo: str, seed: int, config: EnvConfig, hyperparams: Hyperparams) -> BaseAlgorithm:
    """An untrained model of `algo` on a fresh vector of envs, on the CPU.

    Args:
        algo: One of `ALGOS`.
        seed: Seeds torch, numpy, the action space and the envs.
        config: The task.
        hyperparams: The shared settings.

    Returns:
        The model.

    Raises:
        ValueError: An unknown algorithm.
    """
    classes: dict[str, type[BaseAlgorithm]] = {
        "maskable_recurrent_ppo": MaskableRecurrentPPO,
        "recurrent_ppo": RecurrentPPO,
        "maskable_ppo": MaskablePPO,
    }
    if algo not in classes:
        raise ValueError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGOS)}")
    policy_kwargs: dict[str, Any] = {"net_arch": list(hyperparams.net_arch)}
    if algo in RECURRENT:
        policy_kwargs["lstm_hidden_size"] = hyperparams.lstm_hidden_size
    return classes[algo](
        "MlpLstmPolicy" if algo in RECURRENT else "MlpPolicy",
        make_vec_env(config, hyperparams.n_envs),
        n_steps=hyperparams.n_steps,
        batch_size=hyperparams.batch_size,
        n_epochs=hyperparams.n_epochs,
        learning_rate=hyperparams.learning_rate,
        gamma=hyperparams.gamma,
        gae_lambda=hyperparams.gae_lambda,
        ent_coef=hyperparams.ent_coef,
        policy_kwargs=policy_kwargs,
        seed=seed,
        device="cpu",
        verbose=0,
    )


@dataclass(frozen=True)
class Evaluation:
    """A model's greedy play on the evaluation episodes.

    Attributes:
        episodes: Episodes played.
        success_rate: Fraction answered right.
        mean_return: Mean episode return.
        illegal_rate: Fraction ended by an illegal action.
    """

    episodes: int
    success_rate: float
    mean_return: float
    illegal_rate: float


def evaluate(
    model: BaseAlgorithm,
    algo: str,
    config: EnvConfig,
    episodes: int,
    first_seed: int = EVAL_SEED,
) -> Evaluation:
    """Plays `episodes` greedy episodes: episode i is reset with seed `first_seed + i`, cue i % K.

    The cues take turns, so that over a multiple of K episodes each cue is asked equally
    often and a memoryless policy succeeds on at most 1/K of them. Masked algorithms get
    `action_masks()` at every step; recurrent ones get the LSTM state `predict` returned,
    restarted (`episode_start`) at each episode's first step.

    Args:
        model: A trained model of `algo`.
        algo: One of `ALGOS`.
        config: The task.
        episodes: How many episodes.
        first_seed: Reset seed of the first episode.

    Returns:
        The success rate, mean return and illegal-ending rate.

    Raises:
        ValueError: No episodes.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = CueThenActEnv(config)
    returns = []
    for index in range(episodes):
        obs, _ = env.reset(seed=first_seed + index, options={"cue": index % config.n_cues})
        state: tuple[np.ndarray, ...] | None = None
        episode_start = np.ones(1, dtype=bool)
        total, done = 0.0, False
        while not done:
            extra = {"action_masks": env.action_masks()} if algo in MASKED else {}
            if algo in RECURRENT:
                extra.update(state=state, episode_start=episode_start)
            action, state = model.predict(obs, deterministic=True, **extra)
            episode_start = np.zeros(1, dtype=bool)
            obs, reward, done, _, _ = env.step(int(action))
            total += reward
        returns.append(total)
    return Evaluation(
        episodes=episodes,
        success_rate=env.successes / episodes,
        mean_return=float(np.mean(returns)),
        illegal_rate=env.illegal_endings / episodes,
    )


@dataclass(frozen=True)
class RunSettings:
    """What every run of a benchmark shares; a JSONL is resumed only with the same settings.

    Attributes:
        timesteps: Training timesteps of each run.
        eval_episodes: Evaluation episodes of each run.
        eval_seed: Reset seed of the first evaluation episode.
        env: The task.
        hyperparams: The shared training settings.
    """

    timesteps: int
    eval_episodes: int = 100
    eval_seed: int = EVAL_SEED
    env: EnvConfig = field(default_factory=EnvConfig)
    hyperparams: Hyperparams = field(default_factory=Hyperparams)

    def record(self) -> dict[str, Any]:
        """The settings as plain JSON data."""
        data = asdict(self)
        data["hyperparams"]["net_arch"] = list(self.hyperparams.net_arch)
        return data


def train_and_evaluate(algo: str, seed: int, settings: RunSettings) -> dict[str, Any]:
    """Trains `algo` from `seed` for `settings.timesteps` and evaluates it.

    Args:
        algo: One of `ALGOS`.
        seed: Training seed.
        settings: The benchmark's settings.

    Returns:
        The run's JSONL row: algorithm, seed, evaluation metrics, the training episodes
        (finished, successful, ended by an illegal action), seconds, torch threads and
        the settings.
    """
    start = time.perf_counter()
    model = make_model(algo, seed, settings.env, settings.hyperparams)
    model.learn(total_timesteps=settings.timesteps)
    train_seconds = time.perf_counter() - start
    counts = {
        name: int(sum(model.get_env().get_attr(name)))
        for name in ("episodes", "successes", "illegal_endings")
    }
    start = time.perf_counter()
    result = evaluate(model, algo, settings.env, settings.eval_episodes, settings.eval_seed)
    eval_seconds = time.perf_counter() - start
    model.get_env().close()
    return {
        "algo": algo,
        "seed": seed,
        **asdict(result),
        "trained_timesteps": int(model.num_timesteps),
        "train_episodes": counts["episodes"],
        "train_successes": counts["successes"],
        "train_illegal_endings": counts["illegal_endings"],
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "torch_threads": torch.get_num_threads(),
        "settings": settings.record(),
    }


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a benchmark JSONL (none if it does not exist)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _mean(rows: list[dict[str, Any]], key: str, digits: int = 2) -> str:
    return t_interval([row[key] for row in rows]).plus_minus(digits=digits)


def render(
    rows: list[dict[str, Any]],
    settings: RunSettings,
    command: str,
    planned: Collection[tuple[str, int]],
) -> str:
    """The markdown report of the runs recorded so far.

    Args:
        rows: The JSONL rows (all of them are reported).
        settings: The benchmark's settings.
        command: The command that ran it.
        planned: The (algorithm, seed) runs the command asks for.

    Returns:
        The report.
    """
    hp = settings.hyperparams
    threads = sorted({row["torch_threads"] for row in rows}) or [torch.get_num_threads()]
    total = sum(row["train_seconds"] + row["eval_seconds"] for row in rows)
    others = sum((row["algo"], row["seed"]) not in planned for row in rows)
    extra = f" (and {others} more recorded)" if others else ""
    by_algo = {algo: [row for row in rows if row["algo"] == algo] for algo in ALGOS}
    lines = [
        "# Memory and masks: cue then act (issue 16)",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        f"Runs: {sum((row['algo'], row['seed']) in planned for row in rows)} of the "
        f"{len(planned)} the command asks for{extra}, {settings.timesteps} training "
        "timesteps each; "
        f"wall time of the recorded runs {total:.0f} s ({total / 60:.1f} min), training and "
        f"evaluation; torch threads {', '.join(map(str, threads))}; CPU {cpu_model()} "
        f"({platform.machine()}), torch {torch.__version__}. Other processes may share the "
        "CPUs, so seconds are indicative.",
        "",
        "## The env",
        "",
        settings.env.describe(),
        "",
        "## Training and evaluation",
        "",
        f"- Same hyperparameters for all three where they apply: {hp.n_envs} envs "
        f"(`DummyVecEnv`), n_steps {hp.n_steps}, batch_size {hp.batch_size}, n_epochs "
        f"{hp.n_epochs}, learning_rate {hp.learning_rate:g}, gamma {hp.gamma:g}, gae_lambda "
        f"{hp.gae_lambda:g}, ent_coef {hp.ent_coef:g}, net_arch {list(hp.net_arch)}, LSTM "
        f"{hp.lstm_hidden_size} (recurrent ones; sb3-contrib's default separate critic LSTM); "
        "every other setting is the library default. Same training seeds for all.",
        "- `maskable_recurrent_ppo`: memory and masks; `recurrent_ppo`: memory, no masks; "
        "`maskable_ppo`: masks, no memory.",
        f"- Evaluation: {settings.eval_episodes} greedy episodes per trained model, reset seeds "
        f"{settings.eval_seed}..{settings.eval_seed + settings.eval_episodes - 1} and cues "
        "taking turns (episode i asks cue i % K) for every model; masked models get the "
        "env's masks, recurrent ones their LSTM state carried through the episode "
        "(`model.predict(state=..., episode_start=...)`).",
        "- Training episodes: the share of the episodes finished during training that an "
        "illegal action ended (what exploration without masks wastes).",
        "",
        "## Results",
        "",
        "Means over training seeds ± half-width of the 95% t interval:",
        "",
        "| algorithm | seeds | success rate | return | illegal endings | "
        "illegal training episodes | train s / run |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for algo, mine in by_algo.items():
        if not mine:
            continue
        wasted = [row["train_illegal_endings"] / max(row["train_episodes"], 1) for row in mine]
        lines.append(
            f"| {algo} | {len(mine)} | {_mean(mine, 'success_rate')} "
            f"| {_mean(mine, 'mean_return')} | {_mean(mine, 'illegal_rate')} "
            f"| {t_interval(wasted).plus_minus()} | {_mean(mine, 'train_seconds', 1)} |"
        )
    reference = ALGOS[0]
    lines += [
        "",
        f"Paired differences `{reference}` − each other algorithm over the training seeds both "
        "ran (mean ± half-width of the 95% paired-t interval; '-' with fewer than two shared "
        "seeds):",
        "",
        "| difference | seeds | " + " | ".join(heading for _, heading in METRICS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in METRICS) + " |",
    ]
    for algo in ALGOS[1:]:
        cells = []
        seeds = "-"
        for key, _ in METRICS:
            paired = paired_difference(
                {row["seed"]: row[key] for row in by_algo[reference]},
                {row["seed"]: row[key] for row in by_algo[algo]},
            )
            if paired is None:
                cells.append("-")
            else:
                seeds = str(len(paired.seeds))
                cells.append(paired.difference.plus_minus(signed=True))
        lines.append(f"| {reference} − {algo} | {seeds} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Runs",
        "",
        "| algorithm | seed | success rate | return | illegal endings | training episodes "
        "(illegal) | train s | eval s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['algo']} | {row['seed']} | {row['success_rate']:.2f} "
            f"| {row['mean_return']:+.2f} | {row['illegal_rate']:.2f} "
            f"| {row['train_episodes']} ({row['train_illegal_endings']}) "
            f"| {row['train_seconds']:.1f} | {row['eval_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def run_benchmark(
    settings: RunSettings,
    seeds: Sequence[int],
    out_dir: Path = RESULTS_DIR,
    algos: Sequence[str] = ALGOS,
    command: str = "",
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Trains and evaluates each (algorithm, seed) not yet in the JSONL, and writes the report.

    Each finished run is appended to `<out_dir>/memory_and_masks.jsonl` and the report
    `<out_dir>/memory_and_masks.md` rewritten at once. Torch's thread count is the caller's
    (`benchmarks.machine.fix_threads`).

    Args:
        settings: What every run shares.
        seeds: Training seeds (each algorithm trains on each).
        out_dir: Folder of the JSONL and the report.
        algos: Algorithms to run (a subset of `ALGOS`).
        command: The command line, for the report.
        quiet: Print no line per run.

    Returns:
        All rows of the JSONL, recorded before or now.

    Raises:
        ValueError: An unknown algorithm, or the JSONL holds a run with other settings.
    """
    unknown = sorted(set(algos) - set(ALGOS))
    if unknown:
        raise ValueError(f"unknown algorithms {unknown}; choose from {', '.join(ALGOS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl, report = out_dir / f"{NAME}.jsonl", out_dir / f"{NAME}.md"
    rows = read_rows(jsonl)
    for row in rows:
        if row["settings"] != settings.record():
            raise ValueError(
                f"{jsonl} holds {row['algo']} seed {row['seed']} run with other settings "
                f"({row['settings']}); use another --out or remove it"
            )
    done = {(row["algo"], row["seed"]) for row in rows}
    planned = [(algo, seed) for seed in seeds for algo in ALGOS if algo in algos]
    report.write_text(render(rows, settings, command, planned), encoding="utf-8")
    for algo, seed in planned:
        if (algo, seed) in done:
            continue
        row = train_and_evaluate(algo, seed, settings)
        with jsonl.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        rows.append(row)
        done.add((algo, seed))
        report.write_text(render(rows, settings, command, planned), encoding="utf-8")
        if not quiet:
            print(
                f"{algo} seed {seed}: success {row['success_rate']:.2f}, return "
                f"{row['mean_return']:+.2f}, illegal {row['illegal_rate']:.2f} "
                f"({row['train_seconds']:.1f} s training)",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> str:
    """Runs the benchmark from the command line; returns the report."""
    defaults = EnvConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=16384, help="per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    parser.add_argument("--cues", type=int, default=defaults.n_cues, help="K")
    parser.add_argument("--delay", type=int, default=defaults.delay, help="D")
    parser.add_argument("--actions", type=int, default=defaults.n_actions, help="N")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quiet", action="store_true", help="no line per run")
    args = parser.parse_args(argv)
    fix_threads(args.threads)
    words = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", f"benchmarks.{NAME}", *words])
    settings = RunSettings(
        timesteps=args.timesteps,
        eval_episodes=args.eval_episodes,
        eval_seed=args.eval_seed,
        env=EnvConfig(args.cues, args.delay, args.actions),
    )
    run_benchmark(settings, args.seeds, args.out, args.algos, command, args.quiet)
    text = (args.out / f"{NAME}.md").read_text(encoding="utf-8")
    if not args.quiet:
        print(text, end="")
    return text


if __name__ == "__main__":
    main()
