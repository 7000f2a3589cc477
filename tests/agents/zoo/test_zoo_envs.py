import functools

import numpy as np
import pytest
from gymnasium.wrappers import TimeAwareObservation, TimeLimit
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
from tiny_data import tiny_kwargs

from agents.zoo.envs import make_vec_env
from esper_env.telemetry import EpochEnd, read_events

ENV = "Esper-CIFAR-Mini-v0"
WAIT = np.zeros(4, dtype=np.int64)


# None: two envs get worker processes, as in training; "dummy" keeps them in this process.
@pytest.mark.parametrize(("vec_env", "kind"), [("dummy", DummyVecEnv), (None, SubprocVecEnv)])
def test_two_envs_write_their_own_telemetry_files(tiny_cifar_dir, tmp_path, vec_env, kind):
    kwargs = {**tiny_kwargs(tiny_cifar_dir), "telemetry_dir": str(tmp_path / "telemetry")}
    vec = make_vec_env(
        ENV, kwargs, n_envs=2, seed=40, monitor_dir=tmp_path / "monitor", vec_env=vec_env
    )
    try:
        assert isinstance(vec, kind)
        vec.reset()
        episode_seeds = [info["episode_seed"] for info in vec.reset_infos]
        # 4 epochs finish episode 0; the autoreset starts episode 1 without a reset seed.
        for _ in range(5):
            vec.step(np.stack([WAIT, WAIT]))
        episode_seeds += [info["episode_seed"] for info in vec.reset_infos]
    finally:
        vec.close()
    assert sorted(p.name for p in (tmp_path / "telemetry").iterdir()) == [
        "events.0.jsonl",
        "events.1.jsonl",
    ]
    assert sorted(p.name for p in (tmp_path / "monitor").iterdir()) == [
        "0.monitor.csv",
        "1.monitor.csv",
    ]
    events = [e for e in read_events(tmp_path / "telemetry") if isinstance(e, EpochEnd)]
    stamps = [(e.env, e.seed, e.episode_seed, e.episode, e.step) for e in events]
    assert stamps == [
        *[("events.0", 40, episode_seeds[0], 0, step) for step in (1, 2, 3, 4)],
        ("events.0", None, episode_seeds[2], 1, 1),
        *[("events.1", 41, episode_seeds[1], 0, step) for step in (1, 2, 3, 4)],
        ("events.1", None, episode_seeds[3], 1, 1),
    ]
    assert len(set(episode_seeds)) == 4


def test_wrappers_go_outside_monitor_in_order(tiny_cifar_dir):
    wrappers = [functools.partial(TimeLimit, max_episode_steps=2), TimeAwareObservation]
    vec = make_vec_env(
        ENV, tiny_kwargs(tiny_cifar_dir), n_envs=1, seed=0, monitor_dir=None, wrappers=wrappers
    )
    try:
        assert isinstance(vec, DummyVecEnv)  # the default for one env
        (env,) = vec.envs
        assert isinstance(env, TimeAwareObservation)
        assert isinstance(env.env, TimeLimit)
        assert isinstance(env.env.env, Monitor)
    finally:
        vec.close()


def test_subproc_for_one_env_applies_the_wrappers_in_the_worker(tiny_cifar_dir):
    wrappers = [functools.partial(TimeLimit, max_episode_steps=2), TimeAwareObservation]
    vec = make_vec_env(
        ENV,
        tiny_kwargs(tiny_cifar_dir),
        n_envs=1,
        seed=0,
        monitor_dir=None,
        vec_env="subproc",
        wrappers=wrappers,
    )
    try:
        assert isinstance(vec, SubprocVecEnv)
        assert vec.env_is_wrapped(TimeAwareObservation) == [True]
        obs = vec.reset()
        assert obs[0, -1] == 0  # the time TimeAwareObservation appends
        _, _, dones, _ = vec.step(WAIT[None])
        assert not dones[0]
        _, _, dones, infos = vec.step(WAIT[None])
        assert dones[0] and infos[0]["TimeLimit.truncated"]  # 2 steps of a 4-epoch episode
    finally:
        vec.close()


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"vec_env": "thread"}, "vec_env must be"),
        ({"n_envs": 0}, "n_envs must be"),
        ({"telemetry_prefix": "../up"}, "telemetry_prefix '../up' does not match"),
        ({"env_kwargs": {"telemetry_name": "mine"}}, "pass telemetry_prefix instead"),
    ],
)
def test_bad_options_fail_before_any_env_is_built(tmp_path, options, problem):
    env_kwargs = {"telemetry_dir": str(tmp_path), **options.pop("env_kwargs", {})}
    settings = {"n_envs": 2, "seed": 0, "monitor_dir": None, **options}
    with pytest.raises(ValueError, match=problem):
        make_vec_env(ENV, env_kwargs, **settings)
    assert not any(tmp_path.iterdir())
