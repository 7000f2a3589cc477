"""Behaviour cloning of a recorded dataset onto the zoo's recurrent policies, saved as SB3 agents.

Example:
    python -m agents.imitation.clone --dataset-id esper/mini-heuristic-v0 --root datasets
        --algo maskable_recurrent_ppo --out clone.zip

The policy is the very one the zoo trains: the algorithm is built from its hyperparameter
section for the dataset's env id (`agents.zoo.hyperparams.load_hyperparams`, wrappers
included) on the env the dataset recovers (`dataset.recover_environment()`), its policy is
trained in place, and the model is stamped (`stamp_semantics`, `stamp_action_interface`)
and saved with `model.save`. So the `.zip` loads wherever a trained agent does
(`agents.zoo.policy.load_sb3_policy`, `esper-eval`, `esper-run --policy ALGO:PATH`) and
`esper-train -i clone.zip` fine-tunes it with PPO. A JSON report goes next to it
(`clone.json`: dataset, split, epochs, accuracies).

Training: teacher forcing on whole episodes. Each episode is one sequence through the
policy's `evaluate_actions(obs, actions, lstm_states, episode_starts[, action_masks])`,
from zero LSTM states with `episode_starts` 1 at its first step, as the policy acts; a
minibatch holds several episodes padded to the longest (padded steps are excluded from
the loss, and an LSTM never reads ahead, so they change nothing before them). The loss
is the mean negative log-likelihood of the dataset's actions per step (Adam, gradients
clipped). Only the actor learns; the critic's own layers are left as initialised.

Actions and masks per algorithm:

* `recurrent_ppo`: the dataset's `MultiDiscrete` actions as they are, no masks.
* `maskable_recurrent_ppo` on an env wrapped by `esper_env.wrappers.FlatMaskedActions`
  (the `Esper-CIFAR-Mini-v0` section): each action is encoded to its flat index
  (`encode`) and each step's mask is the exact flat mask built from the recorded
  `op_slot_mask` and `action_mask` (`flat_mask`); the log-likelihood is the masked one.
  A step whose action its mask forbids (no masked policy can take it; Esper's baselines
  never do) is left out of the loss and the accuracy, and counted.
* `maskable_recurrent_ppo` without that wrapper: the `MultiDiscrete` actions with the
  recorded per-dimension masks; a field its mask forbids is set to its dimension's first
  legal value, and counted (in Esper's masks only fields an op ignores can be forbidden
  in a legal action: the heuristic's WAIT is `[0, 0, 0, 0]` even when slot 0 is masked).

Accuracy: the share of steps where the greedy action (the mode of the policy's
distribution, masked for the maskable policy, fed the dataset's own observations) equals
the dataset's; for `MultiDiscrete` and flat actions also per dimension (a flat action is
decoded to `[op, slot, blueprint, speed]`, in which `encode` ignores the fields an op
does not use). Episodes are split into train and held out by episode, deterministically
given `seed`.

Why not a library: `imitation` (1.0.1, the maintained SB3 imitation package) has a BC,
but its loss calls `policy.evaluate_actions(obs, acts)` on shuffled single transitions:
a recurrent policy needs its LSTM states and episode starts, and a maskable one its masks,
neither of which it passes; and it pins `gymnasium~=0.29` and `stable-baselines3~=2.2.1`
(Esper runs gymnasium 1.x and SB3 2.9). The loop here is that loss on whole sequences.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.cli import StoreDict, run_cli
from agents.imitation.dataset import check_versions, episode_seeds, load
from agents.zoo.algos import MASKABLE_ALGOS, RECURRENT_ALGOS, algo_class
from agents.zoo.hyperparams import Hyperparams, load_hyperparams
from agents.zoo.policy import stamp_action_interface, stamp_semantics
from esper_env.wrappers import FlatMaskedActions

if TYPE_CHECKING:
    from minari import MinariDataset

#: The algorithms a dataset can be cloned onto (the zoo's recurrent ones).
CLONE_ALGOS = tuple(sorted(RECURRENT_ALGOS))


@dataclass(frozen=True)
class Demonstrations:
    """A dataset's episodes in the policy's terms (its action space and masks).

    Attributes:
        seeds: Each episode's seed.
        observations: Per episode, the observations the actions were chosen on, `(T, ...)`.
        actions: Per episode, the actions: `(T,)` for Discrete, `(T, dims)` for MultiDiscrete.
        masks: Per episode, the masks, bool `(T, mask_width)`; None for an unmasked policy.
        kept: Per episode, bool `(T,)`: the steps that count (the loss and the accuracy
            leave out a step whose action its mask forbids: no masked policy can take it).
        replaced_fields: Fields of `MultiDiscrete` actions that their mask forbade, replaced
            by their dimension's first legal value (see `demonstrations`).
    """

    seeds: list[int]
    observations: list[np.ndarray]
    actions: list[np.ndarray]
    masks: list[np.ndarray] | None
    kept: list[np.ndarray]
    replaced_fields: int = 0

    def __len__(self) -> int:
        return len(self.seeds)

    @property
    def left_out(self) -> int:
        """Steps left out of the loss and the accuracy (their action is masked)."""
        return int(sum(np.count_nonzero(~kept) for kept in self.kept))


@dataclass
class CloneReport:
    """What a cloning did; `to_dict` is the JSON report (everything but the model).

    Attributes:
        dataset_id: The dataset cloned.
        algo: `--algo` name of the model.
        env_id: The dataset's env id (its hyperparameter section's key).
        flat_actions: Whether the policy acts through `FlatMaskedActions`.
        episodes: Episodes in the dataset.
        train_seeds: Seeds of the training episodes.
        held_out_seeds: Seeds of the held-out episodes.
        train_steps: Steps of the training episodes that count (see `left_out_steps`).
        held_out_steps: Steps of the held-out episodes that count.
        epochs: Passes over the training episodes.
        lr: Adam's learning rate.
        batch_episodes: Episodes per gradient step.
        seed: Seed of the split, the shuffling and the network's initialisation.
        epoch_losses: Mean negative log-likelihood per step, per epoch.
        train_accuracy: Greedy action == dataset action, per training step.
        held_out_accuracy: The same on the held-out steps (None without held-out episodes).
        train_accuracy_per_dimension: Per action dimension (None for a Discrete action).
        held_out_accuracy_per_dimension: Per action dimension, held out.
        replaced_fields: Forbidden fields of `MultiDiscrete` actions replaced by legal
            values (see `demonstrations`).
        left_out_steps: Steps left out of the loss and the accuracy (a forbidden action).
        wall_seconds: Time the cloning took (training and evaluation).
        model_path: Where the model was saved (None: not saved).
        report_path: Where this report was saved (None: not saved).
        model: The cloned model (not in the report).
    """

    dataset_id: str
    algo: str
    env_id: str
    flat_actions: bool
    episodes: int
    train_seeds: list[int]
    held_out_seeds: list[int]
    train_steps: int
    held_out_steps: int
    epochs: int
    lr: float
    batch_episodes: int
    seed: int
    epoch_losses: list[float]
    train_accuracy: float
    held_out_accuracy: float | None
    train_accuracy_per_dimension: list[float] | None
    held_out_accuracy_per_dimension: list[float] | None
    replaced_fields: int
    left_out_steps: int
    wall_seconds: float
    model_path: str | None = None
    report_path: str | None = None
    model: BaseAlgorithm | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data, without the model."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


def split_episodes(
    n_episodes: int, held_out_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Splits episode positions into train and held out, deterministically given `seed`.

    `round(held_out_fraction * n_episodes)` episodes are held out, at least one when the
    fraction is positive.

    Returns:
        The sorted positions of the training episodes and of the held-out ones.

    Raises:
        ValueError: A fraction outside [0, 1), or no training episode left.
    """
    if not 0.0 <= held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
    n_held = round(held_out_fraction * n_episodes)
    if held_out_fraction > 0:
        n_held = max(n_held, 1)
    if n_held >= n_episodes:
        raise ValueError(
            f"{n_episodes} episodes leave none to train on with held_out_fraction "
            f"{held_out_fraction}: record more episodes or hold out fewer"
        )
    order = np.random.default_rng(seed).permutation(n_episodes)
    return sorted(int(i) for i in order[n_held:]), sorted(int(i) for i in order[:n_held])


