"""Rollout collection. ``batched`` steps tensor-native envs in-process (the fast default)."""

from adaptrl.sampling.batched import GaussianActor, Trajectories, rollout

__all__ = ["GaussianActor", "Trajectories", "rollout"]
