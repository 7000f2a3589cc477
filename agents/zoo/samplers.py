"""Optuna search spaces of the zoo's algorithms (rl-baselines3-zoo `hyperparams_opt.py` style).

Each sampler draws one trial's hyperparameters and returns them as overrides in the
hyperparameter file's own format (`agents/hyperparams/<algo>.yml`): plain numbers,
and a nested `policy_kwargs` mapping with a `net_arch` list and an `activation_fn`
name. `agents.zoo.optimize` merges them over the base section and validates them
with `load_hyperparams`, like any file's section.

The ranges suit Esper: an episode is short (15 steps on `Esper-CIFAR-Mini-v0`) and a
step costs about a second of host training, so rollouts are small (16 to 256 steps
per env, never more than a trial trains) and discounts are for horizons of tens of
steps, not thousands.
"""

from __future__ import annotations

from typing import Any, Protocol

from agents.extras import require_extra

require_extra("optuna")
import optuna  # noqa: E402

#: `net_arch` choice name to the hidden layers of both actor and critic.
NET_ARCHS: dict[str, list[int]] = {"tiny": [64], "small": [64, 64], "medium": [128, 128]}

#: Rollout lengths per env are powers of two from 2**4 = 16 to 2**8 = 256.
MIN_N_STEPS_POW = 4
MAX_N_STEPS_POW = 8

#: A rollout of `n_steps * n_envs` steps is cut into this many minibatches.
N_MINIBATCHES = (1, 2, 4, 8)


class HyperparamSampler(Protocol):
    """Draws one trial's hyperparameters of an algorithm, as file-format overrides."""

    def __call__(self, trial: optuna.Trial, *, n_envs: int, n_timesteps: int) -> dict[str, Any]:
        """Samples the overrides.

        Args:
            trial: The Optuna trial that records the draws.
            n_envs: Parallel training envs (the rollout is `n_steps * n_envs` steps).
            n_timesteps: Steps the trial trains: no rollout is longer than this.

        Returns:
            Overrides of a hyperparameter file's section.
        """
        ...


def max_n_steps_pow(n_envs: int, n_timesteps: int) -> int:
    """The largest `n_steps` exponent whose rollout fits in a trial of `n_timesteps` steps.

    A rollout longer than the trial would train more steps than the trial's budget
    before its first update; the exponent stays within
    `[MIN_N_STEPS_POW, MAX_N_STEPS_POW]` (a trial shorter than 16 steps per env still
    gets 16-step rollouts).

    Raises:
        ValueError: `n_envs` or `n_timesteps` is below 1.
    """
    if n_envs < 1 or n_timesteps < 1:
        raise ValueError(f"n_envs and n_timesteps must be >= 1, got {n_envs} and {n_timesteps}")
    per_env = n_timesteps // n_envs
    fits = per_env.bit_length() - 1 if per_env > 0 else 0  # floor(log2(per_env))
    return max(MIN_N_STEPS_POW, min(MAX_N_STEPS_POW, fits))


def sample_ppo_params(trial: optuna.Trial, *, n_envs: int, n_timesteps: int) -> dict[str, Any]:
    """Samples PPO hyperparameters (also MaskablePPO's: masking adds none).

    Optuna records the search coordinates (`n_steps_pow`, `n_minibatches`,
    `one_minus_gamma`, `one_minus_gae_lambda`, the `net_arch` name); the returned
    overrides hold the values they stand for (`n_steps`, `batch_size`, `gamma`, ...).

    Args:
        trial: The Optuna trial.
        n_envs: Parallel training envs.
        n_timesteps: Steps the trial trains (caps the rollout length).

    Returns:
        File-format overrides: `learning_rate`, `n_steps`, `batch_size` (a divisor of
        the rollout `n_steps * n_envs`, so never larger), `n_epochs`, `gamma`,
        `gae_lambda`, `clip_range`, `ent_coef`, `max_grad_norm` and `policy_kwargs`
        (`net_arch`, `activation_fn`).
    """
    n_steps_pow = trial.suggest_int(
        "n_steps_pow", MIN_N_STEPS_POW, max_n_steps_pow(n_envs, n_timesteps)
    )
    n_minibatches = trial.suggest_categorical("n_minibatches", N_MINIBATCHES)
    learning_rate = trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True)
    n_epochs = trial.suggest_categorical("n_epochs", (3, 5, 10, 20))
    one_minus_gamma = trial.suggest_float("one_minus_gamma", 1e-3, 0.1, log=True)
    one_minus_gae_lambda = trial.suggest_float("one_minus_gae_lambda", 1e-3, 0.2, log=True)
    clip_range = trial.suggest_categorical("clip_range", (0.1, 0.2, 0.3))
    ent_coef = trial.suggest_float("ent_coef", 1e-6, 0.1, log=True)
    max_grad_norm = trial.suggest_float("max_grad_norm", 0.3, 2.0)
    net_arch = trial.suggest_categorical("net_arch", tuple(NET_ARCHS))
    activation_fn = trial.suggest_categorical("activation_fn", ("tanh", "relu"))

    n_steps = 2**n_steps_pow
    return {
        "learning_rate": learning_rate,
        "n_steps": n_steps,
        "batch_size": n_steps * n_envs // n_minibatches,
        "n_epochs": n_epochs,
        "gamma": 1.0 - one_minus_gamma,
        "gae_lambda": 1.0 - one_minus_gae_lambda,
        "clip_range": clip_range,
        "ent_coef": ent_coef,
        "max_grad_norm": max_grad_norm,
        "policy_kwargs": {"net_arch": list(NET_ARCHS[net_arch]), "activation_fn": activation_fn},
    }


def sample_maskable_ppo_params(
    trial: optuna.Trial, *, n_envs: int, n_timesteps: int
) -> dict[str, Any]:
    """Samples MaskablePPO hyperparameters: PPO's search space (see `sample_ppo_params`)."""
    return sample_ppo_params(trial, n_envs=n_envs, n_timesteps=n_timesteps)


def sample_recurrent_ppo_params(
    trial: optuna.Trial, *, n_envs: int, n_timesteps: int
) -> dict[str, Any]:
    """Samples RecurrentPPO hyperparameters: PPO's, plus the LSTM's size and the critic's LSTM.

    Returns:
        `sample_ppo_params`'s overrides with `policy_kwargs.lstm_hidden_size` and
        `policy_kwargs.enable_critic_lstm` added.
    """
    params = sample_ppo_params(trial, n_envs=n_envs, n_timesteps=n_timesteps)
    params["policy_kwargs"]["lstm_hidden_size"] = trial.suggest_categorical(
        "lstm_hidden_size", (16, 32, 64, 128)
    )
    params["policy_kwargs"]["enable_critic_lstm"] = trial.suggest_categorical(
        "enable_critic_lstm", (False, True)
    )
    return params


#: `--algo` name to its sampler; every algorithm of `agents.zoo.algos.ALGOS` has one.
HYPERPARAMS_SAMPLER: dict[str, HyperparamSampler] = {
    "ppo": sample_ppo_params,
    "maskable_ppo": sample_maskable_ppo_params,
    "recurrent_ppo": sample_recurrent_ppo_params,
    "maskable_recurrent_ppo": sample_recurrent_ppo_params,  # the same policy network
}