def demonstrations(
    dataset: MinariDataset, *, masked: bool, flat_actions: FlatMaskedActions | None
) -> Demonstrations:
    """Reads a dataset's episodes as the policy sees them.

    For a masked policy on `MultiDiscrete` actions, a field its step's per-dimension mask
    forbids is replaced by the first legal value of its dimension (counted in
    `replaced_fields`): the policy can never choose it, and in Esper's masks a legal action
    has forbidden values only in fields its op ignores (the heuristic's WAIT is
    `[0, 0, 0, 0]` whatever slot 0's legality). For a masked policy on Discrete (or flat)
    actions, a step whose action its mask forbids is left out (`kept`); Esper's baselines
    never take one.

    Args:
        dataset: A dataset of `agents.imitation.dataset` (a `MinariDataset`).
        masked: Whether the policy takes masks (the maskable algorithms).
        flat_actions: The flat-action codec of the policy's env, or None (the dataset's
            actions are the policy's).
    """
    seeds = episode_seeds(dataset)
    nvec = getattr(dataset.action_space, "nvec", None)
    observations, actions, masks, kept = [], [], [], []
    replaced = 0
    for episode in dataset.iterate_episodes():
        steps = len(episode.rewards)
        observations.append(np.asarray(episode.observations[:steps], dtype=np.float32))
        mask = np.asarray(episode.infos["action_mask"][:steps], dtype=bool)
        action = np.asarray(episode.actions, dtype=np.int64)
        if flat_actions is not None:
            op_slot = np.asarray(episode.infos["op_slot_mask"][:steps], dtype=bool)
            action = np.array([flat_actions.encode(a) for a in action], dtype=np.int64)
            mask = np.stack(
                [flat_actions.flat_mask(p, d) for p, d in zip(op_slot, mask, strict=True)]
            )
        keep = np.ones(steps, dtype=bool)
        if masked and action.ndim == 1:
            keep = mask[np.arange(steps), action]
        elif masked:
            action, count = _legal_fields(action, mask, nvec)
            replaced += count
        actions.append(action)
        masks.append(mask)
        kept.append(keep)
    return Demonstrations(
        seeds, observations, actions, masks if masked else None, kept, replaced_fields=replaced
    )


