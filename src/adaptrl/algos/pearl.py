"""PEARL: off-policy meta-RL with probabilistic context variables (Rakelly, Zhou, Quillen, Finn,
Levine 2019, https://arxiv.org/abs/1903.08254; the authors' code: katerakelly/oyster).

A latent task variable z conditions a soft actor-critic. A permutation-invariant encoder maps
each context transition (s, a, r[, s′]) to a Gaussian factor; the posterior q(z | c) is their
product (closed form), kept near N(0, I) by ``kl_lambda`` · KL, and trained through the critic's
Bellman loss only. Per training task, one replay buffer feeds the RL losses and one, refilled each
time the task is visited, the encoder (``replay_buffers.py``). Collection follows the paper:
``initial_steps`` per task with z from the prior, then per iteration ``tasks_per_iteration``
tasks with ``prior_steps`` (z from the prior, both buffers), ``posterior_steps`` (z from the
posterior, both buffers) and ``extra_rl_steps`` (z from the posterior, RL buffer only); then
``gradient_steps`` updates on ``meta_batch_size`` tasks.

Meta-test (``meta_test``): on each task z starts from the prior; the deterministic policy
collects one trajectory at a time, and after the first ``exploration_trajectories`` the
posterior is re-inferred from the *online* context gathered so far (never from a replay buffer:
oyster #7, garage #1365). The return of every trajectory is recorded.

Deliberate differences from oyster, each stated: the posterior-phase and extra-RL trajectories
of a visit are collected in one batch, each trajectory with its own context sample and z
(oyster collects them one after another, the first from the prior); the policy's
log-probability uses the exact tanh correction (oyster adds 1e-6 inside the log).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaptrl.algos.base import Adaptation, Reference, TrainContext, eval_settings
from adaptrl.algos.replay_buffers import ReplayBuffers
from adaptrl.config import EvalConfig
from adaptrl.controllers import ContextController
from adaptrl.distributions import TanhGaussian
from adaptrl.envs import Family, Tasks, resolve
from adaptrl.errors import ConfigError, RunError
from adaptrl.memory import available_bytes
from adaptrl.policies import mlp
from adaptrl.rng import derive_seed
from adaptrl.sampling import Sampler, Trajectories

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the actor's log-std range (oyster, rlkit)
MIN_VARIANCE = 1e-7  # a context factor's variance floor (oyster's product of Gaussians)


@dataclass(frozen=True)
class PEARLConfig:
    """PEARL settings; defaults are oyster's ``configs/default.py``."""

    latent_size: int = 5
    """Size of the task variable z."""
    hidden_size: int = 300
    """Width of the three hidden layers of the actor, both Q functions and V."""
    encoder_hidden_size: int = 200
    """Width of the context encoder's three hidden layers."""
    context: bool = True
    """False: z is always 0 and the encoder is unused (the domain-randomised reference: SAC
    trained on every task, acting without adaptation)."""
    context_next_obs: bool = False
    """Context transitions include s′ (the paper's (s, a, r, s′); oyster's default is (s, a, r))."""
    num_train_tasks: int = 100
    """Training tasks drawn once, each with its own buffers (oyster: 100 for cheetah-vel)."""
    meta_batch_size: int = 16
    """Tasks per gradient step."""
    tasks_per_iteration: int = 5
    """Training tasks visited for collection per iteration."""
    initial_steps: int = 2000
    """Env steps collected per training task, z from the prior, before the first update."""
    prior_steps: int = 400
    """Per visited task and iteration: steps with z from the prior (both buffers)."""
    posterior_steps: int = 0
    """Per visited task and iteration: steps with z from the posterior (both buffers)."""
    extra_rl_steps: int = 400
    """Per visited task and iteration: steps with z from the posterior (RL buffer only)."""
    posterior_update_every: int = 0
    """0: each posterior-phase trajectory of a visit draws its own context sample and z from
    the encoder buffer as it stood when the phase began, all in one batch. k > 0: as oyster's
    ``collect_data`` (``update_post_train`` = k), the phase starts from the prior and z is
    re-inferred after every k trajectories, so a trajectory that found a sparse reward steers
    the next ones (the sparse presets: 1)."""
    gradient_steps: int = 2000
    """Gradient steps per iteration."""
    batch_size: int = 256
    """RL transitions per task per gradient step."""
    context_batch_size: int = 64
    """Context transitions per task the posterior is inferred from in training."""
    buffer_size: int = 100_000
    """Capacity of each task's RL buffer, in transitions (a ring)."""
    gamma: float = 0.99
    """Discount of the Bellman targets."""
    tau: float = 0.005
    """Soft update of the target V network."""
    lr: float = 3e-4
    """Adam step size of every network (actor, Q, V, encoder)."""
    critic_reward: str = "env"
    """What the critic's Bellman targets use: ``env`` (the env's reward, as the context sees it)
    or ``dense`` (the family's dense reward, ``EnvSpec.dense_reward``, while the context still
    sees the env's sparse one: oyster's sparse point robot, whose ``step()`` returns the dense
    reward for meta-training and whose encoder alone gets ``sparse_reward``)."""
    reward_scale: float = 5.0
    """Rewards are multiplied by this in the Bellman target: SAC's entropy temperature is its
    inverse (the entropy weight is 1)."""
    kl_lambda: float = 0.1
    """Weight of KL(q(z | c) ‖ N(0, I)) in the encoder's loss."""
    policy_mean_reg: float = 1e-3
    """Weight of the actor's mean² penalty."""
    policy_std_reg: float = 1e-3
    """Weight of the actor's log-std² penalty."""

    def __post_init__(self) -> None:
        if self.latent_size <= 0:
            raise ConfigError(
                f"algo.latent_size must be > 0, got {self.latent_size} (algo.context=false "
                "trains without a task variable)"
            )
        for name in (
            "hidden_size",
            "encoder_hidden_size",
            "num_train_tasks",
            "meta_batch_size",
            "tasks_per_iteration",
            "gradient_steps",
            "batch_size",
            "context_batch_size",
            "buffer_size",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"algo.{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "initial_steps",
            "prior_steps",
            "posterior_steps",
            "extra_rl_steps",
            "posterior_update_every",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"algo.{name} must be >= 0, got {getattr(self, name)}")
        if self.context and self.prior_steps + self.posterior_steps == 0:
            raise ConfigError(
                "algo.prior_steps + algo.posterior_steps must be > 0: the encoder's buffer of "
                "a visited task is refilled from them"
            )
        if self.buffer_size < self.batch_size:
            raise ConfigError(
                f"algo.buffer_size ({self.buffer_size}) is smaller than a batch "
                f"(algo.batch_size {self.batch_size}): raise it"
            )
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1:
            raise ConfigError("algo.gamma and algo.tau must lie in (0, 1]")
        if self.critic_reward not in ("env", "dense"):
            raise ConfigError(
                f"algo.critic_reward must be 'env' or 'dense', got {self.critic_reward!r}"
            )
        if self.lr <= 0 or self.reward_scale <= 0 or self.kl_lambda < 0:
            raise ConfigError("algo.lr and algo.reward_scale must be > 0, algo.kl_lambda >= 0")


