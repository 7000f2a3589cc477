"""Tests of `benchmarks.memory_and_masks`: the cue-then-act env and the benchmark's runs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks import memory_and_masks as bench
from benchmarks.memory_and_masks import (
    ALGOS,
    ILLEGAL_REWARD,
    WAIT,
    CueThenActEnv,
    EnvConfig,
    Hyperparams,
    RunSettings,
    evaluate,
    run_benchmark,
)

CONFIG = EnvConfig()
TINY = EnvConfig(n_cues=2, delay=1, n_actions=3)


def play(env: CueThenActEnv, cue: int, policy: Any) -> tuple[float, list[np.ndarray], dict]:
    """Plays `policy(obs, mask, memory) -> (action, memory)`: return, observations, last info."""
    obs, _ = env.reset(seed=0, options={"cue": cue})
    memory, total, seen, done, info = None, 0.0, [obs], False, {}
    while not done:
        action, memory = policy(obs, env.action_masks(), memory)
        obs, reward, done, truncated, info = env.step(action)
        assert not truncated
        total += reward
        seen.append(obs)
    return total, seen, info


def memory_and_mask_policy(
    obs: np.ndarray, mask: np.ndarray, memory: int | None
) -> tuple[int, int]:
    """Remembers the cue of the first observation, then takes the legal action: wait or the cue."""
    cue = int(np.argmax(obs[:-1])) if memory is None else memory
    return (WAIT if mask[WAIT] else cue + 1), cue


def test_defaults_make_masks_and_memory_matter() -> None:
    assert CONFIG.memoryless_bound == 0.25
    assert CONFIG.random_survival == pytest.approx((1 / 32) ** 5)
    env = CueThenActEnv()
    assert env.action_space.n == 32
    assert env.observation_space.shape == (5,)


@pytest.mark.parametrize("config", [CONFIG, TINY, EnvConfig(n_cues=3, delay=0, n_actions=4)])
def test_masks_follow_the_documented_schedule(config: EnvConfig) -> None:
    env = CueThenActEnv(config)
    answers = np.zeros(config.n_actions, dtype=bool)
    answers[1 : config.n_cues + 1] = True
    for cue in range(config.n_cues):
        obs, info = env.reset(options={"cue": cue})
        assert info == {"cue": cue}
        assert obs[cue] == 1 and obs.sum() == 1
        for _ in range(config.delay + 1):
            assert np.flatnonzero(env.action_masks()).tolist() == [WAIT]
            obs, reward, done, _, _ = env.step(WAIT)
            assert (reward, done) == (0.0, False)
        assert obs.tolist() == [0.0] * config.n_cues + [1.0]
        assert (env.action_masks() == answers).all()


@pytest.mark.parametrize("config", [CONFIG, TINY])
def test_a_memory_and_mask_policy_gets_the_optimal_return(config: EnvConfig) -> None:
    env = CueThenActEnv(config)
    for cue in range(config.n_cues):
        total, seen, info = play(env, cue, memory_and_mask_policy)
        assert total == 1.0
        assert info == {"cue": cue, "success": True, "illegal": False}
        assert len(seen) == config.delay + 3  # the first observation and D + 2 steps
    assert (env.episodes, env.successes, env.illegal_endings) == (config.n_cues, config.n_cues, 0)


def test_observations_after_the_cue_are_the_same_for_every_cue() -> None:
    # So a memoryless policy acts the same for every cue from step 1 on: its answer cannot
    # depend on the cue.
    env = CueThenActEnv()
    runs = [play(env, cue, memory_and_mask_policy)[1] for cue in range(CONFIG.n_cues)]
    for later in zip(*(seen[1:] for seen in runs), strict=True):
        assert all((obs == later[0]).all() for obs in later)
    assert len({tuple(seen[0]) for seen in runs}) == CONFIG.n_cues


def test_no_memoryless_policy_beats_one_over_k() -> None:
    # Every deterministic memoryless policy of the tiny task: a table from its 4 distinct
    # observations (2 cues, blank, answer flag) to its 3 actions. A stochastic memoryless
    # policy is a mixture of these, so the bound holds for it in expectation too.
    env = CueThenActEnv(TINY)
    observations = [tuple(np.eye(3, dtype=np.float32)[i]) for i in range(3)] + [(0.0,) * 3]
    best_success, best_return = 0.0, -np.inf
    for actions in itertools.product(range(TINY.n_actions), repeat=len(observations)):
        table = dict(zip(observations, actions, strict=True))
        successes, returns = 0, 0.0
        for cue in range(TINY.n_cues):
            total, _, info = play(env, cue, lambda obs, _m, _s, t=table: (t[tuple(obs)], None))
            successes += info["success"]
            returns += total
        best_success = max(best_success, successes / TINY.n_cues)
        best_return = max(best_return, returns / TINY.n_cues)
    assert best_success == TINY.memoryless_bound
    assert best_return == TINY.memoryless_bound


def test_a_memoryless_answer_succeeds_on_one_cue_in_k() -> None:
    # The default task: waiting while legal, then always the same action, for each action.
    env = CueThenActEnv()
    for answer in range(CONFIG.n_actions):

        def policy(obs: np.ndarray, mask: np.ndarray, _: None, a: int = answer) -> tuple[int, None]:
            return (WAIT if obs[-1] == 0 else a), None

        results = [play(env, cue, policy) for cue in range(CONFIG.n_cues)]
        success = np.mean([info["success"] for _, _, info in results])
        assert success == (CONFIG.memoryless_bound if 1 <= answer <= CONFIG.n_cues else 0.0)
        assert np.mean([total for total, _, _ in results]) <= CONFIG.memoryless_bound


@pytest.mark.parametrize(
    ("waits", "action"),
    [(0, 31), (0, 1), (2, 3), (CONFIG.delay + 1, WAIT), (CONFIG.delay + 1, 10)],
    ids=["distractor-at-cue", "answer-at-cue", "answer-in-delay", "wait-at-answer", "distractor"],
)
def test_an_illegal_action_ends_the_episode_with_minus_one(waits: int, action: int) -> None:
    env = CueThenActEnv()
    env.reset(seed=3)
    for _ in range(waits):
        env.step(WAIT)
    assert not env.action_masks()[action]
    obs, reward, done, truncated, info = env.step(action)
    assert (reward, done, truncated) == (ILLEGAL_REWARD, True, False)
    assert info["illegal"] and not info["success"]
    assert not obs.any()
    assert (env.episodes, env.successes, env.illegal_endings) == (1, 0, 1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(WAIT)


def test_a_wrong_answer_ends_the_episode_with_zero() -> None:
    env = CueThenActEnv()
    env.reset(options={"cue": 2})
    for _ in range(CONFIG.delay + 1):
        env.step(WAIT)
    _, reward, done, _, info = env.step(1)  # cue 0
    assert (reward, done, info["success"], info["illegal"]) == (0.0, True, False, False)


def test_bad_sizes_and_actions_are_refused() -> None:
    with pytest.raises(ValueError, match="n_actions"):
        EnvConfig(n_cues=4, n_actions=4)
    with pytest.raises(ValueError, match="n_cues"):
        EnvConfig(n_cues=1)
    env = CueThenActEnv()
    with pytest.raises(ValueError, match="cue"):
        env.reset(options={"cue": 4})
    env.reset()
    with pytest.raises(ValueError, match="action"):
        env.step(32)


def test_reset_seeds_fix_the_cues() -> None:
    env = CueThenActEnv()
    cues = [env.reset(seed=s)[1]["cue"] for s in range(20)]
    assert cues == [env.reset(seed=s)[1]["cue"] for s in range(20)]
    assert len(set(cues)) > 1


class ScriptedModel:
    """Stands in for a model: remembers the cue in the state it returns, answers it if masked.

    Records every `predict` call's keyword arguments.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def predict(self, obs: np.ndarray, **kwargs: Any) -> tuple[np.ndarray, Any]:
        self.calls.append(kwargs)
        state = kwargs.get("state")
        if kwargs.get("episode_start", np.ones(1, bool))[0] or state is None:
            state = (np.array([np.argmax(obs[:-1])]),)
        mask = kwargs.get("action_masks")
        answer_now = obs[-1] == 1 if mask is None else not mask[WAIT]
        return np.array(int(state[0][0]) + 1 if answer_now else WAIT), state