def _legal_fields(
    actions: np.ndarray, masks: np.ndarray, nvec: np.ndarray
) -> tuple[np.ndarray, int]:
    """`MultiDiscrete` actions with each forbidden field set to its dimension's first legal value.

    Returns:
        The actions and the number of fields replaced.
    """
    actions = actions.copy()
    replaced = 0
    starts = np.concatenate([[0], np.cumsum(nvec)[:-1]])
    for dim, (start, size) in enumerate(zip(starts, nvec, strict=True)):
        legal = masks[:, start : start + size]
        steps = np.flatnonzero(~legal[np.arange(len(actions)), actions[:, dim]])
        if steps.size:
            actions[steps, dim] = np.argmax(legal[steps], axis=1)
            replaced += steps.size
    return actions, replaced


@dataclass(frozen=True)
class _Batch:
    """Episodes padded to the longest and laid out sequence-major, as the LSTM reads them."""

    n_seq: int
    obs: th.Tensor
    actions: th.Tensor
    masks: th.Tensor | None
    episode_starts: th.Tensor
    valid: th.Tensor


def _batch(demos: Demonstrations, positions: Sequence[int], device: th.device) -> _Batch:
    """Pads the episodes at `positions` (obs 0, action 0, mask all legal) into one batch.

    `valid` marks the steps that count: within an episode and kept.
    """
    length = max(len(demos.actions[i]) for i in positions)

    def padded(arrays: list[np.ndarray], value: Any) -> np.ndarray:
        first = arrays[positions[0]]
        out = np.full((len(positions), length, *first.shape[1:]), value, dtype=first.dtype)
        for row, i in enumerate(positions):
            out[row, : len(arrays[i])] = arrays[i]
        return out.reshape(len(positions) * length, *first.shape[1:])

    valid = np.zeros((len(positions), length), dtype=bool)
    for row, i in enumerate(positions):
        valid[row, : len(demos.kept[i])] = demos.kept[i]
    starts = np.zeros((len(positions), length), dtype=np.float32)
    starts[:, 0] = 1.0
    masks = None
    if demos.masks is not None:
        masks = th.as_tensor(padded(demos.masks, True), device=device)
    return _Batch(
        n_seq=len(positions),
        obs=th.as_tensor(padded(demos.observations, 0.0), device=device),
        actions=th.as_tensor(padded(demos.actions, 0), device=device),
        masks=masks,
        episode_starts=th.as_tensor(starts.reshape(-1), device=device),
        valid=th.as_tensor(valid.reshape(-1), device=device),
    )


