"""Trained policies as controllers: what ``save_policy`` exports and a deployed loop runs.

``MeanActionPolicy`` turns a feed-forward policy into ``obs -> action``; ``RecurrentStep`` is one
step of an RL² policy as a pure function (exportable with ``torch.export``); ``RecurrentController``
runs such a step in one plain environment, carrying the agent's memory across a trial's episodes;
``ContextController`` runs PEARL's actor there, inferring its task from the context it gathers.
Nothing here trains: it is the leaf that deployment and the learners' ``controller()`` share.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adaptrl.distributions import Categorical, DiagGaussian
from adaptrl.policies import RecurrentPolicy


class MeanActionPolicy(nn.Module):
    """A policy deployed as ``obs -> action``: a Gaussian's mean (what a controller executes),
    or a categorical's most likely action."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        dist = self.policy.distribution
        return dist.mode(dist.params_of(self.policy(obs)))


class RecurrentStep(nn.Module):
    """One step of an RL² policy as a pure function of its inputs and hidden state, so it can
    be exported (``torch.export``) and run without adaptrl.

    obs [B, d], prev_action [B] int64 (or [B, A] for continuous actions), prev_reward/prev_done/
    progress [B], prev_obs [B, d], hidden [t, B, S][, terminal_obs [B, d] where the policy takes
    it] -> (logits or mean [B, A], hidden);
    S is the policy's ``state_size`` (H for a GRU, 2H for an LSTM's (h, c)); t is 1 for a
    recurrent cell, and the steps seen so far for a transformer (its key-value cache grows by one
    entry per step).
    """

    def __init__(self, policy: RecurrentPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(
        self,
        obs,
        prev_action,
        prev_reward,
        prev_done,
        progress,
        prev_obs,
        hidden,
        terminal_obs=None,
    ):
        x = self.policy.inputs(
            obs, prev_action, prev_reward, prev_done, progress, prev_obs, terminal_obs
        )
        out, _, hidden = self.policy(x.unsqueeze(0), hidden)
        return out[0], hidden  # logits, or the Gaussian head's mean


class RecurrentController:
    """An RL² agent acting in one plain environment, step by step: it carries its own memory
    (recurrent state, previous action, reward and done flag) across the episodes of a trial.

    ``reset()`` starts a trial (a new task); ``act(obs)`` returns an action (an int, or a numpy
    vector for continuous actions); ``observe(reward, ended)`` reports the step's reward and
    whether the episode ended. ``budget`` is the trial's step budget (episodes per trial x
    horizon), the scale of the policy's time input. ``action_std``: the Gaussian head's std
    (continuous actions only). ``state_steps``: the initial state's length (1: a recurrent
    state; 0: a transformer's empty key-value cache).
    """

    def __init__(
        self,
        step: nn.Module,
        state_size: int,
        budget: int,
        mode: bool = False,
        seed: int = 0,
        action_std: list[float] | None = None,
        state_steps: int = 1,
        terminal_obs_input: bool = False,
    ) -> None:
        self.step, self.state_size, self.budget, self.mode = step, state_size, budget, mode
        self.state_steps = state_steps  # the initial state's length: 0 for a transformer's cache
        self.terminal_obs_input = terminal_obs_input  # observe() must be given next_obs
        self.action_std = None if action_std is None else torch.tensor(action_std)
        self.distribution = Categorical() if action_std is None else DiagGaussian()
        self.generator = torch.Generator().manual_seed(seed)
        self.reset()

    @property
    def continuous(self) -> bool:
        return self.action_std is not None

    def reset(self) -> None:
        self.t = 0
        self.hidden = torch.zeros(self.state_steps, 1, self.state_size)
        size = 0 if self.action_std is None else self.action_std.shape[0]
        self.prev_action = self.distribution.null_action(1, size, "cpu")
        self.prev_reward = torch.zeros(1)
        self.prev_done = torch.zeros(1)
        self.prev_obs: torch.Tensor | None = None
        self._obs: torch.Tensor | None = None
        self.terminal_obs: torch.Tensor | None = None

    @torch.no_grad()
    def act(self, obs: Any) -> Any:
        obs_t = torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1)
        prev_obs = self.prev_obs if self.prev_obs is not None else torch.zeros_like(obs_t)
        progress = torch.full((1,), self.t / self.budget)
        args = [obs_t, self.prev_action, self.prev_reward, self.prev_done, progress, prev_obs]
        if self.terminal_obs_input:  # zeros except at the first step after an episode's end
            terminal = (
                self.terminal_obs if self.terminal_obs is not None else torch.zeros_like(obs_t)
            )
            args += [self.hidden, terminal]
        else:
            args += [self.hidden]
        out, self.hidden = self.step(*args)
        self._obs, self.t = obs_t, self.t + 1
        dist = self.distribution
        params = (out, self.action_std.log()) if self.continuous else dist.params_of(out)
        self.prev_action = dist.mode(params) if self.mode else dist.draw(params, self.generator)
        return self.prev_action[0].numpy() if self.continuous else int(self.prev_action[0])

    def observe(self, reward: float, ended: bool, next_obs: Any = None) -> None:
        """``next_obs``: the observation the step returned (needed when an episode ends, if the
        policy reads the terminal observation: ``terminal_obs_input``)."""
        self.prev_reward = torch.tensor([float(reward)])
        self.prev_done = torch.tensor([float(ended)])
        self.prev_obs = self._obs
        self.terminal_obs = None
        if self.terminal_obs_input and ended:
            if next_obs is None:
                raise ValueError(
                    "this policy reads the observation an episode ended on: call "
                    "observe(reward, ended, next_obs) with the observation env.step returned"
                )
            self.terminal_obs = torch.as_tensor(next_obs, dtype=torch.float32).reshape(1, -1)


