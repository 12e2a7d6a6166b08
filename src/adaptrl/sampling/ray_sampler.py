"""Ray actors running the same ``RolloutWorker`` as the worker processes, on one machine or a
cluster (``ray_address``). A dead actor is restarted by Ray (``max_restarts``) with fresh state;
its shard is re-sent, and since rows are keyed by (seed, task, episode) it re-samples identically.
"""

from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path
from typing import Any

import torch

from adaptrl.config import SamplerConfig
from adaptrl.envs import Family, plugin_modules
from adaptrl.errors import ConfigError
from adaptrl.sampling.base import RolloutWorker, Sampler, num_tasks_of, shard_bounds, shard_request
from adaptrl.sampling.processes import SamplerError
from adaptrl.sampling.trajectories import Trajectories

_PROTOCOL = pickle.HIGHEST_PROTOCOL


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the Ray sampler needs ray; install it with: pip install 'adaptrl[ray]'"
        ) from None
    return ray


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Ray retries an unreachable head for minutes; probe it first and fail in one line."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot connect to Ray at '{address}' ({exc.__class__.__name__}); start a cluster "
            "with 'ray start --head' or drop --ray-address to run Ray locally"
        ) from None


def _cause(exc: BaseException) -> str:
    """The innermost ``SomeError: message`` line of a Ray error's remote traceback."""
    lines = [line.strip() for line in str(exc).splitlines()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return errors[-1] if errors else (lines[0] if lines else type(exc).__name__)


class _Actor:
    """Holds a RolloutWorker; requests and replies are pickled bytes, as for worker processes."""

    def __init__(self, family_blob: bytes, threads: int, folders: list[str]) -> None:
        torch.set_num_threads(threads)
        sys.path[:0] = [f for f in folders if f not in sys.path]
        self.worker = RolloutWorker(pickle.loads(family_blob))

    def sample(self, request_blob: bytes) -> bytes:
        traj = self.worker.sample(**pickle.loads(request_blob))
        return pickle.dumps(traj.to_numpy(), protocol=_PROTOCOL)

    def ping(self) -> bool:
        return True


class RaySampler(Sampler):
    """``num_workers`` Ray actors of one CPU each."""

    def __init__(
        self,
        family: Family,
        num_workers: int,
        address: str = "",
        threads_per_worker: int = 1,
        max_restarts: int = 3,
    ) -> None:
        ray = import_ray()
        SamplerConfig(workers=num_workers)  # one line if it is not a positive count
        self.ray, self.num_workers, self.max_restarts = ray, num_workers, max_restarts
        self.restarts = 0
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray and address and address != "auto":
            _check_reachable(address)
        # --import'ed modules travel with the actors, which may run in another directory or on
        # another machine: unpickling the family there failed with ModuleNotFoundError (issue 26)
        # (a submodule travels as its whole top-level package, so its import name stays valid)
        tops = {sys.modules[m.__name__.split(".")[0]] for m in plugin_modules()}
        shipped = sorted(m.__path__[0] if hasattr(m, "__path__") else m.__file__ for m in tops)
        if self._owns_ray:
            try:
                ray.init(
                    address=address or None,
                    num_cpus=None if address else num_workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    runtime_env={"py_modules": shipped} if shipped else None,
                )
            except Exception as exc:  # ConnectionError, or Ray's own errors for a bad address
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(
                    f"cannot connect to Ray at '{address}' ({first}); start a cluster with "
                    "'ray start --head' or drop --ray-address to run Ray locally"
                ) from None
        self._remote = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)(_Actor)
        blob = pickle.dumps(family, protocol=_PROTOCOL)
        # a Ray started by someone else has no py_modules of ours: on this machine, the modules'
        # folders on the actors' path do as well
        folders = [] if self._owns_ray else [str(Path(p).parent) for p in shipped]
        self.actors = [
            self._remote.remote(blob, threads_per_worker, folders) for _ in range(num_workers)
        ]
        self._closed = False
        try:
            ray.get([a.ping.remote() for a in self.actors])
        except ray.exceptions.RayError as exc:
            self.close()
            raise SamplerError(f"the Ray sampler's actors did not start: {_cause(exc)}") from None

    def _sample(self, agent, tasks, seed, episodes_per_task, episodes_per_trial, max_steps):
        ray = self.ray
        bounds = shard_bounds(num_tasks_of(tasks), self.num_workers)
        blobs = [
            ray.put(
                pickle.dumps(
                    shard_request(
                        agent, tasks, seed, episodes_per_task, episodes_per_trial, max_steps, a, b
                    ),
                    protocol=_PROTOCOL,
                )
            )
            for a, b in bounds
        ]
        refs = {self.actors[i].sample.remote(blobs[i]): i for i in range(len(bounds))}
        results: list[Any] = [None] * len(bounds)
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            ref = done[0]
            i = refs.pop(ref)
            try:
                results[i] = Trajectories.from_numpy(pickle.loads(ray.get(ref)))
            except ray.exceptions.RayActorError:  # died (or is restarting): re-send the shard
                self.restarts += 1
                if self.restarts > self.max_restarts * self.num_workers:
                    raise SamplerError(f"Ray actors died {self.restarts} times") from None
                refs[self.actors[i].sample.remote(blobs[i])] = i
            except ray.exceptions.RayTaskError as exc:
                raise SamplerError(f"a Ray sampler actor failed:\n{exc}") from None
        return Trajectories.concat(results)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # already gone
                pass
        if self._owns_ray:
            self.ray.shutdown()
