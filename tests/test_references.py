"""The references every learning result is reported beside: the domain-randomised policy (one
policy trained on all training tasks, acting without adaptation), the oracle (the task in its
observation), their training budget, and the paired verdict of the learner against each."""

import json

import pytest
import torch
from torch.testing import assert_close

from adaptrl import make_family
from adaptrl.build import build, build_run_config
from adaptrl.cli import main
from adaptrl.envs.oracle import TaskInObservation
from adaptrl.errors import ConfigError
from adaptrl.evaluation import evaluate_run
from adaptrl.policies import RecurrentCategoricalPolicy, RecurrentGaussianPolicy
from adaptrl.results import paired_difference, verdict
from adaptrl.rng import task_episode_keys
from adaptrl.runs import Run
from adaptrl.trainer import Trainer

MAML_TINY = {
    "algorithm": "maml",
    "env": {"name": "navigation2d", "horizon": 10},
    "algo": {"meta_batch_size": 4, "episodes_per_task": 4, "hidden_sizes": [8]},
    "train": {"num_iterations": 2, "checkpoint_every": 1},
    "evaluate": {"num_tasks": 6, "num_steps": 2, "episodes_per_task": 4},
}


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("continuous", [False, True])
def test_a_memoryless_policy_ignores_the_past(cell, continuous):
    torch.manual_seed(0)
    cls = RecurrentGaussianPolicy if continuous else RecurrentCategoricalPolicy
    policy = cls(3, 2, 8, cell=cell, memory=False)
    T, B = 5, 4
    obs = torch.randn(T, B, 3)
    progress = torch.linspace(0, 1, T).unsqueeze(1).expand(T, B)

    def run(seed: int):
        g = torch.Generator().manual_seed(seed)
        if continuous:
            prev_a = torch.randn(T, B, 2, generator=g)
        else:
            prev_a = torch.randint(2, (T, B), generator=g)
        x = policy.inputs(obs, prev_a, torch.randn(T, B, generator=g), torch.zeros(T, B), progress)
        h0 = torch.randn(1, B, policy.state_size, generator=g)  # any carried state is dropped
        return policy(x, h0)[0], policy.replay(policy.encoder(x), h0)

    out_a, (replay_a, before_a) = run(1)
    out_b, _ = run(2)
    assert_close(out_a, out_b)  # other past actions, rewards and states: the same actions
    # Step by step gives what the whole sequence gives (the sampler steps; PPO replays).
    x = policy.inputs(
        obs, torch.zeros(T, B, 2) if continuous else torch.zeros(T, B, dtype=torch.long),
        torch.zeros(T, B), torch.zeros(T, B), progress,
    )  # fmt: skip
    h = torch.zeros(1, B, policy.state_size)
    steps = []
    for t in range(T):
        o, _, h = policy(x[t : t + 1], h)
        steps.append(o)
    assert_close(torch.cat(steps), policy(x, torch.zeros(1, B, policy.state_size))[0])
    assert float(before_a.abs().max()) == 0.0
    with_memory = cls(3, 2, 8, cell=cell)
    with_memory.load_state_dict(policy.state_dict())  # the same parameters, other behaviour
    assert not torch.allclose(with_memory(x, h0 := torch.randn(1, B, with_memory.state_size))[0],
                              with_memory(x, torch.zeros_like(h0))[0])  # fmt: skip


def test_the_oracle_sees_the_same_env_plus_its_task():
    family = make_family("drone_wind", horizon=12)
    oracle = make_family("drone_wind", horizon=12, task_in_obs=True)
    tasks = family.tasks.sample(3, "test", torch.Generator().manual_seed(0))
    keys = task_episode_keys(7, torch.arange(3), 1)
    plain, seen = family.make_env(3), oracle.make_env(3)
    assert isinstance(seen, TaskInObservation)
    assert seen.single_observation_space.shape == (7 + 5,)
    assert oracle.observation_space.shape == (12,)  # sized without building an env
    obs_p, _ = plain.reset(tasks=tasks, keys=keys)
    obs_o, _ = seen.reset(tasks=tasks, keys=keys)
    for _ in range(5):
        actions = 0.3 * torch.tanh(obs_p[:, :2])
        assert_close(obs_o[:, :7], obs_p)
        assert_close(obs_o[:, 7], tasks["wind"][:, 0])
        assert_close(obs_o[:, 11], tasks["drag"][:, 0])
        obs_p, r_p, *_ = plain.step(actions)
        obs_o, r_o, *_ = seen.step(actions)
        assert_close(r_o, r_p)


def test_an_oracle_needs_a_family_that_can_show_its_task():
    with pytest.raises(ConfigError, match="must name task features"):
        make_family("maze", task_in_obs=True)
    config = {
        "algorithm": "rl2",
        "env": {"name": "tabular_mdp"},
        "evaluate": {"references": ["oracle"]},
    }
    with pytest.raises(ConfigError, match="'oracle' is not available: env 'tabular_mdp'"):
        build(build_run_config(config))
    with pytest.raises(ConfigError, match="'expert' is not available: RL2 names no such"):
        build(build_run_config({**config, "evaluate": {"references": ["expert"]}}))


