"""Policies as plain ``nn.Module``s, evaluated functionally on parameter dicts.

MAML needs one parameter set per task (θ'ᵢ). A parameter dict is either *shared* (tensors shaped
like the module's) or *per task* (an extra leading task dimension); ``forward_params`` evaluates
both, the per-task case with ``torch.func.vmap`` so that all tasks run as batched matmuls.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from adaptrl.distributions import Categorical, DiagGaussian

Params = dict[str, torch.Tensor]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


INITS = ("torch", "xavier")
"""Weight initialisations of the MLP policies. torch: PyTorch's default (uniform weights and
biases, ±1/√fan_in). xavier: Glorot-uniform weights and zero biases, as rllab and the MAML
authors' code (cbfinn/maml_rl ``create_MLP``): the initial mean action is then 0 everywhere
instead of an offset drawn per seed."""


def mlp(
    in_dim: int,
    out_dim: int,
    hidden_sizes: tuple[int, ...],
    activation: str,
    init: str = "torch",
) -> nn.Sequential:
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
    layers: list[nn.Module] = []
    sizes = (in_dim, *hidden_sizes)
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), _ACTIVATIONS[activation]()]
    layers.append(nn.Linear(sizes[-1], out_dim))
    if init == "xavier":
        for layer in layers:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian with an MLP mean and a state-independent log-std (as in rllab/MAML)."""

    distribution = DiagGaussian()

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: tuple[int, ...] = (100, 100),
        activation: str = "relu",
        init_std: float = 1.0,
        init: str = "torch",
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(_ACTIVATIONS)}, got {activation!r}")
        self.mean = mlp(obs_dim, act_dim, tuple(hidden_sizes), activation, init)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs: [..., obs_dim] -> (mean [..., act_dim], log_std [act_dim])."""
        return self.mean(obs), self.log_std

    def params(self) -> Params:
        return dict(self.named_parameters())


class CategoricalMLPPolicy(nn.Module):
    """Softmax over discrete actions with MLP logits: MAML on discrete tasks (a recommender)."""

    distribution = Categorical()

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden_sizes: tuple[int, ...] = (100, 100),
        activation: str = "relu",
        init: str = "torch",
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(_ACTIVATIONS)}, got {activation!r}")
        self.logits = mlp(obs_dim, num_actions, tuple(hidden_sizes), activation, init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs: [..., obs_dim] -> logits [..., num_actions]."""
        return self.logits(obs)

    def params(self) -> Params:
        return dict(self.named_parameters())


