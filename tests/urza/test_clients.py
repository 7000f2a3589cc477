"""The library's users against a real server: a wrapped model, the envs, and Karn."""

from typing import Any

import gymnasium as gym
import pytest
import torch
from torch import nn
from urza_server import Server, design

from blueprints.catalog import CATALOG
from blueprints.compiler import Compiler
from blueprints.library import BlueprintLibrary, BlueprintStatus
from blueprints.mutate import Edit, Mutation, apply_edit
from esper_env import multi_agent, wrap
from esper_env.contracts import Op
from urza.client import TOKEN_ENV, RemoteLibrary, open_library


def test_a_wrapped_model_germinates_a_seed_fetched_by_hash_and_runs_it(
    server: Server, remote: RemoteLibrary
) -> None:
    # A researcher posts a design; Tezzeret and Urabrask validate it on the server.
    posted = remote.submit(design(40), "researcher:phase2")
    assert remote.settle(posted.hash, timeout=120).status is BlueprintStatus.VALIDATED

    # Another process knows only the hash: it fetches the blueprint and grows it.
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    x = torch.randn(4, 3, 8, 8)
    model = wrap(net, ["1"], example_input=x[:1])
    with RemoteLibrary(server.url) as library:
        ir = library.artifact(posted.hash)  # checked against the hash it was asked for
    with Compiler() as compiler:
        seed = compiler.build(ir, model.slots["1"].channels, seed=0)
    calls: list[tuple[int, ...]] = []
    seed.register_forward_hook(lambda module, args, out: calls.append(tuple(out.shape)))
    assert model.germinate("1", seed, ir.metadata.name, blend_epochs=1).ok
    assert model.advance("1").ok  # TRAINING: the seed learns beside the host
    model.train()
    before = len(calls)  # G0 probes a germinating seed on a small batch
    model(x)
    assert calls[before:] == [(4, 16, 8, 8)]
    assert model.slots["1"].blueprint == "design_40"


def test_open_library_reads_a_url_a_file_or_memory(server: Server, tmp_path: Any) -> None:
    with open_library(server.url) as remote:
        assert isinstance(remote, RemoteLibrary)
    with open_library(str(tmp_path / "local.sqlite")) as local:
        assert isinstance(local, BlueprintLibrary)
    with open_library(None) as memory:
        assert isinstance(memory, BlueprintLibrary) and memory.path == ":memory:"


def test_an_env_offers_the_blueprints_of_a_server(
    server: Server, tiny_env_kwargs: dict[str, Any]
) -> None:
    env = gym.make("Esper-CIFAR-Mini-v0", **tiny_env_kwargs, library_path=server.url)
    world = env.unwrapped.world
    assert isinstance(world.library, RemoteLibrary)
    env.reset(seed=0)
    residual = world.config.blueprints.index("residual_block")
    _, _, _, _, info = env.step([Op.GERMINATE, 0, residual, 0])
    assert info["transition"]["ok"]
    assert world.model.slots["slot0"].blueprint == "residual_block"
    env.close()


@pytest.mark.filterwarnings("ignore::UserWarning:pettingzoo")
def test_karn_designs_go_through_the_server(
    server: Server, tiny_env_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, server.token)
    env = multi_agent.parallel_env(
        **{**tiny_env_kwargs, "episode_epochs": 3},
        preset="Esper-CIFAR-Mini-v0",
        library_path=server.url,
    )
    env.reset(seed=0)
    residual = CATALOG["residual_block"]
    loud = apply_edit(residual, Edit(Mutation.REMOVE_NORM, residual.outputs[0]))
    refused = env.submit_design(loud)
    assert not refused.accepted
    assert any("output scale at init" in reason for reason in refused.reasons)
    quiet = apply_edit(residual, Edit(Mutation.KERNEL, residual.nodes[0].id, 5))
    accepted = env.submit_design(quiet)
    assert accepted.accepted and accepted.place == env.n_builtin
    # The verdicts are the server's, stored in its file with Karn's provenance.
    with BlueprintLibrary(server.db) as library:
        assert library.entry(refused.ir_hash).status is BlueprintStatus.REJECTED
        assert library.entry(accepted.ir_hash).provenance == "karn:0:0"  # episode 0, epoch 0
    env.close()
