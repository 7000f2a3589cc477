"""Recorded Esper episodes as Minari datasets (`agents.imitation.dataset`), and a clone of one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from zoo_helpers import as_key_values

from agents.imitation import dataset as ds
from agents.imitation.clone import clone
from agents.policies import Policy, make_policy
from agents.zoo.policy import load_sb3_policy
from esper_env.envs.presets import ENV_SEMANTICS_VERSION
from esper_env.observation import OBS_VERSION

ENV_ID = "Esper-CIFAR-Mini-v0"
DATASET_ID = "esper/mini-heuristic-v0"
CREDITS: dict[str, Any] = {
    "author": "esper tests",
    "author_email": "tests@example.invalid",
    "code_permalink": "https://example.invalid/esper",
}


@pytest.fixture(scope="module")
def collected(
    tmp_path_factory: pytest.TempPathFactory, board_kwargs: dict[str, Any]
) -> tuple[Path, ds.RecordResult, ds.RecordResult]:
    """Seeds 1 and 2 collected, then 1, 2 and 3 through the command line (a resume)."""
    root = tmp_path_factory.mktemp("minari")
    first = ds.collect(DATASET_ID, ENV_ID, board_kwargs, "heuristic", [1, 2], root=root, **CREDITS)
    second = ds.main(
        [
            "collect",
            "--env",
            ENV_ID,
            "--env-kwargs",
            *as_key_values(board_kwargs),
            "--policy",
            "heuristic",
            "--episodes",
            "3",
            "--first-seed",
            "1",
            "--dataset-id",
            DATASET_ID,
            "--root",
            str(root),
            "--author",
            CREDITS["author"],
            "--author-email",
            CREDITS["author_email"],
            "--code-permalink",
            CREDITS["code_permalink"],
        ]
    )
    return root, first, second


def direct_run(env: gym.Env, seed: int) -> dict[str, Any]:
    """One heuristic episode as `collect` runs it, recorded here without the module."""
    policy = make_policy("heuristic", env)
    policy.reset(seed)
    obs, info = env.reset(seed=seed)
    run: dict[str, list[Any]] = {"obs": [obs], "infos": [info], "actions": [], "rewards": []}
    done = False
    while not done:
        action = policy.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        run["actions"].append(action)
        run["obs"].append(obs)
        run["infos"].append(info)
        run["rewards"].append(reward)
        done = terminated or truncated
    return {**run, "terminated": terminated, "truncated": truncated}


def test_an_interrupted_collection_resumes_without_recollecting(collected) -> None:
    root, first, second = collected
    assert (first.recorded, first.skipped) == ([1, 2], [])
    assert (second.recorded, second.skipped) == ([3], [1, 2])
    dataset = ds.load(DATASET_ID, root=root)
    assert ds.episode_seeds(dataset) == [1, 2, 3]
    assert dataset.total_episodes == 3


def test_the_dataset_holds_the_episodes_of_a_direct_run(collected, board_kwargs) -> None:
    root, _, _ = collected
    dataset = ds.load(DATASET_ID, root=root)
    env = gym.make(ENV_ID, **board_kwargs)
    for episode, seed in zip(dataset.iterate_episodes(), [1, 2, 3], strict=True):
        run = direct_run(env, seed)
        np.testing.assert_array_equal(episode.observations, np.stack(run["obs"]))
        np.testing.assert_array_equal(episode.actions, np.stack(run["actions"]))
        np.testing.assert_array_equal(episode.rewards, np.asarray(run["rewards"]))
        assert episode.terminations.tolist() == [False] * (len(run["rewards"]) - 1) + [
            run["terminated"]
        ]
        assert episode.truncations[-1] == run["truncated"]
        assert sorted(episode.infos) == sorted(ds.INFO_KEYS)
        for key in ("action_mask", "op_slot_mask"):
            expected = np.stack([info[key] for info in run["infos"]])
            np.testing.assert_array_equal(episode.infos[key], expected)
            assert episode.infos[key].dtype == np.bool_
        assert episode.infos["seed"].tolist() == [seed] * len(run["infos"])
    env.close()


def test_the_dataset_recovers_its_env_and_names_policy_and_versions(
    collected, board_kwargs
) -> None:
    root, _, _ = collected
    dataset = ds.load(DATASET_ID, root=root)
    made = gym.make(ENV_ID, **board_kwargs)
    recovered = dataset.recover_environment()
    assert recovered.spec is not None and made.spec is not None
    assert recovered.spec.id == ENV_ID
    assert recovered.spec.kwargs == made.spec.kwargs
    np.testing.assert_array_equal(recovered.reset(seed=1)[0], dataset[0].observations[0])
    recovered.close()
    made.close()
    metadata = dataset.storage.metadata
    assert metadata["algorithm_name"] == "heuristic"
    assert metadata[ds.POLICY_KEY] == "heuristic"
    assert metadata[ds.SEMANTICS_KEY] == ENV_SEMANTICS_VERSION
    assert metadata[ds.OBS_VERSION_KEY] == OBS_VERSION
    assert metadata[ds.FORMAT_KEY] == ds.DATASET_FORMAT_VERSION
    ds.check_versions(dataset)


class Interrupting:
    """A policy that acts as `inner` until, at step `at` of episode `seed`, Ctrl-C comes."""

    def __init__(self, inner: Policy, seed: int, at: int) -> None:
        self.inner, self.seed, self.at = inner, seed, at
        self._episode: int | None = None
        self._step = 0

    def reset(self, seed: int | None = None) -> None:
        """Starts counting the episode's steps."""
        self._episode, self._step = seed, 0
        self.inner.reset(seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The inner action, or a KeyboardInterrupt at the chosen step."""
        if self._episode == self.seed and self._step == self.at:
            raise KeyboardInterrupt
        self._step += 1
        return self.inner.act(obs, info)


def test_an_interrupt_loses_only_the_running_episode(
    collected, board_kwargs, tmp_path: Path
) -> None:
    root, _, _ = collected
    env = gym.make(ENV_ID, **board_kwargs)
    policy = Interrupting(make_policy("heuristic", env), seed=2, at=3)
    with pytest.raises(KeyboardInterrupt):
        ds.record(
            "esper/interrupted-v0",
            env,
            policy,
            [1, 2],
            root=tmp_path,
            policy_name="heuristic",
            **CREDITS,
        )
    env.close()
    assert ds.episode_seeds(ds.load("esper/interrupted-v0", root=tmp_path)) == [1]
    again = ds.collect(
        "esper/interrupted-v0", ENV_ID, board_kwargs, "heuristic", [1, 2], root=tmp_path, **CREDITS
    )
    assert (again.recorded, again.skipped) == ([2], [1])
    complete = ds.load(DATASET_ID, root=root)
    for ours, theirs in zip(again.dataset.iterate_episodes(), complete, strict=False):
        np.testing.assert_array_equal(ours.observations, theirs.observations)
        np.testing.assert_array_equal(ours.actions, theirs.actions)


def test_a_dataset_is_extended_only_with_the_same_policy(collected, board_kwargs) -> None:
    root, _, _ = collected
    with pytest.raises(ValueError, match="policy 'heuristic', not 'noop'"):
        ds.collect(DATASET_ID, ENV_ID, board_kwargs, "noop", [4], root=root, **CREDITS)
    assert ds.episode_seeds(ds.load(DATASET_ID, root=root)) == [1, 2, 3]


def test_the_root_is_never_implicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ds.ROOT_VARIABLE, raising=False)
    with pytest.raises(ValueError, match="no dataset root"):
        ds.load(DATASET_ID, root=None)


def test_an_esper_dataset_clones_onto_the_flat_maskable_policy(collected, tmp_path: Path) -> None:
    root, _, _ = collected
    report = clone(
        DATASET_ID,
        "maskable_recurrent_ppo",
        root=root,
        epochs=2,
        held_out_fraction=0.34,
        out=tmp_path / "clone.zip",
    )
    assert report.flat_actions  # the Mini section acts through FlatMaskedActions
    assert report.episodes == 3 and len(report.held_out_seeds) == 1
    assert report.held_out_accuracy is not None and 0.0 <= report.held_out_accuracy <= 1.0
    assert report.model_path is not None
    dataset = ds.load(DATASET_ID, root=root)
    env = dataset.recover_environment()
    policy = load_sb3_policy("maskable_recurrent_ppo", report.model_path, env)
    policy.reset(0)
    obs, info = env.reset(seed=0)
    action = policy.act(obs, info)
    assert info["op_slot_mask"][action[0], action[1]]  # the decoded action is legal
    env.close()