@pytest.mark.parametrize("algo", ALGOS)
def test_evaluate_carries_state_and_masks_as_each_algorithm_needs(algo: str) -> None:
    model = ScriptedModel()
    result = evaluate(model, algo, CONFIG, episodes=8)  # type: ignore[arg-type]
    assert len(model.calls) == 8 * (CONFIG.delay + 2)
    starts = [bool(call["episode_start"][0]) for call in model.calls if "episode_start" in call]
    if algo in bench.RECURRENT:
        assert starts == ([True] + [False] * (CONFIG.delay + 1)) * 8
        assert (result.success_rate, result.mean_return, result.illegal_rate) == (1.0, 1.0, 0.0)
    else:  # no state carried: the scripted model re-reads the blank observation as cue 0
        assert starts == [] and all("state" not in call for call in model.calls)
        assert result.success_rate == CONFIG.memoryless_bound
    assert all(call["deterministic"] for call in model.calls)
    assert all(("action_masks" in call) == (algo in bench.MASKED) for call in model.calls)


def tiny_settings(**kwargs: Any) -> RunSettings:
    hyperparams = Hyperparams(
        n_envs=2, n_steps=16, batch_size=16, n_epochs=1, net_arch=(8,), lstm_hidden_size=8
    )
    return RunSettings(
        **{"timesteps": 64, "eval_episodes": 2, "hyperparams": hyperparams, **kwargs}
    )