def _zero_states(policy: RecurrentActorCriticPolicy, n_seq: int) -> RNNStates:
    """Zero LSTM states (actor and critic) for `n_seq` sequences."""
    layers, _, hidden = policy.lstm_hidden_state_shape
    zeros = th.zeros((layers, n_seq, hidden), device=policy.device)
    return RNNStates(pi=(zeros, zeros.clone()), vf=(zeros.clone(), zeros.clone()))


def _log_likelihood(policy: RecurrentActorCriticPolicy, batch: _Batch) -> th.Tensor:
    """Mean log-probability of the batch's actions per valid step (masked where masks are)."""
    states = _zero_states(policy, batch.n_seq)
    masks = {} if batch.masks is None else {"action_masks": batch.masks}
    _, log_prob, _ = policy.evaluate_actions(
        batch.obs, batch.actions, states, batch.episode_starts, **masks
    )
    return log_prob[batch.valid].mean()


def _greedy(policy: RecurrentActorCriticPolicy, batch: _Batch) -> np.ndarray:
    """The policy's greedy action at every valid step of the batch (masked where masks are)."""
    states = _zero_states(policy, batch.n_seq)
    masks = {} if batch.masks is None else {"action_masks": batch.masks}
    with th.no_grad():
        distribution, _ = policy.get_distribution(
            batch.obs, states.pi, batch.episode_starts, **masks
        )
        actions = distribution.get_actions(deterministic=True)
    return actions[batch.valid].cpu().numpy()


def accuracy(
    policy: RecurrentActorCriticPolicy,
    demos: Demonstrations,
    positions: Sequence[int],
    *,
    batch_episodes: int,
    flat_actions: FlatMaskedActions | None,
) -> tuple[float | None, list[float] | None, int]:
    """Imitation accuracy of the greedy policy on the episodes at `positions`.

    Returns:
        The share of steps whose greedy action is the dataset's (None without steps),
        the share per action dimension (None for a Discrete action that is not flat),
        and the number of steps.
    """
    if not positions or not any(demos.kept[i].any() for i in positions):
        return None, None, 0
    policy.set_training_mode(False)
    predicted, expected = [], []
    for start in range(0, len(positions), batch_episodes):
        chunk = list(positions[start : start + batch_episodes])
        batch = _batch(demos, chunk, policy.device)
        predicted.append(_greedy(policy, batch))
        expected.append(np.concatenate([demos.actions[i][demos.kept[i]] for i in chunk]))
    guess, truth = np.concatenate(predicted), np.concatenate(expected)
    steps = len(truth)
    if flat_actions is not None:
        exact = guess == truth
        guess = np.stack([flat_actions.decode(i) for i in guess])
        truth = np.stack([flat_actions.decode(i) for i in truth])
    elif truth.ndim == 1:
        return float(np.mean(guess == truth)), None, steps
    else:
        exact = np.all(guess == truth, axis=1)
    per_dimension = [float(v) for v in np.mean(guess == truth, axis=0)]
    return float(np.mean(exact)), per_dimension, steps


