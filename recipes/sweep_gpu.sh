#!/usr/bin/env bash
# The Fisher-vs-L2 study's grid (docs/study.md) on one GPU: the arms, tasks, seeds and per-task
# flags of `python recipes/sweep.py`, with each arm x task's 5 seeds vmapped in one run dir
# (4 FiDec seeds run at 3.0x the total steps/s of one on an H100, docs/scaling.md), and
# evaluation and dataset generation spread over the machine's CPU cores. Seed s draws the keys
# and minibatches of the CPU's seed s, but vmapped arithmetic rounds differently and training
# amplifies it, so its runs are new seeds, not the CPU cells (docs/study.md, "On a GPU").
# Resumable like the CPU sweep: rerun it.
#
#   bash recipes/sweep_gpu.sh          # root runs/sweep-fisher-vs-l2-gpu, records in
#                                      # studies/fisher-vs-l2-gpu (commit them)
#   bash recipes/sweep_gpu.sh --arms fidec deflow fidec-paper
#   SWEEP_ROOT=/data/sweep bash recipes/sweep_gpu.sh --print-commands
#
# Arguments go to recipes/sweep.py. JAX must see the GPU (`pip install -U "jax[cuda12]"`); the
# devices it sees are printed first.
set -euo pipefail
cd "$(dirname "$0")/.."
cpus=$(nproc)
eval_workers=$((cpus > 8 ? 8 : cpus))
data_workers=$((cpus > 2 ? cpus - 2 : 1))
python -c 'import jax; print("JAX devices:", jax.devices())'
exec python recipes/sweep.py --root "${SWEEP_ROOT:-runs/sweep-fisher-vs-l2-gpu}" \
  --record "${SWEEP_RECORD:-studies/fisher-vs-l2-gpu}" \
  --seeds-per-run 5 --flags="--eval.workers $eval_workers --data.workers $data_workers" "$@"
