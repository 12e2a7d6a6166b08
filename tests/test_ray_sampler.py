"""Ray back-end: the same trajectories as worker processes on a MuJoCo family, a killed actor
replaced with its shard re-sampled identically, and one-line errors for a bad address."""

import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("mujoco")
ray = pytest.importorskip("ray")

from adaptrl.envs import make_family  # noqa: E402
from adaptrl.errors import ConfigError  # noqa: E402
from adaptrl.policies import GaussianMLPPolicy  # noqa: E402
from adaptrl.sampling import PolicyAgent  # noqa: E402
from adaptrl.sampling.processes import ProcessSampler  # noqa: E402
from adaptrl.sampling.ray_sampler import RaySampler  # noqa: E402


def test_an_unreachable_ray_address_is_a_one_line_error():
    with pytest.raises(ConfigError, match="cannot connect to Ray at '127.0.0.1:1'"):
        RaySampler(make_family("navigation2d"), 1, address="127.0.0.1:1")


@pytest.fixture(scope="module")
def case():
    family = make_family("halfcheetah_vel", horizon=30)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(17, 6, (32, 32))
    agent = PolicyAgent(policy, policy.params(), False, 4)
    tasks = family.tasks.sample(4, "train", torch.Generator().manual_seed(0))
    with ProcessSampler(family, 2) as processes:
        reference = processes.sample(agent, tasks, seed=3, episodes_per_task=2)
    sampler = RaySampler(family, 2)
    yield sampler, agent, tasks, reference
    sampler.close()


def _same(a, b):
    assert a.rewards.shape == b.rewards.shape == (30, 8)
    for key in ("obs", "actions", "log_probs", "rewards", "next_obs", "mask"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key), msg=key)
    assert torch.equal(a.truncated, b.truncated)


def test_ray_actors_return_the_worker_processes_trajectories(case):
    sampler, agent, tasks, reference = case
    _same(sampler.sample(agent, tasks, seed=3, episodes_per_task=2), reference)
    assert reference.rewards.abs().sum() > 0  # a real simulator ran


def test_a_killed_ray_actor_is_restarted_and_its_shard_resampled(case):
    sampler, agent, tasks, reference = case
    ray.kill(sampler.actors[0], no_restart=False)
    _same(sampler.sample(agent, tasks, seed=3, episodes_per_task=2), reference)
    assert sampler.restarts >= 1


STARTED_ELSEWHERE = """
import sys
sys.path.insert(0, {own!r})
import ray
import gravity_line
from adaptrl.envs import add_plugin_module, make_family
from adaptrl.errors import AdaptrlError
from adaptrl.sampling.ray_sampler import RaySampler

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)  # a Ray that is not ours
family = make_family("point_line")
try:
    RaySampler(family, 1)
except AdaptrlError as exc:
    print("refused:", exc)
add_plugin_module(gravity_line)  # what --import does: the actors then find its folder
sampler = RaySampler(family, 1)
print("started", len(sampler.actors))
sampler.close()
"""


def test_actors_that_cannot_import_a_module_fail_in_one_line_and_find_plugins(tmp_path):
    """Actors that could not unpickle the family gave a 40-line traceback (issue 26); with a
    Ray started by someone else (no runtime environment of ours) a plugin's folder is put on
    the actors' path."""
    from test_cli_user import USER_FAMILY

    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "gravity_line.py").write_text(textwrap.dedent(USER_FAMILY))
    (tmp_path / "elsewhere").mkdir()
    script = STARTED_ELSEWHERE.format(own=str(tmp_path / "own"))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path / "elsewhere"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "refused: the Ray sampler's actors did not start: ModuleNotFoundError: No module named "
        "'gravity_line'",
        "started 1",
    ]
