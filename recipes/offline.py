"""The main job: train and evaluate an offline-RL agent on an OGBench task.

    python recipes/offline.py                                  # FiDec, cube-single task2, cpu
    python recipes/offline.py --agent deflow --steps 50000
    python recipes/offline.py --agent fidec --metric l2        # FiDec's recipe with DeFlow's metric
    python recipes/offline.py --t 0.8 --hidden 512 512         # any field of the agent config
    python recipes/offline.py --lr 1e-4 --schedule cosine      # the optimiser and its schedule
    python recipes/offline.py --seeds 4                        # seeds 0..3 in one program
    python recipes/offline.py --devices 2                      # batch split over 2 devices
    python recipes/offline.py --config runs/<run>/config.json  # a saved job, as it was
    python recipes/offline.py --agent fql --env scene-play-singletask-task2-v0 --help

The flags are generated from the typed job (`fidec_zoo.offline.OfflineJob`) with tyro, and
`--help` shows the true defaults of the chosen `--agent`, `--env` and `--preset`.

With no dataset on disk, the OGBench dataset is generated locally with OGBench's own scripted
oracles (cached for later runs). Training shows a progress bar and evaluates periodically; at the
end the refined policy AND the behaviour flow inside it are evaluated on the same episodes, and a
table is printed. Everything lands in the run directory (`config.json`, `metrics.csv`,
`eval.csv`, `summary.json`, `learning_curve.png`, `checkpoints/`); running again with the same
`--run-dir` resumes. See docs/cli.md.
"""

from fidec_zoo.offline import main

if __name__ == "__main__":
    main()
