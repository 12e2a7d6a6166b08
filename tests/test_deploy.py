"""Using a trained run outside the tools: load it, adapt from one's own episodes, save the
adapted policy, run it in a plain gymnasium loop (MAML) or step by step (RL²)."""

import fnmatch
import logging
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.testing import assert_close

import adaptrl
from adaptrl.build import build, build_run_config
from adaptrl.cli import main
from adaptrl.config import apply_overrides, load_preset
from adaptrl.errors import RunError

TINY_MAML = [
    "algo.meta_batch_size=2",
    "algo.episodes_per_task=3",
    "env.horizon=12",
    "algo.hidden_sizes=[8]",
    "train.num_iterations=2",
]


def _built(preset, overrides):
    return build(build_run_config(apply_overrides(load_preset(preset), overrides)))


def test_maml_adapts_from_user_episodes_exactly_like_its_inner_loop():
    with _built("maml-navigation2d", TINY_MAML) as built:
        maml = built.learner
        tasks = maml.family.tasks.sample(1, "test", torch.Generator().manual_seed(3))
        traj = maml._sample(tasks, maml.policy.params(), False, 4, seed=11)
        expected = maml.inner_step(maml.policy.params(), False, maml._pg_batch(traj), 0.3)
        episodes = []
        for e in range(4):
            n = int(traj.mask[:, e].sum())
            episodes.append(
                {
                    "obs": traj.obs[:n, e].numpy(),
                    "actions": traj.actions[:n, e].numpy(),
                    "rewards": traj.rewards[:n, e].numpy(),
                    "terminated": bool(traj.terminated[n - 1, e]),
                }
            )
        adapted = maml.adapt_from_episodes(episodes, lr=0.3)
        for name, value in adapted.named_parameters():
            assert_close(value, expected[name][0].detach(), msg=name)
        moved = [
            not torch.equal(a, b) for a, b in zip(adapted.parameters(), maml.policy.parameters())
        ]
        assert any(moved)  # a step was taken, and the learner's own policy is untouched


def test_saved_policy_is_a_plain_module_with_the_same_actions(tmp_path, caplog):
    with _built("maml-navigation2d", TINY_MAML) as built:
        policy = built.learner.policy
        with caplog.at_level(logging.WARNING):
            path = adaptrl.save_policy(policy, tmp_path / "policy.pt2")
        # the temporary file once ended in .pt2.tmp and torch warned about it (issue 26)
        assert [r.getMessage() for r in caplog.records] == []
        assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.pt2"]
        obs = torch.randn(5, 2)
        plain = torch.export.load(str(path)).module()  # no adaptrl needed to run it
        assert_close(plain(obs), policy(obs)[0])
        assert_close(adaptrl.load_policy(path)(obs[:1]), policy(obs[:1])[0])
    (tmp_path / "bad.pt2").write_bytes(b"not a policy")
    with pytest.raises(RunError, match="not a policy saved by adaptrl"):
        adaptrl.load_policy(tmp_path / "bad.pt2")


@pytest.mark.parametrize("cell, terminal", [("gru", False), ("lstm", False), ("gru", True)])
def test_rl2_controller_takes_the_samplers_actions_step_by_step(tmp_path, cell, terminal):
    """Same actions, and the same carried state after every step (an LSTM's cell state too)
    as the learner's replay of the trial, live and after export; with the terminal observation
    as an input, the controller is handed it through ``observe`` and still agrees."""
    overrides = ["algo.hidden_size=16", "algo.meta_batch_size=4", "train.num_iterations=1"]
    overrides += [f"algo.cell={cell}", f"algo.terminal_obs_input={str(terminal).lower()}"]
    with _built("rl2-maze", overrides) as built:
        rl2 = built.learner
        tasks = rl2.family.tasks.sample(1, "test", torch.Generator().manual_seed(0))
        traj = rl2.sample_trials(tasks, seed=5, mode=True)
        states = rl2.trials(traj).hidden_in[:, 0]  # [T, S]: before each step
        controller = rl2.controller(mode=True)
        saved = adaptrl.load_policy(adaptrl.save_policy(controller, tmp_path / "rl2.pt2"), True)
        assert saved.terminal_obs_input == terminal
        if terminal:  # the maze ends episodes at the goal: a boundary the input must cross
            assert 0 < int(traj.ends[:, 0].sum()) < int(traj.mask[:, 0].sum())
        for ctrl in (controller, saved):
            ctrl.reset()
            actions = []
            for t in range(int(traj.mask[:, 0].sum())):
                actions.append(ctrl.act(traj.obs[t, 0].numpy()))
                end = bool(traj.ends[t, 0])
                ctrl.observe(float(traj.rewards[t, 0]), end, traj.next_obs[t, 0].numpy())
                if t + 1 < states.shape[0]:
                    assert_close(ctrl.hidden[0, 0], states[t + 1], atol=1e-5, rtol=1e-5)
            assert actions == traj.actions[: len(actions), 0].tolist()
            assert ctrl.hidden.shape[-1] == (16 if cell == "gru" else 32)
            if terminal:  # an episode's end without its observation is refused, naming the fix
                ctrl.reset()
                ctrl.act(traj.obs[0, 0].numpy())
                with pytest.raises(ValueError, match=r"observe\(reward, ended, next_obs\)"):
                    ctrl.observe(0.0, True)


