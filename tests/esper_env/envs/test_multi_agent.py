import functools

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test
from pydantic import ValidationError

from blueprints.catalog import CATALOG
from blueprints.library import BlueprintStatus
from blueprints.mutate import MUTATIONS, Edit, Mutation, apply_edit
from esper_env import multi_agent
from esper_env.contracts import Op, SeedStage
from esper_env.envs.multi_agent import (
    AGENTS,
    EMRAKUL_TERMS,
    KARN_TERMS,
    DesignOp,
    MaintenanceOp,
)
from esper_env.envs.presets import ENV_SEMANTICS_VERSION
from esper_env.observation import OBS_VERSION
from esper_env.reward import REWARD_TERMS

PRESET = "Esper-CIFAR-Mini-v0"
RESIDUAL = 2  # index of residual_block among the default blueprints


@pytest.fixture
def kwargs(tiny_env_kwargs):
    return {**tiny_env_kwargs, "preset": PRESET, "episode_epochs": 3}


# PettingZoo's checkers warn about what is by design here: dict observations (for the
# masks), spaces that differ per agent, and agent names without a number.
expected_style_warnings = pytest.mark.filterwarnings("ignore::UserWarning:pettingzoo")


def act(tamiyo=(0, 0, 0, 0), emrakul=(0, 0), karn=(0, 0, 0)):
    return {
        "tamiyo": np.array([int(v) for v in tamiyo]),
        "emrakul": np.array([int(v) for v in emrakul]),
        "karn": np.array([int(v) for v in karn]),
    }


@expected_style_warnings
def test_parallel_api(kwargs):
    env = multi_agent.parallel_env(**kwargs)
    parallel_api_test(env, num_cycles=10)
    env.close()


@expected_style_warnings
def test_aec_api(kwargs):
    env = multi_agent.env(**kwargs)
    api_test(env, num_cycles=10)
    env.close()


def test_parallel_seed(kwargs):
    parallel_seed_test(functools.partial(multi_agent.parallel_env, **kwargs), num_cycles=10)


def test_aec_seed(kwargs):
    seed_test(functools.partial(multi_agent.env, **kwargs), num_cycles=10)


def test_spaces_masks_and_names_agree(kwargs):
    env = multi_agent.parallel_env(**kwargs)
    obs, infos = env.reset(seed=0)
    assert env.agents == list(AGENTS)
    for agent in AGENTS:
        space = env.observation_space(agent)
        assert space.contains(obs[agent])
        assert len(env.observation_names(agent)) == space["observation"].shape[0]
        assert space["action_mask"].n == env.action_space(agent).nvec.sum()
        assert np.array_equal(obs[agent]["action_mask"], infos[agent]["action_mask"])
        assert obs[agent]["action_mask"].dtype == np.int8
        assert infos[agent]["obs_version"] == OBS_VERSION
        assert infos[agent]["env_semantics_version"] == ENV_SEMANTICS_VERSION
    # Tamiyo's blueprint one-hot covers the pool: built-ins, then Karn's places.
    assert env.layout.blueprints[-4:] == ("karn0", "karn1", "karn2", "karn3")
    assert "slot0.blueprint.karn3" in env.observation_names("tamiyo")
    assert env.action_space("tamiyo").nvec[2] == len(env.config.blueprints) + 4
    pool = obs["tamiyo"]["action_mask"][len(Op) + 3 : len(Op) + 3 + env.capacity]
    assert pool.tolist() == [1] * env.n_builtin + [0] * 4
    assert infos["tamiyo"]["blueprint_pool"][env.n_builtin :] == [None] * 4
    # Nothing is fossilized yet: Emrakul may only wait.
    assert obs["emrakul"]["action_mask"][: len(MaintenanceOp)].tolist() == [1, 0, 0, 0, 0]
    # Karn can propose from every built-in that has an edit (not "norm": nothing to change).
    assert infos["karn"]["parent_mutation_mask"][0].sum() == 0
    assert infos["karn"]["parent_mutation_mask"][RESIDUAL].all()
    env.close()


def test_flat_mask_sampling_respects_the_mask(kwargs):
    env = multi_agent.parallel_env(**kwargs)
    obs, _ = env.reset(seed=0)
    space = env.action_space("karn")
    space.seed(0)
    for _ in range(20):
        action = space.sample(obs["karn"]["action_mask"])
        assert action[1] != 0  # "norm" has no valid mutation: masked out as a parent
    with pytest.raises(ValueError, match="does not fit"):
        space.sample(np.ones(3, dtype=np.int8))
    env.close()


