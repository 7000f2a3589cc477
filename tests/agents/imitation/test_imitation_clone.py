"""Behaviour cloning (`agents.imitation.clone`) of a scripted expert that needs memory."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from imitation_helpers import ENV_ID, MemoryEnv, ScriptedExpert

from agents.imitation.clone import (
    CLONE_ALGOS,
    CloneReport,
    clone,
    demonstrations,
    split_episodes,
)
from agents.imitation.clone import main as clone_main
from agents.imitation.dataset import load, record
from agents.zoo.policy import load_sb3_policy
from esper_env.wrappers import FlatMaskedActions

DATASET_ID = "memory/scripted-v0"
EPISODES = 48
FLAT_WRAPPER = "  env_wrapper: esper_env.wrappers.FlatMaskedActions\n"


@pytest.fixture(scope="module")
def memory_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Minari root holding `EPISODES` episodes of the scripted expert on `MemoryEnv`."""
    root = tmp_path_factory.mktemp("minari")
    env = gym.make(ENV_ID)
    record(
        DATASET_ID,
        env,
        ScriptedExpert(),
        range(EPISODES),
        root=root,
        policy_name="scripted",
        author="esper tests",
        author_email="tests@example.invalid",
        code_permalink="https://example.invalid/esper",
    )
    env.close()
    return root


