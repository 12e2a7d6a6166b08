"""Agents: what a sampler runs. An agent acts on a batch of rows and is a small picklable object
(a policy module and its parameters), so a worker process or Ray actor can hold a local copy.

Protocol (duck-typed; see ``Agent``):

* ``start(keys, num_steps) -> state``: a fresh state for rows with stream keys ``keys`` [B];
* ``act(obs, state) -> (actions, log_probs, state)``;
* ``observe(state, actions, rewards, ended) -> state`` after every env step (recurrent agents
  feed the transition back in; feed-forward agents ignore it);
* ``shard(start, stop)``: the agent for tasks ``start:stop`` only (per-task parameters are
  sliced; shared ones are not).

Action noise comes from the rows' counter-based streams (``adaptrl.rng``), drawn for the whole
row budget at ``start``, so a row's actions never depend on which other rows share its batch.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import nn

from adaptrl.policies import Params, RecurrentCategoricalPolicy, forward_params
from adaptrl.rng import normal_sequence, uniform_sequence

_LOG_2PI = math.log(2 * math.pi)


class Agent(Protocol):
    def start(self, keys: torch.Tensor, num_steps: int) -> Any: ...

    def act(self, obs: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor, Any]: ...

    def observe(self, state: Any, actions, rewards, ended) -> Any: ...

    def shard(self, start: int, stop: int) -> Agent: ...


class GaussianAgent:
    """A Gaussian MLP policy with shared parameters, or one parameter set per task (θ'ᵢ).

    Rows are tasks-outermost: with per-task parameters the B rows are n tasks x B/n rows each.
    """

    def __init__(self, policy: nn.Module, params: Params, per_task: bool, num_tasks: int) -> None:
        self.policy, self.per_task, self.num_tasks = policy, per_task, num_tasks
        self.params = {k: v.detach() for k, v in params.items()}

    def start(self, keys: torch.Tensor, num_steps: int) -> dict[str, Any]:
        act_dim = self.policy.log_std.shape[-1]
        return {"t": 0, "noise": normal_sequence(keys, num_steps, act_dim)}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, state: dict[str, Any]):
        noise = state["noise"][state["t"]]
        if self.per_task:
            mean, log_std = forward_params(
                self.policy, self.params, obs.reshape(self.num_tasks, -1, obs.shape[-1]), True
            )
            mean = mean.reshape(obs.shape[0], -1)
            log_std = log_std.repeat_interleave(obs.shape[0] // self.num_tasks, 0)
        else:
            mean, log_std = forward_params(self.policy, self.params, obs, False)
        actions = mean + noise * log_std.exp()
        log_probs = -(0.5 * noise.pow(2) + log_std + 0.5 * _LOG_2PI).sum(-1)
        state["t"] += 1
        return actions, log_probs.expand(obs.shape[0]), state

    def observe(self, state, actions, rewards, ended):
        return state

    def shard(self, start: int, stop: int) -> GaussianAgent:
        if not self.per_task:
            return type(self)(self.policy, self.params, False, stop - start)
        params = {k: v[start:stop] for k, v in self.params.items()}
        return type(self)(self.policy, params, True, stop - start)


class CategoricalAgent(GaussianAgent):
    """A softmax MLP policy, shared or per task, sampling by the inverse CDF of each row's
    uniforms (the same draw whatever the batch)."""

    def start(self, keys: torch.Tensor, num_steps: int) -> dict[str, Any]:
        return {"t": 0, "noise": uniform_sequence(keys, num_steps, 1)[..., 0]}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, state: dict[str, Any]):
        u = state["noise"][state["t"]]
        if self.per_task:
            logits = forward_params(
                self.policy, self.params, obs.reshape(self.num_tasks, -1, obs.shape[-1]), True
            ).reshape(obs.shape[0], -1)
        else:
            logits = forward_params(self.policy, self.params, obs, False)
        log_p = torch.log_softmax(logits, -1)
        actions = (log_p.exp().cumsum(-1) < u.unsqueeze(-1)).sum(-1).clamp_max(log_p.shape[-1] - 1)
        state["t"] += 1
        return actions, log_p.gather(1, actions[:, None]).squeeze(1), state


class RecurrentAgent:
    """The RL² agent: a recurrent cell over (obs, previous action, reward, done, progress[,
    previous obs]).

    Its state carries the hidden vector across the episodes of a trial; ``mode`` takes the most
    likely action instead of sampling (evaluation only).
    """

    def __init__(self, policy: RecurrentCategoricalPolicy, mode: bool = False) -> None:
        self.policy, self.mode = policy, mode

    def start(self, keys: torch.Tensor, num_steps: int) -> dict[str, Any]:
        B, dev = keys.shape[0], keys.device
        policy = self.policy
        noise = (
            normal_sequence(keys, num_steps, policy.num_actions)  # [T, B, A]
            if policy.continuous
            else uniform_sequence(keys, num_steps, 1)[..., 0]  # [T, B]
        )
        return {
            "t": 0,
            "budget": num_steps,
            "noise": noise,
            "hidden": policy.initial_state(B, dev),
            "prev_action": policy.initial_action(B, dev),
            "prev_reward": torch.zeros(B, device=dev),
            "prev_done": torch.zeros(B, device=dev),
            "prev_obs": None,
            "obs": None,
        }

    @torch.no_grad()
    def act(self, obs: torch.Tensor, state: dict[str, Any]):
        t, B = state["t"], obs.shape[0]
        prev_obs = state["prev_obs"] if state["prev_obs"] is not None else torch.zeros_like(obs)
        progress = torch.full((B,), t / state["budget"], device=obs.device)
        x = self.policy.inputs(
            obs, state["prev_action"], state["prev_reward"], state["prev_done"], progress, prev_obs
        )
        out, _, state["hidden"] = self.policy(x.unsqueeze(0), state["hidden"])
        if self.policy.continuous:
            actions, log_probs = self._gaussian(out[0], state["noise"][t])
        else:
            actions, log_probs = self._categorical(out[0], state["noise"][t])
        state["obs"] = obs.clone()  # a user's env may write its next obs into the same buffer
        state["t"] = t + 1
        return actions, log_probs, state

    def _categorical(self, logits: torch.Tensor, u: torch.Tensor):
        log_p = torch.log_softmax(logits, -1)
        if self.mode:
            actions = log_p.argmax(-1)
        else:  # inverse CDF of the row's uniform: the same draw whatever the batch
            cdf = log_p.exp().cumsum(-1)
            actions = (cdf < u.unsqueeze(-1)).sum(-1).clamp_max(log_p.shape[-1] - 1)
        return actions, log_p.gather(1, actions[:, None]).squeeze(1)

    def _gaussian(self, mean: torch.Tensor, z: torch.Tensor):
        log_std = self.policy.log_std.expand_as(mean)
        actions = mean if self.mode else mean + log_std.exp() * z
        log_prob = (-0.5 * ((actions - mean) * torch.exp(-log_std)).pow(2) - log_std).sum(-1)
        return actions, log_prob - 0.5 * _LOG_2PI * mean.shape[-1]

    def observe(self, state, actions, rewards, ended):
        state["prev_action"], state["prev_reward"] = actions, rewards
        state["prev_done"], state["prev_obs"] = ended.float(), state["obs"]
        return state

    def shard(self, start: int, stop: int) -> RecurrentAgent:
        return self