def _legal_actions(rng, infos, env):
    actions = {}
    pairs = np.argwhere(infos["tamiyo"]["op_slot_mask"])
    op, slot = pairs[rng.integers(len(pairs))]
    start = len(Op) + len(env.world.slot_names)
    filled = np.flatnonzero(infos["tamiyo"]["action_mask"][start : start + env.capacity])
    actions["tamiyo"] = (op, slot, rng.choice(filled), rng.integers(3))
    pairs = np.argwhere(infos["emrakul"]["op_slot_mask"])
    actions["emrakul"] = pairs[rng.integers(len(pairs))]
    pairs = np.argwhere(infos["karn"]["parent_mutation_mask"])
    propose = infos["karn"]["action_mask"][DesignOp.PROPOSE] and rng.random() < 0.5
    parent, mutation = pairs[rng.integers(len(pairs))]
    actions["karn"] = (int(propose), parent, mutation)
    return act(**actions)


def test_actions_the_masks_allow_are_accepted(kwargs):
    env = multi_agent.parallel_env(**{**kwargs, "episode_epochs": 4})
    rng = np.random.default_rng(0)
    proposals = 0
    for seed in range(3):
        _, infos = env.reset(seed=seed)
        while env.agents:
            _, _, _, _, infos = env.step(_legal_actions(rng, infos, env))
            for agent in ("tamiyo", "emrakul"):
                move = infos[agent]["transition"]
                # Only a measured gate may refuse what the masks allow.
                if move is not None and not move["ok"]:
                    assert move["gate"] in ("G1", "G2", "G3", "G4", "G5", "budget"), move
            move = infos["karn"]["transition"]
            if move is not None:
                assert move["ok"], move
                proposals += 1
    assert proposals > 0
    env.close()


def test_actions_the_masks_forbid_are_refused_as_no_ops(kwargs):
    env = multi_agent.parallel_env(**kwargs)
    env.reset(seed=0)
    empty_place = env.n_builtin
    _, _, _, _, infos = env.step(
        act(
            tamiyo=(Op.GERMINATE, 0, empty_place, 0),
            emrakul=(MaintenanceOp.SEDATE, 1),
            karn=(DesignOp.PROPOSE, empty_place, 0),
        )
    )
    assert infos["tamiyo"]["transition"]["gate"] == "pool"
    assert infos["tamiyo"]["refused"]
    assert infos["emrakul"]["transition"]["reason"].startswith("sedate needs an awake")
    assert not infos["karn"]["transition"]["ok"]
    assert "is empty" in infos["karn"]["transition"]["reason"]
    assert infos["tamiyo"]["refused_actions"] == 2  # tamiyo's and emrakul's lifecycle refusals
    assert all(r.stage is SeedStage.DORMANT for r in env.world.model.reports())
    with pytest.raises(ValueError, match="outside"):
        env.step(act(emrakul=(len(MaintenanceOp), 0)))
    with pytest.raises(ValueError, match="expected exactly the live agents"):
        env.step({"tamiyo": np.zeros(4, dtype=int)})
    env.close()


def test_episode_end_and_reward_terms(kwargs):
    env = multi_agent.parallel_env(**kwargs)
    env.reset(seed=0)
    for step in range(3):
        _, rewards, terminations, truncations, infos = env.step(act())
        team = {k: v for k, v in infos["tamiyo"]["reward_terms"].items() if k.startswith("team.")}
        assert list(team) == [f"team.{t}" for t in REWARD_TERMS]
        for agent in AGENTS:
            terms = infos[agent]["reward_terms"]
            assert rewards[agent] == pytest.approx(sum(terms.values()))
            assert {k: v for k, v in terms.items() if k.startswith("team.")} == team
        assert [k for k in infos["emrakul"]["reward_terms"] if k.startswith("emrakul.")] == [
            f"emrakul.{t}" for t in EMRAKUL_TERMS
        ]
        assert [k for k in infos["karn"]["reward_terms"] if k.startswith("karn.")] == [
            f"karn.{t}" for t in KARN_TERMS
        ]
        assert truncations["karn"] == (step == 2)
        assert not any(terminations.values())
    assert env.agents == []
    assert 0.0 <= infos["karn"]["final_test_accuracy"] <= 1.0
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(act())
    env.close()


