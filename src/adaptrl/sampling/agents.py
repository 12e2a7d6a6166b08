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

from typing import Any, Protocol

import torch
from torch import nn

from adaptrl.policies import Params, RecurrentPolicy, forward_params


class Agent(Protocol):
    def start(self, keys: torch.Tensor, num_steps: int) -> Any: ...

    def act(self, obs: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor, Any]: ...

    def observe(self, state: Any, actions, rewards, ended, next_obs) -> Any:
        """After a step: its actions, rewards, which rows' episodes ended, and the observations
        the step returned (before any reset: an ended row's terminal observation)."""
        ...

    def shard(self, start: int, stop: int) -> Agent: ...


class PolicyAgent:
    """A feed-forward policy (any ``policy.distribution``) with shared parameters, or one
    parameter set per task (θ'ᵢ).

    Rows are tasks-outermost: with per-task parameters the B rows are n tasks x B/n rows each.
    """

    def __init__(self, policy: nn.Module, params: Params, per_task: bool, num_tasks: int) -> None:
        self.policy, self.per_task, self.num_tasks = policy, per_task, num_tasks
        self.params = {k: v.detach() for k, v in params.items()}

    def start(self, keys: torch.Tensor, num_steps: int) -> dict[str, Any]:
        action_dim = _action_dim(self.policy)
        return {"t": 0, "noise": self.policy.distribution.noise(keys, num_steps, action_dim)}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, state: dict[str, Any]):
        dist = self.policy.distribution
        if self.per_task:
            rows = obs.shape[0] // self.num_tasks
            out = forward_params(
                self.policy, self.params, obs.reshape(self.num_tasks, rows, obs.shape[-1]), True
            )
            params = dist.params_of(out)
            params = (
                (params[0].reshape(obs.shape[0], -1),)
                + tuple(  # a Gaussian's log-std
                    p.repeat_interleave(rows, 0) for p in params[1:]
                )
            )
        else:
            params = dist.params_of(forward_params(self.policy, self.params, obs, False))
        actions, log_probs = dist.sample(params, state["noise"][state["t"]])
        state["t"] += 1
        return actions, log_probs, state

    def observe(self, state, actions, rewards, ended, next_obs):
        return state

    def shard(self, start: int, stop: int) -> PolicyAgent:
        if not self.per_task:
            return type(self)(self.policy, self.params, False, stop - start)
        params = {k: v[start:stop] for k, v in self.params.items()}
        return type(self)(self.policy, params, True, stop - start)


GaussianAgent = CategoricalAgent = PolicyAgent
"""Earlier names of ``PolicyAgent`` (one class now: the policy's distribution decides)."""


def _action_dim(policy: nn.Module) -> int:
    """Width of the noise one action needs (a Gaussian's action size; 1 for a categorical)."""
    log_std = getattr(policy, "log_std", None)
    return 1 if log_std is None else log_std.shape[-1]


class RecurrentAgent:
    """The RL² agent: a recurrent cell over (obs, previous action, reward, done, progress[,
    previous obs]).

    Its state carries the hidden vector across the episodes of a trial; ``mode`` takes the most
    likely action instead of sampling (evaluation only).
    """

    def __init__(self, policy: RecurrentPolicy, mode: bool = False) -> None:
        self.policy, self.mode = policy, mode

    def start(self, keys: torch.Tensor, num_steps: int) -> dict[str, Any]:
        B, dev = keys.shape[0], keys.device
        policy = self.policy
        return {
            "t": 0,
            "budget": num_steps,
            "noise": policy.distribution.noise(keys, num_steps, policy.action_dim),
            "hidden": policy.acting_state(num_steps, B, dev),
            "prev_action": policy.initial_action(B, dev),
            "prev_reward": torch.zeros(B, device=dev),
            "prev_done": torch.zeros(B, device=dev),
            "prev_obs": None,
            "obs": None,
            "terminal_obs": None,
        }

    @torch.no_grad()
    def act(self, obs: torch.Tensor, state: dict[str, Any]):
        t, B = state["t"], obs.shape[0]
        zeros = torch.zeros_like(obs)
        prev_obs = state["prev_obs"] if state["prev_obs"] is not None else zeros
        terminal = state["terminal_obs"] if state["terminal_obs"] is not None else zeros
        progress = torch.full((B,), t / state["budget"], device=obs.device)
        x = self.policy.inputs(
            obs,
            state["prev_action"],
            state["prev_reward"],
            state["prev_done"],
            progress,
            prev_obs,
            terminal,
        )
        out, _, state["hidden"] = self.policy.act_step(x.unsqueeze(0), state["hidden"], t)
        dist = self.policy.distribution
        params = self.policy.distribution_params(out[0])
        if self.mode:
            actions = dist.mode(params)
            log_probs = dist.log_prob(params, actions)
        else:
            actions, log_probs = dist.sample(params, state["noise"][t])
        state["obs"] = obs.clone()  # a user's env may write its next obs into the same buffer
        state["t"] = t + 1
        return actions, log_probs, state

    def observe(self, state, actions, rewards, ended, next_obs):
        state["prev_action"], state["prev_reward"] = actions, rewards
        state["prev_done"], state["prev_obs"] = ended.float(), state["obs"]
        if self.policy.terminal_obs_input:  # the ended rows' last observation, zeros elsewhere
            flags = ended.view(-1, *[1] * (next_obs.dim() - 1))
            state["terminal_obs"] = torch.where(flags, next_obs, 0.0)
        return state

    def shard(self, start: int, stop: int) -> RecurrentAgent:
        return self