def forward_params(
    policy: nn.Module, params: Params, obs: torch.Tensor, per_task: bool, task_dim: int = 0
) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
    """Evaluate ``policy`` with ``params``.

    per_task=False: shared params, any obs shape. per_task=True: params carry a leading task
    dimension n, and ``obs`` has n at ``task_dim``; outputs keep n at the same position
    (log_std comes back as [n, act_dim] broadcastable rows).
    """
    if not per_task:
        return functional_call(policy, params, (obs,))

    def one(p: Params, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return functional_call(policy, p, (o,))

    if not policy.distribution.continuous:  # logits only
        return vmap(one, in_dims=(0, task_dim), out_dims=task_dim)(params, obs)
    mean, log_std = vmap(one, in_dims=(0, task_dim), out_dims=(task_dim, 0))(params, obs)
    return mean, log_std


def broadcast_per_task(
    param: torch.Tensor, like: torch.Tensor, per_task: bool, task_dim: int
) -> torch.Tensor:
    """A state-independent output of ``forward_params`` (a Gaussian's log_std: [A], or per task
    [n, A]) shaped to broadcast against a state-dependent one ``like`` ([..., n, ..., A])."""
    if not per_task:
        return param
    shape = [1] * like.dim()
    shape[task_dim] = param.shape[0]
    shape[-1] = param.shape[-1]
    return param.reshape(shape)


class InContextPolicy(nn.Module):
    """What every in-context policy (RL²'s recurrent cell, the causal transformer) shares: the
    per-step input (observation, previous action, reward, done flag, trial progress[, previous
    observation]), the null action a trial starts from, and the head's distribution. A
    subclass adds the sequence model: ``initial_state``, ``replay`` and ``forward`` (and the
    samplers' ``acting_state`` and ``act_step``, which default to those), whose
    carried ``state`` is a tensor [steps, B, S] (a recurrent cell's: one step; a transformer's
    key-value cache: one entry per step seen)."""

    state_steps = 1
    """Leading length of ``initial_state``: 1 for a recurrent state, 0 for an empty cache."""

    def _init_inputs(
        self,
        obs_dim: int,
        action_dim: int,
        time_input: bool,
        prev_obs_input: bool,
        memory: bool,
        distribution: Categorical | DiagGaussian | None,
        terminal_obs_input: bool = False,
    ) -> int:
        """Set the input attributes; returns the input width."""
        self.distribution = distribution or Categorical()
        self.obs_dim, self.action_dim, self.memory = obs_dim, action_dim, memory
        self.time_input, self.prev_obs_input = time_input, prev_obs_input
        self.terminal_obs_input = terminal_obs_input
        # the previous action takes action_dim inputs: a one-hot, or the action vector
        observations = 1 + int(prev_obs_input) + int(terminal_obs_input)
        return obs_dim * observations + action_dim + 2 + int(time_input)

    def inputs(
        self,
        obs,
        prev_action,
        prev_reward,
        prev_done,
        progress=None,
        prev_obs=None,
        terminal_obs=None,
    ) -> torch.Tensor:
        """[..., obs_dim], [...] long (or [..., A]), [...], [...], [...], [..., obs_dim],
        [..., obs_dim] -> [..., in].

        ``progress`` (fraction of the trial's step budget used) is appended when ``time_input``:
        without it the value of a long trial is aliased across time steps (Pardo et al. 2018).
        ``prev_obs`` (zeros at a trial's start) is used when ``prev_obs_input``;
        ``terminal_obs`` (the observation the previous episode ended on, at the first step of
        the next; zeros at every other step) when ``terminal_obs_input``.
        """
        action = self.distribution.action_features(prev_action, self.action_dim, obs.dtype)
        past = [action, prev_reward.unsqueeze(-1), prev_done.unsqueeze(-1)]
        if self.prev_obs_input:
            past.append(prev_obs)
        if self.terminal_obs_input:
            past.append(terminal_obs)
        if not self.memory:  # nothing of the past reaches a memoryless policy
            past = [torch.zeros_like(x) for x in past]
        parts = [obs, *past]
        if self.time_input:
            parts.append(progress.unsqueeze(-1))
        return torch.cat(parts, -1)

    def acting_state(self, steps: int, batch: int, device) -> torch.Tensor:
        """The state a sampler starts a trial of ``steps`` steps from (``act_step`` carries
        it): ``initial_state`` here; a policy that can act faster knowing the trial's length
        overrides this and ``act_step`` together (the transformer writes its cache in place)."""
        return self.initial_state(batch, device)

    def act_step(self, x: torch.Tensor, state: torch.Tensor, t: int):
        """Step ``t`` of a trial, x [1, B, in], from the state ``acting_state`` started ->
        (logits or means [1, B, A], values [1, B], the state after it): ``forward``'s numbers."""
        return self(x, state)

    def initial_action(self, batch: int, device) -> torch.Tensor:
        """The 'previous action' input at a trial's start."""
        return self.distribution.null_action(batch, self.action_dim, device)

    def distribution_params(self, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The policy head's output [..., A] as its distribution's parameters."""
        if self.log_std is None:
            return (out,)
        return out, self.log_std.expand_as(out)


class RecurrentPolicy(InContextPolicy):
    """RL² agent: a GRU over (observation, previous action, previous reward, done flag) with a
    policy head and a value head (Duan et al. 2016, §2.2). The head's ``distribution`` decides
    the rest: a categorical head emits logits and is fed its previous action one-hot; a
    diagonal Gaussian head emits means (with a state-independent log-std, ``init_std``, as the
    feed-forward policy) and is fed its previous action vector.

    Optional, off by default (Duan's plain GRU): ``prev_obs_input`` adds the previous
    observation, so one input holds the whole transition (s, a, r, s'); ``encoder_size`` puts a
    ReLU layer before the GRU and ``head_size`` one after it (over the GRU output and the encoded
    input). Why: remembering "reward of action a in state s" needs a conjunction of s and a,
    and reading it back needs one of the memory and the current state; a single GRU layer has
    to learn both inside its gates (measured on tabular MDPs: see the rl2-mdp-n10 preset).

    ``memory=False`` makes the same network memoryless, the domain-randomised reference of RL²
    (the policy a practitioner would train on all tasks instead): the carried state is reset to
    zero before every step and the previous action, reward, done flag and observation inputs are
    zeroed, so the action depends on the current observation (and the trial's progress) only.

    ``cell="lstm"`` swaps the GRU for an LSTM; its state (h, c) travels as one tensor
    [1, B, 2H], so samplers, controllers and exports handle either cell alike. Why offer it:
    on CPUs PyTorch runs the LSTM's forward and backward as fused oneDNN kernels, but the
    GRU's backward as a dozen small operations per step; measured on 2 cores at 64 trials ×
    100 steps × 64 units, forward + backward took 23 ms against 50 ms.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_size: int = 256,
        time_input: bool = True,
        prev_obs_input: bool = False,
        encoder_size: int = 0,
        head_size: int = 0,
        cell: str = "gru",
        memory: bool = True,
        distribution: Categorical | DiagGaussian | None = None,
        init_std: float = 0.5,
        terminal_obs_input: bool = False,
    ) -> None:
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be gru or lstm, got {cell!r}")
        in_dim = self._init_inputs(
            obs_dim,
            action_dim,
            time_input,
            prev_obs_input,
            memory,
            distribution,
            terminal_obs_input,
        )
        self.hidden_size, self.cell = hidden_size, cell
        self.state_size = hidden_size * (2 if cell == "lstm" else 1)  # width of the carried state
        self.encoder = (
            nn.Sequential(nn.Linear(in_dim, encoder_size), nn.ReLU())
            if encoder_size
            else nn.Identity()
        )
        features = encoder_size or in_dim
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(features, hidden_size)
        self.head = (
            nn.Sequential(nn.Linear(hidden_size + features, head_size), nn.ReLU())
            if head_size
            else None
        )
        self.policy_head = nn.Linear(head_size or hidden_size, action_dim)
        self.value_head = nn.Linear(head_size or hidden_size, 1)
        log_std = torch.full((action_dim,), math.log(init_std))  # registered last: old checkpoints
        self.log_std = nn.Parameter(log_std) if self.distribution.continuous else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before ``cell`` existed name the GRU ``gru``.
        for key in [k for k in state_dict if k.startswith(prefix + "gru.")]:
            state_dict[prefix + "rnn." + key[len(prefix) + 4 :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def initial_state(self, batch: int, device) -> torch.Tensor:
        return torch.zeros(1, batch, self.state_size, device=device)

    def recur(self, features: torch.Tensor, state: torch.Tensor):
        """The cell over a sequence: features [T, B, F], state [1, B, S] -> (outputs
        [T, B, H], the state after the last step [1, B, S])."""
        if not self.memory:  # every step from the zero state: all steps as one batch
            T, B = features.shape[:2]
            zero = state.new_zeros(1, T * B, self.state_size)
            out, _ = self._recur(features.reshape(1, T * B, -1), zero)
            return out.reshape(T, B, -1), torch.zeros_like(state)
        return self._recur(features, state)

    def _recur(self, features: torch.Tensor, state: torch.Tensor):
        if self.cell == "gru":
            return self.rnn(features, state)
        h, c = state.chunk(2, -1)
        out, (h, c) = self.rnn(features, (h.contiguous(), c.contiguous()))
        return out, torch.cat([h, c], -1)

    def replay(self, features: torch.Tensor, state: torch.Tensor):
        """(outputs [T, B, H], the state *before* every step [T, B, S]) from state [1, B, S],
        in one fused pass. A GRU's output is its state. An LSTM's cell state c is not in its
        output, but every gate depends only on the step's input and the previous output h, so
        all gates come from one batched product and c from its linear recurrence
        c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t: two cheap operations per step instead of a cell call."""
        out, _ = self.recur(features, state)
        if not self.memory:
            return out, state.new_zeros(*out.shape[:2], self.state_size)
        if self.cell == "gru":
            return out, torch.cat([state, out[:-1]])
        h0, c0 = state.chunk(2, -1)
        h_before = torch.cat([h0, out[:-1]])
        rnn, H = self.rnn, self.hidden_size
        bias = rnn.bias_ih_l0 + rnn.bias_hh_l0

        def gate(k: int) -> torch.Tensor:  # PyTorch's gate order: input, forget, cell, output
            rows = slice(k * H, (k + 1) * H)  # one gate at a time: contiguous, so fast
            pre = torch.addmm(bias[rows], features.flatten(0, 1), rnn.weight_ih_l0[rows].t())
            pre.addmm_(h_before.flatten(0, 1), rnn.weight_hh_l0[rows].t())
            return pre.view_as(h_before)

        update = gate(0).sigmoid_().mul_(gate(2).tanh_())
        forget = gate(1).sigmoid_()
        c_before = [c0[0]]
        for t in range(features.shape[0] - 1):
            c_before.append(torch.addcmul(update[t], forget[t], c_before[-1]))
        return out, torch.cat([h_before, torch.stack(c_before)], -1)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor):
        """x: [T, B, in], hidden: [1, B, S] -> logits [T, B, A], values [T, B], hidden."""
        features = self.encoder(x)
        out, hidden = self.recur(features, hidden)
        if self.head is not None:
            out = self.head(torch.cat([out, features], -1))
        return self.policy_head(out), self.value_head(out).squeeze(-1), hidden


class RecurrentCategoricalPolicy(RecurrentPolicy):
    """``RecurrentPolicy`` with a categorical head (discrete actions)."""

    def __init__(self, obs_dim: int, num_actions: int, *args: Any, **kw: Any) -> None:
        super().__init__(obs_dim, num_actions, *args, distribution=Categorical(), **kw)


class RecurrentGaussianPolicy(RecurrentPolicy):
    """``RecurrentPolicy`` with a diagonal Gaussian head (continuous actions)."""

    def __init__(self, obs_dim: int, act_dim: int, *args: Any, **kw: Any) -> None:
        super().__init__(obs_dim, act_dim, *args, distribution=DiagGaussian(), **kw)
