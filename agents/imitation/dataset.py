"""Records a policy's episodes on an Esper id as a Minari dataset, resumably.

Example (one command line):
    python -m agents.imitation.dataset collect --env Esper-CIFAR-Mini-v0
        --policy heuristic --episodes 200 --first-seed 0
        --dataset-id esper/mini-heuristic-v0 --root datasets

One episode per seed: the policy is reset with the seed, then the env (`env.reset(seed=)`),
as `agents.rollout.run_episode` does, so an episode can be replayed from its seed.

What a dataset holds (Minari's format, its default HDF5 storage):

* per episode, as Minari's `EpisodeData`: `observations` (one more than the steps: the
  reset's, then each step's), `actions` (the env's own `MultiDiscrete` actions), `rewards`,
  `terminations`, `truncations`, and `infos` with, like the observations, one entry for
  the reset and one per step: `action_mask` (the per-dimension mask, bool), `op_slot_mask`
  (the exact legal (op, slot) pairs, bool `(len(Op), slots)`) and `seed` (the episode's
  seed, the same in every entry). So `infos[key][t]` is what the policy saw when it chose
  `actions[t]`. The episode's metadata also holds its `seed` (Minari's own key).
* the env's spec, kwargs included, so `dataset.recover_environment()` makes the env again;
* metadata: Minari's `algorithm_name` (the policy's name) and `esper_metadata`'s keys: the
  policy's name, Esper's env semantics version and observation version, and the format
  version of this layout.

Resuming: `collect` on an existing dataset skips every seed it already holds and appends
the others; each episode is on disk before the next starts (Ctrl-C is held back while an
episode is written), so an interrupt loses at most the running episode. A dataset is
only extended with episodes of the same env (id and kwargs), policy and versions.

Where datasets live: always an explicit root, `root=` (`--root`) or the
`MINARI_DATASETS_PATH` environment variable, never Minari's default in the home folder.
Minari 0.5 finds its root only through that variable, so the functions here set it while
they call Minari (and restore it after): they are not thread-safe.

Minari's `DataCollector` wrapper is not used: it needs JAX (`minari[create]`) to append
steps. The recorder builds Minari's `EpisodeBuffer`s itself and writes them with
`create_dataset_from_buffers` and `MinariDataset.update_dataset_from_buffer`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

import esper_env  # noqa: F401  (registers the envs)
from agents.cli import StoreDict, run_cli
from agents.extras import require_extra
from agents.policies import POLICY_NAMES, Policy
from agents.rollout import load_policy
from esper_env.envs.presets import ENV_SEMANTICS_VERSION
from esper_env.observation import OBS_VERSION

require_extra("minari", "agents.imitation")
import minari  # noqa: E402
from minari.data_collector import EpisodeBuffer  # noqa: E402

#: Version of this module's dataset layout (the info keys and their meaning).
DATASET_FORMAT_VERSION = 1

#: The step infos a dataset keeps, one entry per observation.
INFO_KEYS = ("action_mask", "op_slot_mask", "seed")

#: Metadata keys of an Esper dataset.
POLICY_KEY = "esper_policy"
SEMANTICS_KEY = "esper_env_semantics_version"
OBS_VERSION_KEY = "esper_obs_version"
FORMAT_KEY = "esper_dataset_format"

#: The environment variable through which Minari finds its datasets.
ROOT_VARIABLE = "MINARI_DATASETS_PATH"


def esper_metadata(policy_name: str) -> dict[str, Any]:
    """The Esper metadata of a dataset recorded now with `policy_name`."""
    return {
        POLICY_KEY: policy_name,
        SEMANTICS_KEY: ENV_SEMANTICS_VERSION,
        OBS_VERSION_KEY: OBS_VERSION,
        FORMAT_KEY: DATASET_FORMAT_VERSION,
    }


@contextlib.contextmanager
def datasets_root(root: str | Path | None) -> Iterator[Path]:
    """Points Minari at `root` (or `MINARI_DATASETS_PATH`) for the duration of the block.

    Args:
        root: Folder of the datasets; None takes `MINARI_DATASETS_PATH`.

    Yields:
        The root in use.

    Raises:
        ValueError: No `root` and no `MINARI_DATASETS_PATH` (Minari's default, in the
            home folder, is never used).
    """
    previous = os.environ.get(ROOT_VARIABLE)
    if root is None:
        if not previous:
            raise ValueError(
                f"no dataset root: pass root= (--root DIR) or set {ROOT_VARIABLE}; the "
                "home folder's ~/.minari is never used"
            )
        root = previous
    os.environ[ROOT_VARIABLE] = str(root)
    try:
        yield Path(root)
    finally:
        if previous is None:
            del os.environ[ROOT_VARIABLE]
        else:
            os.environ[ROOT_VARIABLE] = previous


def dataset_exists(dataset_id: str, *, root: str | Path | None) -> bool:
    """Whether `root` holds a dataset named `dataset_id`."""
    with datasets_root(root) as folder:
        return (folder / dataset_id / "data").is_dir()


def load(dataset_id: str, *, root: str | Path | None) -> minari.MinariDataset:
    """Opens a local dataset (never downloads one).

    Raises:
        FileNotFoundError: `root` holds no such dataset.
        ValueError: No root (see `datasets_root`).
    """
    with datasets_root(root):
        return minari.load_dataset(dataset_id, download=False)


def episode_seeds(dataset: minari.MinariDataset) -> list[int]:
    """The seed of each episode of `dataset`, in its order (read from the episodes' metadata)."""
    metadata = dataset.storage.get_episode_metadata(dataset.episode_indices)
    return [int(entry["seed"]) for entry in metadata]


def check_versions(dataset: minari.MinariDataset) -> None:
    """Refuses a dataset recorded under other env semantics, observations or layout.

    Raises:
        ValueError: A version differs from this Esper's (or is missing: not an Esper dataset).
    """
    metadata = dataset.storage.metadata
    expected = {
        SEMANTICS_KEY: ENV_SEMANTICS_VERSION,
        OBS_VERSION_KEY: OBS_VERSION,
        FORMAT_KEY: DATASET_FORMAT_VERSION,
    }
    wrong = [
        f"{key} {metadata.get(key)!r} (this Esper: {value})"
        for key, value in expected.items()
        if metadata.get(key) != value
    ]
    if wrong:
        raise ValueError(
            f"dataset {dataset.spec.dataset_id} was recorded by another Esper: "
            + ", ".join(wrong)
            + "; record it again with agents.imitation.dataset collect"
        )


def record_episode(env: gym.Env, policy: Policy, seed: int) -> EpisodeBuffer:
    """Runs one episode of `policy` from `seed` and returns it as a Minari episode buffer.

    Args:
        env: An env whose infos carry `action_mask` and `op_slot_mask` (every Esper env).
        policy: Reset with `seed` first, then the env is.
        seed: The episode's seed.
    """
    policy.reset(seed)
    obs, info = env.reset(seed=seed)
    observations = [obs]
    infos: list[dict[str, Any]] = [info]
    actions: list[np.ndarray] = []
    rewards: list[float] = []
    terminations: list[bool] = []
    truncations: list[bool] = []
    done = False
    while not done:
        action = np.asarray(policy.act(obs, info))
        obs, reward, terminated, truncated, info = env.step(action)
        actions.append(action)
        observations.append(obs)
        infos.append(info)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        done = terminated or truncated
    kept = {
        "action_mask": np.stack([np.asarray(i["action_mask"], dtype=bool) for i in infos]),
        "op_slot_mask": np.stack([np.asarray(i["op_slot_mask"], dtype=bool) for i in infos]),
        "seed": np.full(len(infos), seed, dtype=np.int64),
    }
    return EpisodeBuffer(
        seed=seed,
        observations=np.stack(observations),
        actions=np.stack(actions),
        rewards=np.asarray(rewards, dtype=np.float64),
        terminations=np.asarray(terminations, dtype=bool),
        truncations=np.asarray(truncations, dtype=bool),
        infos=kept,
    )


@dataclass(frozen=True)
class RecordResult:
    """What a `record` or `collect` call did.

    Attributes:
        dataset: The dataset, with every episode on disk.
        recorded: Seeds of the episodes this call ran and added, in order.
        skipped: Seeds asked for that the dataset already held.
    """

    dataset: minari.MinariDataset
    recorded: list[int]
    skipped: list[int]


def record(
    dataset_id: str,
    env: gym.Env,
    policy: Policy,
    seeds: Sequence[int],
    *,
    root: str | Path | None,
    policy_name: str,
    author: str | None = None,
    author_email: str | None = None,
    code_permalink: str | None = None,
    on_episode: Callable[[int, EpisodeBuffer], None] | None = None,
) -> RecordResult:
    """Records one episode of `policy` per seed into `dataset_id`, creating or extending it.

    Seeds the dataset already holds are skipped; each new episode is written before the
    next starts. An existing dataset without episodes (a creation interrupted before its
    first episode) is made again.

    Args:
        dataset_id: Minari id, `(namespace/)name-v<version>`.
        env: The env, made with `gym.make` (its spec, kwargs included, is recorded).
        policy: The acting policy.
        seeds: One episode per seed, in order (repeats are recorded once).
        root: Folder of the datasets (None: `MINARI_DATASETS_PATH`).
        policy_name: The policy's name, recorded in the metadata.
        author: Minari's `author` metadata (Minari warns when it is missing).
        author_email: Minari's `author_email` metadata (likewise).
        code_permalink: Minari's `code_permalink` metadata (likewise).
        on_episode: Called with each new episode's seed and buffer once it is on disk.

    Raises:
        ValueError: No root, an env without a spec, or an existing dataset of another
            env (id or kwargs), policy or Esper version.
    """
    if env.spec is None:
        raise ValueError("record needs an env made with gym.make (its spec is recorded)")
    with datasets_root(root) as folder:
        dataset = None
        if (folder / dataset_id / "data").is_dir():
            dataset = minari.load_dataset(dataset_id, download=False)
            if dataset.total_episodes == 0:
                minari.delete_dataset(dataset_id)
                dataset = None
        if dataset is None:
            dataset = _create(dataset_id, env, policy_name, author, author_email, code_permalink)
        else:
            _check_extendable(dataset, env.spec, policy_name)
        held = set(episode_seeds(dataset))
        recorded: list[int] = []
        skipped: list[int] = []
        for seed in seeds:
            if seed in held:
                skipped.append(seed)
                continue
            buffer = record_episode(env, policy, seed)
            with _interrupts_deferred():
                dataset.update_dataset_from_buffer([buffer])
            held.add(seed)
            recorded.append(seed)
            if on_episode is not None:
                on_episode(seed, buffer)
    return RecordResult(dataset=dataset, recorded=recorded, skipped=skipped)


def collect(
    dataset_id: str,
    env_id: str,
    env_kwargs: dict[str, Any] | None,
    policy_name: str,
    seeds: Sequence[int],
    *,
    root: str | Path | None,
    author: str | None = None,
    author_email: str | None = None,
    code_permalink: str | None = None,
    trust: bool = False,
    on_episode: Callable[[int, EpisodeBuffer], None] | None = None,
) -> RecordResult:
    """Records `policy_name`'s episodes on an Esper id (see `record`), resuming a dataset.

    Args:
        dataset_id: Minari id, `(namespace/)name-v<version>`.
        env_id: Registered Esper id.
        env_kwargs: `gym.make` keyword arguments (recorded in the env spec).
        policy_name: A baseline of `agents.policies.POLICY_NAMES` or `ALGO:PATH` (a
            trained agent, loaded without running code from it unless `trust`).
        seeds: One episode per seed.
        root: Folder of the datasets (None: `MINARI_DATASETS_PATH`).
        author: Minari's `author` metadata.
        author_email: Minari's `author_email` metadata.
        code_permalink: Minari's `code_permalink` metadata.
        trust: For `ALGO:PATH`: unpickle the agent's file as SB3 does (runs its code).
        on_episode: Called with each new episode's seed and buffer once it is on disk.

    Raises:
        ValueError: Unknown policy, no root, or an existing dataset that differs (see `record`).
    """
    env = gym.make(env_id, **(env_kwargs or {}))
    try:
        env.unwrapped.set_policy_name(f"{policy_name} (agents.imitation.dataset)")
        policy = load_policy(policy_name, env, trust=trust)
        return record(
            dataset_id,
            env,
            policy,
            seeds,
            root=root,
            policy_name=policy_name,
            author=author,
            author_email=author_email,
            code_permalink=code_permalink,
            on_episode=on_episode,
        )
    finally:
        env.close()


def _create(
    dataset_id: str,
    env: gym.Env,
    policy_name: str,
    author: str | None,
    author_email: str | None,
    code_permalink: str | None,
) -> minari.MinariDataset:
    """A new, empty dataset of `env` with the Esper metadata (the root is already set)."""
    assert env.spec is not None  # checked by record
    dataset = minari.create_dataset_from_buffers(
        dataset_id,
        [],
        env=env,
        eval_env=env.spec,
        algorithm_name=policy_name,
        author=author,
        author_email=author_email,
        code_permalink=code_permalink,
        description=(
            f"Episodes of the {policy_name!r} policy on {env.spec.id}, recorded by "
            "agents.imitation.dataset: infos hold action_mask (per dimension), "
            "op_slot_mask (exact) and seed, one entry per observation"
        ),
    )
    dataset.storage.update_metadata(esper_metadata(policy_name))
    return dataset


def _same_env(spec: EnvSpec, other: EnvSpec) -> bool:
    """Whether two specs make the same env: same id and kwargs (compared as JSON reads them)."""
    first, second = EnvSpec.from_json(spec.to_json()), EnvSpec.from_json(other.to_json())
    return first.id == second.id and first.kwargs == second.kwargs


def _check_extendable(dataset: minari.MinariDataset, spec: EnvSpec, policy_name: str) -> None:
    """Refuses to extend a dataset of another env, policy or Esper version.

    Raises:
        ValueError: What differs, named.
    """
    check_versions(dataset)
    recorded_policy = dataset.storage.metadata.get(POLICY_KEY)
    problems = []
    if recorded_policy != policy_name:
        problems.append(f"it holds episodes of policy {recorded_policy!r}, not {policy_name!r}")
    if dataset.env_spec is None or not _same_env(dataset.env_spec, spec):
        recorded = None if dataset.env_spec is None else dataset.env_spec.kwargs
        problems.append(
            f"it was recorded on {getattr(dataset.env_spec, 'id', None)} with kwargs "
            f"{recorded}, not {spec.id} with {spec.kwargs}"
        )
    if problems:
        raise ValueError(
            f"cannot extend dataset {dataset.spec.dataset_id}: "
            + "; ".join(problems)
            + " (use another --dataset-id)"
        )


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Holds Ctrl-C back while the block runs (an episode's write), then delivers it.

    Only the main thread receives signals; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)


def build_parser() -> argparse.ArgumentParser:
    """The command line: `collect` (the only command)."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.imitation.dataset", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "collect",
        help="record (or resume recording) one episode per seed",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run.add_argument("--env", default="Esper-CIFAR-Mini-v0", help="registered env id")
    run.add_argument(
        "--env-kwargs",
        nargs="+",
        action=StoreDict,
        default=None,
        metavar="KEY:VALUE",
        help="env keyword arguments; values are YAML, dotted keys nest: train.batch_size:32",
    )
    run.add_argument(
        "--policy", default="heuristic", help=f"one of {POLICY_NAMES} or ALGO:PATH (a saved agent)"
    )
    run.add_argument("--trust-agent", action="store_true", help="for ALGO:PATH: run its pickles")
    run.add_argument("--episodes", type=int, required=True, help="number of seeds")
    run.add_argument("--first-seed", type=int, default=0, help="seeds are S, S+1, ...")
    run.add_argument("--dataset-id", required=True, help="Minari id, e.g. esper/mini-heuristic-v0")
    run.add_argument(
        "--root", type=Path, default=None, help=f"dataset folder (default: ${ROOT_VARIABLE})"
    )
    run.add_argument("--author", default=None, help="Minari's author metadata")
    run.add_argument("--author-email", default=None, help="Minari's author_email metadata")
    run.add_argument("--code-permalink", default=None, help="Minari's code_permalink metadata")
    return parser


def main(argv: list[str] | None = None) -> RecordResult:
    """Runs the command line; returns what it recorded.

    Raises:
        ValueError: `--episodes` below 1, or what `collect` raises.
    """
    args = build_parser().parse_args(argv)
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))

    def report(seed: int, buffer: EpisodeBuffer) -> None:
        print(
            f"seed {seed}: {len(buffer.rewards)} steps, return {float(np.sum(buffer.rewards)):.3f}",
            flush=True,
        )

    result = collect(
        args.dataset_id,
        args.env,
        args.env_kwargs,
        args.policy,
        seeds,
        root=args.root,
        author=args.author,
        author_email=args.author_email,
        code_permalink=args.code_permalink,
        trust=args.trust_agent,
        on_episode=report,
    )
    dataset = result.dataset
    print(
        f"{dataset.spec.dataset_id}: {dataset.total_episodes} episodes, "
        f"{dataset.total_steps} steps ({len(result.recorded)} recorded now, "
        f"{len(result.skipped)} already there) in {dataset.storage.data_path.parent}"
    )
    return result


def cli() -> None:
    """The console entry point (`python -m agents.imitation.dataset`)."""
    run_cli(main, "agents.imitation.dataset")


if __name__ == "__main__":
    cli()
