"""Agent files are untrusted input: loading one must never unpickle code from it."""

import base64
import io
import json
import os
import shlex
import zipfile
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common import save_util
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.zoo.envs import make_esper_env
from agents.zoo.hyperparams import load_hyperparams
from agents.zoo.policy import load_sb3_policy, stamp_semantics
from agents.zoo.safe_load import UntrustedAgentError, load_model, serialized_entries

ENV = "Esper-CIFAR-Mini-v0"
ALGO_CLASSES: dict[str, type[BaseAlgorithm]] = {
    "maskable_ppo": MaskablePPO,
    "recurrent_ppo": RecurrentPPO,
    "ppo": PPO,
}


class Touch:
    """Unpickles into `touch MARKER`: what a hostile agent file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def pickled(marker: Path) -> dict[str, str]:
    """A `data` entry as SB3 writes one, whose pickle creates `marker` when loaded."""
    blob = base64.b64encode(cloudpickle.dumps(Touch(marker))).decode()
    return {
        ":type:": "<class 'stable_baselines3.common.utils.FloatSchedule'>",
        ":serialized:": blob,
    }


def rewrite(src: Path, dst: Path, **members: bytes) -> Path:
    """A copy of the zip `src` with some members replaced or added."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for name in old.namelist():
            new.writestr(name, members.pop(name, old.read(name)))
        for name, content in members.items():
            new.writestr(name, content)
    return dst


def read_data(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("data"))


def plant(src: Path, dst: Path, **entries: Any) -> Path:
    """A copy of the saved agent `src` with `data` entries replaced or added."""
    data = {**read_data(src), **entries}
    return rewrite(src, dst, data=json.dumps(data).encode())


@pytest.fixture
def env(tiny_env_kwargs: dict[str, Any]):
    env = make_esper_env(ENV, tiny_env_kwargs)
    yield env
    env.close()


def zoo_model(algo: str, env: Any, *, learn: bool = True) -> BaseAlgorithm:
    """A model with the zoo's policy (and classes in its policy_kwargs), briefly trained.

    Training leaves rollout state (`_last_obs`, `ep_info_buffer`, ...) that SB3 also pickles.
    """
    hyperparams = load_hyperparams(algo, ENV, {"n_steps": 8, "batch_size": 8, "n_epochs": 1})
    model = ALGO_CLASSES[algo](
        hyperparams.policy, env, seed=0, device="cpu", **hyperparams.algo_kwargs()
    )
    if learn:
        model.learn(8)
    stamp_semantics(model)
    return model


@pytest.fixture
def saved(env, tmp_path: Path) -> tuple[BaseAlgorithm, Path]:
    model = zoo_model("maskable_ppo", env)
    model.save(tmp_path / "agent.zip")
    return model, tmp_path / "agent.zip"


