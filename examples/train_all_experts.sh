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
  [ReacherHard]=1500000 [CartpoleBalance]=1000000 [BallInCup]=200000 [FingerSpin]=5000000
  [SwimmerSwimmer6]=5000000 [FingerTurnEasy]=500000 [CheetahRun]=125000 [WalkerRun]=100000
)
# SAC where PPO needs more steps than a CPU session gives (docs/data.md#expert-agents);
# a shipped agent resumes only with its own algorithm.
declare -A ALGO=([BallInCup]=sac [FingerTurnEasy]=sac [CheetahRun]=sac [WalkerRun]=sac)
ENVS=("$@")
[ ${#ENVS[@]} -gt 0 ] || ENVS=(ReacherHard CartpoleBalance BallInCup FingerSpin SwimmerSwimmer6 FingerTurnEasy CheetahRun WalkerRun)
mkdir -p runs/experts
for env in "${ENVS[@]}"; do
  algo=${ALGO[$env]:-ppo}
  if [ "$algo" = sac ]; then freq=(--eval-freq 25000 --checkpoint-freq 25000)
  else freq=(--eval-freq 250000 --checkpoint-freq 100000); fi
  OMP_NUM_THREADS=1 $PY examples/train_expert.py --env "$env" --algo "$algo" \
    --timesteps "${STEPS[$env]}" --resume "${freq[@]}" 2>&1 | tee -a "runs/experts/$env.log"
done
