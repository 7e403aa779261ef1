#!/usr/bin/env bash
# Train (or continue) the expert agents of the study's eight envs, one after another.
# Resumable: each run continues from its newest checkpoint, else from the shipped
# jacobian_wrappers/experts/<Env>.zip, up to the steps below in all; rerun the same
# command after a stop. Each finished run re-evaluates its agent (stochastic policy,
# 10 episodes) into jacobian_wrappers/experts/returns.json.
#
#   bash examples/train_all_experts.sh [ENV ...]        # default: all eight, in this order
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
declare -A STEPS=(
  [ReacherHard]=1500000 [CartpoleBalance]=1000000 [BallInCup]=3000000 [FingerSpin]=5000000
  [SwimmerSwimmer6]=5000000 [FingerTurnEasy]=5000000 [CheetahRun]=10000000 [WalkerRun]=10000000
)
ENVS=("$@")
[ ${#ENVS[@]} -gt 0 ] || ENVS=(ReacherHard CartpoleBalance BallInCup FingerSpin SwimmerSwimmer6 FingerTurnEasy CheetahRun WalkerRun)
mkdir -p runs/experts
for env in "${ENVS[@]}"; do
  OMP_NUM_THREADS=1 $PY examples/train_expert.py --env "$env" --timesteps "${STEPS[$env]}" \
    --resume --eval-freq 250000 --checkpoint-freq 100000 2>&1 | tee -a "runs/experts/$env.log"
done
