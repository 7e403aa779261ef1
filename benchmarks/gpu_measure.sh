#!/usr/bin/env bash
# The GPU measurements of docs/performance.md ("On a GPU"), as one prepared run.
#
#   bash benchmarks/gpu_measure.sh [ENV ...]          # default: the study's 8 envs
#   N_ENVS=4096 BIG_N=16384 SECONDS_PER=5 OUT=gpu_out bash benchmarks/gpu_measure.sh CheetahRun
#
# Where the GPU machine has no network, put the wheels of MuJoCo, MJX, Playground,
# Gymnasium and SB3 in .whl/ (they are installed into .site/ first); with no .whl/
# the packages of the current Python are used. Every result is printed (and
# written under $OUT) as soon as it exists, so a run cut short keeps what it
# measured. Test it on a CPU at small sizes first:
#   N_ENVS=8 BIG_N=16 BIG_ENV=CartpoleBalance SECONDS_PER=1 bash benchmarks/gpu_measure.sh CartpoleBalance
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
N_ENVS=${N_ENVS:-4096}
BIG_N=${BIG_N:-16384}
SECONDS_PER=${SECONDS_PER:-5}
BIG_ENV=${BIG_ENV:-CheetahRun}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$PWD/.site" .whl/*.whl \
    && export PYTHONPATH="$PWD/.site:$PWD" || exit 1
fi
export PYTHONUNBUFFERED=1
ENVS=("$@")
[ ${#ENVS[@]} -gt 0 ] || ENVS=(CheetahRun SwimmerSwimmer6 WalkerRun BallInCup CartpoleBalance ReacherHard FingerSpin FingerTurnEasy)
(nvidia-smi -L 2>/dev/null || echo "no nvidia-smi") | tee "$OUT/device.txt"
$PY -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$OUT/device.txt"
for env in "${ENVS[@]}"; do
  # Cold compile and warm start of warm_up(), fresh processes, an empty cache.
  $PY benchmarks/startup_time.py --n-envs "$N_ENVS" --precision float64 --envs "$env" \
    | tee "$OUT/startup_${env}.md"
  # Full step(), the jitted step alone and collect, side by side.
  $PY benchmarks/jacobian_throughput.py --precision float64 --n-envs "$N_ENVS" \
    --skip unrolled bound fd --seconds "$SECONDS_PER" --envs "$env" | tee "$OUT/throughput_${env}.md"
done
$PY benchmarks/jacobian_throughput.py --precision float64 --n-envs "$BIG_N" \
  --skip unrolled bound fd --seconds "$SECONDS_PER" --envs "$BIG_ENV" | tee "$OUT/throughput_${BIG_ENV}_${BIG_N}.md"
