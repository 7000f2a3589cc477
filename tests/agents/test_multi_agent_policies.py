import numpy as np
import pytest

from agents.multi_agent_policies import (
    HeuristicEmrakul,
    HeuristicKarn,
    PoolTamiyo,
    heuristic_team,
    run_team_episode,
    tamiyo_alone,
)
from blueprints.catalog import CATALOG
from blueprints.mutate import Edit, Mutation, apply_edit
from esper_env import multi_agent
from esper_env.contracts import Op, SeedStage
from esper_env.envs.multi_agent import AGENTS, DesignOp, MaintenanceOp

PRESET = "Esper-CIFAR-Mini-v0"


@pytest.fixture
def env(tiny_env_kwargs):
    env = multi_agent.parallel_env(preset=PRESET, **tiny_env_kwargs)
    yield env
    env.close()


def _emrakul(env, **overrides):
    return HeuristicEmrakul(
        env.observation_names("emrakul"),
        env.world.slot_names,
        env.config.episode_epochs,
        **overrides,
    )


def _emrakul_obs(env, **features):
    names = env.observation_names("emrakul")
    obs = np.zeros(len(names), dtype=np.float32)
    for name, value in features.items():
        obs[names.index(name.replace("__", "."))] = value
    return obs


def _all_legal(env):
    return np.ones((len(MaintenanceOp), len(env.world.slot_names)), dtype=bool)


def test_emrakul_probes_then_sedates_an_idle_seed_then_lyses_it_if_accuracy_holds(env):
    policy = _emrakul(env)
    legal = _all_legal(env)
    fossil = {"slot1__stage_fossilized": 1.0}
    info = {"op_slot_mask": legal, "epoch": 5, "val_accuracy": 0.40}
    assert policy.act(_emrakul_obs(env, **fossil), info).tolist() == [MaintenanceOp.PROBE, 1]
    idle = {**fossil, "slot1__probed": 1.0, "slot1__probed_worth": 0.002}
    info = {**info, "epoch": 6}
    assert policy.act(_emrakul_obs(env, **idle), info).tolist() == [MaintenanceOp.SEDATE, 1]
    sedated = {**idle, "slot1__sedated": 1.0}
    info = {**info, "epoch": 7, "val_accuracy": 0.399}
    assert policy.act(_emrakul_obs(env, **sedated), info).tolist() == [MaintenanceOp.LYSE, 1]


def test_emrakul_wakes_a_seed_whose_absence_costs_accuracy(env):
    policy = _emrakul(env)
    legal = _all_legal(env)
    idle = {"slot0__stage_fossilized": 1.0, "slot0__probed": 1.0, "slot0__probed_worth": 0.0}
    policy.act(_emrakul_obs(env, **idle), {"op_slot_mask": legal, "epoch": 6, "val_accuracy": 0.5})
    sedated = {**idle, "slot0__sedated": 1.0}
    info = {"op_slot_mask": legal, "epoch": 7, "val_accuracy": 0.45}
    assert policy.act(_emrakul_obs(env, **sedated), info).tolist() == [MaintenanceOp.WAKE, 0]


def test_emrakul_leaves_useful_and_fresh_seeds_alone(env):
    policy = _emrakul(env)
    useful = {
        "slot0__stage_fossilized": 1.0,
        "slot0__probed": 1.0,
        "slot0__probed_worth": 0.05,
        "slot0__since_probe": 1 / env.config.episode_epochs,
    }
    info = {"op_slot_mask": _all_legal(env), "epoch": 6, "val_accuracy": 0.5}
    assert policy.act(_emrakul_obs(env, **useful), info).tolist() == [MaintenanceOp.WAIT, 0]
    # A stale probe is renewed.
    stale = {**useful, "slot0__since_probe": 3 / env.config.episode_epochs}
    assert policy.act(_emrakul_obs(env, **stale), info).tolist() == [MaintenanceOp.PROBE, 0]
    # Nothing fossilized: nothing to do, whatever the mask.
    assert policy.act(_emrakul_obs(env), info).tolist() == [MaintenanceOp.WAIT, 0]


def _karn_obs(env, **features):
    names = env.observation_names("karn")
    obs = np.zeros(len(names), dtype=np.float32)
    for name, value in features.items():
        obs[names.index(name.replace("__", "."))] = value
    return obs