def hyperparams_file(folder: Path, algo: str) -> Path:
    """A small section for `ENV_ID`; the maskable one acts through `FlatMaskedActions`."""
    path = folder / f"{algo}.yml"
    wrapper = FLAT_WRAPPER if algo == "maskable_recurrent_ppo" else ""
    path.write_text(
        f"{ENV_ID}:\n  n_timesteps: 100\n  policy: MlpLstmPolicy\n{wrapper}"
        "  n_steps: 20\n  batch_size: 20\n"
        "  policy_kwargs:\n    net_arch: [32]\n    lstm_hidden_size: 32\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def clones(memory_root: Path) -> Callable[[str], CloneReport]:
    """The expert cloned onto an algorithm (once per algorithm), saved under the root."""
    done: dict[str, CloneReport] = {}

    def cloned(algo: str) -> CloneReport:
        if algo not in done:
            done[algo] = clone(
                DATASET_ID,
                algo,
                root=memory_root,
                epochs=100,
                lr=3e-2,
                held_out_fraction=0.25,
                seed=0,
                hyperparams_path=hyperparams_file(memory_root, algo),
                out=memory_root / algo / "clone.zip",
            )
        return done[algo]

    return cloned


@pytest.fixture(params=CLONE_ALGOS)
def cloned(request: pytest.FixtureRequest, clones: Callable[[str], CloneReport]) -> CloneReport:
    """The clone of each algorithm."""
    return clones(request.param)


def test_clone_imitates_an_expert_with_memory(cloned: CloneReport) -> None:
    assert cloned.flat_actions == (cloned.algo == "maskable_recurrent_ppo")
    assert cloned.held_out_accuracy is not None and cloned.held_out_accuracy >= 0.95
    assert cloned.train_accuracy >= 0.95
    assert cloned.held_out_accuracy_per_dimension is not None
    assert min(cloned.held_out_accuracy_per_dimension) >= 0.95
    assert cloned.epoch_losses[-1] < cloned.epoch_losses[0]
    # The split is by episode: disjoint, complete, a quarter held out.
    assert len(cloned.held_out_seeds) == EPISODES // 4
    assert sorted(cloned.train_seeds + cloned.held_out_seeds) == list(range(EPISODES))
    assert cloned.held_out_steps == 10 * len(cloned.held_out_seeds)


def test_the_report_is_saved_beside_the_model(cloned: CloneReport) -> None:
    assert cloned.model_path is not None and Path(cloned.model_path).is_file()
    assert cloned.report_path == str(Path(cloned.model_path).with_suffix(".json"))
    saved = json.loads(Path(cloned.report_path).read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(cloned.to_dict()))
    assert saved["dataset_id"] == DATASET_ID and saved["epochs"] == 100


def test_the_saved_clone_loads_without_trust_and_acts_as_the_expert(cloned: CloneReport) -> None:
    assert cloned.model_path is not None
    env = MemoryEnv(episode_steps=10)
    policy = load_sb3_policy(cloned.algo, cloned.model_path, env)  # trust is off
    same = steps = 0
    for seed in range(100, 105):
        policy.reset(seed)
        obs, info = env.reset(seed=seed)
        done = False
        while not done:
            action = policy.act(obs, info)
            same += int(np.array_equal(action, env.expert_action()))
            steps += 1
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
    assert same / steps >= 0.95


def test_a_maskable_clone_never_chooses_a_masked_action(
    clones: Callable[[str], CloneReport],
) -> None:
    cloned = clones("maskable_recurrent_ppo")
    assert cloned.model is not None
    model = cloned.model
    n_actions = int(model.action_space.n)
    rng = np.random.default_rng(0)
    n_seq, steps = 64, 10
    for deterministic in (True, False):
        state = None
        starts = np.ones(n_seq, dtype=bool)
        for _ in range(steps):
            obs = np.eye(4, dtype=np.float32)[rng.integers(4, size=n_seq)]
            masks = rng.random((n_seq, n_actions)) < 0.3
            masks[np.arange(n_seq), rng.integers(n_actions, size=n_seq)] = True
            actions, state = model.predict(
                obs,
                state=state,
                episode_start=starts,
                deterministic=deterministic,
                action_masks=masks,
            )
            starts = np.zeros(n_seq, dtype=bool)
            assert masks[np.arange(n_seq), actions].all()


def test_forbidden_fields_are_made_legal_and_flat_actions_encoded(memory_root: Path) -> None:
    dataset = load(DATASET_ID, root=memory_root)
    # Per dimension: the expert's WAIT is [0, 0, 0, 0] whatever slot 0's legality.
    demos = demonstrations(dataset, masked=True, flat_actions=None)
    assert demos.masks is not None and demos.replaced_fields > 0 and demos.left_out == 0
    starts = np.concatenate([[0], np.cumsum(dataset.action_space.nvec)[:-1]])
    for actions, masks in zip(demos.actions, demos.masks, strict=True):
        assert masks[np.arange(len(actions))[:, None], starts + actions].all()
    # Flat: every expert action is legal under the exact flat mask.
    codec = FlatMaskedActions(MemoryEnv())
    flat = demonstrations(dataset, masked=True, flat_actions=codec)
    assert flat.masks is not None and flat.replaced_fields == 0 and flat.left_out == 0
    episode = dataset[0]
    assert flat.actions[0].tolist() == [codec.encode(a) for a in episode.actions]
    # Unmasked: the actions as recorded.
    plain = demonstrations(dataset, masked=False, flat_actions=None)
    assert plain.masks is None and np.array_equal(plain.actions[0], episode.actions)


def test_the_split_is_by_episode_and_deterministic() -> None:
    train, held = split_episodes(10, 0.2, seed=3)
    assert (train, held) == split_episodes(10, 0.2, seed=3)
    assert len(held) == 2 and sorted(train + held) == list(range(10))
    assert split_episodes(10, 0.0, seed=3) == (list(range(10)), [])
    assert len(split_episodes(3, 0.01, seed=0)[1]) == 1  # a positive share holds one out
    with pytest.raises(ValueError, match="none to train on"):
        split_episodes(1, 0.5, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_episodes(10, 1.0, seed=0)


def test_clone_refuses_an_algorithm_without_memory(memory_root: Path) -> None:
    with pytest.raises(ValueError, match="recurrent algos"):
        clone(DATASET_ID, "maskable_ppo", root=memory_root)


def test_the_command_line_clones_and_saves(
    memory_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = clone_main(
        [
            "--dataset-id",
            DATASET_ID,
            "--root",
            str(memory_root),
            "--algo",
            "recurrent_ppo",
            "--out",
            str(tmp_path / "cli.zip"),
            "--epochs",
            "1",
            "--held-out",
            "0.1",
            "-conf",
            str(hyperparams_file(tmp_path, "recurrent_ppo")),
        ]
    )
    assert (tmp_path / "cli.zip").is_file() and (tmp_path / "cli.json").is_file()
    assert report.epochs == 1 and len(report.held_out_seeds) == 5
    assert "cloned memory/scripted-v0 onto recurrent_ppo" in capsys.readouterr().out