def observations(env: Any, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Observations (reset ones and samples) and the action masks to predict with."""
    obs, info = env.reset(seed=0)
    env.observation_space.seed(0)
    batch = np.stack([obs, *(env.observation_space.sample() for _ in range(n - 1))])
    return batch, np.stack([info["action_mask"]] * n)


def assert_same_predictions(algo: str, a: BaseAlgorithm, b: BaseAlgorithm, env: Any) -> None:
    batch, masks = observations(env)
    kwargs: dict[str, Any] = {"deterministic": True}
    if algo == "maskable_ppo":
        kwargs["action_masks"] = masks
    if algo == "recurrent_ppo":
        starts = np.ones((len(batch),), dtype=bool)
        first, state_a = a.predict(batch, episode_start=starts, **kwargs)
        again, state_b = b.predict(batch, episode_start=starts, **kwargs)
        assert np.array_equal(first, again)
        # The LSTM state carries on identically too.
        steps = np.zeros_like(starts)
        next_a, _ = a.predict(batch, state=state_a, episode_start=steps, **kwargs)
        next_b, _ = b.predict(batch, state=state_b, episode_start=steps, **kwargs)
        assert np.array_equal(next_a, next_b)
    else:
        assert np.array_equal(a.predict(batch, **kwargs)[0], b.predict(batch, **kwargs)[0])
    for (name, x), (_, y) in zip(
        a.policy.state_dict().items(), b.policy.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("algo", sorted(ALGO_CLASSES))
def test_a_saved_agent_loads_safely_and_predicts_as_the_original(
    algo: str, env, tmp_path: Path
) -> None:
    model = zoo_model(algo, env)
    model.save(tmp_path / "agent.zip")
    entries = serialized_entries(tmp_path / "agent.zip")
    # What SB3 pickles: everything below had to be rebuilt without unpickling.
    assert {"policy_class", "policy_kwargs", "observation_space", "action_space"} <= set(entries)
    assert {"lr_schedule", "clip_range", "_last_obs", "ep_info_buffer"} <= set(entries)

    for given_env in (env, None):  # spaces from the env, or from the file's description
        loaded = load_model(algo, tmp_path / "agent.zip", given_env)
        assert type(loaded) is type(model)
        assert loaded.observation_space == env.observation_space
        assert loaded.action_space == env.action_space
        assert loaded.policy_kwargs == model.policy_kwargs
        assert loaded.env_semantics_version == model.env_semantics_version
        assert loaded.clip_range(1.0) == model.clip_range(1.0)
        assert loaded.lr_schedule(1.0) == model.lr_schedule(1.0)
        assert_same_predictions(algo, model, loaded, env)


def test_the_planted_payload_runs_code_when_sb3_loads_it(saved, tmp_path: Path) -> None:
    # Proof that the hostile files of these tests are real: SB3's own load runs them.
    _, path = saved
    marker = tmp_path / "MARKER"
    hostile = plant(path, tmp_path / "hostile.zip", lr_schedule=pickled(marker))
    MaskablePPO.load(hostile, device="cpu")
    assert marker.exists()


@pytest.mark.parametrize("key", ["lr_schedule", "clip_range", "observation_space", "action_space"])
def test_a_replaceable_entry_swapped_for_a_payload_loads_without_running_it(
    key: str, saved, env, tmp_path: Path
) -> None:
    model, path = saved
    marker = tmp_path / "MARKER"
    # Its plain-text description stays as SB3 wrote it; only the pickle is swapped.
    entry = {**read_data(path)[key], ":serialized:": pickled(marker)[":serialized:"]}
    hostile = plant(path, tmp_path / "hostile.zip", **{key: entry})
    loaded = load_model("maskable_ppo", hostile, env)
    assert not marker.exists()
    assert_same_predictions("maskable_ppo", model, loaded, env)


def test_an_unknown_pickled_entry_is_refused_unless_trusted(saved, env, tmp_path: Path) -> None:
    _, path = saved
    marker = tmp_path / "MARKER"
    hostile = plant(path, tmp_path / "hostile.zip", esper_backdoor=pickled(marker))
    with pytest.raises(UntrustedAgentError, match=r"esper_backdoor .*no safe replacement") as err:
        load_model("maskable_ppo", hostile, env)
    assert "trust=True" in str(err.value) and "--trust-agent" in str(err.value)
    assert not marker.exists()
    # The same refusal through the policy loader, which every script uses.
    with pytest.raises(UntrustedAgentError, match="esper_backdoor"):
        load_sb3_policy("maskable_ppo", hostile, env)
    assert not marker.exists()

    # Trusting the file is the only way in, and it does run the file's code.
    policy = load_sb3_policy("maskable_ppo", hostile, env, trust=True)
    assert marker.exists()
    assert policy.algo == "maskable_ppo"


@pytest.mark.parametrize("member", ["policy.pth", "policy.optimizer.pth", "pytorch_variables.pth"])
def test_a_pth_that_pickles_code_is_refused_by_weights_only(
    member: str, saved, env, tmp_path: Path
) -> None:
    _, path = saved
    marker = tmp_path / "MARKER"
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(1), "hook": Touch(marker)}, buffer)
    hostile = rewrite(path, tmp_path / "hostile.zip", **{member: buffer.getvalue()})
    with pytest.raises(UntrustedAgentError, match=rf"{member} is not plain weights.*weights_only"):
        load_model("maskable_ppo", hostile, env)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("item", "text"),
    [
        ("features_extractor_class", "<class 'evil.Extractor'>"),
        ("activation_fn", "<class 'evil.Activation'>"),
        ("callback", "<function evil.hook at 0x7f>"),
    ],
)
def test_policy_kwargs_with_classes_it_cannot_rebuild_are_refused(
    item: str, text: str, saved, env, tmp_path: Path
) -> None:
    _, path = saved
    kwargs = {**read_data(path)["policy_kwargs"], item: text}
    hostile = plant(path, tmp_path / "hostile.zip", policy_kwargs=kwargs)
    with pytest.raises(UntrustedAgentError, match=rf"policy_kwargs .*{item}"):
        load_model("maskable_ppo", hostile, env)


def test_a_foreign_policy_class_is_refused(saved, env, tmp_path: Path) -> None:
    _, path = saved
    entry = {**read_data(path)["policy_class"], "__module__": "evil.policies"}
    hostile = plant(path, tmp_path / "hostile.zip", policy_class=entry)
    with pytest.raises(UntrustedAgentError, match=r"policy_class .*'evil\.policies'"):
        load_model("maskable_ppo", hostile, env)


def test_an_agent_of_other_spaces_than_the_env_is_refused(saved, env, tmp_path: Path) -> None:
    _, path = saved
    entry = {**read_data(path)["observation_space"], "_shape": [84]}
    other = plant(path, tmp_path / "other.zip", observation_space=entry)
    with pytest.raises(ValueError, match=r"trained with observation_space \[84\]"):
        load_model("maskable_ppo", other, env)


def test_resume_takes_the_schedules_from_the_hyperparameters(saved, env, tmp_path: Path) -> None:
    model, path = saved
    hyperparams = load_hyperparams(
        "maskable_ppo",
        ENV,
        {"n_steps": 8, "batch_size": 8, "n_epochs": 1, "learning_rate": 1e-3, "clip_range": 0.1},
    )
    vec_env = DummyVecEnv([lambda: env])
    resumed = load_model("maskable_ppo", path, vec_env, hyperparams=hyperparams, verbose=0)
    assert resumed.lr_schedule(1.0) == 1e-3 and resumed.clip_range(1.0) == 0.1
    assert resumed.n_steps == 8 and resumed.num_timesteps == model.num_timesteps
    resumed.learn(8, reset_num_timesteps=False)
    assert resumed.num_timesteps == model.num_timesteps + 8


def test_a_schedule_that_is_not_a_recorded_constant(saved, env, tmp_path: Path) -> None:
    _, path = saved
    marker = tmp_path / "MARKER"
    hostile = plant(path, tmp_path / "hostile.zip", clip_range=pickled(marker))  # no description
    # Enough to predict; training would need the real schedule, and says so.
    loaded = load_model("maskable_ppo", hostile, env)
    with pytest.raises(RuntimeError, match=r"clip_range of .* was a pickled schedule"):
        loaded.clip_range(1.0)
    # A resume without a hyperparameter for it is refused before any training.
    hyperparams = load_hyperparams("maskable_ppo", ENV)
    hostile = plant(path, tmp_path / "hostile_vf.zip", clip_range_vf=pickled(marker))
    with pytest.raises(UntrustedAgentError, match=r"clip_range_vf .*neither constant nor linear"):
        load_model("maskable_ppo", hostile, env, hyperparams=hyperparams)
    assert not marker.exists()


def test_files_that_are_not_saved_agents_are_named(tmp_path: Path, env) -> None:
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.zip is not a saved SB3 agent \(not a zip"):
        load_model("ppo", tmp_path / "junk.zip", env)
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("readme", "hello")
    with pytest.raises(ValueError, match="no 'data' entry"):
        load_model("ppo", tmp_path / "empty.zip", env)
    with pytest.raises(FileNotFoundError, match=r"missing\.zip"):
        load_model("ppo", tmp_path / "missing.zip", env)


def test_the_safe_load_unpickles_nothing_from_data(
    saved, env, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, path = saved

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("cloudpickle.loads was called on the agent file")

    monkeypatch.setattr(save_util.cloudpickle, "loads", forbidden)
    assert_same_predictions("maskable_ppo", model, load_model("maskable_ppo", path, env), env)
