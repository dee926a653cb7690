#!/usr/bin/env bash
# The fine-tuning study of docs/online.md on cube-single task2: FQL, DeFlow and FiDec, seeds 0
# and 1, each trained offline (the cpu preset's 20k steps: for DeFlow and FiDec the command of
# the Fisher-vs-L2 sweep's cells) and then fine-tuned for 30k transitions; then FiDec on scene
# task2 fine-tuned for 30k transitions from its zoo entry, which ships its agent since
# 2026-12-05 (docs/results.md, "Scene task2 retrained with its agent"). Each finished
# fine-tuning run is recorded in studies/online/ (`python -m fidec_zoo.report record`; commit
# it), and a recorded run is skipped: rerunning this script on any machine continues the study.
# An interrupted run resumes from its checkpoint as long as runs/ survives; a run stopped on a
# machine that is replaced starts again from its offline source.
#
#   nohup bash recipes/online_study.sh >> online-study.log 2>&1 &
#   SEEDS="0" AGENTS="fidec" bash recipes/online_study.sh      # a part of it
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=cube-single-play-singletask-task2-v0
STEPS=30000
for seed in ${SEEDS:-0 1}; do
  for agent in ${AGENTS:-fql deflow fidec}; do
    name=$agent-s$seed
    record=studies/online/$ENV/$name
    if [[ -f $record/record.json ]]; then
      echo "$name: recorded in $record"
      continue
    fi
    source=runs/online-study/src/$name
    if [[ ! -f $source/summary.json ]]; then
      python recipes/offline.py --agent "$agent" --env $ENV --seed "$seed" --run-dir "$source"
    fi
    python recipes/online.py --from "$source" --online.steps $STEPS \
      --run-dir "runs/online-study/$name"
    python -m fidec_zoo.report record "runs/online-study/$name" "$record"
  done
done
SCENE=scene-play-singletask-task2-v0
record=studies/online/$SCENE/fidec-zoo-s0
if [[ -f $record/record.json ]]; then
  echo "fidec-zoo-s0 on $SCENE: recorded in $record"
elif python -c "import sys; from fidec_zoo import zoo
sys.exit('agent' not in zoo.model_info('fidec/$SCENE').contents)"; then
  python recipes/online.py --from "fidec/$SCENE" --online.steps $STEPS \
    --run-dir "runs/online-study/fidec-zoo-$SCENE-s0"
  python -m fidec_zoo.report record "runs/online-study/fidec-zoo-$SCENE-s0" "$record"
else
  echo "fidec/$SCENE ships no agent yet: retrain it (see the top of this script), then rerun."
fi
