"""A grid of offline runs (arms x tasks x seeds), one run dir per cell, resumable.

    python recipes/sweep.py --record studies/fisher-vs-l2  # the study of docs/study.md
    python recipes/sweep.py --print-commands       # each cell's recipes/offline.py command
    python recipes/sweep.py --arms fidec deflow fidec-paper --seeds 0 1 2 3 4 5 6 7 8 9
    python recipes/sweep.py --root runs/my-sweep --arms fql deflow --tasks \
        cube-single-play-singletask-task1-v0 "puzzle-3x3-play-singletask-task4-v0 --steps 40000"
    python recipes/sweep.py --seeds-per-run 5      # 5 seeds vmapped per run dir (a GPU)
    nohup python recipes/sweep.py > sweep.out 2>&1 &    # in the background; rerun to resume

Rerunning the same command resumes: finished cells are skipped, an interrupted cell resumes
from its checkpoint, failed cells are tried again. `ROOT/manifest.json` says which cells are
done, running, pending or failed. With `--record DIR`, each finished cell's results are copied
to DIR (commit it): a cell recorded there is done, on this machine or a new one. Compare the
arms with `python -m fidec_zoo.report compare ROOT` (or `DIR`). See `fidec_zoo.sweep` and
docs/study.md.
"""

from fidec_zoo.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
