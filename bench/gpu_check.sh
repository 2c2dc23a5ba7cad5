#!/usr/bin/env bash
# The GPU check of #14, as one prepared script (<= 8 minutes on one GPU):
#   1. the CUDA tests (pytest -m gpu: placement, memory share, precision rule, device-independent
#      scores);
#   2. the training step vs the seed loop on the GPU (img/s and their ratio; goal >= 5x);
#   3. a real `aitexvae tune`, 4 trials at --gpus-per-trial 0.25 on one GPU, with utilisation
#      and memory sampled from nvidia-smi every 0.5 s (goal: >= 70 % average utilisation);
#   4. scoring throughput.
# Fails fast where there is no CUDA. Figures and logs go to $OUT (default /tmp/gpu-check).
#
#   bash bench/gpu_check.sh            # python3 with torch (CUDA), ray, mlflow, optuna
#   PYTHON=.venv/bin/python bash bench/gpu_check.sh
#
# Needs this project importable (PYTHONPATH is set to the checkout) and its dependencies; where
# a machine lacks some (ray, mlflow, optuna), install them first, e.g. from carried wheels
# (see the device notes), and the script says which are missing instead of failing midway.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
export AITEXVAE_HOME="$OUT/home"

nvidia-smi -L || { echo "gpu_check: no NVIDIA GPU here (nvidia-smi failed)"; exit 2; }
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || { echo "gpu_check: $PY's torch sees no CUDA device"; exit 2; }
missing=$("$PY" - <<'EOF'
import importlib.util
print(" ".join(n for n in ("ray", "mlflow", "optuna", "safetensors", "yaml", "PIL")
               if importlib.util.find_spec(n) is None))
EOF
)
[ -z "$missing" ] || { echo "gpu_check: $PY lacks: $missing (install them, then rerun)"; exit 3; }
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"torch {torch.__version__}, {p.name}, {p.total_memory / 2**30:.0f} GiB, native bf16 {torch.cuda.is_bf16_supported(including_emulation=False)}")'

status=0
step() {  # step NAME SECONDS COMMAND...: time-limited, logged, failure remembered
  local name=$1 limit=$2; shift 2
  echo; echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: rc $rc in $((SECONDS - start)) s"
  [ "$rc" = 0 ] || status=1
}

step cuda-tests 120 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
step train-step 100 "$PY" bench/train_step.py --rounds 5 --steps 8 --quality-steps 10

# 4 fractional trials on one GPU; nvidia-smi samples the whole search.
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits \
  -lms 500 > "$OUT/smi.csv" &
sampler=$!
step tune 240 "$PY" -m search.cli tune --name gpu-check --num-samples 4 --max-epochs 4 \
  --image-size 256 --train-patches 1024 --scheduler fifo --gpus-per-trial 0.25 \
  --cpus-per-trial 2 --no-tracking --storage-path "$OUT/ray_results"
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
"$PY" - "$OUT/smi.csv" <<'EOF'
import sys
rows = [line.split(", ") for line in open(sys.argv[1]) if line.count(",") == 2]
util = [float(r[1]) for r in rows]
memory = [float(r[2]) for r in rows]
busy = [u for u in util if u > 0]  # from the first kernel on: Ray's start-up is not a trial
if busy:
    first = util.index(busy[0])
    window = util[first:]
    print(f"nvidia-smi during the search: {len(util)} samples, average utilisation "
          f"{sum(window) / len(window):.1f} % from the first busy sample, peak memory "
          f"{max(memory):.0f} MiB")
    print(f"ratio gpu-utilisation-4-trials: {sum(window) / len(window) / 100:.3f}")
else:
    print("nvidia-smi saw no utilisation during the search")
EOF

step score-throughput 90 "$PY" bench/score_throughput.py --patches 2048 --rounds 5
echo; echo "gpu_check: $([ $status = 0 ] && echo all steps passed || echo a step failed, see $OUT)"
exit $status
