"""Offline-to-online fine-tuning: train offline, then keep learning in the environment.

    python recipes/online.py --online.steps 20000                      # fidec, cube-single task2
    python recipes/online.py --agent fql --steps 20000 --online.steps 20000 --online.envs 4 \
        --online.workers 2                                             # offline, then online
    python recipes/online.py --from runs/<run> --online.steps 20000    # a finished offline run
    python recipes/online.py --from fidec/cube-single-play-singletask-task2-v0 \
        --online.steps 20000                                           # a zoo entry with critic
    python recipes/online.py --online.online-fraction 0.5              # balanced sampling

Every flag of recipes/offline.py applies to the offline phase of a run from scratch. The online
phase is written to `<run dir>/online/` (metrics.csv, eval.csv, episodes.csv, summary.json,
learning_curve.png, checkpoints/); rerunning the same command resumes it. See docs/online.md.
"""

from fidec_zoo.online import main

if __name__ == "__main__":
    main()