def test_refused_reference_is_one_line_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "rl2-maze", "--out", str(out), "--set", "evaluate.references=[oracle]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "'oracle' is not available" in err and "cannot hand its task" in err
    assert not out.exists()


def test_references_see_the_learners_tasks_and_noise(tmp_path):
    config = build_run_config(MAML_TINY)
    run = Run.create(tmp_path / "run", config)
    with Trainer(run, config) as trainer:
        trainer.train(progress=False)
    results = evaluate_run(run, ["test"], progress=False)["test"]
    assert set(results) == {"maml", "domain_randomised", "pretrained", "oracle", "random_init"}
    dr, pre = results["domain_randomised"], results["pretrained"]
    # One trained policy: unadapted, the same tasks and rollout noise give the same returns.
    assert [row[0] for row in dr["per_task_return"]] == [row[0] for row in pre["per_task_return"]]
    assert all(len(set(row)) == 1 for row in dr["per_task_return"])  # held: it never adapts
    assert dr["adapts"] is False and pre["adapts"] is True and "inner_lrs" not in dr
    assert dr["x"] == results["maml"]["x"] and dr["seed"] == results["maml"]["seed"]
    # The budget: the learner's training wall time, at most 20x its iterations.
    learner_s = float(run.load_checkpoint()["elapsed_s"])
    trained = dr["trained"]
    assert trained["iterations"] == 40 or trained["seconds"] >= round(learner_s, 1) - 0.1
    saved = json.loads((run.path / "eval" / "test.oracle.json").read_text())
    assert saved["trained"]["iterations"] >= 1 and saved["num_tasks"] == 6
    # Evaluated again, the trained references are reused, not trained again.
    again = evaluate_run(run, ["test"], progress=False)["test"]
    assert again["domain_randomised"]["per_task_return"] == dr["per_task_return"]


def test_a_time_budget_stops_training_and_checkpoints(tmp_path):
    config = build_run_config(
        {**MAML_TINY, "train": {"num_iterations": 50, "max_seconds": 1e-6, "checkpoint_every": 25}}
    )
    run = Run.create(tmp_path / "run", config)
    with Trainer(run, config) as trainer:
        trainer.train(progress=False)
        assert trainer.iteration == 1 and trainer.out_of_time()
    assert int(run.load_checkpoint()["iteration"]) == 1
    with pytest.raises(ConfigError, match="max_seconds must be >= 0"):
        build_run_config({**MAML_TINY, "train": {"max_seconds": -1}})


def test_paired_verdicts_by_hand():
    a = {"x": [0, 1], "num_tasks": 3, "seed": 1, "split": "test",
         "per_task_return": [[1.0, 5.0], [2.0, 6.0], [3.0, 7.5]]}  # fmt: skip
    b = {**a, "per_task_return": [[1.0, 1.0], [2.5, 2.0], [3.2, 3.0]]}
    mean, ci = paired_difference(a, b, 1)
    diffs = torch.tensor([4.0, 4.0, 4.5])
    assert mean == pytest.approx(float(diffs.mean()))
    assert ci == pytest.approx(1.96 * float(diffs.std()) / 3**0.5)
    assert verdict((mean, ci)) == "better"
    assert verdict(paired_difference(a, b, 0)) == "level"  # -0.23 ± 0.28: not beyond 0
    assert verdict(paired_difference(b, a, 1)) == "worse"
    assert paired_difference(a, {**b, "seed": 2}, 1) is None  # other noise: not paired
    assert paired_difference({**a, "iteration": 5}, {**b, "iteration": 4}, 1) is None  # stale


def test_an_old_run_trains_no_new_reference_and_a_stopped_one_starts_again(tmp_path):
    """A run made before evaluate.references (its config.yaml lacks the key) gets only the
    references learners named then: re-evaluating it trains nothing new. A reference stopped
    before its first checkpoint is started again, not refused."""
    import yaml

    config = build_run_config(MAML_TINY)
    run = Run.create(tmp_path / "run", config)
    with Trainer(run, config) as trainer:
        trainer.train(progress=False)
    written = yaml.safe_load(run.config_path.read_text())
    for key in ("references", "reference_budget"):
        written["evaluate"].pop(key)
    run.config_path.write_text(yaml.safe_dump(written))
    stopped = run.path / "baselines" / "pretrained"
    Run.create(stopped, config)
    (stopped / "metrics.csv").write_text("iteration,loss\n1,0.5\n")  # logged, no checkpoint
    results = evaluate_run(run, ["test"], progress=False)["test"]
    assert set(results) == {"maml", "domain_randomised", "pretrained", "random_init"}
    assert not (run.path / "baselines" / "oracle").exists()
    assert results["pretrained"]["trained"]["iterations"] == 2  # as before: the iterations
