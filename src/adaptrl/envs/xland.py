"""Game levels: XLand-MiniGrid (Nikulin et al. 2023, the ``xminigrid`` library, JAX) as a task
family. Optional extra: ``pip install 'adaptrl[xland]'``.

A task is a *rule set*: a hidden goal ("pick up the blue pyramid", "put the red ball next to the
green key") and production rules ("a yellow ball next to a blue pyramid becomes a green square"),
with the objects they start from. Every episode of a trial draws a new layout of the same rule
set, so an agent has to find the goal and the rules by acting and remember them across episodes.
With ``same_layout`` every episode of a trial replays its first layout instead (a level as a fixed
map, as the mazes are): what carries across episodes is then also *where* things are.

The library steps every row at once (``jit`` of ``vmap``); its arrays reach torch through DLPack
without a copy on the CPU. Observations are the library's symbolic egocentric view
(``view_size`` x ``view_size`` cells of tile and colour ids, agent at the bottom centre facing
up), one-hot encoded per cell and flattened, so a linear layer can read it; actions are its six
(forward, turn right, turn left, pick up, put down, toggle); rewards its own (1 − 0.9 t / T on
reaching the goal, which ends the episode).

Rule sets are generated here, seeded, by the construction of the library's benchmark generator
(``scripts/ruleset_generator.py`` in dunnolab/xland-minigrid, whose published files are fetched
from the internet, which adaptrl never does at run time): a goal, then ``chain_depth`` levels of
rules producing the tiles the level above needs (each tile pruned to a starting object with
``prune_prob``), up to ``distractor_rules`` rules whose products no one needs, and
``distractor_objects`` extra objects. ``tier`` picks the settings of the published benchmarks
(trivial, small, medium, high). One deliberate difference: a rule or goal on two tiles never
names the same tile twice (the generator allows it; such a goal needs two identical objects that
only one of which exists). With the published files, set ``benchmark_file`` to one
(``~/.xland_minigrid/*.pkl``, as ``xminigrid.load_benchmark`` caches them): tasks are then
drawn from it.

Splits: a rule set is held out when the hash of its goal and rules falls in the test share, so
train and test never share one; ``ood`` draws rule sets from the next deeper tier (``ood_tier``),
from the held-out share too.
"""

from __future__ import annotations

import bz2
import hashlib
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from adaptrl.envs.base import BatchedMetaEnv, Split, TaskDistribution, Tasks
from adaptrl.errors import ConfigError

# The library's ids (xminigrid.core.constants): tiles and colours.
BALL, SQUARE, PYRAMID, GOAL, KEY, HEX, STAR, FLOOR = 3, 4, 5, 6, 7, 11, 12, 1
RED, GREEN, BLUE, PURPLE, YELLOW, GREY, BLACK, ORANGE, WHITE, BROWN, PINK = range(1, 12)
NUM_TILES, NUM_COLORS, NUM_ACTIONS = 13, 12, 6
COLORS = (RED, GREEN, BLUE, PURPLE, YELLOW, GREY, WHITE, BROWN, PINK, ORANGE)
HOLD_TILES = tuple((t, c) for t in (BALL, SQUARE, PYRAMID, KEY, STAR, HEX) for c in COLORS)
NEAR_TILES = tuple((t, c) for t in (BALL, SQUARE, PYRAMID, KEY, STAR, HEX, GOAL) for c in COLORS)
PROD_TILES = (*HOLD_TILES, (FLOOR, BLACK))  # a floor tile: the object disappears

# Goal and rule ids (xminigrid.core.goals / rules): how many tiles each takes.
AGENT_HOLD_GOAL, AGENT_NEAR_GOALS, TILE_NEAR_GOALS = 1, (3, 11, 12, 13, 14), (4, 7, 8, 9, 10)
AGENT_HOLD_RULE, AGENT_NEAR_RULES, TILE_NEAR_RULES = 1, (2, 8, 9, 10, 11), (3, 4, 5, 6, 7)
GOAL_LEN, RULE_LEN = 5, 7