class ContextController:
    """A PEARL agent acting in one plain environment: it infers its task from the context it
    gathers there (online, never from a replay buffer), as PEARL's meta-test does.

    ``reset()`` starts a new task: empty context, z drawn from the prior N(0, I). ``act(obs)``
    returns the actor's action for (obs, z) in the env's box (``deterministic``: tanh of its
    mean). ``observe(reward, ended, next_obs=None)`` adds the transition to the context
    (``next_obs`` is needed when the encoder reads s′); when an episode ends, z is drawn again:
    from the prior while fewer than ``exploration`` episodes are done (each exploration episode
    tries another hypothesis, as oyster's resampling), then from the posterior of the whole
    context.
    ``actor``: (obs ++ z) -> (mean, log-std) with a tanh-Gaussian ``distribution``; ``encoder``:
    ``posterior(context [1, N, d]) -> (mean, variance)``. ``infer=False``: z stays 0 (the
    domain-randomised reference). Same seed, same z draws as ``PEARL.meta_test`` on one task.
    """

    def __init__(
        self,
        actor: nn.Module,
        encoder: nn.Module,
        latent: int,
        low: torch.Tensor,
        high: torch.Tensor,
        context_next_obs: bool = False,
        exploration: int = 1,
        deterministic: bool = True,
        seed: int = 0,
        infer: bool = True,
    ) -> None:
        self.actor, self.encoder, self.latent, self.infer = actor, encoder, latent, infer
        self.low, self.high = low.float(), high.float()
        self.context_next_obs, self.exploration = context_next_obs, exploration
        self.deterministic, self.seed = deterministic, seed
        self.reset()

    def reset(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)
        self.context: list[torch.Tensor] = []
        self.episodes = 0
        self.z = torch.randn(1, self.latent, generator=self.generator)  # the prior
        if not self.infer:  # a policy trained without a task variable: z = 0 throughout
            self.z = torch.zeros(1, self.latent)

    @torch.no_grad()
    def act(self, obs: Any) -> Any:
        self._obs = torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1)
        params = self.actor(torch.cat([self._obs, self.z], -1))
        dist = self.actor.distribution
        if self.deterministic:
            unit = dist.mode(params)
        else:
            unit, _ = dist.sample(params, torch.randn(params[0].shape, generator=self.generator))
        self._unit = unit  # the encoder reads actions in the actor's (-1, 1)
        return (self.low + (unit[0] + 1.0) * 0.5 * (self.high - self.low)).numpy()

    @torch.no_grad()
    def observe(self, reward: float, ended: bool, next_obs: Any = None) -> None:
        parts = [self._obs, self._unit, torch.tensor([[float(reward)]])]
        if self.context_next_obs:
            if next_obs is None:
                raise ValueError("this agent's encoder reads s′: pass observe(..., next_obs=obs)")
            parts.append(torch.as_tensor(next_obs, dtype=torch.float32).reshape(1, -1))
        self.context.append(torch.cat(parts, -1))
        if ended:
            self.episodes += 1
            if not self.infer:
                return
            if self.episodes >= self.exploration:
                mean, variance = self.encoder.posterior(torch.cat(self.context)[None])
                noise = torch.randn(mean.shape, generator=self.generator)
                self.z = mean + variance.sqrt() * noise
            else:
                self.z = torch.randn(1, self.latent, generator=self.generator)  # the prior
