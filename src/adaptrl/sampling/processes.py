"""Worker processes: each owns the envs of a slice of tasks and a local copy of the agent, and runs
whole rollouts; the parent sends one request per worker per sampling phase, never one per step.

Robustness, because this is where existing meta-RL libraries hang or leak:
* ``spawn`` start method: no fork of a process whose OpenMP threads are running (the
  pytorch-maml-rl hang), and workers set torch to one thread (two jobs on one machine cost ~2x).
* Requests and results are pickled to bytes (numpy arrays for results), not passed through
  torch's shared-memory file descriptors.
* A worker that dies is replaced and its shard re-sampled; since every row's randomness is keyed
  by (seed, task, episode), the re-sampled shard is identical to the lost one.
* No orphans: workers ignore Ctrl-C (the parent shuts them down), exit when the parent's end of
  their pipe closes, and on Linux ask the kernel to kill them when the parent dies (SIGKILL too).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import traceback
import weakref
from multiprocessing.connection import wait
from typing import Any

import torch

from adaptrl.config import SamplerConfig
from adaptrl.envs import Family
from adaptrl.errors import AdaptrlError
from adaptrl.sampling.base import (
    RolloutWorker,
    Sampler,
    num_tasks_of,
    shard_bounds,
    shard_request,
)
from adaptrl.sampling.trajectories import Trajectories

_PROTOCOL = pickle.HIGHEST_PROTOCOL


class SamplerError(AdaptrlError):
    """A worker failed in a way that re-sampling cannot fix (an exception in the env or agent)."""


def _die_with_parent() -> None:
    try:  # Linux: SIGKILL this worker when the parent dies, even by SIGKILL
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve(conn, family: Family) -> None:
    """Answer pickled requests on ``conn`` until it closes or a ``None`` request arrives."""
    worker = RolloutWorker(family)
    while True:
        try:
            blob = conn.recv_bytes()
        except (EOFError, OSError):
            break
        try:
            request = pickle.loads(blob)
            if request is None:
                break
            reply = ("ok", worker.sample(**request).to_numpy())
        except Exception:  # reported to the parent, which raises it there
            reply = ("error", traceback.format_exc())
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=_PROTOCOL))
        except (BrokenPipeError, OSError):
            break
    worker.close()


def _worker_main(conn, family_blob: bytes, threads: int, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        return
    torch.set_num_threads(threads)
    serve(conn, pickle.loads(family_blob))


def _shutdown(procs: list, conns: list) -> None:
    for conn in conns:
        if conn is not None:
            try:
                conn.send_bytes(pickle.dumps(None))
            except (BrokenPipeError, OSError):
                pass
    for proc in procs:
        if proc is not None:
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2.0)
    for conn in conns:
        if conn is not None:
            conn.close()


class ProcessSampler(Sampler):
    """Shards tasks over ``num_workers`` spawned processes (contiguous task ranges)."""

    def __init__(
        self, family: Family, num_workers: int, threads_per_worker: int = 1, max_restarts: int = 3
    ) -> None:
        SamplerConfig(workers=num_workers)  # one line if it is not a positive count
        self.family, self.num_workers = family, num_workers
        self.threads, self.max_restarts = threads_per_worker, max_restarts
        self.restarts = 0
        """Workers replaced so far (dead workers whose shard was re-sampled)."""
        self._ctx = mp.get_context("spawn")
        self._blob = pickle.dumps(family, protocol=_PROTOCOL)
        self.procs: list[Any] = [None] * num_workers
        self._conns: list[Any] = [None] * num_workers
        self._closed = False
        for i in range(num_workers):
            self._start(i)
        self._finalizer = weakref.finalize(self, _shutdown, self.procs, self._conns)

    def _start(self, i: int) -> None:
        parent_conn, child_conn = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, self._blob, self.threads, os.getpid()),
            daemon=True,
            name=f"adaptrl-sampler-{i}",
        )
        proc.start()
        child_conn.close()
        self.procs[i], self._conns[i] = proc, parent_conn

    def _replace(self, i: int) -> None:
        self.restarts += 1
        if self.restarts > self.max_restarts * self.num_workers:
            raise SamplerError(
                f"sampler workers died {self.restarts} times; see the worker's error above "
                "(out of memory? a crashing simulator?)"
            )
        proc, conn = self.procs[i], self._conns[i]
        conn.close()
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=2.0)
        self._start(i)

    def _sample(self, agent, tasks, seed, episodes_per_task, episodes_per_trial, max_steps):
        if self._closed:
            raise AdaptrlError("this sampler is closed")
        bounds = shard_bounds(num_tasks_of(tasks), self.num_workers)
        blobs = [
            pickle.dumps(
                shard_request(
                    agent, tasks, seed, episodes_per_task, episodes_per_trial, max_steps, a, b
                ),
                protocol=_PROTOCOL,
            )
            for a, b in bounds
        ]
        pending = set(range(len(bounds)))
        for i in pending:
            self._send(i, blobs[i])
        results: list[Trajectories | None] = [None] * len(bounds)
        while pending:
            waitables = {self._conns[i]: i for i in pending}
            waitables.update({self.procs[i].sentinel: i for i in pending})
            for ready in wait(list(waitables)):
                i = waitables[ready]
                if i not in pending:
                    continue
                reply = self._receive(i)
                if reply is None:  # the worker died: replace it and re-sample its shard
                    self._replace(i)
                    self._send(i, blobs[i])
                    continue
                status, payload = reply
                if status == "error":
                    raise SamplerError(f"a sampler worker failed:\n{payload}")
                results[i] = Trajectories.from_numpy(payload)
                pending.discard(i)
        return Trajectories.concat(results)

    def _send(self, i: int, blob: bytes) -> None:
        try:
            self._conns[i].send_bytes(blob)
        except (BrokenPipeError, OSError):
            self._replace(i)
            self._conns[i].send_bytes(blob)

    def _receive(self, i: int):
        """The worker's reply, or None if it died (its pipe is empty and its process gone)."""
        conn = self._conns[i]
        try:
            if not conn.poll() and not self.procs[i].is_alive():
                return None
            return pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._finalizer()