def test_a_trained_run_is_loaded_adapted_saved_and_run_in_a_gymnasium_loop(tmp_path):
    run = tmp_path / "nav"
    argv = ["train", "maml-navigation2d", "--out", str(run), "--quiet"]
    argv += [x for o in TINY_MAML + ["train.eval_every=1"] for x in ("--set", o)]
    assert main(argv) == 0
    with adaptrl.load_run(run) as loaded:
        assert loaded.iteration == 2
        state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["algorithm"]
        for k, v in loaded.learner.policy.state_dict().items():
            assert torch.equal(v, state["policy"][k]), k
        env = loaded.task_env(task={"goal": [0.3, -0.2]})  # the run's horizon: 12
        episodes = adaptrl.collect_episodes(env, loaded.learner.policy, 3, seed=0)
        assert len(episodes) == 3 and episodes[0]["obs"].shape[1] == 2
        adapted = loaded.learner.adapt_from_episodes(episodes)
        path = adaptrl.save_policy(adapted, tmp_path / "adapted.pt2")
    policy = torch.export.load(str(path)).module()
    obs, _ = env.reset(seed=1)
    total, steps = 0.0, 0
    while True:
        action = policy(torch.as_tensor(obs)[None])[0].detach().numpy()
        obs, reward, terminated, truncated, _ = env.step(action)
        total, steps = total + reward, steps + 1
        if terminated or truncated:
            break
    assert 1 <= steps <= 12 and np.isfinite(total)
    with adaptrl.load_run(run, checkpoint="best") as best:
        assert 1 <= best.iteration <= 2


def test_files_the_readme_deploy_example_saves_are_ignored_by_git():
    """Run from a checkout, the README's example left adapted.pt2 untracked (issue 26)."""
    root = Path(__file__).resolve().parents[1]
    saved = re.findall(r'save_policy\(\w+, "([^"]+)"\)', (root / "README.md").read_text())
    ignored = (root / ".gitignore").read_text().splitlines()
    assert "adapted.pt2" in saved and "rl2.pt2" in saved
    assert all(any(fnmatch.fnmatch(name, p) for p in ignored) for name in saved), saved


def test_gymnasium_ids_give_a_task_by_parameters_or_by_split():
    env = gym.make("adaptrl/navigation2d-v0", task={"goal": [0.3, -0.2]})
    obs, _ = env.reset(seed=0)
    _, reward, *_ = env.step(np.zeros(2, dtype=np.float32))
    assert_close(torch.tensor(reward), -torch.tensor([0.3, 0.2]).norm())  # -distance to goal
    a = gym.make("adaptrl/bandit-v0", split="test", index=2, num_arms=5).unwrapped
    b = gym.make("adaptrl/bandit-v0", split="test", index=2, num_arms=5).unwrapped
    assert torch.equal(a.task["probs"], b.task["probs"]) and a.task["probs"].shape == (1, 5)
    with pytest.raises(adaptrl.ConfigError, match="not parameters of 'navigation2d'"):
        gym.make("adaptrl/navigation2d-v0", task={"goall": [0, 0]})
