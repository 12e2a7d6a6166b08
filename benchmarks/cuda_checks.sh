#!/usr/bin/env bash
# Everything to check on a machine with a CUDA GPU, in one call (a lent GPU is scarce): the
# device tests against the CPU, MAML-TRPO speed on the GPU beside the same machine's CPU, the
# same-maths race against pytorch-maml-rl (ours on the GPU, theirs on its CPU path), RL²
# throughput; PEARL's gradient and env steps per second (and a profile), XLand's stepping beside
# the library's, and short timed trainings of rl2-xland, transformer-xland and the paper's sparse
# point robot on the GPU; then the whole suite (pytest-xdist). Each step has a time limit;
# together they can reach about 20 minutes, so pick steps with ONLY= where a call is limited.
#
#   bash benchmarks/cuda_checks.sh OUT [PMRL_CHECKOUT PMRL_DEPS]
#   ONLY="device_tests suite" bash benchmarks/cuda_checks.sh OUT   # some steps only
#   ARCHIVE=FILE ...: after every step, the logs so far are archived in FILE (a lease can end
#   mid-run; the archive then still holds what finished)
#
# PMRL_*: as in benchmarks/maml_vs_pytorch_maml_rl.py; without them that race is skipped.
set -u
out=${1:?usage: cuda_checks.sh OUT [PMRL_CHECKOUT PMRL_DEPS]}
pmrl=${2:-}
deps=${3:-}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
step() {  # step NAME SECONDS CMD...: run with a time limit, log to $out/NAME.log
    local name=$1 limit=$2
    shift 2
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "$name: rc=$? in $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
    if [ -n "${ARCHIVE:-}" ]; then
        tar czf "$ARCHIVE" -C "$out" --exclude=checkpoints --exclude='*.pt' --exclude='*.npy' .
    fi
}
train() {  # train NAME SECONDS PRESET [ARGS...]: a timed training on the GPU, its metrics kept
    local name=$1 limit=$2 preset=$3
    shift 3
    step "$name" "$limit" $py -m adaptrl train "$preset" --out "$out/runs/$name" --device cuda \
        --quiet --set train.checkpoint_every=100000 "$@"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/summary.txt"
$py -c "import torch; print('torch', torch.__version__, 'cpus', __import__('os').cpu_count())" |
    tee -a "$out/summary.txt"

step device_tests 180 $py -m pytest -q -p no:warnings tests/test_device.py --device cuda
step nav_preset_cuda 60 $py benchmarks/maml_navigation.py --set train.device=cuda
step nav_preset_cpu 60 $py benchmarks/maml_navigation.py
if [ -n "$pmrl" ]; then
    # Theirs on its default CPU path with 8 sampler workers: its --use-cuda path printed
    # nothing in 170 s here (2026-11-28, not investigated). Ours on the GPU, then on the CPU.
    step race_gpu_vs_cpu 170 $py benchmarks/maml_vs_pytorch_maml_rl.py --reference "$pmrl" \
        --reference-deps "$deps" --workers 8 --reference-threads 8 --set train.device=cuda
fi
step nav_same_maths_cpu 60 $py benchmarks/maml_navigation.py --iterations 5 \
    --set algo.hidden_sizes=[64,64] --set algo.activation=tanh --set algo.inner_lr=0.1 \
    --set algo.curvature_episodes=0
step rl2_bandit_cuda 60 $py benchmarks/rl2_time_to_target.py --preset rl2-bandit-k5-n100 \
    --target 77.5 --time-limit 30 --eval-every 100000 --eval-trials 200 --set train.device=cuda
# PEARL (issue 24): the paper preset's update on the GPU, with a profile, beside this CPU.
step pearl_speed_cuda 90 $py benchmarks/pearl_speed.py --device cuda --steps 100 --profile 20
step xland_speed_cuda 120 $py benchmarks/xland_speed.py --device cuda --rows 4096 16384 65536 \
    --repeats 2
train rl2_xland_cuda 80 rl2-xland --max-seconds 45
train pearl_sparse_cuda 100 pearl-point-robot-sparse --max-seconds 60
train transformer_xland_cuda 80 transformer-xland --max-seconds 45
step pearl_speed_cpu 90 $py benchmarks/pearl_speed.py --steps 20
step xland_speed_cpu 90 $py benchmarks/xland_speed.py --rows 4096 16384 --repeats 2
step suite 120 $py -m pytest -q -p no:warnings -n 14 --device cuda

for f in "$out"/*.log; do  # the JSON's headline numbers, and any failure's last lines
    echo "== $(basename "$f")"
    grep -E '"(seconds_per_iteration_median|floor_seconds_median|iteration_over_floor|speedup|peak_rss_mb|peak_cuda_mb|update_seconds_median|env_steps_per_s_training|iterations|device|gradient_steps_per_s|env_steps_per_s|seconds_per_iteration_estimate|library|adapter|sampler)"|passed|failed|error|Error' "$f" | head -24
done
for m in "$out"/runs/*/metrics.csv; do  # the timed trainings: iterations, env steps, seconds
    [ -f "$m" ] && echo "== $m" && $py - "$m" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
if rows:
    last = rows[-1]
    its = [float(r["perf/iteration_s"]) for r in rows if r.get("perf/iteration_s")]
    keep = {k: last[k] for k in last if k.startswith(("time/", "adapt/")) or "steps_per_s" in k}
    print(len(rows), "iterations; median s/iteration", round(statistics.median(its), 3), keep)
PY
done
cat "$out/summary.txt"
