"""The sampler seam: every back-end and worker count returns the same trajectories for the same
seed; dead workers are replaced and their shard re-sampled identically; no process outlives its
parent (exception, Ctrl-C, SIGKILL)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from adaptrl import rng
from adaptrl.envs import make_family
from adaptrl.errors import ConfigError
from adaptrl.policies import GaussianMLPPolicy, RecurrentCategoricalPolicy
from adaptrl.sampling import InProcessSampler, PolicyAgent, RecurrentAgent, make_sampler
from adaptrl.sampling.processes import ProcessSampler, SamplerError

FIELDS = ("obs", "actions", "log_probs", "rewards", "next_obs", "terminated", "truncated", "mask")


def _same(a, b):
    for key in FIELDS:
        x, y = getattr(a, key), getattr(b, key)
        assert x.shape == y.shape, key
        if x.dtype == torch.bool or not x.is_floating_point():
            assert torch.equal(x, y), key
        else:
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5, msg=key)


def _navigation_case():
    family = make_family("navigation2d", horizon=25)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, (16,))
    tasks = family.tasks.sample(5, "train", torch.Generator().manual_seed(0))
    params = {
        k: v.detach().unsqueeze(0).repeat(5, *[1] * v.dim()) for k, v in policy.params().items()
    }
    params = {k: v + 0.1 * torch.randn_like(v) for k, v in params.items()}  # per-task θ'
    agent = PolicyAgent(policy, params, per_task=True, num_tasks=5)
    return family, agent, tasks, {"episodes_per_task": 3}


def _bandit_case():
    family = make_family("bandit", num_arms=3, num_pulls=6)
    torch.manual_seed(0)
    agent = RecurrentAgent(RecurrentCategoricalPolicy(1, 3, 8))
    tasks = family.tasks.sample(5, "train", torch.Generator().manual_seed(0))
    return family, agent, tasks, {"episodes_per_trial": 3}  # stochastic env, memory across eps


@pytest.mark.parametrize("case", [_navigation_case, _bandit_case])
def test_row_streams_make_trajectories_independent_of_batching(case):
    family, agent, tasks, kw = case()
    sampler = InProcessSampler(family)
    full = sampler.sample(agent, tasks, seed=11, **kw)
    again = sampler.sample(agent, tasks, seed=11, **kw)
    _same(full, again)
    other = sampler.sample(agent, tasks, seed=12, **kw)
    assert not torch.equal(full.actions, other.actions)
    # Task 3 alone (with its global index) is row-for-row the same as inside the batch.
    worker = sampler.worker
    alone = worker.sample(
        agent.shard(3, 4),
        {k: v[3:4] for k, v in tasks.items()},
        torch.tensor([3]),
        11,
        kw.get("episodes_per_task", 1),
        kw.get("episodes_per_trial", 1),
    )
    E = kw.get("episodes_per_task", 1)
    T = alone.rewards.shape[0]
    torch.testing.assert_close(alone.rewards, full.rewards[:T, 3 * E : 4 * E])
    torch.testing.assert_close(alone.actions, full.actions[:T, 3 * E : 4 * E])


@pytest.mark.parametrize("case", [_navigation_case, _bandit_case])
def test_worker_processes_match_in_process_for_any_worker_count(case):
    family, agent, tasks, kw = case()
    reference = InProcessSampler(family).sample(agent, tasks, seed=5, **kw)
    for workers in (1, 2, 3):
        with ProcessSampler(family, workers) as sampler:
            _same(sampler.sample(agent, tasks, seed=5, **kw), reference)


def test_a_killed_worker_is_replaced_and_its_shard_resampled_identically():
    family, agent, tasks, kw = _navigation_case()
    reference = InProcessSampler(family).sample(agent, tasks, seed=5, **kw)
    with ProcessSampler(family, 2) as sampler:
        _same(sampler.sample(agent, tasks, seed=5, **kw), reference)  # workers are up
        victim = sampler.procs[1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=5)
        _same(sampler.sample(agent, tasks, seed=5, **kw), reference)
        assert sampler.restarts == 1
        assert sampler.procs[1].pid != victim.pid and sampler.procs[1].is_alive()


class _Exploding(PolicyAgent):
    def act(self, obs, state):
        raise RuntimeError("boom in the agent")


def test_an_error_in_a_worker_is_raised_in_the_parent_and_workers_are_stopped():
    family, agent, tasks, kw = _navigation_case()
    bad = _Exploding(agent.policy, agent.params, True, 5)
    sampler = ProcessSampler(family, 2)
    with pytest.raises(SamplerError, match="boom in the agent"):
        with sampler:
            sampler.sample(bad, tasks, seed=0, **kw)
    for proc in sampler.procs:
        proc.join(timeout=5)
        assert not proc.is_alive()


def test_bad_sampler_settings_are_one_line_config_errors():
    family = make_family("navigation2d")
    with pytest.raises(ConfigError, match="unknown sampler 'threads'"):
        make_sampler(family, "threads")
    with pytest.raises(ConfigError, match="sampler.workers must be > 0"):
        make_sampler(family, "processes", workers=0)


def _children(pid: int) -> set[int]:
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.add(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.add(pid)
        except OSError:
            pass
    return out


SCRIPT = textwrap.dedent(
    """
    import signal, sys, time, torch
    from adaptrl.envs import make_family
    from adaptrl.sampling.processes import ProcessSampler
    if __name__ == "__main__":
        # Ctrl-C as in a terminal, even when this test runs as a background job (which starts
        # its children with SIGINT ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sampler = ProcessSampler(make_family("navigation2d"), 2)
        print(" ".join(str(p.pid) for p in sampler.procs), flush=True)
        if sys.argv[1] == "raise":
            raise RuntimeError("the parent fails")
        time.sleep(60)
    """
)


@pytest.mark.parametrize("how", ["raise", "sigint", "sigkill"])
def test_no_worker_outlives_its_parent(tmp_path, how):
    script = tmp_path / "parent.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), how], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    workers = {int(p) for p in proc.stdout.readline().split()}
    assert len(workers) == 2 and _alive(workers) == workers
    if how == "sigint":
        proc.send_signal(signal.SIGINT)  # Ctrl-C reaches the parent (workers ignore it)
    elif how == "sigkill":
        proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(workers) == set(), f"orphaned workers after {how}"


def test_derived_seeds_differ_by_iteration_and_phase():
    a, b, c = rng.derive_seed(0, 1, 0), rng.derive_seed(0, 2, 0), rng.derive_seed(0, 1, 1)
    assert len({a, b, c}) == 3 and a == rng.derive_seed(0, 1, 0)
    u = rng.uniform(torch.arange(20000, dtype=torch.int64), 0, 4)
    assert 0 < u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01
    z = rng.normal(torch.arange(20000, dtype=torch.int64), 3, 2)
    assert abs(z.mean().item()) < 0.03 and abs(z.std().item() - 1) < 0.03


def test_a_missing_ray_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'adaptrl\[ray\]'"):
        make_sampler(make_family("navigation2d"), "ray", workers=1)
