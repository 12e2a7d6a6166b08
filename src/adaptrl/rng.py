"""Counter-based random streams, one per env row: randomness that survives distribution.

A ``torch.Generator`` shared by a batch makes row i's noise depend on how many rows came before
it, so splitting a batch across workers would change every trajectory. Here every random number
is a pure function of (row key, counter, column), computed with a 64-bit hash (the SplitMix64
finaliser) in vectorised int64 tensor ops: row i sees the same numbers whether it is stepped alone,
in a slice on worker 3, or in one batch of 800. Row keys derive from (seed, task, episode)
(``row_keys``), and learners derive the seed from (run seed, iteration, phase) (``derive_seed``).

The floats are 24-bit uniforms on the open interval (0, 1) (float32 resolution), enough for action
noise, Bernoulli rewards and categorical draws.
"""

from __future__ import annotations

import math

import torch

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64
_MUL1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MUL2 = -7723592293110705685  # 0x94D049BB133111EB
_STREAM_SALT = {"agent": 0x5A6E7, "env": 0xE7A1, "reset": 0x3E5E7}


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic on signed integers)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser on int64 tensors (wrapping arithmetic): a bijective 64-bit hash."""
    x = x ^ _shr(x, 30)
    x = x * _MUL1
    x = x ^ _shr(x, 27)
    x = x * _MUL2
    return x ^ _shr(x, 31)


def _int64(value: int) -> int:
    """A Python int folded into the signed int64 range."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def derive_seed(*parts: int) -> int:
    """One int64 seed from several integers, e.g. (run seed, iteration, phase)."""
    h = torch.tensor(0x2545F491, dtype=torch.int64)
    for p in parts:
        h = mix(h ^ mix(torch.tensor(_int64(int(p)) + 1, dtype=torch.int64) * _GOLDEN))
    return int(h)


def row_keys(seed: int, task_index: torch.Tensor, episode_index: torch.Tensor) -> torch.Tensor:
    """Key of each row from its (task, episode) pair: int64 [B]."""
    h = mix(torch.full_like(task_index, _int64(seed)) ^ mix((task_index + 1) * _GOLDEN))
    return mix(h ^ mix((episode_index + 1) * _MUL1))


def task_episode_keys(seed: int, task_ids: torch.Tensor, episodes: int) -> torch.Tensor:
    """Keys of ``episodes`` rows per task, tasks outermost: [len(task_ids) * episodes]."""
    tasks = task_ids.to(torch.int64).repeat_interleave(episodes)
    eps = torch.arange(episodes, dtype=torch.int64).repeat(len(task_ids))
    return row_keys(seed, tasks, eps)


def uniform(
    keys: torch.Tensor, counter: torch.Tensor | int, num: int, stream: str = "agent"
) -> torch.Tensor:
    """Uniforms in (0, 1): [B, num] for row keys [B] at ``counter`` (int or int64 [B])."""
    salt = _STREAM_SALT[stream]
    counter = torch.as_tensor(counter, dtype=torch.int64, device=keys.device)
    base = mix(keys ^ mix((counter + salt) * _GOLDEN))  # [B]
    cols = torch.arange(1, num + 1, dtype=torch.int64, device=keys.device) * _MUL2
    h = mix(base.unsqueeze(-1) ^ cols)
    return (_shr(h, 40).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def normal(
    keys: torch.Tensor, counter: torch.Tensor | int, num: int, stream: str = "agent"
) -> torch.Tensor:
    """Standard normals (Box-Muller): [B, num]."""
    u = uniform(keys, counter, 2 * num, stream)
    radius = torch.sqrt(-2.0 * torch.log(u[:, :num]))
    return radius * torch.cos((2.0 * math.pi) * u[:, num:])


def _sequence(draw, keys: torch.Tensor, length: int, num: int) -> torch.Tensor:
    """``draw`` at counters 0..length-1 for every row at once: [length, B, num]."""
    B = keys.shape[0]
    t = torch.arange(length, dtype=torch.int64, device=keys.device)
    flat_keys = keys.unsqueeze(0).expand(length, B).reshape(-1)
    flat_t = t.unsqueeze(1).expand(length, B).reshape(-1)
    return draw(flat_keys, flat_t, num).reshape(length, B, num)


def normal_sequence(keys: torch.Tensor, length: int, num: int) -> torch.Tensor:
    """Normals for ``length`` consecutive counters (agent stream): [length, B, num]."""
    return _sequence(normal, keys, length, num)


def uniform_sequence(keys: torch.Tensor, length: int, num: int) -> torch.Tensor:
    """Uniforms for ``length`` consecutive counters (agent stream): [length, B, num]."""
    return _sequence(uniform, keys, length, num)


class RowStreams:
    """Per-row random streams of an env: each draw advances only the rows that take part.

    ``keys``: int64 [B]. A row's numbers depend on its key and on how many draws *it* took part
    in, never on the other rows, so a slice of a batch reproduces the batch's rows exactly.
    """

    def __init__(self, keys: torch.Tensor) -> None:
        self.keys = keys.to(torch.int64)
        self.counters = torch.zeros_like(self.keys)

    def uniform(self, num: int = 1, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[B, num] uniforms; counters advance where ``rows`` (bool [B]) is set, or everywhere."""
        u = uniform(self.keys, self.counters, num, "env")
        self.counters += 1 if rows is None else rows.to(torch.int64)
        return u

    def normal(self, num: int = 1, rows: torch.Tensor | None = None) -> torch.Tensor:
        u = self.uniform(2 * num, rows)
        return torch.sqrt(-2.0 * torch.log(u[:, :num])) * torch.cos(2.0 * math.pi * u[:, num:])


def seed_keys(seed: int | None, num_rows: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Row keys for a plain ``reset(seed=...)``: row i of seed s."""
    rows = torch.arange(num_rows, dtype=torch.int64)
    return row_keys(derive_seed(seed or 0), rows, torch.zeros_like(rows)).to(device)
