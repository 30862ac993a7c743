#!/usr/bin/env bash
# The 16-core records of docs/qmix_multienvs.md, on a host prepared as in
# ../shared/gpu_host/README.md (from the project root): MMM2 seed 1 with the grid's stop rule at
# --num-envs auto, the steps/s scaling table (qmix.py, then qmix_multienvs.py at each --num-envs),
# and MMM2 seed 1 again with --device cuda; each run's charts/* scalars in its charts.json
# (benchmarks/charts.py). Each part is bounded in seconds (a run stopped by the bound saves its
# state and says so in its log).
#
#     OUT=/tmp/host16 MMM2_SECONDS=320 SCALING_SECONDS=150 CUDA_SECONDS=150 \
#       bash benchmarks/host16.sh
set -u
OUT=${OUT:-/tmp/host16}
mkdir -p "$OUT"
nproc > "$OUT/cores.txt"
timeout -s INT "${MMM2_SECONDS:-330}" python3 -m cleanmarl.sweep --scripts qmix_multienvs \
  --envs MMM2 --seeds 1 --stop-at 0.9 --stop-window 10 --workers 1 --out "$OUT/sweep" \
  -- --total-timesteps 2000000 2>&1 | tail -5
timeout -s INT "${SCALING_SECONDS:-150}" python3 benchmarks/scaling.py --envs MMM2 3m \
  --num-envs 15 8 4 2 1 --smaclite-steps "${SMACLITE_STEPS:-2000}" --record "$OUT/scaling_16.json"
mkdir -p "$OUT/cuda" && (cd "$OUT/cuda" && timeout -s INT "${CUDA_SECONDS:-150}" python3 \
  "$OLDPWD/cleanmarl/qmix_multienvs.py" --env-name MMM2 --seed 1 --device cuda \
  --total-timesteps 2000000 --no-progress-bar > log.txt 2>&1)
for run in "$OUT"/sweep/*/runs/*/ "$OUT"/cuda/runs/*/; do
  python3 benchmarks/charts.py "$run" "$run/charts.json"
done
cat "$OUT"/sweep/*/ended.json "$OUT"/sweep/*/failed.json 2>/dev/null
# the run's records and logs, not its training state
tar -czf "$OUT/runs.tar.gz" --exclude='training_state.cleanmarl' -C "$OUT" sweep cuda
rm -rf "$OUT/sweep" "$OUT/cuda"