def test_config_is_validated(kwargs):
    with pytest.raises(ValidationError, match="karn_slots"):
        multi_agent.parallel_env(**kwargs, multi_agent={"karn_slots": 2})
    with pytest.raises(ValidationError, match="no_such_key"):
        multi_agent.parallel_env(**kwargs, no_such_key=1)


def test_a_design_that_fails_evaluation_is_never_offered(kwargs):
    env = multi_agent.parallel_env(**{**kwargs, "episode_epochs": 4})
    env.reset(seed=0)
    residual = CATALOG["residual_block"]
    loud = apply_edit(residual, Edit(Mutation.REMOVE_NORM, residual.outputs[0]))
    report = env.submit_design(loud)
    assert not report.accepted and report.place is None
    assert any("output scale at init" in r for r in report.reasons)
    entry = env.world.library.entry(report.ir_hash)
    assert entry.status is BlueprintStatus.REJECTED
    assert entry.provenance == "karn:0:0"
    _, _, _, _, infos = env.step(act(tamiyo=(Op.GERMINATE, 0, env.n_builtin, 0)))
    assert infos["tamiyo"]["blueprint_pool"][env.n_builtin] is None
    assert infos["tamiyo"]["transition"]["gate"] == "pool"
    assert infos["tamiyo"]["action_mask"][len(Op) + 3 + env.n_builtin] == 0
    # A design that passes takes the first Karn place and can be grown from the next step.
    quiet = apply_edit(residual, Edit(Mutation.KERNEL, residual.nodes[0].id, 5))
    accepted = env.submit_design(quiet)
    assert accepted.accepted and accepted.place == env.n_builtin
    assert env.world.library.entry(accepted.ir_hash).provenance == "karn:0:1"
    obs, _, _, _, infos = env.step(act(tamiyo=(Op.GERMINATE, 0, env.n_builtin, 0)))
    assert infos["tamiyo"]["transition"]["ok"]
    assert env.world.model.slots["slot0"].blueprint == accepted.name
    names = env.observation_names("tamiyo")
    assert obs["tamiyo"]["observation"][names.index("slot0.blueprint.karn0")] == 1.0
    karn_names = env.observation_names("karn")
    assert obs["karn"]["observation"][karn_names.index("karn0.uses")] > 0
    assert obs["karn"]["observation"][karn_names.index("karn0.by_karn")] == 1.0
    # A new episode starts with an empty Karn part of the pool.
    _, infos = env.reset(seed=0)
    assert infos["karn"]["blueprint_pool"][env.n_builtin] is None
    env.close()


def test_karn_proposals_that_fail_evaluation_never_reach_the_pool(kwargs):
    # Removing a norm of residual_block: one of its two norms is the quiet output layer,
    # so about half of these mutants are too loud and rejected.
    env = multi_agent.parallel_env(**{**kwargs, "episode_epochs": 4})
    remove = MUTATIONS.index(Mutation.REMOVE_NORM)
    rejected, accepted = set(), set()
    for seed in range(2):
        env.reset(seed=seed)
        while env.agents:
            _, _, _, _, infos = env.step(act(karn=(DesignOp.PROPOSE, RESIDUAL, remove)))
            design = infos["karn"]["design"]
            (accepted if design["accepted"] else rejected).add(design["name"])
            pool = infos["tamiyo"]["blueprint_pool"]
            assert not set(pool) & rejected
            assert set(pool) >= accepted
            offered = infos["tamiyo"]["action_mask"][len(Op) + 3 : len(Op) + 3 + env.capacity]
            assert offered.tolist() == [int(name is not None) for name in pool]
        accepted.clear()
    assert rejected
    env.close()


def test_karn_cannot_propose_once_its_places_are_full(kwargs):
    env = multi_agent.parallel_env(
        **{**kwargs, "episode_epochs": 4}, multi_agent={"karn_places": 1}
    )
    env.reset(seed=0)
    kernel = MUTATIONS.index(Mutation.KERNEL)
    _, _, _, _, infos = env.step(act(karn=(DesignOp.PROPOSE, RESIDUAL, kernel)))
    assert infos["karn"]["design"]["accepted"]
    assert infos["karn"]["action_mask"][DesignOp.PROPOSE] == 0
    _, _, _, _, infos = env.step(act(karn=(DesignOp.PROPOSE, RESIDUAL, kernel)))
    assert not infos["karn"]["transition"]["ok"]
    assert "places are filled" in infos["karn"]["transition"]["reason"]
    with pytest.raises(RuntimeError, match="Karn places are filled"):
        env.submit_design(CATALOG["bottleneck"])
    env.close()