def test_run_benchmark_records_each_run_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tiny_settings()
    rows = run_benchmark(settings, [0], tmp_path, command="python -m x --tiny", quiet=True)
    jsonl = tmp_path / "memory_and_masks.jsonl"
    recorded = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(row["algo"], row["seed"]) for row in recorded] == [(algo, 0) for algo in ALGOS]
    assert recorded == json.loads(json.dumps(rows))
    for row in recorded:
        assert row["episodes"] == 2 and row["trained_timesteps"] >= 64
        assert 0 <= row["success_rate"] <= 1 and row["torch_threads"] == torch.get_num_threads()
        assert row["settings"] == settings.record()
    report = (tmp_path / "memory_and_masks.md").read_text()
    assert (
        "python -m x --tiny" in report
        and "Runs: 3 of the 3 the command asks for, 64 training timesteps" in report
    )
    assert "CueThenActEnv(n_cues=4, delay=4, n_actions=32)" in report
    assert all(f"| {algo} | 1 |" in report for algo in ALGOS)

    trained: list[tuple[str, int]] = []
    real = bench.train_and_evaluate

    def spy(algo: str, seed: int, settings: RunSettings) -> dict[str, Any]:
        trained.append((algo, seed))
        return real(algo, seed, settings)

    monkeypatch.setattr(bench, "train_and_evaluate", spy)
    again = run_benchmark(settings, [0, 1], tmp_path, algos=["maskable_ppo"], quiet=True)
    assert trained == [("maskable_ppo", 1)]
    assert len(again) == 4 and len(jsonl.read_text().splitlines()) == 4
    report = (tmp_path / "memory_and_masks.md").read_text()
    assert "Runs: 2 of the 2 the command asks for (and 2 more recorded)" in report
    assert "| maskable_recurrent_ppo − maskable_ppo | - | - | - | - |" in report
    assert "| maskable_ppo | 2 |" in report

    with pytest.raises(ValueError, match="other settings"):
        run_benchmark(tiny_settings(eval_episodes=4), [0], tmp_path, quiet=True)
    with pytest.raises(ValueError, match="unknown"):
        run_benchmark(settings, [0], tmp_path, algos=["ppo"], quiet=True)


def test_the_report_pairs_the_reference_with_each_algorithm() -> None:
    settings = tiny_settings()
    rows = [
        {
            "algo": algo,
            "seed": seed,
            "episodes": 2,
            "success_rate": value,
            "mean_return": value,
            "illegal_rate": 0.0,
            "train_episodes": 10,
            "train_illegal_endings": 5,
            "train_seconds": 1.0,
            "eval_seconds": 0.1,
            "torch_threads": 1,
        }
        for seed in (0, 1, 2)
        for algo, value in zip(ALGOS, (1.0, 0.0, 0.25 + 0.05 * seed), strict=True)
    ]
    report = bench.render(rows, settings, "cmd", {(r["algo"], r["seed"]) for r in rows})
    assert "| maskable_recurrent_ppo − recurrent_ppo | 3 | +1.00 ± 0.00 |" in report
    assert "| maskable_recurrent_ppo − maskable_ppo | 3 | +0.70 ± 0.12 |" in report
    assert "| maskable_recurrent_ppo | 3 | 1.00 ± 0.00 |" in report


def test_main_runs_from_the_command_line(tmp_path: Path) -> None:
    argv = ["--timesteps", "64", "--seeds", "0", "--algos", "maskable_ppo"]
    argv += ["--eval-episodes", "4", "--out", str(tmp_path), "--quiet"]
    text = bench.main(argv)
    assert "Runs: 1 of the 1 the command asks for" in text
    assert "python -m benchmarks.memory_and_masks --timesteps 64" in text
    assert text == (tmp_path / "memory_and_masks.md").read_text()
