"""Time pytorch-maml-rl's own training loop (its ``train.py`` body) on 2D navigation.

Run by ``maml_vs_pytorch_maml_rl.py`` in a subprocess whose ``PYTHONPATH`` holds a checkout of
https://github.com/tristandeleu/pytorch-maml-rl and gym 0.17 (which it needs). Prints one JSON
line: seconds per meta-iteration (the whole loop body: sampling, adaptation, TRPO step) and peak
resident memory of the main process (the workers hold only envs and a policy copy).

Compatibility with today's torch, nothing else changed: its baseline calls ``torch.lstsq(B, A)``,
removed in torch 2, which is mapped to ``torch.linalg.lstsq(A, B)`` (the same least-squares
solution). Its code uses ``np.float_``, so the checkout needs numpy < 2 on its path.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import gym
import torch
import yaml


def _lstsq(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, None]:
    return torch.linalg.lstsq(a, b).solution, None


def main() -> None:
    torch.lstsq = _lstsq  # before the sampler forks its workers
    import maml_rl.envs  # noqa: F401  (registers 2DNavigation-v0)
    from maml_rl.baseline import LinearFeatureBaseline
    from maml_rl.metalearners import MAMLTRPO
    from maml_rl.samplers import MultiTaskSampler
    from maml_rl.utils.helpers import get_input_size, get_policy_for_env

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="its optimisation device (cpu or cuda)")
    parser.add_argument(
        "--update-threads",
        type=int,
        default=0,
        help="torch threads of the main process after "
        "the workers start (they need OMP_NUM_THREADS=1 or they hang); 0 = unchanged",
    )
    args = parser.parse_args()
    with open(args.config) as f:
        config = yaml.load(f, Loader=yaml.FullLoader)
    torch.manual_seed(args.seed)
    env = gym.make(config["env-name"], **config.get("env-kwargs", {}))
    env.close()
    policy = get_policy_for_env(
        env, hidden_sizes=config["hidden-sizes"], nonlinearity=config["nonlinearity"]
    )
    policy.share_memory()
    baseline = LinearFeatureBaseline(get_input_size(env))
    sampler = MultiTaskSampler(
        config["env-name"],
        env_kwargs=config.get("env-kwargs", {}),
        batch_size=config["fast-batch-size"],
        policy=policy,
        baseline=baseline,
        env=env,
        seed=args.seed,
        num_workers=args.workers,
    )
    if args.update_threads:
        torch.set_num_threads(args.update_threads)
    learner = MAMLTRPO(
        policy, fast_lr=config["fast-lr"], first_order=config["first-order"], device=args.device
    )
    times = []
    for i in range(args.warmup + args.iterations):
        start = time.perf_counter()
        tasks = sampler.sample_tasks(num_tasks=config["meta-batch-size"])
        futures = sampler.sample_async(
            tasks,
            num_steps=config["num-steps"],
            fast_lr=config["fast-lr"],
            gamma=config["gamma"],
            gae_lambda=config["gae-lambda"],
            device=args.device,
        )
        learner.step(
            *futures,
            max_kl=config["max-kl"],
            cg_iters=config["cg-iters"],
            cg_damping=config["cg-damping"],
            ls_max_steps=config["ls-max-steps"],
            ls_backtrack_ratio=config["ls-backtrack-ratio"],
        )
        sampler.sample_wait(futures)
        if args.device != "cpu":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    sampler.close()
    print(
        json.dumps(
            {
                "seconds_per_iteration_median": round(statistics.median(times), 4),
                "seconds_per_iteration": [round(t, 4) for t in times],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "update_threads": torch.get_num_threads(),
                "workers": args.workers,
                "device": args.device,
                **(
                    {"peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
                    if args.device != "cpu"
                    else {}
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