def _flat_codec(env: gym.Env) -> FlatMaskedActions | None:
    """The `FlatMaskedActions` wrapper among `env`'s wrappers, if there is one."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, FlatMaskedActions):
            return env
        env = env.env
    return None


def build_model(
    algo: str, hyperparams: Hyperparams, env: gym.Env, *, seed: int, device: str
) -> BaseAlgorithm:
    """A fresh model of `algo` with `hyperparams` on one `env`, stamped as esper-train's are.

    Raises:
        ValueError: A section with `normalize` or `frame_stack` (a clone learns on the
            dataset's raw observations, which such a model would not see).
    """
    if hyperparams.normalize is not False or hyperparams.frame_stack is not None:
        raise ValueError(
            f"cannot clone onto a section with normalize or frame_stack (got normalize="
            f"{hyperparams.normalize}, frame_stack={hyperparams.frame_stack}): the clone "
            "learns on raw observations; use a section without them (-conf or --hyperparams)"
        )
    vec_env = DummyVecEnv([lambda: env])
    model = algo_class(algo)(
        hyperparams.policy,
        vec_env,
        seed=seed,
        device=device,
        verbose=0,
        **hyperparams.algo_kwargs(),
    )
    stamp_semantics(model)
    stamp_action_interface(model, vec_env)
    return model


def clone(
    dataset_id: str,
    algo: str,
    *,
    root: str | Path | None,
    epochs: int = 100,
    lr: float = 3e-3,
    held_out_fraction: float = 0.2,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    batch_episodes: int = 16,
    max_grad_norm: float = 1.0,
    hyperparams: dict[str, Any] | None = None,
    hyperparams_path: Path | None = None,
    device: str = "cpu",
    out: str | Path | None = None,
) -> CloneReport:
    """Clones a dataset onto `algo`'s policy (see the module docstring); saves it with `out`.

    Args:
        dataset_id: A dataset of `agents.imitation.dataset`.
        algo: `recurrent_ppo` or `maskable_recurrent_ppo`.
        root: Folder of the datasets (None: `MINARI_DATASETS_PATH`).
        epochs: Passes over the training episodes.
        lr: Adam's learning rate.
        held_out_fraction: Share of the episodes held out from training.
        seed: Seed of the split, the shuffling and the network's initialisation.
        env_kwargs: Keyword arguments over the recorded env's (e.g. another `data_dir`).
        batch_episodes: Episodes per gradient step.
        max_grad_norm: Gradient clipping.
        hyperparams: Overrides of the hyperparameter section (`--hyperparams`).
        hyperparams_path: A hyperparameter file instead of `agents/hyperparams/<algo>.yml`.
        device: Torch device.
        out: Save the model there (`.zip`) and the report beside it (`.json`); None: neither.

    Raises:
        ValueError: An algo that is not recurrent, a dataset of another Esper version,
            spaces that do not fit the policy's env, a bad section, or a bad split.
        FileNotFoundError: No such dataset under the root.
    """
    if algo not in RECURRENT_ALGOS:
        raise ValueError(f"clone supports the recurrent algos {CLONE_ALGOS}, not {algo!r}")
    if epochs < 1 or batch_episodes < 1:
        raise ValueError(f"epochs and batch_episodes must be >= 1, got {epochs}, {batch_episodes}")
    start = time.perf_counter()
    dataset = load(dataset_id, root=root)
    check_versions(dataset)
    if dataset.env_spec is None:
        raise ValueError(f"dataset {dataset_id} records no env spec: its env cannot be rebuilt")
    env_id = dataset.env_spec.id
    section = load_hyperparams(algo, env_id, hyperparams, path=hyperparams_path)
    env = dataset.recover_environment(**(env_kwargs or {}))
    for wrap in section.env_wrappers():
        env = wrap(env)
    try:
        codec = _flat_codec(env)
        _check_spaces(dataset, env, codec)
        model = build_model(algo, section, env, seed=seed, device=device)
        policy = model.policy
        demos = demonstrations(dataset, masked=algo in MASKABLE_ALGOS, flat_actions=codec)
        train, held = split_episodes(len(demos), held_out_fraction, seed)
        if not any(demos.kept[i].any() for i in train):
            raise ValueError(
                f"the training episodes of {dataset_id} have no step whose action its mask "
                "allows: nothing to learn from"
            )
        losses = _fit(policy, demos, train, epochs, lr, batch_episodes, max_grad_norm, seed)
        train_acc, train_dims, train_steps = accuracy(
            policy, demos, train, batch_episodes=batch_episodes, flat_actions=codec
        )
        held_acc, held_dims, held_steps = accuracy(
            policy, demos, held, batch_episodes=batch_episodes, flat_actions=codec
        )
    finally:
        env.close()
    assert train_acc is not None  # there is at least one training episode
    report = CloneReport(
        dataset_id=dataset_id,
        algo=algo,
        env_id=env_id,
        flat_actions=codec is not None,
        episodes=len(demos),
        train_seeds=[demos.seeds[i] for i in train],
        held_out_seeds=[demos.seeds[i] for i in held],
        train_steps=train_steps,
        held_out_steps=held_steps,
        epochs=epochs,
        lr=lr,
        batch_episodes=batch_episodes,
        seed=seed,
        epoch_losses=losses,
        train_accuracy=train_acc,
        held_out_accuracy=held_acc,
        train_accuracy_per_dimension=train_dims,
        held_out_accuracy_per_dimension=held_dims,
        replaced_fields=demos.replaced_fields,
        left_out_steps=demos.left_out,
        wall_seconds=time.perf_counter() - start,
        model=model,
    )
    if out is not None:
        save(report, out)
    return report


def save(report: CloneReport, path: str | Path) -> Path:
    """Saves the report's model at `path` (`.zip` added if missing), the report beside it.

    Returns:
        The report's path: the model's with the suffix `.json`.
    """
    assert report.model is not None
    path = Path(path)
    if path.suffix != ".zip":
        path = path.with_name(path.name + ".zip")
    path.parent.mkdir(parents=True, exist_ok=True)
    report.model.save(path)
    report.model_path = str(path)
    report_path = path.with_suffix(".json")
    report.report_path = str(report_path)
    report_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report_path


def _check_spaces(dataset: MinariDataset, env: gym.Env, codec: FlatMaskedActions | None) -> None:
    """Checks that the dataset's spaces are those of the policy's env (before `codec`).

    Raises:
        ValueError: They differ.
    """
    action_space = env.action_space if codec is None else codec.env.action_space
    if dataset.observation_space != env.observation_space:
        raise ValueError(
            f"the dataset's observations {dataset.observation_space} are not the policy "
            f"env's {env.observation_space}"
        )
    if dataset.action_space != action_space:
        raise ValueError(
            f"the dataset's actions {dataset.action_space} are not the policy env's {action_space}"
        )
    if not isinstance(action_space, spaces.Discrete | spaces.MultiDiscrete):
        raise ValueError(f"clone needs Discrete or MultiDiscrete actions, got {action_space}")


def _fit(
    policy: RecurrentActorCriticPolicy,
    demos: Demonstrations,
    train: list[int],
    epochs: int,
    lr: float,
    batch_episodes: int,
    max_grad_norm: float,
    seed: int,
) -> list[float]:
    """Maximises the log-likelihood of the training episodes' actions; returns each epoch's loss."""
    optimizer = th.optim.Adam(policy.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    policy.set_training_mode(True)
    for _ in range(epochs):
        order = rng.permutation(train)
        total, steps = 0.0, 0
        for start in range(0, len(order), batch_episodes):
            batch = _batch(
                demos, [int(i) for i in order[start : start + batch_episodes]], policy.device
            )
            n = int(batch.valid.sum())
            if n == 0:
                continue
            loss = -_log_likelihood(policy, batch)
            optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
            optimizer.step()
            total += float(loss.detach()) * n
            steps += n
        losses.append(total / steps)
    return losses


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.imitation.clone",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset-id", required=True, help="dataset of agents.imitation.dataset")
    parser.add_argument("--root", type=Path, default=None, help="dataset folder")
    parser.add_argument("--algo", default="maskable_recurrent_ppo", choices=CLONE_ALGOS)
    parser.add_argument("--out", type=Path, required=True, help="the model's .zip")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-episodes", type=int, default=16, help="episodes per step")
    parser.add_argument("--held-out", type=float, default=0.2, help="share of episodes held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--env-kwargs",
        nargs="+",
        action=StoreDict,
        default=None,
        metavar="KEY:VALUE",
        help="over the recorded env's kwargs (e.g. data_dir:DIR)",
    )
    parser.add_argument(
        "--hyperparams",
        nargs="+",
        action=StoreDict,
        default=None,
        metavar="KEY:VALUE",
        help="overrides of the algo's section (policy_kwargs.lstm_hidden_size:32)",
    )
    parser.add_argument(
        "-conf", "--conf-file", type=Path, default=None, help="a hyperparameter file (YAML)"
    )
    return parser


def main(argv: list[str] | None = None) -> CloneReport:
    """Runs the command line; returns the report."""
    args = build_parser().parse_args(argv)
    report = clone(
        args.dataset_id,
        args.algo,
        root=args.root,
        epochs=args.epochs,
        lr=args.lr,
        held_out_fraction=args.held_out,
        seed=args.seed,
        env_kwargs=args.env_kwargs,
        batch_episodes=args.batch_episodes,
        hyperparams=args.hyperparams,
        hyperparams_path=args.conf_file,
        device=args.device,
        out=args.out,
    )
    held = "-" if report.held_out_accuracy is None else f"{report.held_out_accuracy:.3f}"
    print(
        f"cloned {report.dataset_id} onto {report.algo}: accuracy {report.train_accuracy:.3f} "
        f"on {report.train_steps} training steps, {held} on {report.held_out_steps} held-out "
        f"steps; saved {report.model_path} and {report.report_path}"
    )
    return report


def cli() -> None:
    """The console entry point (`python -m agents.imitation.clone`)."""
    run_cli(main, "agents.imitation.clone")


if __name__ == "__main__":
    cli()