def test_karn_mutates_the_best_contributing_blueprint(env):
    _, infos = env.reset(seed=0)
    policy = HeuristicKarn(env.observation_names("karn"), env.place_names, every=2, seed=0)
    policy.reset(0)
    info = infos["karn"]
    obs = _karn_obs(env, bottleneck__best_contribution=0.02, residual_block__best_contribution=0.05)
    action = policy.act(obs, {**info, "epoch": 2})
    assert action[0] == DesignOp.PROPOSE
    assert env.place_names[action[1]] == "residual_block"
    assert info["parent_mutation_mask"][action[1], action[2]]
    # Not again before `every` epochs, and never without any contribution to go on.
    assert policy.act(obs, {**info, "epoch": 3})[0] == DesignOp.WAIT
    assert policy.act(obs, {**info, "epoch": 4})[0] == DesignOp.PROPOSE
    assert policy.act(_karn_obs(env), {**info, "epoch": 8})[0] == DesignOp.WAIT


def test_karn_waits_when_proposing_is_masked(env):
    _, infos = env.reset(seed=0)
    policy = HeuristicKarn(env.observation_names("karn"), env.place_names)
    policy.reset(0)
    mask = infos["karn"]["action_mask"].copy()
    mask[DesignOp.PROPOSE] = 0
    obs = _karn_obs(env, residual_block__best_contribution=0.05)
    assert policy.act(obs, {**infos["karn"], "action_mask": mask, "epoch": 3})[0] == DesignOp.WAIT


def test_pool_tamiyo_grows_karn_newest_design(env):
    obs, infos = env.reset(seed=0)
    tamiyo = heuristic_team(env)["tamiyo"]
    assert isinstance(tamiyo, PoolTamiyo)
    first = tamiyo.act(obs["tamiyo"]["observation"], {**infos["tamiyo"], "epoch": 1})
    assert first[0] == Op.GERMINATE and env.place_names[first[2]] == "residual_block"
    residual = CATALOG["residual_block"]
    design = env.submit_design(apply_edit(residual, Edit(Mutation.KERNEL, residual.nodes[0].id, 5)))
    waits = {a: np.zeros(len(env.action_space(a).nvec), dtype=np.int64) for a in AGENTS}
    obs, _, _, _, infos = env.step(waits)
    tamiyo.reset()
    action = tamiyo.act(obs["tamiyo"]["observation"], {**infos["tamiyo"], "epoch": 1})
    assert action[0] == Op.GERMINATE and action[2] == design.place


def test_team_episode_records_a_consistent_result(env):
    result = run_team_episode(env, heuristic_team(env, seed=0), seed=0, team="heuristics")
    assert result.steps == env.config.episode_epochs
    assert result.params == env.world.base_params + result.params_added
    assert set(result.returns) == set(AGENTS)
    alone = run_team_episode(env, tamiyo_alone(env), seed=0, team="tamiyo")
    assert alone.designs_accepted == alone.designs_rejected == alone.seeds_lysed == 0


@pytest.mark.cifar
def test_three_heuristics_on_real_cifar_and_lysis_shows_in_parameters(real_cifar_dir):
    env = multi_agent.parallel_env(preset=PRESET, data_dir=real_cifar_dir)
    # Permissive thresholds: every fossilized seed counts as idle, so Emrakul's
    # sedate-then-lyse path runs whenever Tamiyo fossilizes one.
    team = heuristic_team(env, seed=0, emrakul={"worth_threshold": 1.0, "accuracy_tolerance": 1.0})
    for policy in team.values():
        policy.reset(0)
    obs, infos = env.reset(seed=0)
    lysed = 0
    while env.agents:
        actions = {a: team[a].act(obs[a]["observation"], infos[a]) for a in env.agents}
        before = infos["emrakul"]["params_added"]
        sizes = {r.name: r.params for r in env.world.model.reports()}
        obs, _, _, _, infos = env.step(actions)
        move = infos["emrakul"]["transition"]
        if move is not None and move["ok"] and move["op"] == "remove":
            lysed += 1
            grown = infos["tamiyo"]["transition"]
            added = 0
            if grown is not None and grown["ok"] and grown["op"] == "germinate":
                added = env.world.model.slots[grown["slot"]].seed_params()
            assert infos["emrakul"]["params_added"] == before - sizes[move["slot"]] + added
            assert env.world.model.slots[move["slot"]].stage is SeedStage.EMBARGOED
            saved = infos["emrakul"]["reward_terms"]["emrakul.params_saved"]
            assert saved == pytest.approx(sizes[move["slot"]] / env.world.base_params)
    assert lysed >= 1
    assert 0.2 < infos["tamiyo"]["final_test_accuracy"] < 1.0
    env.close()
