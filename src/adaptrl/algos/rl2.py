"""RL² (Duan et al. 2016, "RL²: Fast Reinforcement Learning via Slow Reinforcement Learning",
https://arxiv.org/abs/1611.02779) trained with PPO or, as in the paper, TRPO.

A trial is ``episodes_per_trial`` episodes on one task. The GRU sees (obs, previous action,
previous reward, done flag); its hidden state carries across the episodes of a trial and is reset
only between trials, so adaptation happens in memory, not by gradient steps. The objective is the
total reward of the trial: episode ends inside a trial are not terminal for the value function.

Deliberate deviations: PPO (clipped objective, GAE, value head, Adam) by default instead of the
paper's TRPO (``optimizer: trpo`` gives TRPO: a natural-gradient step over whole trials through
the shared ``trust_region``, and a separate recurrent value network fitted by Adam). PPO uses
truncated back-propagation through time over chunks of ``bptt_len`` steps whose initial hidden
states come from the rollout; the input also carries the trial's progress t / T
(``time_input``): without it the value head cannot tell step 5 from step 95 of a bandit trial,
its error swamps the advantages and PPO drifts to a deterministic policy even when all arms are
equal (measured). The value head predicts value / (running spread of returns), λ defaults to
1 (see ``gae_lambda``), and value targets are Monte-Carlo returns. Many trials step together
as one tensor op. Optional ReLU layers before and after the GRU and a previous-observation input
(``encoder_size``, ``head_size``, ``prev_obs_input``; see RecurrentCategoricalPolicy) are off by
default and on in the bandit n = 100 and MDP presets, where they needed 3-6x fewer iterations
to reach the old presets' level (numbers in those presets). ``cell: lstm`` swaps the GRU for an
LSTM, whose fused CPU kernels make PPO's update about 2x faster on CPUs.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from adaptrl.algos.base import Adaptation, Reference, TrainContext, eval_settings
from adaptrl.config import EvalConfig
from adaptrl.controllers import RecurrentController, RecurrentStep
from adaptrl.envs import Family, Tasks
from adaptrl.errors import ConfigError
from adaptrl.policies import (
    RecurrentCategoricalPolicy,
    RecurrentGaussianPolicy,
    RecurrentPolicy,
)
from adaptrl.returns import discounted_returns, gae
from adaptrl.rng import derive_seed
from adaptrl.sampling import RecurrentAgent, Sampler, Trajectories
from adaptrl.trust_region import trpo_step


@dataclass(frozen=True)
class InContextConfig:
    """What every in-context learner trained by PPO over trials shares (RL², the transformer)."""

    meta_batch_size: int = 256
    """Trials (each on its own task) per iteration."""
    episodes_per_trial: int = 1
    """Episodes per trial; the hidden state carries across them."""
    lr: float = 1e-3
    """Adam step size."""
    gamma: float = 1.0
    """Discount within a trial (1.0: total trial reward, as reported)."""
    gae_lambda: float = 1.0
    """GAE λ. Duan et al. use 0.3, but the next input carries the action just taken, so a
    bootstrapped V(h_{t+1}) varies with a_t and biases the advantages toward actions the value
    head has seen most: measured here, PPO then collapses to a fixed arm even when all arms are
    equal. λ = 1 (return minus V(h_t)) is unbiased and learns. Once the value head sees the
    trial's progress (``time_input``) a λ < 1 is safe again: on 100-step tabular-MDP trials
    λ = 0.95 cut the advantages' noise and learned faster (measured training return after 400
    iterations: ≈ 115 vs ≈ 108 with λ = 1; see the rl2-mdp-n10 preset)."""
    clip: float = 0.2
    """PPO ratio clip."""
    num_epochs: int = 4
    """PPO epochs over each batch."""
    num_minibatches: int = 4
    """Minibatches per epoch (over trials x chunks)."""
    entropy_coef: float = 0.01
    """Weight of the policy's entropy bonus in the PPO loss."""
    entropy_decay_iterations: int = 0
    """Decay the entropy bonus linearly from ``entropy_coef`` to 0 over this many iterations
    (0: constant). The bonus keeps early exploration broad; left on, it also keeps the trained
    policy stochastic late in a trial, where sampling then pulls a worse arm now and then."""
    lr_decay_iterations: int = 0
    """Decay Adam's step size linearly from ``lr`` to 0 over this many iterations (0: constant),
    as CleanRL's PPO anneals it over a run: set it to the run's length. On the bandit preset it
    did not help (measured: docs/results-rl2.md)."""
    value_coef: float = 0.5
    """Weight of the value head's loss in the PPO loss."""
    time_input: bool = True
    """Feed the fraction of the trial's step budget used (see RecurrentCategoricalPolicy)."""
    prev_obs_input: bool = False
    """Feed the previous observation too, so one input is a whole transition."""
    terminal_obs_input: bool = False
    """Feed the observation the previous episode ended on, at the first step of the next (zeros
    at every other step). Without it that observation never reaches the policy (the next input
    is the new episode's first), so where reward comes only at the goal (XLand) the agent never
    sees the state that paid; AMAGO feeds it as an extra step (Grigsby et al. 2024)."""
    max_grad_norm: float = 0.5
    """Clip the gradient norm of each Adam step (of the policy, or of TRPO's value network)."""
    init_std: float = 0.5
    """Initial action noise (std) of the Gaussian head, for continuous action spaces."""
    memory: bool = True
    """False: the same network without memory (state reset every step, no past inputs), trained
    by the same updates: the domain-randomised reference, which cannot adapt within a trial."""

    def __post_init__(self) -> None:
        for name in ("meta_batch_size", "episodes_per_trial", "num_epochs", "num_minibatches"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"algo.{name} must be > 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.clip <= 0 or self.max_grad_norm <= 0 or self.init_std <= 0:
            raise ConfigError("algo.lr, clip, max_grad_norm and init_std must be > 0")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ConfigError("algo.gamma must be in (0, 1] and algo.gae_lambda in [0, 1]")
        if self.entropy_coef < 0 or self.value_coef < 0:
            raise ConfigError("algo.entropy_coef and value_coef must be >= 0")
        if self.entropy_decay_iterations < 0 or self.lr_decay_iterations < 0:
            raise ConfigError(
                "algo.entropy_decay_iterations and lr_decay_iterations must be >= 0 (0: no decay)"
            )


@dataclass(frozen=True)
class RL2Config(InContextConfig):
    """RL²'s settings: the shared PPO ones, the recurrent cell's, and TRPO's."""

    hidden_size: int = 256
    """Units of the recurrent cell."""
    cell: str = "gru"
    """Recurrent cell: gru (Duan et al.) or lstm (same interface; on CPUs its backward runs
    as fused oneDNN kernels, about 2× faster than the GRU's at 64 units: see
    ``RecurrentCategoricalPolicy``)."""
    bptt_len: int = 0
    """Truncated-BPTT chunk length (0 = whole trials)."""
    encoder_size: int = 0
    """Units of a ReLU layer before the GRU (0: none, as in Duan et al.)."""
    head_size: int = 0
    """Units of a ReLU layer after the GRU (0: none)."""
    optimizer: str = "ppo"
    """Outer optimiser of the policy: ppo, or trpo (Duan et al.'s choice): a natural-gradient
    step on the whole batch with mean KL ≤ ``max_kl`` (shared ``trust_region``); the value
    function is then a separate recurrent network fitted to the returns by Adam."""
    max_kl: float = 0.01
    """TRPO: trust-region radius (mean KL per step)."""
    cg_iters: int = 10
    """TRPO: conjugate-gradient iterations."""
    cg_damping: float = 1e-3
    """TRPO: damping of the Fisher-vector products."""
    curvature_fraction: float = 1.0
    """TRPO: fraction of the trials in the Fisher-vector products (the line search checks the
    exact KL and surrogate on all of them)."""
    value_epochs: int = 3
    """TRPO: epochs of Adam (``num_minibatches`` steps each) on the value network per
    iteration."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden_size <= 0:
            raise ConfigError(f"algo.hidden_size must be > 0, got {self.hidden_size}")
        if self.encoder_size < 0 or self.head_size < 0 or self.bptt_len < 0:
            raise ConfigError("algo.encoder_size, head_size and bptt_len must be >= 0")
        if self.cell not in ("gru", "lstm"):
            raise ConfigError(f"algo.cell must be gru or lstm, got {self.cell!r}")
        if self.optimizer not in ("ppo", "trpo"):
            raise ConfigError(f"algo.optimizer must be ppo or trpo, got {self.optimizer!r}")
        if self.max_kl <= 0 or self.cg_iters <= 0 or self.value_epochs <= 0:
            raise ConfigError("algo.max_kl, cg_iters and value_epochs must be > 0")
        if not 0 < self.curvature_fraction <= 1 or self.cg_damping < 0:
            raise ConfigError("algo.curvature_fraction must be in (0, 1], cg_damping >= 0")


def ppo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
    value_coef: float,
    entropy_coef: float,
    value_scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Clipped PPO objective (Schulman et al. 2017), masked means over [T, B] tensors.

    The value error is divided by ``value_scale`` (the spread of the returns) so that trial
    returns in the hundreds do not drown the policy gradient under gradient clipping.
    Returns ``total`` (to minimise) and the terms ``policy``, ``value``, ``entropy``.
    """
    count = mask.sum().clamp_min(1.0)
    ratio = torch.exp(log_probs - old_log_probs)
    surrogate = torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    policy = -(surrogate * mask).sum() / count
    value = (((values - returns) / value_scale).pow(2) * mask).sum() / count
    ent = (entropy * mask).sum() / count
    return {
        "total": policy + value_coef * value - entropy_coef * ent,
        "policy": policy,
        "value": value,
        "entropy": ent,
    }


@dataclass(frozen=True)
class RL2EvalSettings:
    """RL²'s own key of the ``evaluate`` section."""

    actions: str = "sample"
    """'sample' from the policy (as trained) or take its 'mode' (most likely action)."""

    def __post_init__(self) -> None:
        if self.actions not in ("sample", "mode"):
            raise ConfigError(f"evaluate.actions must be 'sample' or 'mode', got '{self.actions}'")


@dataclass
class Trials:
    """RL²'s view of a batch of trials (one row per task), rebuilt from ``Trajectories``.

    Time-major [T, B]: inputs [T, B, in] (what the cell saw at each step), actions, log_probs
    (behaviour), values (recomputed by one pass of the cell over the whole trial), rewards, mask,
    trial_end; hidden_in [T, B, S]: the recurrent state before each step (for truncated
    BPTT)."""

    inputs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    trial_end: torch.Tensor
    hidden_in: torch.Tensor


def _linear_decay(iteration: int, over: int) -> float:
    """1 at iteration 0, falling linearly to 0 at ``over`` and staying there (0: always 1)."""
    return max(0.0, 1.0 - iteration / over) if over else 1.0


def _shifted(x: torch.Tensor) -> torch.Tensor:
    """x[t - 1] at step t, zeros at t = 0 (the 'previous' inputs of a trial)."""
    return torch.cat([torch.zeros_like(x[:1]), x[:-1]])


class RL2:
    """Meta-learner (the ``Learner`` protocol) whose adaptation is the forward pass of a
    recurrent policy: one PPO update on fresh trials per ``train_iteration``."""

    x_label = "episodes"
    EvalSettings = RL2EvalSettings

    def __init__(self, config: RL2Config, family: Family, sampler: Sampler, device="cpu"):
        self.config, self.family, self.sampler = config, family, sampler
        self.device = torch.device(device)
        self.policy = self.make_policy(*family.spaces())
        self.policy = self.policy.to(self.device)
        # TRPO: the value function is a recurrent network of its own (same layers), fitted by
        # Adam, so the trust region constrains only the policy and the baseline keeps learning
        # its own features (with PPO, one network carries both losses).
        self.value_net = copy.deepcopy(self.policy) if config.optimizer == "trpo" else None
        self.optimizer = torch.optim.Adam(
            (self.value_net or self.policy).parameters(), lr=config.lr, eps=1e-5
        )
        # Trial returns reach hundreds while a GRU's features are bounded: the value head
        # predicts value / value_scale (a running spread of the returns), so it can keep up.
        self.value_scale: float | None = None
        # Minibatch order of PPO; seeded per iteration from the run seed (resume-exact).
        self._perm_generator = torch.Generator(device=self.device)

    def make_policy(self, obs_space, act_space) -> RecurrentPolicy:
        """The recurrent policy for the family's spaces (a categorical or a Gaussian head)."""
        c = self.config
        layers = (
            c.hidden_size,
            c.time_input,
            c.prev_obs_input,
            c.encoder_size,
            c.head_size,
            c.cell,
            c.memory,
        )
        kw = {"terminal_obs_input": c.terminal_obs_input}
        if hasattr(act_space, "n"):
            return RecurrentCategoricalPolicy(obs_space.shape[0], int(act_space.n), *layers, **kw)
        if len(act_space.shape) == 1:  # a Box: Gaussian head over the action vector
            return RecurrentGaussianPolicy(
                obs_space.shape[0], act_space.shape[0], *layers, init_std=c.init_std, **kw
            )
        raise ConfigError(
            f"{type(self).__name__} needs a Discrete or a 1-D Box action space; env "
            f"'{self.family.spec.name}' has {act_space}"
        )

    @classmethod
    def references(cls) -> dict[str, Reference]:
        return {
            "domain_randomised": Reference(
                "the same network without memory, trained on all training tasks by the same "
                "updates for the same wall-clock time: what one would deploy instead",
                {"memory": False},
                added_later=True,
            ),
            "oracle": Reference(
                "the memoryless network with the task in its observation: an upper bound",
                {"memory": False},
                env_overrides={"task_in_obs": True},
                added_later=True,
            ),
            "random_init": Reference("the same policy, untrained"),
        }

    def sample_trials(
        self, tasks: Tasks, seed: int, episodes: int | None = None, mode: bool = False
    ) -> Trajectories:
        """One trial per task through the sampler; the GRU state carries across its episodes."""
        E = episodes or self.config.episodes_per_trial
        agent = RecurrentAgent(self.policy, mode=mode)
        return self.sampler.sample(agent, tasks, seed, 1, E).to(self.device)

    @torch.no_grad()
    def trials(self, traj: Trajectories) -> Trials:
        """Rebuild the cell's inputs from the trajectories and replay it over whole trials for the
        values and the recurrent state before every step."""
        T, B = traj.rewards.shape
        progress = torch.arange(T, device=self.device, dtype=torch.float32) / traj.budget
        # an episode's last s' at the next step, built only for a policy that reads it
        ends = traj.ends.unsqueeze(-1)
        terminal = _shifted(traj.next_obs * ends) if self.policy.terminal_obs_input else None
        x = self.policy.inputs(
            traj.obs,
            _shifted(traj.actions),
            _shifted(traj.rewards),
            _shifted(traj.ends.float()),
            progress.unsqueeze(1).expand(T, B),
            _shifted(traj.obs),
            terminal,
        )
        h0 = self.policy.initial_state(B, self.device)
        features = self.policy.encoder(x)
        out, hidden_in = self.policy.replay(features, h0)
        if self.value_net is not None:
            values = self.value_net(x, h0)[1]
        else:
            head = (
                out
                if self.policy.head is None
                else self.policy.head(torch.cat([out, features], -1))
            )
            values = self.policy.value_head(head).squeeze(-1)
        values = values * (self.value_scale or 1.0)
        return Trials(
            x,
            traj.actions,
            traj.log_probs,
            values,
            traj.rewards,
            traj.mask,
            traj.trial_end(),
            hidden_in,
        )

    def _advantages(self, trials: Trials) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        next_values = torch.cat([trials.values[1:], torch.zeros_like(trials.values[:1])])
        adv = (
            gae(
                trials.rewards,
                trials.values,
                next_values,
                trials.trial_end,
                trials.trial_end,
                c.gamma,
                c.gae_lambda,
            )
            * trials.mask
        )
        # Value targets are Monte-Carlo returns: a λ = 0.3 target would bootstrap a barely
        # trained value head across hundreds of steps and learn far too slowly.
        returns = discounted_returns(trials.rewards, trials.trial_end, c.gamma) * trials.mask
        count = trials.mask.sum()
        mean = adv.sum() / count
        std = (((adv - mean) * trials.mask).pow(2).sum() / count).sqrt()
        return (adv - mean) / (std + 1e-8) * trials.mask, returns

    def _chunks(self, x: torch.Tensor, L: int) -> torch.Tensor:
        """[T, B, ...] -> [L, C*B, ...] with T padded to a multiple of L (zeros)."""
        T = x.shape[0]
        C = -(-T // L)
        if C * L > T:
            pad = torch.zeros(C * L - T, *x.shape[1:], dtype=x.dtype, device=x.device)
            x = torch.cat([x, pad])
        x = x.reshape(C, L, *x.shape[1:]).transpose(0, 1)
        return x.reshape(L, -1, *x.shape[3:])

    def _track_value_scale(self, returns: torch.Tensor, mask: torch.Tensor) -> None:
        live = mask.bool()
        if live.sum() > 1:  # track the spread of returns; the head predicts value / scale
            spread = float(returns[live].std().clamp_min(1e-3))
            self.value_scale = (
                spread if self.value_scale is None else (0.9 * self.value_scale + 0.1 * spread)
            )

    def _mean_kl(self, old: tuple, new: tuple, mask: torch.Tensor) -> torch.Tensor:
        return (self.policy.distribution.kl(old, new) * mask).sum() / mask.sum().clamp_min(1.0)

    def trpo_objective(
        self, trials: Trials, adv: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, Callable[[], tuple[float, float]]]:
        """TRPO's pieces at the current policy: (its parameters, the surrogate loss over every
        trial, the KL whose Hessian is the curvature (first ``curvature_fraction`` of trials),
        and the line search's ``evaluate`` -> (loss, KL over every trial))."""
        c = self.config
        h0 = trials.hidden_in[0].unsqueeze(0)
        count = trials.mask.sum().clamp_min(1.0)
        params = [p for n, p in self.policy.named_parameters() if not n.startswith("value_head")]

        def surrogate(out: torch.Tensor) -> torch.Tensor:
            log_prob, _ = self._log_prob_entropy(out, trials.actions)
            ratio = torch.exp(log_prob - trials.log_probs)
            return -(ratio * adv * trials.mask).sum() / count

        out, _, _ = self.policy(trials.inputs, h0)
        old = tuple(d.detach() for d in self.policy.distribution_params(out))
        loss = surrogate(out)
        k = max(1, math.ceil(c.curvature_fraction * trials.mask.shape[1]))
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN's cells have no double backward,
            sub_out, _, _ = self.policy(trials.inputs[:, :k], h0[:, :k])  # which the FVP needs
        sub_old = tuple(d[:, :k] for d in old)
        kl = self._mean_kl(sub_old, self.policy.distribution_params(sub_out), trials.mask[:, :k])

        def evaluate() -> tuple[float, float]:
            with torch.no_grad():
                new_out, _, _ = self.policy(trials.inputs, h0)
                new = self.policy.distribution_params(new_out)
                return float(surrogate(new_out)), float(self._mean_kl(old, new, trials.mask))

        return params, loss, kl, evaluate

    def update_trpo(self, trials: Trials) -> dict[str, float]:
        """One TRPO step of the recurrent policy over whole trials (full BPTT), then the value
        head's fit. The surrogate, the KL and the line search use every trial; the curvature
        uses the first ``curvature_fraction`` of them."""
        c = self.config
        adv, returns = self._advantages(trials)
        self._track_value_scale(returns, trials.mask)
        h0 = trials.hidden_in[0].unsqueeze(0)
        params, loss, kl, evaluate = self.trpo_objective(trials, adv)
        stats = trpo_step(params, loss, kl, evaluate, c.max_kl, c.cg_damping, c.cg_iters)
        # The value network: Adam on minibatches of trials (full BPTT), targets scaled.
        value_net, targets = self.value_net, returns / (self.value_scale or 1.0)
        assert value_net is not None
        for _ in range(c.value_epochs):
            perm = torch.randperm(h0.shape[1], generator=self._perm_generator, device=self.device)
            for idx in perm.chunk(c.num_minibatches):
                values = value_net(trials.inputs[:, idx], h0[:, idx])[1]
                m = trials.mask[:, idx]
                value_loss = ((values - targets[:, idx]).pow(2) * m).sum() / m.sum().clamp_min(1)
                self.optimizer.zero_grad()
                value_loss.backward()
                torch.nn.utils.clip_grad_norm_(value_net.parameters(), c.max_grad_norm)
                self.optimizer.step()
        return {
            **stats,
            "loss/surrogate": float(loss.detach()),
            "loss/value": float(value_loss.detach()),
        }

    def update(self, trials: Trials, entropy_coef: float | None = None) -> dict[str, float]:
        """The configured update (``algo.optimizer``): ``update_ppo`` or ``update_trpo``."""
        if self.config.optimizer == "trpo":
            return self.update_trpo(trials)
        return self.update_ppo(trials, entropy_coef)

    def update_ppo(self, trials: Trials, entropy_coef: float | None = None) -> dict[str, float]:
        """PPO epochs over chunks of trials (truncated BPTT from the stored hidden states);
        ``entropy_coef``: this iteration's bonus (default ``config.entropy_coef``)."""
        c = self.config
        entropy_coef = c.entropy_coef if entropy_coef is None else entropy_coef
        adv, returns = self._advantages(trials)
        T = trials.rewards.shape[0]
        L = c.bptt_len or T
        data = {
            k: self._chunks(v, L)
            for k, v in (
                ("inputs", trials.inputs),
                ("actions", trials.actions),
                ("old_log_probs", trials.log_probs),
                ("adv", adv),
                ("returns", returns),
                ("mask", trials.mask),
            )
        }
        self._track_value_scale(returns, trials.mask)
        value_scale = self.value_scale
        h0 = self.chunk_start_states(trials, L)  # [steps, C*B, S]
        num = h0.shape[1]
        stats: dict[str, float] = {}
        for _ in range(c.num_epochs):
            perm = torch.randperm(num, generator=self._perm_generator, device=self.device)
            for idx in perm.chunk(c.num_minibatches):
                out, values, _ = self.policy(data["inputs"][:, idx], h0[:, idx])
                values = values * value_scale
                log_prob, entropy = self._log_prob_entropy(out, data["actions"][:, idx])
                terms = ppo_loss(
                    log_prob,
                    data["old_log_probs"][:, idx],
                    data["adv"][:, idx],
                    values,
                    data["returns"][:, idx],
                    entropy,
                    data["mask"][:, idx],
                    c.clip,
                    c.value_coef,
                    entropy_coef,
                    value_scale,
                )
                self.optimizer.zero_grad()
                terms["total"].backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                self.optimizer.step()
                stats = {f"loss/{k}": float(v.detach()) for k, v in terms.items()}
        return stats

    def chunk_start_states(self, trials: Trials, L: int) -> torch.Tensor:
        """The carried state at the start of every chunk of ``L`` steps, chunk-major as
        ``_chunks`` orders them: [1, C*B, S] (what the rollout's cell held there)."""
        return trials.hidden_in[::L].reshape(1, -1, trials.hidden_in.shape[-1])

    def _log_prob_entropy(self, out: torch.Tensor, actions: torch.Tensor):
        """Log-probability of the taken actions and the policy's entropy at each step:
        out [L, N, A] (logits, or Gaussian means), actions [L, N] or [L, N, A] -> [L, N] each."""
        params = self.policy.distribution_params(out)
        return self.policy.distribution.log_prob_entropy(params, actions)

    def train_iteration(self, ctx: TrainContext) -> dict[str, float]:
        tasks = self.family.tasks.sample(self.config.meta_batch_size, "train", ctx.generator)
        self._perm_generator.manual_seed(derive_seed(ctx.run_seed, ctx.iteration, 1) % (2**62))
        c = self.config
        entropy_coef = c.entropy_coef * _linear_decay(ctx.iteration, c.entropy_decay_iterations)
        lr = c.lr * _linear_decay(ctx.iteration, c.lr_decay_iterations)
        for group in self.optimizer.param_groups:  # set from the iteration: resume-exact
            group["lr"] = lr
        return {
            **self.meta_train_step(tasks, ctx.seed(), entropy_coef),
            "loss/entropy_coef": entropy_coef,
            "loss/lr": lr,
        }

    def meta_train_step(
        self, tasks: Tasks, seed: int = 0, entropy_coef: float | None = None
    ) -> dict[str, float]:
        start = time.perf_counter()
        traj = self.sample_trials(tasks, seed)
        sampled = time.perf_counter()
        stats = self.update(self.trials(traj), entropy_coef)
        end = time.perf_counter()
        episode_returns = traj.per_episode(traj.rewards)
        return {
            "adapt/return_trial": float(episode_returns.sum(0).mean()),
            "adapt/return_first_episode": float(episode_returns[0].mean()),
            "adapt/return_last_episode": float(episode_returns[-1].mean()),
            **stats,
            "perf/sample_s": sampled - start,
            "perf/update_s": end - sampled,
            "perf/iteration_s": end - start,
            "perf/env_steps_per_s": traj.num_steps / max(sampled - start, 1e-9),
        }

    def adapt(
        self, tasks: Tasks, episodes: int | None = None, seed: int = 0, mode: bool = False
    ) -> Adaptation:
        """A trial on each task: the return of every episode [E, n] (adaptation in memory)."""
        traj = self.sample_trials(tasks, seed, episodes, mode)
        returns = traj.per_episode(traj.rewards)
        lengths = traj.per_episode(torch.ones_like(traj.rewards))
        return Adaptation(
            returns,
            {"total_return": returns.sum(0), "mean_episode_length": lengths},
            RecurrentAgent(self.policy, mode=mode),
            [traj],
        )

    def controller(
        self, mode: bool = False, seed: int = 0, episodes: int | None = None
    ) -> RecurrentController:
        """The trained agent for one plain gymnasium env: ``reset()`` per task (trial),
        ``act(obs)``, ``observe(reward, ended)``; it adapts in its memory as it goes."""
        with self.family.make_env(1) as env:
            horizon = env.horizon
        budget = (episodes or self.config.episodes_per_trial) * horizon
        step = RecurrentStep(copy.deepcopy(self.policy).cpu().eval())
        std = self.policy.log_std.exp().tolist() if self.policy.distribution.continuous else None
        return RecurrentController(
            step,
            self.policy.state_size,
            budget,
            mode,
            seed,
            std,
            self.policy.state_steps,
            self.policy.terminal_obs_input,
        )

    def meta_test(self, tasks: Tasks, cfg: EvalConfig, seed: int = 0) -> Adaptation:
        """One trial per task (its episodes are the adaptation points)."""
        return self.adapt(tasks, seed=seed, mode=eval_settings(self, cfg).actions == "mode")

    @property
    def trial_episodes(self) -> int:
        return self.config.episodes_per_trial

    def tune_for_reference(
        self, cfg: EvalConfig, score: Callable[[EvalConfig], float]
    ) -> EvalConfig:
        """Nothing to tune: it adapts in memory, with no step size."""
        return cfg

    def evaluation_record(self, cfg: EvalConfig, for_reference: bool) -> dict[str, Any]:
        return {"actions": eval_settings(self, cfg).actions}

    def meta_test_steps(self, cfg: EvalConfig, horizon: int) -> int:
        """One trial per task."""
        return self.config.episodes_per_trial * horizon

    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            **({"value_net": self.value_net.state_dict()} if self.value_net is not None else {}),
            "optimizer": self.optimizer.state_dict(),
            # float64: a float32 round trip of the running scale made resume drift (issue 11)
            "value_scale": torch.tensor(self.value_scale or 0.0, dtype=torch.float64),
        }

    def bulk_state(self) -> dict[str, torch.Tensor]:
        return {}  # on-policy: nothing kept between iterations but the networks

    def load_bulk_state(self, arrays) -> None:
        pass

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.value_net is not None:
            self.value_net.load_state_dict(state["value_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        scale = float(state["value_scale"])
        self.value_scale = scale if scale > 0 else None