@dataclass(frozen=True)
class PEARLEvalSettings:
    """PEARL's own keys of the ``evaluate`` section (meta-test: ``num_steps`` + 1
    trajectories per task)."""

    exploration_trajectories: int = 1
    """Trajectories collected with z from the prior before the posterior is first inferred
    (oyster's ``num_exp_traj_eval``: 1 by default, 2 for cheetah-vel, 5 for the sparse robot)."""
    deterministic: bool = True
    """Act with the policy's mean (tanh of it), as the paper's meta-test does."""

    def __post_init__(self) -> None:
        if self.exploration_trajectories < 1:
            raise ConfigError(
                "evaluate.exploration_trajectories must be >= 1 (the first trajectory has no "
                f"context), got {self.exploration_trajectories}"
            )


# ----------------------------------------------------------------------------- the maths
def product_of_gaussians(
    means: torch.Tensor, variances: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised product of Gaussian factors over the context axis (-2): [..., N, L] ->
    ([..., L], [..., L]). Precisions add; the mean is the precision-weighted mean. ``mask``
    [..., N] (1: a real transition) leaves padding out (its precision counts as 0)."""
    precisions = 1.0 / variances.clamp_min(MIN_VARIANCE)
    if mask is not None:
        precisions = precisions * mask.unsqueeze(-1).to(precisions.dtype)
    variance = 1.0 / precisions.sum(-2)
    return variance * (means * precisions).sum(-2), variance


def kl_to_standard_normal(mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag variance) ‖ N(0, I)), summed over the last axis."""
    return 0.5 * (variance + mean.pow(2) - 1.0 - variance.log()).sum(-1)


class ContextEncoder(nn.Module):
    """Each transition -> a Gaussian factor (mean, softplus variance); the posterior is their
    product, so it does not depend on the transitions' order."""

    def __init__(self, in_dim: int, latent: int, hidden: int) -> None:
        super().__init__()
        self.latent = latent
        self.net = mlp(in_dim, 2 * latent, (hidden,) * 3, "relu")

    def posterior(
        self, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """context [n, N, d] (``mask`` [n, N]: real rows) -> (mean [n, L], variance [n, L])."""
        out = self.net(context)
        means, raw = out[..., : self.latent], out[..., self.latent :]
        return product_of_gaussians(means, nn.functional.softplus(raw), mask)


class TanhGaussianActor(nn.Module):
    """π(a | s, z): tanh of a Gaussian whose mean and log-std an MLP gives (SAC's actor)."""

    distribution = TanhGaussian()

    def __init__(self, in_dim: int, act_dim: int, hidden: int) -> None:
        super().__init__()
        self.act_dim = act_dim
        self.net = mlp(in_dim, 2 * act_dim, (hidden,) * 3, "relu")
        last = self.net[-1]
        nn.init.uniform_(last.weight, -1e-3, 1e-3)  # small initial outputs, as rlkit's
        nn.init.uniform_(last.bias, -1e-3, 1e-3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        mean, log_std = out[..., : self.act_dim], out[..., self.act_dim :]
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


@dataclass
class Networks:
    """Everything PEARL trains: the actor, two Q functions, V and its target, the encoder."""

    actor: TanhGaussianActor
    q1: nn.Module
    q2: nn.Module
    v: nn.Module
    target_v: nn.Module
    encoder: ContextEncoder


def critic_loss(
    nets: Networks,
    batch: dict[str, torch.Tensor],
    z: torch.Tensor,
    gamma: float,
    reward_scale: float,
) -> torch.Tensor:
    """Both Q functions' Bellman error against r·scale + γ(1 − done)·V̄(s′, z): flattened
    [k·B] transitions, z per transition (not detached: the encoder learns from this loss)."""
    sa = torch.cat([batch["obs"], batch["actions"], z], -1)
    with torch.no_grad():
        target_v = nets.target_v(torch.cat([batch["next_obs"], z], -1)).squeeze(-1)
        target = batch["rewards"] * reward_scale + (1.0 - batch["terminated"]) * gamma * target_v
    q1, q2 = nets.q1(sa).squeeze(-1), nets.q2(sa).squeeze(-1)
    return (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()


def actor_value_losses(
    nets: Networks,
    obs: torch.Tensor,
    z: torch.Tensor,
    noise: torch.Tensor,
    mean_reg: float,
    std_reg: float,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """V's regression onto min Q(s, ã, z) − log π(ã) and the actor's reparameterised loss
    E[log π(ã) − min Q(s, ã, z)] + regularisers, ã = tanh(μ + σ·noise); z is detached (the
    encoder learns only from the critic). The stats are detached tensors, read by the caller."""
    z = z.detach()
    s_z = torch.cat([obs, z], -1)
    mean, log_std = nets.actor(s_z)
    actions, log_pi = nets.actor.distribution.sample((mean, log_std), noise)
    sa = torch.cat([obs, actions, z], -1)
    min_q = torch.minimum(nets.q1(sa), nets.q2(sa)).squeeze(-1)
    v = nets.v(s_z).squeeze(-1)
    value_loss = (v - (min_q - log_pi).detach()).pow(2).mean()
    policy_loss = (log_pi - min_q).mean()
    policy_loss = policy_loss + mean_reg * mean.pow(2).mean() + std_reg * log_std.pow(2).mean()
    stats = {"log_pi": log_pi.detach().mean(), "mean_q": min_q.detach().mean()}
    return value_loss, policy_loss, stats


# ----------------------------------------------------------------------------- the sampler's agent
class PEARLAgent:
    """The actor with one z per row (tasks outermost: ``z`` [n, E, L]); acts in the env's
    action box (the actor's (-1, 1) scaled), deterministically (tanh of the mean) or not."""

    def __init__(
        self,
        actor: TanhGaussianActor,
        z: torch.Tensor,
        deterministic: bool,
        low: torch.Tensor,
        high: torch.Tensor,
    ) -> None:
        self.actor, self.z, self.deterministic = actor, z.detach(), deterministic
        self.low, self.high = low, high

    def start(self, keys: torch.Tensor, num_steps: int) -> dict[str, Any]:
        """Noise, each row's z and the action box on the rows' device, once per rollout (not
        once per step)."""
        dev = keys.device
        noise = self.actor.distribution.noise(keys, num_steps, self.actor.act_dim)
        z = self.z.reshape(-1, self.z.shape[-1]).to(dev)
        low, high = self.low.to(dev), self.high.to(dev)
        return {"t": 0, "noise": noise, "z": z, "low": low, "range": high - low}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, state: dict[str, Any]):
        params = self.actor(torch.cat([obs, state["z"]], -1))
        dist = self.actor.distribution
        if self.deterministic:
            unit = dist.mode(params)
            log_prob = torch.zeros(unit.shape[:-1], device=obs.device)
        else:
            unit, log_prob = dist.sample(params, state["noise"][state["t"]])
        state["t"] += 1
        return state["low"] + (unit + 1.0) * 0.5 * state["range"], log_prob, state

    def observe(self, state, actions, rewards, ended, next_obs):
        return state

    def shard(self, start: int, stop: int) -> PEARLAgent:
        return PEARLAgent(self.actor, self.z[start:stop], self.deterministic, self.low, self.high)


# ----------------------------------------------------------------------------- the learner
class PEARL:
    """Meta-learner (the ``Learner`` protocol) whose adaptation is posterior inference over z
    from the context of past trajectories."""

    x_label = "trajectories of context"
    EvalSettings = PEARLEvalSettings
    trial_episodes = 1

    def __init__(self, config: PEARLConfig, family: Family, sampler: Sampler, device="cpu"):
        self.config, self.family, self.sampler = config, family, sampler
        self.device = torch.device(device)
        obs_space, act_space = family.spaces()
        if not (hasattr(act_space, "low") and len(act_space.shape) == 1):
            raise ConfigError(
                f"PEARL's soft actor-critic needs continuous actions (a 1-D Box); env "
                f"'{family.spec.name}' has {act_space}: use rl2 or maml"
            )
        self._dense_reward = None
        if config.critic_reward == "dense":
            if not family.spec.dense_reward:
                raise ConfigError(
                    f"algo.critic_reward=dense needs a family with a dense reward; env "
                    f"'{family.spec.name}' has none: set algo.critic_reward=env"
                )
            self._dense_reward = resolve(family.spec.dense_reward)
        with family.make_env(1) as env:
            self.horizon = env.horizon
        obs_dim, act_dim, L = obs_space.shape[0], act_space.shape[0], config.latent_size
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.low = torch.as_tensor(act_space.low, dtype=torch.float32)
        self.high = torch.as_tensor(act_space.high, dtype=torch.float32)
        self.context_dim = obs_dim * (2 if config.context_next_obs else 1) + act_dim + 1
        H = config.hidden_size
        actor = TanhGaussianActor(obs_dim + L, act_dim, H)
        v = mlp(obs_dim + L, 1, (H,) * 3, "relu")
        self.nets = Networks(
            actor=actor,
            q1=mlp(obs_dim + act_dim + L, 1, (H,) * 3, "relu"),
            q2=mlp(obs_dim + act_dim + L, 1, (H,) * 3, "relu"),
            v=v,
            target_v=copy.deepcopy(v),
            encoder=ContextEncoder(self.context_dim, L, config.encoder_hidden_size),
        )
        for net in self.networks().values():
            net.to(self.device)
        self.optimizers = {
            name: torch.optim.Adam(self.networks()[name].parameters(), lr=config.lr)
            for name in ("actor", "q1", "q2", "v", "encoder")
        }
        fields = {
            "obs": ((obs_dim,), torch.float32),
            "actions": ((act_dim,), torch.float32),
            "rewards": ((), torch.float32),
            "next_obs": ((obs_dim,), torch.float32),
            "terminated": ((), torch.float32),
        }
        n = config.num_train_tasks
        encoder_capacity = max(config.initial_steps, config.prior_steps + config.posterior_steps)
        encoder_capacity = max(encoder_capacity, config.context_batch_size, 1)
        check_buffer_memory(n, config.buffer_size + encoder_capacity, fields)
        self.rl_buffer = ReplayBuffers(n, config.buffer_size, fields)
        self.encoder_buffer = ReplayBuffers(n, encoder_capacity, fields)
        self.train_tasks: Tasks | None = None
        self._buffers_loaded = True
        """False after ``load_state_dict`` alone (an evaluation): training needs the buffers."""

    def networks(self) -> dict[str, nn.Module]:
        return {
            "actor": self.nets.actor,
            "q1": self.nets.q1,
            "q2": self.nets.q2,
            "v": self.nets.v,
            "target_v": self.nets.target_v,
            "encoder": self.nets.encoder,
        }

    @classmethod
    def references(cls) -> dict[str, Reference]:
        return {
            "domain_randomised": Reference(
                "soft actor-critic trained on all training tasks without a task variable (z = "
                "0) for the same wall-clock time, acting without adaptation",
                {"context": False},
                adapts=False,
            ),
            "oracle": Reference(
                "the same with the task in its observation, acting without adaptation: an "
                "upper bound",
                {"context": False},
                adapts=False,
                env_overrides={"task_in_obs": True},
            ),
        }

    # ------------------------------------------------------------------------- context and z
    def context_of(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Transitions [..., N, ·] as the encoder's input (s, a, r[, s′])."""
        parts = [batch["obs"], batch["actions"], batch["rewards"].unsqueeze(-1)]
        if self.config.context_next_obs:
            parts.append(batch["next_obs"])
        return torch.cat(parts, -1)

    def posterior(
        self, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) of q(z | context [n, N, d]); ``mask`` [n, N] marks real rows
        (tasks whose episodes ended early have fewer). The prior N(0, I) where N = 0 or
        without context."""
        n, L = context.shape[0], self.config.latent_size
        if not self.config.context or context.shape[1] == 0:
            zeros = torch.zeros(n, L, device=self.device)
            return zeros, torch.ones(n, L, device=self.device)
        mask = None if mask is None else mask.to(self.device)
        return self.nets.encoder.posterior(context.to(self.device), mask)

    def _draw_z(self, mean: torch.Tensor, variance: torch.Tensor, g: torch.Generator):
        if not self.config.context:
            return torch.zeros_like(mean)
        noise = torch.randn(mean.shape, generator=g).to(mean.device)
        return mean + variance.sqrt() * noise

    # ------------------------------------------------------------------------- collection
    def _collect(
        self, tasks: Tasks, z: torch.Tensor, seed: int, deterministic: bool = False
    ) -> Trajectories:
        """One episode per row, z [n, E, L] per row."""
        agent = PEARLAgent(self.nets.actor, z.cpu(), deterministic, self.low, self.high)
        return self.sampler.sample(agent, tasks, seed, episodes_per_task=z.shape[1])

    def _transitions(self, traj: Trajectories) -> list[dict[str, torch.Tensor]]:
        """Each task's real steps as buffer rows (actions back in the actor's (-1, 1))."""
        unit = 2.0 * (traj.actions - self.low) / (self.high - self.low) - 1.0
        fields = {
            "obs": traj.obs,
            "actions": unit,
            "rewards": traj.rewards,
            "next_obs": traj.next_obs,
            "terminated": traj.terminated.float(),
        }
        E = traj.episodes_per_task
        per_task = []
        for i in range(traj.num_tasks):
            rows = slice(i * E, (i + 1) * E)
            keep = traj.mask[:, rows].transpose(0, 1).reshape(-1).bool()
            per_task.append({k: _rows_of(x, rows, keep) for k, x in fields.items()})
        return per_task

    def _store(self, ids: list[int], traj: Trajectories, encoder: bool) -> None:
        for task, rows in zip(ids, self._transitions(traj)):
            if encoder:
                self.encoder_buffer.add(task, rows)
            if self._dense_reward is not None:
                goal = {k: v[task : task + 1] for k, v in self.train_tasks.items()}
                rows = {**rows, "rewards": self._dense_reward(rows["next_obs"], goal, self.family)}
            self.rl_buffer.add(task, rows)

    def _episodes(self, steps: int) -> int:
        return math.ceil(steps / self.horizon) if steps else 0

    def _visit(self, ids: list[int], seed: int, g: torch.Generator) -> dict[str, float]:
        """The paper's collection for the visited training tasks ``ids``; the mean episode
        return of each phase (how training is going: z from the prior, from the posterior)."""
        c = self.config
        tasks = {k: v[ids] for k, v in self.train_tasks.items()}
        for t in ids:
            self.encoder_buffer.clear(t)
        returns = {}
        if (e := self._episodes(c.prior_steps)) > 0:
            traj = self._collect(tasks, self._prior_draws(len(ids), e, g), derive_seed(seed, 1))
            self._store(ids, traj, encoder=True)
            returns["adapt/return_prior"] = float(traj.task_returns().mean())
        for phase, steps, encoder in ((2, c.posterior_steps, True), (3, c.extra_rl_steps, False)):
            phase_returns = []
            for chunk, (first, e) in enumerate(self._posterior_chunks(steps, encoder)):
                if first:  # oyster's collect_data starts every phase from the prior (clear_z)
                    z = self._prior_draws(len(ids), e, g)
                else:
                    z = self._posterior_draws(ids, e, g)
                traj = self._collect(tasks, z, derive_seed(seed, phase, chunk))
                self._store(ids, traj, encoder)
                phase_returns.append(traj.task_returns().mean() * e)
            if phase_returns:
                mean = float(sum(phase_returns)) / self._episodes(steps)
                returns["adapt/return_posterior"] = mean
        return returns

    def _posterior_chunks(self, steps: int, encoder: bool) -> list[tuple[bool, int]]:
        """(from the prior?, episodes) of each collection call of a posterior phase: all at
        once (``posterior_update_every`` 0), or the first k = ``posterior_update_every`` from
        the prior and then z re-inferred from the encoder buffer after every k (oyster's
        ``update_post_train``). A phase that does not feed the encoder buffer never changes
        its posterior, so its remaining episodes go in one call."""
        total, every = self._episodes(steps), self.config.posterior_update_every
        if total == 0:
            return []
        if every == 0:
            return [(False, total)]
        chunks = [(True, min(every, total))]
        rest = total - chunks[0][1]
        while rest > 0:
            e = min(every, rest) if encoder else rest
            chunks.append((False, e))
            rest -= e
        return chunks

    def _prior_draws(self, n: int, episodes: int, g: torch.Generator) -> torch.Tensor:
        """z [n, E, L] from N(0, I), one per episode (zeros without context)."""
        shape = (n, episodes, self.config.latent_size)
        return torch.randn(shape, generator=g) if self.config.context else torch.zeros(shape)

    @torch.no_grad()
    def _posterior_draws(self, ids: list[int], episodes: int, g: torch.Generator):
        """z [n, E, L]: each episode's own context sample from the encoder buffer, its own
        draw from the posterior."""
        index = torch.tensor(ids).repeat_interleave(episodes)
        if not self.config.context or bool((self.encoder_buffer.size[index] == 0).any()):
            mean = torch.zeros(len(index), self.config.latent_size, device=self.device)
            var = torch.ones_like(mean)
        else:
            batch = self.encoder_buffer.sample(index, self.config.context_batch_size, g)
            mean, var = self.posterior(self.context_of(batch))
        return self._draw_z(mean, var, g).reshape(len(ids), episodes, -1)

    # ------------------------------------------------------------------------- training
    def train_iteration(self, ctx: TrainContext) -> dict[str, float]:
        c = self.config
        if not self._buffers_loaded and int(self.rl_buffer.size.sum()):
            raise RunError(
                "this checkpoint holds PEARL's networks but not its replay buffers (best.pt and "
                "iter_N.pt keep networks only): resume from last.pt"
            )
        start = time.perf_counter()
        g = torch.Generator().manual_seed(ctx.seed(0))
        if self.train_tasks is None:  # drawn once, from the run's task stream
            self.train_tasks = self.family.tasks.sample(c.num_train_tasks, "train", ctx.generator)
        if int(self.rl_buffer.size.sum()) == 0 and (e := self._episodes(c.initial_steps)):
            z = self._prior_draws(c.num_train_tasks, e, g)
            trajectories = self._collect(self.train_tasks, z, ctx.seed(1))
            self._store(list(range(c.num_train_tasks)), trajectories, encoder=True)
        visit = torch.randint(c.num_train_tasks, (c.tasks_per_iteration,), generator=g).tolist()
        returns = self._visit(visit, ctx.seed(2), g)
        sampled = time.perf_counter()
        stats: dict[str, torch.Tensor] = {}
        for _ in range(c.gradient_steps):
            stats = self._gradient_step(g)
        logged = {f"loss/{k}": float(v) for k, v in stats.items()}  # the last step's, read once
        end = time.perf_counter()
        return {
            **returns,
            **logged,
            "perf/sample_s": sampled - start,
            "perf/update_s": end - sampled,
            "perf/iteration_s": end - start,
            "perf/gradient_steps_per_s": c.gradient_steps / max(end - sampled, 1e-9),
        }

    def _gradient_step(self, g: torch.Generator) -> dict[str, torch.Tensor]:
        """One update of every network; its losses stay tensors (reading each as a float would
        make the host wait for the device at every step)."""
        c, nets = self.config, self.nets
        ready = ((self.rl_buffer.size > 0) & (self.encoder_buffer.size > 0)).nonzero()[:, 0]
        tasks = ready[torch.randint(len(ready), (c.meta_batch_size,), generator=g)]
        batch = {
            k: v.to(self.device) for k, v in self.rl_buffer.sample(tasks, c.batch_size, g).items()
        }
        k, B = c.meta_batch_size, c.batch_size
        if c.context:
            context = self.context_of(self.encoder_buffer.sample(tasks, c.context_batch_size, g))
            mean, var = self.posterior(context)
        else:
            mean = torch.zeros(k, c.latent_size, device=self.device)
            var = torch.ones_like(mean)
        z = self._draw_z(mean, var, g)  # reparameterised: gradients reach the encoder
        z_rows = z.repeat_interleave(B, 0)
        flat = {name: x.reshape(k * B, *x.shape[2:]) for name, x in batch.items()}
        kl = kl_to_standard_normal(mean, var).sum()
        q_loss = critic_loss(nets, flat, z_rows, c.gamma, c.reward_scale)
        encoder_loss = q_loss + c.kl_lambda * kl if c.context else q_loss
        for name in ("q1", "q2", "encoder"):
            self.optimizers[name].zero_grad(set_to_none=True)
        encoder_loss.backward()
        for name in ("q1", "q2") + (("encoder",) if c.context else ()):
            self.optimizers[name].step()
        noise = torch.randn(k * B, self.act_dim, generator=g).to(self.device)
        v_loss, pi_loss, extra = actor_value_losses(
            nets, flat["obs"], z_rows, noise, c.policy_mean_reg, c.policy_std_reg
        )
        self.optimizers["v"].zero_grad(set_to_none=True)
        v_loss.backward()
        self.optimizers["v"].step()
        with torch.no_grad():
            for target, source in zip(nets.target_v.parameters(), nets.v.parameters()):
                target.lerp_(source, c.tau)
        self.optimizers["actor"].zero_grad(set_to_none=True)
        pi_loss.backward()
        self.optimizers["actor"].step()
        losses = {"q": q_loss, "v": v_loss, "policy": pi_loss, "kl": kl, **extra}
        return {k: v.detach() for k, v in losses.items()}

    # ------------------------------------------------------------------------- meta-test
    def meta_test(self, tasks: Tasks, cfg: EvalConfig, seed: int = 0) -> Adaptation:
        """``cfg.num_steps`` + 1 trajectories per task, z from the prior for the first
        ``exploration_trajectories`` (a new draw for each: oyster resamples z after every
        trajectory, so each explores another hypothesis), then from the posterior of the online
        context."""
        own = eval_settings(self, cfg)
        n = next(iter(tasks.values())).shape[0]
        L = self.config.latent_size
        g = torch.Generator().manual_seed(derive_seed(seed, 0))
        context, real = torch.zeros(n, 0, self.context_dim), torch.zeros(n, 0)
        returns, trajectories = [], []
        for k in range(cfg.num_steps + 1):
            if k >= own.exploration_trajectories and self.config.context:
                with torch.no_grad():
                    mean, var = self.posterior(context, real)
                z = self._draw_z(mean.cpu(), var.cpu(), g)
            else:
                z = self._draw_z(torch.zeros(n, L), torch.ones(n, L), g)
            traj = self._collect(tasks, z[:, None], derive_seed(seed, k + 1), own.deterministic)
            returns.append(traj.task_returns())
            trajectories.append(traj)
            steps = self._transitions(traj)
            width = max(len(s["obs"]) for s in steps)
            fresh, valid = torch.zeros(n, width, self.context_dim), torch.zeros(n, width)
            for i, s in enumerate(steps):  # an episode that ended early leaves padding
                fresh[i, : len(s["obs"])] = self.context_of(s)
                valid[i, : len(s["obs"])] = 1.0
            context, real = torch.cat([context, fresh], 1), torch.cat([real, valid], 1)
        return Adaptation(torch.stack(returns), trajectories=trajectories)

    def controller(
        self, exploration: int = 1, deterministic: bool = True, seed: int = 0
    ) -> ContextController:
        """The trained agent for one plain gymnasium env: ``reset()`` per task, ``act(obs)``,
        ``observe(reward, ended[, next_obs])``; z from the prior for the first ``exploration``
        episodes (a new draw each), then from the posterior of the context it gathered
        (``meta_test``'s protocol: with the same ``seed`` it draws the same z on a task)."""
        return ContextController(
            copy.deepcopy(self.nets.actor).cpu().eval(),
            copy.deepcopy(self.nets.encoder).cpu().eval(),
            self.config.latent_size,
            self.low,
            self.high,
            self.config.context_next_obs,
            exploration,
            deterministic,
            derive_seed(seed, 0),
            infer=self.config.context,
        )

    def meta_test_steps(self, cfg: EvalConfig, horizon: int) -> int:
        return (cfg.num_steps + 1) * horizon

    def tune_for_reference(
        self, cfg: EvalConfig, score: Callable[[EvalConfig], float]
    ) -> EvalConfig:
        """Nothing to tune: it adapts by inference, with no step size."""
        return cfg

    def evaluation_record(self, cfg: EvalConfig, for_reference: bool) -> dict[str, Any]:
        own = eval_settings(self, cfg)
        record: dict[str, Any] = {"deterministic": own.deterministic}
        if self.config.context and cfg.num_steps:
            record["exploration_trajectories"] = own.exploration_trajectories
        return record

    # ------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers, the training tasks and the buffers' fill levels; the buffers'
        contents are ``bulk_state`` (streamed by the trainer, never copied)."""
        return {
            **{f"net/{name}": m.state_dict() for name, m in self.networks().items()},
            **{f"opt/{name}": o.state_dict() for name, o in self.optimizers.items()},
            "train_tasks": dict(self.train_tasks or {}),
            "rl_buffer": self.rl_buffer.levels(),
            "encoder_buffer": self.encoder_buffer.levels(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, m in self.networks().items():
            m.load_state_dict(state[f"net/{name}"])
        for name, o in self.optimizers.items():
            o.load_state_dict(state[f"opt/{name}"])
        self.train_tasks = dict(state["train_tasks"]) or None
        self.rl_buffer.load_levels(state["rl_buffer"])
        self.encoder_buffer.load_levels(state["encoder_buffer"])
        self._buffers_loaded = False  # until load_bulk_state: enough to evaluate, not to train

    def bulk_state(self) -> dict[str, torch.Tensor]:
        return {
            **{f"rl/{k}": v for k, v in self.rl_buffer.filled().items()},
            **{f"encoder/{k}": v for k, v in self.encoder_buffer.filled().items()},
        }

    def load_bulk_state(self, arrays) -> None:
        buffers = {"rl": self.rl_buffer, "encoder": self.encoder_buffer}
        for key, value in arrays:
            which, name = key.split("/", 1)
            buffers[which].load_rows(name, value)
        self._buffers_loaded = True


def _rows_of(x: torch.Tensor, rows: slice, keep: torch.Tensor) -> torch.Tensor:
    """Time-major [T, B, ...] -> the real steps of rows ``rows``, episode by episode."""
    x = x[:, rows].transpose(0, 1)
    return x.reshape(-1, *x.shape[2:])[keep]


def check_buffer_memory(num_tasks: int, capacity: int, fields) -> None:
    """Refuse, before any work, buffers that could not fit in this machine's memory."""
    need = ReplayBuffers.bytes_needed(num_tasks, capacity, fields)
    available = available_bytes()
    if available is not None and need > available:
        raise ConfigError(
            f"PEARL's replay buffers ({num_tasks} tasks x {capacity} transitions) could need "
            f"{need / 2**30:.1f} GiB, more than this machine has free ({available / 2**30:.1f} "
            "GiB); lower algo.buffer_size or algo.num_train_tasks"
        )