def _grow_fossil(env, slot=0):
    env.step(act(tamiyo=(Op.GERMINATE, slot, RESIDUAL, 0)))
    seed_slot = env.world.model.slots[env.world.slot_names[slot]]
    for op in (Op.ADVANCE, Op.ADVANCE, Op.ADVANCE, Op.FOSSILIZE):
        # The tiny data cannot show a seed helping: state the measurement the gates read.
        seed_slot.record_measurement(contribution=0.05, improvement=-0.1, seed_loss=1.0)
        _, _, _, _, infos = env.step(act(tamiyo=(op, slot, 0, 0)))
        assert infos["tamiyo"]["transition"]["ok"], infos["tamiyo"]["transition"]
    assert seed_slot.stage is SeedStage.FOSSILIZED
    return seed_slot, infos


def test_emrakul_probes_sedates_and_lyses_and_parameters_follow(kwargs):
    env = multi_agent.parallel_env(**{**kwargs, "episode_epochs": 9})
    env.reset(seed=0)
    slot, infos = _grow_fossil(env)
    seed_params = slot.seed_params()
    base = env.world.base_params
    assert infos["emrakul"]["params_added"] == seed_params
    assert infos["emrakul"]["action_mask"][: len(MaintenanceOp)].tolist() == [1, 1, 1, 0, 1]
    names = env.observation_names("emrakul")

    obs, _, _, _, infos = env.step(act(emrakul=(MaintenanceOp.PROBE, 0)))
    assert infos["emrakul"]["transition"]["op"] == "probe"
    assert infos["emrakul"]["reward_terms"]["emrakul.probe"] == pytest.approx(-0.01)
    assert obs["emrakul"]["observation"][names.index("slot0.probed")] == 1.0

    obs, _, _, _, infos = env.step(act(emrakul=(MaintenanceOp.SEDATE, 0)))
    assert infos["emrakul"]["transition"]["ok"]
    assert slot.sedated and slot.effective_alpha == 0.0
    assert obs["emrakul"]["observation"][names.index("slot0.sedated")] == 1.0
    terms = infos["emrakul"]["reward_terms"]
    assert terms["emrakul.compute_saved"] > 0
    assert terms["emrakul.params_saved"] == 0.0  # sedated, not removed: still counted
    assert infos["emrakul"]["params_added"] == seed_params
    assert infos["emrakul"]["action_mask"][: len(MaintenanceOp)].tolist() == [1, 1, 0, 1, 1]

    _, _, _, _, infos = env.step(act(emrakul=(MaintenanceOp.LYSE, 0)))
    move = infos["emrakul"]["transition"]
    assert move["ok"] and move["gate"] == "G5"
    assert infos["emrakul"]["params_added"] == 0
    assert env.world.model.host_param_count() == base
    terms = infos["emrakul"]["reward_terms"]
    assert terms["emrakul.params_saved"] == pytest.approx(seed_params / base)
    assert terms["team.rent"] == 0.0
    assert slot.stage is SeedStage.EMBARGOED
    assert infos["emrakul"]["seeds_pruned"] == 1
    env.close()


def test_emrakul_wakes_a_sedated_seed(kwargs):
    env = multi_agent.parallel_env(**{**kwargs, "episode_epochs": 8})
    env.reset(seed=0)
    slot, _ = _grow_fossil(env)
    env.step(act(emrakul=(MaintenanceOp.SEDATE, 0)))
    _, _, _, _, infos = env.step(act(emrakul=(MaintenanceOp.WAKE, 0)))
    assert infos["emrakul"]["transition"]["ok"]
    assert not slot.sedated and slot.effective_alpha == 1.0
    assert infos["emrakul"]["reward_terms"]["emrakul.compute_saved"] == 0.0
    assert infos["emrakul"]["seeds_fossilized"] == 1  # sedation is no new fossil
    env.close()


def test_render_shows_slots_and_pool(kwargs):
    env = multi_agent.parallel_env(**kwargs, render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert "slot0" in text and "pool: norm" in text
    env.close()
