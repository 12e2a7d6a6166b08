"""Acting cost of the in-context transformer's key-value cache: one trial batch stepped a token
at a time through the cache written in place (``act_step``, what the samplers do) beside
the cache grown by concatenation at every step (``forward``, what the controller and the
exported step do), same network, same inputs, measured in one run. Inputs are random: the
figure is the network and its cache, not an env.

Prints JSON (seconds per trial batch, median of the repeats, and their ratio), after checking
that both give the same outputs.

    python benchmarks/transformer_acting.py [--rows 128] [--steps 160] [--model-size 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from adaptrl.transformer_policy import TransformerCategoricalPolicy


def act_growing(policy, x: torch.Tensor) -> torch.Tensor:
    cache, outs = policy.initial_state(x.shape[1], "cpu"), []
    for t in range(x.shape[0]):
        out, _, cache = policy(x[t : t + 1], cache)
        outs.append(out)
    return torch.cat(outs)


def act_in_place(policy, x: torch.Tensor) -> torch.Tensor:
    cache, outs = policy.acting_state(x.shape[0], x.shape[1], "cpu"), []
    for t in range(x.shape[0]):
        out, _, _ = policy.act_step(x[t : t + 1], cache, t)
        outs.append(out)
    return torch.cat(outs)


def seconds(fn, policy, x, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(policy, x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--steps", type=int, default=160, help="tokens per trial")
    parser.add_argument("--model-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--obs-dim", type=int, default=64, help="observation width")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    policy = TransformerCategoricalPolicy(
        args.obs_dim, 6, args.model_size, args.layers, args.heads
    ).eval()
    x = torch.randn(args.steps, args.rows, policy.encoder.in_features)
    with torch.no_grad():
        same = torch.allclose(act_growing(policy, x), act_in_place(policy, x), atol=1e-5)
        growing = seconds(act_growing, policy, x, args.repeats)
        in_place = seconds(act_in_place, policy, x, args.repeats)
    print(
        json.dumps(
            {
                "rows": args.rows,
                "steps": args.steps,
                "model_size": args.model_size,
                "layers": args.layers,
                "threads": torch.get_num_threads(),
                "same_outputs": same,
                "growing_cache_s": round(growing, 4),
                "in_place_cache_s": round(in_place, 4),
                "in_place_over_growing": round(in_place / growing, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
