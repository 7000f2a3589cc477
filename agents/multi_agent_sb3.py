"""Training Tamiyo, Emrakul or Karn with any SB3 algorithm: one agent's view of the team env.

`AgentView` is a Gymnasium env in which one agent of `EsperMultiAgentEnv` acts
and the other two are driven by given policies (`act(obs, info)`, e.g. the
heuristics of `agents.multi_agent_policies`, `WaitPolicy`, or a trained model
through `agents.zoo.policy.SB3Policy`). Its observation is the agent's float
vector, its action space the agent's `MultiDiscrete`, its reward the agent's
(team term plus its own terms), and `action_masks()` the agent's per-dimension
mask, so MaskablePPO uses the masks and every other SB3 algorithm simply ignores them.

Separate policies for the three agents are trained one view at a time: train
Tamiyo against heuristic (or waiting) partners, wrap the result in
`SB3Policy(model)`, and use it as a partner while Emrakul or Karn trains
(iterated best response). `SB3Policy` calls each algorithm as it needs: a
RecurrentPPO partner keeps its LSTM state across the steps of an episode (and
forgets it when the view resets), a MaskablePPO partner gets its mask from its
info. A partner saved to a file loads with
`agents.zoo.policy.load_sb3_policy(algo, path, view)` (a `view` of the agent it
was trained as), which treats the file as untrusted input and runs no code from
it (see `agents.zoo.safe_load`).

A *shared* policy in the SuperSuit sense (one network, parameter sharing across
agents) is not possible here: SuperSuit's parameter sharing needs identical
observation and action spaces, and the three agents' spaces differ in size and
meaning (`[op, slot, blueprint, speed]`, `[op, slot]`, `[op, parent, mutation]`);
padding them into one space would mix unrelated features in the same inputs.

Example:
    >>> from sb3_contrib import MaskablePPO
    >>> view = make_agent_view("emrakul", partners="heuristic", preset="Esper-CIFAR-Mini-v0")
    >>> model = MaskablePPO("MlpPolicy", view, n_steps=24).learn(240)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np

from agents.multi_agent_policies import WaitPolicy, heuristic_team
from agents.policies import Policy
from esper_env.envs.multi_agent import AGENTS, EsperMultiAgentEnv

PARTNERS = ("wait", "heuristic")


class AgentView(gym.Env[np.ndarray, np.ndarray]):
    """One agent of the multi-agent env as a single-agent Gymnasium env.

    Args:
        env: The multi-agent env (the view owns it from now on, and closes it).
        agent: The agent that learns: "tamiyo", "emrakul" or "karn".
        partners: A policy for each of the other two agents.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, env: EsperMultiAgentEnv, agent: str, partners: Mapping[str, Policy]) -> None:
        if agent not in AGENTS:
            raise ValueError(f"no agent {agent!r}; choose from {AGENTS}")
        others = set(AGENTS) - {agent}
        if set(partners) != others:
            raise ValueError(
                f"partners for {sorted(partners)}, but {agent!r} needs exactly {sorted(others)}"
            )
        self.env = env
        self.agent = agent
        self.partners = dict(partners)
        self.render_mode = env.render_mode
        self.observation_space = env.observation_space(agent)["observation"]
        self.action_space = env.action_space(agent)
        self._obs: dict[str, dict[str, np.ndarray]] = {}
        self._infos: dict[str, dict[str, Any]] = {}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Resets the team env and the partners (with `seed`)."""
        super().reset(seed=seed)
        if options:
            raise ValueError(f"reset takes no options, got {sorted(options)}")
        for policy in self.partners.values():
            policy.reset(seed)
        self._obs, self._infos = self.env.reset(seed=seed)
        return self._obs[self.agent]["observation"], self._infos[self.agent]

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """The learner's action plus the partners' actions make one team step."""
        actions = {
            other: policy.act(self._obs[other]["observation"], self._infos[other])
            for other, policy in self.partners.items()
        }
        actions[self.agent] = np.asarray(action)
        self._obs, rewards, terminations, truncations, self._infos = self.env.step(actions)
        return (
            self._obs[self.agent]["observation"],
            rewards[self.agent],
            terminations[self.agent],
            truncations[self.agent],
            self._infos[self.agent],
        )

    def action_masks(self) -> np.ndarray:
        """The learner's per-dimension mask as bools (sb3-contrib's MaskablePPO form)."""
        return self.env.action_mask(self.agent)

    def render(self) -> str | None:
        """The team env's render."""
        return self.env.render()

    def close(self) -> None:
        """Closes the team env."""
        self.env.close()


def make_agent_view(
    agent: str,
    *,
    partners: str | Mapping[str, Policy] = "wait",
    seed: int | None = None,
    **env_kwargs: Any,
) -> AgentView:
    """Builds the multi-agent env and one agent's view of it.

    Args:
        agent: The learner: "tamiyo", "emrakul" or "karn".
        partners: "wait" (the others always WAIT), "heuristic" (the heuristics of
            `agents.multi_agent_policies`), or a policy per other agent.
        seed: Seed of the heuristic partners' choices.
        **env_kwargs: Arguments of `EsperMultiAgentEnv` (`preset`, `multi_agent`, `EnvConfig` keys).
    """
    if isinstance(partners, str) and partners not in PARTNERS:
        raise ValueError(f"partners must be one of {PARTNERS} or a mapping, got {partners!r}")
    env = EsperMultiAgentEnv(**env_kwargs)
    if partners == "wait":
        team: Mapping[str, Policy] = {
            other: WaitPolicy(len(env.action_space(other).nvec)) for other in AGENTS
        }
    elif partners == "heuristic":
        team = heuristic_team(env, seed=seed)
    else:
        assert not isinstance(partners, str)
        return AgentView(env, agent, partners)
    return AgentView(env, agent, {other: team[other] for other in AGENTS if other != agent})
