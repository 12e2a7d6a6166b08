"""RL² (Duan et al. 2016, "RL²: Fast Reinforcement Learning via Slow Reinforcement Learning",
https://arxiv.org/abs/1611.02779) trained with PPO.

A trial is ``episodes_per_trial`` episodes on one task. The GRU sees (obs, previous action,
previous reward, done flag); its hidden state carries across the episodes of a trial and is reset
only between trials, so adaptation happens in memory, not by gradient steps. The objective is the
total reward of the trial: episode ends inside a trial are not terminal for the value function.

Deliberate deviations: PPO (clipped objective, GAE, value head, Adam) instead of the paper's TRPO,
with truncated back-propagation through time over chunks of ``bptt_len`` steps whose initial
hidden states come from the rollout; the input also carries the trial's progress t / T
(``time_input``): without it the value head cannot tell step 5 from step 95 of a bandit trial,
its error swamps the advantages and PPO drifts to a deterministic policy even when all arms are
equal (measured). The value head predicts value / (running spread of returns), λ defaults to
1 (see ``gae_lambda``), and value targets are Monte-Carlo returns. Many trials step together
as one tensor op. Optional ReLU layers before and after the GRU and a previous-observation input
(``encoder_size``, ``head_size``, ``prev_obs_input``; see RecurrentCategoricalPolicy) are off by
default and on in the bandit n = 100 and MDP presets, where they needed 3-6x fewer iterations
to reach the old presets' level (numbers in those presets).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from adaptrl.envs import Family, Tasks
from adaptrl.errors import ConfigError
from adaptrl.policies import RecurrentCategoricalPolicy
from adaptrl.returns import discounted_returns, gae


@dataclass(frozen=True)
class RL2Config:
    """RL²-PPO settings."""

    meta_batch_size: int = 256
    """Trials (each on its own task) per iteration."""
    episodes_per_trial: int = 1
    """Episodes per trial; the hidden state carries across them."""
    hidden_size: int = 256
    """GRU units."""
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
    bptt_len: int = 0
    """Truncated-BPTT chunk length (0 = whole trials)."""
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    time_input: bool = True
    """Feed the fraction of the trial's step budget used (see RecurrentCategoricalPolicy)."""
    prev_obs_input: bool = False
    """Feed the previous observation too, so one input is a whole transition."""
    encoder_size: int = 0
    """Units of a ReLU layer before the GRU (0: none, as in Duan et al.)."""
    head_size: int = 0
    """Units of a ReLU layer after the GRU (0: none)."""
    max_grad_norm: float = 0.5

    def __post_init__(self) -> None:
        for name in (
            "meta_batch_size",
            "episodes_per_trial",
            "hidden_size",
            "num_epochs",
            "num_minibatches",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"algo.{name} must be > 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.clip <= 0 or self.max_grad_norm <= 0:
            raise ConfigError("algo.lr, algo.clip and algo.max_grad_norm must be > 0")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ConfigError("algo.gamma must be in (0, 1] and algo.gae_lambda in [0, 1]")
        if self.encoder_size < 0 or self.head_size < 0:
            raise ConfigError("algo.encoder_size and algo.head_size must be >= 0")
        if self.bptt_len < 0 or self.entropy_coef < 0 or self.value_coef < 0:
            raise ConfigError("algo.bptt_len, entropy_coef and value_coef must be >= 0")


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


@dataclass
class Trials:
    """One trial per row. Time-major [T, B]: inputs [T, B, in], actions, log_probs, values,
    rewards, mask (1 while the trial runs), trial_end (last step of the trial). Per episode:
    episode_returns, episode_lengths [E, B]. hidden_in: [T, B, H] GRU state before each step."""

    inputs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    trial_end: torch.Tensor
    hidden_in: torch.Tensor
    episode_returns: torch.Tensor
    episode_lengths: torch.Tensor


class RL2:
    """Meta-learner whose adaptation is the forward pass of a recurrent policy."""

    x_label = "episodes"
    eval_actions = ("sample", "mode")

    def __init__(self, config: RL2Config, family: Family, device, generator: torch.Generator):
        self.config, self.family = config, family
        self.device, self.generator = torch.device(device), generator
        probe = family.make_env(1, device)
        if not hasattr(probe.single_action_space, "n"):
            raise ConfigError(
                f"RL² here needs a discrete action space; env "
                f"'{family.spec.name}' has {probe.single_action_space}"
            )
        self.policy = RecurrentCategoricalPolicy(
            probe.single_observation_space.shape[0],
            int(probe.single_action_space.n),
            config.hidden_size,
            config.time_input,
            config.prev_obs_input,
            config.encoder_size,
            config.head_size,
        ).to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr, eps=1e-5)
        # Trial returns reach hundreds while a GRU's features are bounded: the value head
        # predicts value / value_scale (a running spread of the returns), so it can keep up.
        self.value_scale: float | None = None

    @torch.no_grad()
    def run_trials(self, tasks: Tasks, episodes: int | None = None, mode: bool = False) -> Trials:
        """One trial per task, all rows stepping together; the hidden state starts at zero.
        ``mode``: take the most likely action instead of sampling (evaluation only)."""
        E = episodes or self.config.episodes_per_trial
        n = next(iter(tasks.values())).shape[0]
        env, gen, dev = self.family.env(n, self.device), self.generator, self.device
        obs, _ = env.reset(tasks=tasks, generator=gen)
        T = E * env.horizon
        policy = self.policy
        hidden = policy.initial_state(n, dev)
        rows = torch.arange(n, device=dev)
        prev_a = torch.zeros(n, dtype=torch.long, device=dev)
        prev_r = torch.zeros(n, device=dev)
        prev_done = torch.zeros(n, device=dev)
        prev_obs = torch.zeros_like(obs)
        alive = torch.ones(n, dtype=torch.bool, device=dev)
        episode = torch.zeros(n, dtype=torch.long, device=dev)
        ep_returns = torch.zeros(E, n, device=dev)
        ep_lengths = torch.zeros(E, n, device=dev)
        buf: dict[str, torch.Tensor] = {}  # [T, n, ...] each, allocated at the first step
        length = T
        for t in range(T):
            progress = torch.full((n,), t / T, device=dev)
            x = policy.inputs(obs, prev_a, prev_r, prev_done, progress, prev_obs)
            logits, value, new_hidden = policy(x.unsqueeze(0), hidden)
            log_p = torch.log_softmax(logits[0], -1)
            if mode:
                action = log_p.argmax(-1)
            else:
                action = torch.multinomial(log_p.exp(), 1, generator=gen).squeeze(1)
            prev_obs = obs.clone()  # a user's env may write its next obs into the same buffer
            obs, reward, term, trunc, _ = env.step(action)
            live = alive.float()
            ended = (term | trunc) & alive
            ep_idx = episode.clamp_max(E - 1)
            ep_returns[ep_idx, rows] += reward * live
            ep_lengths[ep_idx, rows] += live
            episode = episode + ended.long()
            finished = ended & (episode >= E)
            row = {
                "inputs": x,
                "actions": action,
                "log_probs": log_p.gather(1, action[:, None]).squeeze(1),
                "values": value[0] * (self.value_scale or 1.0),
                "rewards": reward * live,
                "mask": live,
                "trial_end": finished,
                "hidden_in": hidden[0],
            }
            if not buf:
                buf = {
                    k: torch.empty(T, *v.shape, dtype=v.dtype, device=dev) for k, v in row.items()
                }
            for key, value_ in row.items():
                buf[key][t] = value_
            restart = ended & ~finished
            if bool(restart.any()):
                fresh, _ = env.reset(mask=restart)
                obs = torch.where(restart.unsqueeze(-1), fresh, obs)
            alive = alive & ~finished
            prev_a, prev_r, prev_done = action, reward, ended.float()
            hidden = new_hidden
            if not bool(alive.any()):
                length = t + 1
                break
        out = {k: v[:length] for k, v in buf.items()}
        return Trials(**out, episode_returns=ep_returns, episode_lengths=ep_lengths)

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

    def update(self, trials: Trials) -> dict[str, float]:
        """PPO epochs over chunks of trials (truncated BPTT from the stored hidden states)."""
        c = self.config
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
        live = trials.mask.bool()
        if live.sum() > 1:  # track the spread of returns; the head predicts value / scale
            spread = float(returns[live].std().clamp_min(1e-3))
            self.value_scale = (
                spread if self.value_scale is None else (0.9 * self.value_scale + 0.1 * spread)
            )
        value_scale = self.value_scale
        h0 = trials.hidden_in[::L].reshape(-1, trials.hidden_in.shape[-1])  # [C*B, H]
        num = h0.shape[0]
        stats: dict[str, float] = {}
        for _ in range(c.num_epochs):
            perm = torch.randperm(num, generator=self.generator, device=self.device)
            for idx in perm.chunk(c.num_minibatches):
                logits, values, _ = self.policy(data["inputs"][:, idx], h0[idx].unsqueeze(0))
                values = values * value_scale
                log_p = torch.log_softmax(logits, -1)
                terms = ppo_loss(
                    log_p.gather(-1, data["actions"][:, idx, None]).squeeze(-1),
                    data["old_log_probs"][:, idx],
                    data["adv"][:, idx],
                    values,
                    data["returns"][:, idx],
                    -(log_p.exp() * log_p).sum(-1),
                    data["mask"][:, idx],
                    c.clip,
                    c.value_coef,
                    c.entropy_coef,
                    value_scale,
                )
                self.optimizer.zero_grad()
                terms["total"].backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                self.optimizer.step()
                stats = {f"loss/{k}": float(v.detach()) for k, v in terms.items()}
        return stats

    def meta_train_step(self, tasks: Tasks) -> dict[str, float]:
        start = time.perf_counter()
        trials = self.run_trials(tasks)
        sampled = time.perf_counter()
        stats = self.update(trials)
        end = time.perf_counter()
        steps = float(trials.mask.sum())
        return {
            "adapt/return_trial": float(trials.episode_returns.sum(0).mean()),
            "adapt/return_first_episode": float(trials.episode_returns[0].mean()),
            "adapt/return_last_episode": float(trials.episode_returns[-1].mean()),
            **stats,
            "perf/sample_s": sampled - start,
            "perf/update_s": end - sampled,
            "perf/iteration_s": end - start,
            "perf/env_steps_per_s": steps / max(sampled - start, 1e-9),
        }

    def meta_test(self, tasks: Tasks, cfg) -> dict[str, torch.Tensor]:
        """Return of each episode of a trial [E, N], total trial return [N], episode lengths."""
        trials = self.run_trials(tasks, mode=cfg.actions == "mode")
        return {
            "returns": trials.episode_returns,
            "total_return": trials.episode_returns.sum(0),
            "mean_episode_length": trials.episode_lengths,
        }

    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "value_scale": torch.tensor(self.value_scale or 0.0),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        scale = float(state["value_scale"])
        self.value_scale = scale if scale > 0 else None