TIERS: dict[str, dict[str, Any]] = {  # scripts/generate_benchmarks.sh of the library's repository
    "trivial": {
        "chain_depth": 0,
        "prune_prob": 0.0,
        "distractor_rules": 0,
        "distractor_objects": 3,
    },
    "small": {"chain_depth": 1, "prune_prob": 0.3, "distractor_rules": 2, "distractor_objects": 2},
    "medium": {"chain_depth": 2, "prune_prob": 0.1, "distractor_rules": 3, "distractor_objects": 2},
    "high": {"chain_depth": 3, "prune_prob": 0.1, "distractor_rules": 4, "distractor_objects": 1},
}
GRIDS = ("R1-9x9", "R1-11x11", "R1-13x13", "R2-9x9", "R4-13x13", "R6-13x13", "R9-16x16")


@dataclass(frozen=True)
class XLandConfig:
    """XLand-MiniGrid family settings."""

    grid: str = "R1-9x9"
    """Room layout and size: the library's env id without its prefix (XLand-MiniGrid-R1-9x9)."""
    horizon: int = 0
    """Steps per episode (0: the library's default, 3 x height x width)."""
    view_size: int = 5
    """Side of the egocentric view, in cells (odd)."""
    tier: str = "trivial"
    """Rule-set generator settings of the training and held-out tasks: trivial (a goal and three
    other objects, no rules), small, medium, high (deeper chains of rules, distractors)."""
    ood_tier: str = ""
    """Tier of the ``ood`` split ('': the next deeper one)."""
    test_fraction: float = 0.2
    """Share of rule sets held out (by the hash of goal and rules)."""
    same_layout: bool = False
    """Every episode of a trial replays the layout of its first (the objects and the agent's start
    where they were); False: a new layout per episode, as the library's meta-RL training."""
    benchmark_file: str = ""
    """A published benchmark file (bz2 pickle, as ``xminigrid.load_benchmark`` caches them) to
    draw rule sets from instead of generating them; splits by the same hash."""

    def __post_init__(self) -> None:
        if self.grid not in GRIDS:
            raise ConfigError(f"env.grid must be one of {', '.join(GRIDS)}, got {self.grid!r}")
        if self.horizon < 0:
            raise ConfigError(f"env.horizon must be >= 0 (0: the library's), got {self.horizon}")
        if self.view_size < 3 or self.view_size % 2 == 0:
            raise ConfigError(f"env.view_size must be odd and >= 3, got {self.view_size}")
        if self.tier not in TIERS or (self.ood_tier and self.ood_tier not in TIERS):
            raise ConfigError(f"env.tier and env.ood_tier must be one of {', '.join(TIERS)}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError("env.test_fraction must lie strictly between 0 and 1")
        if self.benchmark_file and not Path(self.benchmark_file).expanduser().is_file():
            raise ConfigError(
                f"env.benchmark_file '{self.benchmark_file}' does not exist: give the path of a "
                "file xminigrid.load_benchmark saved, or leave it empty to generate rule sets"
            )

    @property
    def height_width(self) -> tuple[int, int]:
        h, w = self.grid.split("-")[1].split("x")
        return int(h), int(w)

    @property
    def episode_steps(self) -> int:
        h, w = self.height_width
        return self.horizon or 3 * h * w

    @property
    def deeper_tier(self) -> str:
        names = list(TIERS)
        return self.ood_tier or names[min(names.index(self.tier) + 1, len(names) - 1)]


def _rule(rng: random.Random, prod: tuple, used: list) -> tuple[list[int], list[tuple]]:
    """A rule producing ``prod`` from tiles not in ``used``: (encoding, its input tiles)."""
    kind = rng.randint(0, 10)  # as the generator: 1 hold, 5 agent-near, 5 tile-near rules
    if kind <= 5:
        tile = rng.choice([t for t in HOLD_TILES if t not in used])
        rule_id = AGENT_HOLD_RULE if kind == 0 else AGENT_NEAR_RULES[kind - 1]
        return [rule_id, *tile, *prod, 0, 0], [tile]  # padded to RULE_LEN
    a = rng.choice([t for t in NEAR_TILES if t not in used])
    b = rng.choice([t for t in HOLD_TILES if t not in used and t != a])
    return [TILE_NEAR_RULES[kind - 6], *a, *b, *prod], [a, b]


def generate_ruleset(
    seed: int, chain_depth: int, prune_prob: float, distractor_rules: int, distractor_objects: int
) -> tuple[list[int], list[list[int]], list[tuple]]:
    """One rule set, a pure function of its seed: (goal encoding, rule encodings, initial
    objects as (tile, colour)). The construction of the library's generator; see the module
    docstring."""
    rng = random.Random(seed)
    kind = rng.randint(0, 10)  # 1 hold, 5 agent-near, 5 tile-near goals
    if kind == 0:
        goal_tiles = [rng.choice(HOLD_TILES)]
        goal = [AGENT_HOLD_GOAL, *goal_tiles[0]]
    elif kind <= 5:
        goal_tiles = [rng.choice(NEAR_TILES)]
        goal = [AGENT_NEAR_GOALS[kind - 1], *goal_tiles[0]]
    else:
        a = rng.choice(NEAR_TILES)
        goal_tiles = [a, rng.choice([t for t in HOLD_TILES if t != a])]
        goal = [TILE_NEAR_GOALS[kind - 6], *goal_tiles[0], *goal_tiles[1]]
    used, chain, rules, objects = list(goal_tiles), list(goal_tiles), [], []
    if chain_depth == 0:
        objects += goal_tiles
    for level in range(chain_depth):
        below = []
        for prod in chain:
            if rng.random() < prune_prob:  # this tile is there from the start
                objects.append(prod)
                continue
            rule, inputs = _rule(rng, prod, used)
            rules.append(rule)
            used += inputs
            below += inputs
            if level == chain_depth - 1:
                objects += inputs
        chain = below
    objects += rng.choices([t for t in NEAR_TILES if t not in used], k=distractor_objects)
    for _ in range(rng.randint(0, distractor_rules)):  # rules whose products no one needs
        rule, inputs = _rule(rng, rng.choice([t for t in PROD_TILES if t not in used]), [])
        rules.append(rule)
        objects += inputs
    return goal, rules, objects


def max_sizes(tier: dict[str, Any]) -> tuple[int, int]:
    """Most rules and initial objects a tier's rule set can have (the padded widths)."""
    depth = tier["chain_depth"]
    chain_rules = 2 ** (depth + 1) - 2  # at most two tiles per goal or rule input
    objects = 2 ** (depth + 1) + tier["distractor_objects"] + 2 * tier["distractor_rules"]
    return max(1, chain_rules + tier["distractor_rules"]), objects


def ruleset_split(goal: np.ndarray, rules: np.ndarray, test_fraction: float) -> str:
    """Split of a rule set, a pure function of its goal and (non-empty) rules."""
    live = rules[rules[:, 0] > 0]
    digest = hashlib.sha256(goal.astype(np.uint8).tobytes() + live.astype(np.uint8).tobytes())
    return (
        "test" if int.from_bytes(digest.digest()[:8], "little") / 2**64 < test_fraction else "train"
    )


class XLandTasks(TaskDistribution):
    """Rule sets, generated per draw (or from a benchmark file), padded to fixed widths."""

    splits = ("train", "test", "ood")

    def __init__(self, config: XLandConfig) -> None:
        _library()  # the missing extra is named when the family is built, before any run starts
        self.config = config
        self.bank: dict[str, np.ndarray] | None = None
        if config.benchmark_file:
            with bz2.open(Path(config.benchmark_file).expanduser(), "rb") as f:
                try:
                    data = pickle.load(f)  # the library's own format (trusted, user-given file)
                    self.bank = {k: np.asarray(data[k]) for k in ("goals", "rules", "init_tiles")}
                except Exception as exc:
                    raise ConfigError(
                        f"env.benchmark_file '{config.benchmark_file}' is not an xminigrid "
                        f"benchmark ({type(exc).__name__}): a bz2 pickle with goals, rules and "
                        "init_tiles"
                    ) from None
        tiers = [TIERS[config.tier], TIERS[config.deeper_tier]]
        sizes = [max_sizes(t) for t in tiers]
        if self.bank is not None:
            sizes.append((self.bank["rules"].shape[1], self.bank["init_tiles"].shape[1]))
        self.num_rules = max(s[0] for s in sizes)
        self.num_objects = max(s[1] for s in sizes)
        h, w = config.height_width
        if self.num_objects + 1 > (h - 2) * (w - 2) // (4 if config.grid[:2] != "R1" else 1):
            raise ConfigError(f"env.grid {config.grid} is too small for tier rule sets")

    def _draw(self, rng_seed: int, split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.bank is not None:
            i = rng_seed % len(self.bank["goals"])
            return self.bank["goals"][i], self.bank["rules"][i], self.bank["init_tiles"][i]
        tier = TIERS[self.config.deeper_tier if split == "ood" else self.config.tier]
        goal, rules, objects = generate_ruleset(rng_seed, **tier)
        return np.array(goal), np.array(rules or [[0] * RULE_LEN]), np.array(objects)

    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        if split not in self.splits:
            raise ValueError(f"split must be one of {self.splits}, got {split!r}")
        if split == "ood" and self.bank is not None:
            raise ConfigError("a benchmark file has no ood split: evaluate with --split test")
        want = "train" if split == "train" else "test"
        goals, rules, objects = [], [], []
        while len(goals) < n:
            seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
            goal, rule, obj = self._draw(seed, split)
            goal = np.pad(goal, (0, GOAL_LEN - len(goal)))
            rule = np.pad(rule, ((0, self.num_rules - len(rule)), (0, 0)))
            if ruleset_split(goal, rule, self.config.test_fraction) != want:
                continue
            goals.append(goal)
            rules.append(rule)
            obj = obj.reshape(-1, 2)
            objects.append(np.pad(obj, ((0, self.num_objects - len(obj)), (0, 0))))
        dev = generator.device
        return {
            "goal": torch.as_tensor(np.stack(goals), dtype=torch.long, device=dev),
            "rules": torch.as_tensor(np.stack(rules), dtype=torch.long, device=dev),
            "init_tiles": torch.as_tensor(np.stack(objects), dtype=torch.long, device=dev),
            "ood": torch.full((n,), float(split == "ood"), device=dev),
        }

    def split_of(self, tasks: Tasks) -> list[str]:
        out = []
        for goal, rules, ood in zip(tasks["goal"], tasks["rules"], tasks["ood"]):
            label = ruleset_split(
                goal.cpu().numpy(), rules.cpu().numpy(), self.config.test_fraction
            )
            out.append("ood" if float(ood) > 0 else label)
        return out


def _library():
    """xminigrid and jax, or the one-line error naming the extra. JAX takes GPU memory as it
    needs it (not the default 75% at start), so that torch can share the card."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        import jax
        import xminigrid
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"'{exc.name}' is not installed; install it with: pip install 'adaptrl[xland]'"
        ) from None
    return jax, xminigrid


class XLandEnv(BatchedMetaEnv):
    """All rows stepped by one jitted, vmapped call of the library; see the module docstring."""

    def __init__(self, num_envs: int, config: XLandConfig | None = None, device: Any = "cpu"):
        super().__init__(num_envs, device)
        self.config = config or XLandConfig()
        self.horizon = self.config.episode_steps
        self.deterministic = False  # layouts are drawn from the rows' streams at every reset
        self.single_observation_space, self.single_action_space = self.spaces(self.config)
        self._batch_spaces()
        jax, xminigrid = _library()
        self._jax = jax
        self._jax_device = jax_device_beside(jax, self.device)
        with self._on():
            env, params = xminigrid.make(f"XLand-MiniGrid-{self.config.grid}")
        self._params = params.replace(max_steps=self.horizon, view_size=self.config.view_size)
        self._timestep = None
        self._layout: np.ndarray | None = None  # [B, 2]: each row's key of its trial's layout
        self._reset_fn, self._step_fn = _compiled(env, jax)

    @classmethod
    def spaces(cls, config: Any):
        v = config.view_size
        obs = spaces.Box(0.0, 1.0, (v * v * (NUM_TILES + NUM_COLORS),), "float32")
        return obs, spaces.Discrete(NUM_ACTIONS)

    def set_tasks(self, tasks: Tasks) -> None:
        super().set_tasks(tasks)
        jnp = self._jax.numpy
        from xminigrid.types import RuleSet

        with self._on():
            ruleset = RuleSet(
                goal=jnp.asarray(tasks["goal"].cpu().numpy(), dtype=jnp.uint8),
                rules=jnp.asarray(tasks["rules"].cpu().numpy(), dtype=jnp.uint8),
                init_tiles=jnp.asarray(tasks["init_tiles"].cpu().numpy(), dtype=jnp.uint8),
            )
            self._batch_params = self._params.replace(ruleset=ruleset)

    def _on(self):
        """Run JAX's work on this env's JAX device (a fresh context each time: JAX's may be
        single-use)."""
        return self._jax.default_device(self._jax_device)

    def _to_torch(self, x) -> torch.Tensor:
        return torch.from_dlpack(x).to(self.device)

    def reset(self, *, tasks=None, mask=None, keys=None, seed=None, options=None):
        self._prepare_reset(tasks, keys, seed)
        everywhere = mask is None or self._timestep is None
        rows = np.ones(self.num_envs, bool) if everywhere else mask.cpu().numpy()
        if tasks is not None or everywhere or not self.config.same_layout:
            # same_layout: only a trial's first reset (or a new task) draws a layout
            draw = self.rng.uniform(2, rows=mask)  # the row's next layout, from its own stream
            key_data = (draw.double() * 2**32).long().cpu().numpy().astype(np.uint32)  # [B, 2]
            kept = self._layout if self._layout is not None else key_data
            self._layout = np.where(rows[:, None], key_data, kept)
        with self._on():
            self._timestep, obs = self._reset_fn(
                self._batch_params, self._layout, rows, self._timestep
            )
        return self._to_torch(obs), {}

    def step(self, actions):
        acts = np.asarray(actions.cpu().numpy(), dtype=np.int32)
        with self._on():
            self._timestep, (obs, reward, terminated, truncated) = self._step_fn(
                self._batch_params, self._timestep, acts
            )
        return (
            self._to_torch(obs),
            self._to_torch(reward),
            self._to_torch(terminated),
            self._to_torch(truncated),
            {},
        )


def jax_device_beside(jax, device: torch.device):
    """The JAX device beside torch's, so that the library steps where the policy acts and DLPack
    hands its arrays over without a copy (on a GPU too). A CUDA torch device with a JAX that has no
    GPU support steps on JAX's CPU, the arrays then copied over."""
    if device.type == "cuda":
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:  # no GPU backend in this JAX
            gpus = []
        if gpus:
            return gpus[device.index or 0]
    return jax.devices("cpu")[0]


_COMPILED: dict[type, tuple] = {}


def _compiled(env, jax) -> tuple:
    """The jitted batched reset and step, made once per library env class (the env object holds
    no settings: sizes travel in its params, which jit specialises on)."""
    key = type(env)
    if key in _COMPILED:
        return _COMPILED[key]
    jnp = jax.numpy

    def observe(obs):  # [B, V, V, 2] ids -> [B, V*V*(tiles + colours)] one-hot floats
        tiles = jax.nn.one_hot(obs[..., 0], NUM_TILES, dtype=jnp.float32)
        colours = jax.nn.one_hot(obs[..., 1], NUM_COLORS, dtype=jnp.float32)
        return jnp.concatenate([tiles, colours], -1).reshape(obs.shape[0], -1)

    @jax.jit
    def reset(params, key_data, rows, old):
        keys = jax.random.wrap_key_data(jnp.asarray(key_data, jnp.uint32))
        new = jax.vmap(env.reset)(params, keys)
        if old is not None:
            new = jax.tree_util.tree_map(
                lambda n, o: jnp.where(rows.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old
            )
        return new, observe(new.observation)

    @jax.jit
    def step(params, timestep, actions):
        new = jax.vmap(env.step)(params, timestep, actions)
        last = new.step_type == 2
        terminated = last & (new.discount == 0)
        return new, (observe(new.observation), new.reward, terminated, last & ~terminated)

    _COMPILED[key] = reset, step
    return reset, step
