"""Build zoo entries: train (resumable), evaluate, register.

    python recipes/build_zoo.py fidec/cube-single-play-singletask-task2-v0 --preset paper
    python recipes/build_zoo.py fidec/cube-single-play-singletask-task2-v0 \\
        fql/cube-single-play-singletask-task2-v0 --preset paper --background
    python recipes/build_zoo.py ENTRY -- --hidden 256 256 --lr 1e-4   # any offline.py flag
    python recipes/build_zoo.py --register-only runs/zoo/fidec__cube-...-v0-s0
    python recipes/build_zoo.py --register-only RUN_DIR --step 80000   # a kept checkpoint

An ENTRY is a zoo name `<agent>[-<metric>]/<env>` (`fidec/...`, `fidec-l2/...` for FiDec's
recipe with DeFlow's metric). For each entry, the main job (`recipes/offline.py`) trains in
`runs/zoo/<slug>-s<seed>`; running again resumes there, and a finished run is not retrained.
The final policy is then evaluated (`--episodes 200`, `--eval-seed 0`) and registered in
`checkpoints/` with its recipe, dataset provenance, learning curve and versions; the table of
`docs/zoo.md` is regenerated. `--background` detaches the whole job and prints its log file.
A run trained with `-- --keep-checkpoints 0` keeps every evaluated checkpoint; `--step` then
registers one of them (its protocol records that it was chosen, and from which run length).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from fidec_zoo import checkpoint, offline, zoo
from fidec_zoo.envs import default_eval_workers
from fidec_zoo.zoo._cli import markdown_table, update_doc

REPO = Path(__file__).resolve().parent.parent

METRICS = ("l2", "fisher")


def parse_entry(name: str) -> tuple[str, str | None, str]:
    """`fidec-l2/cube-...-v0` -> ("fidec", "l2", "cube-...-v0")."""
    if name.count("/") != 1:
        raise SystemExit(f"error: {name!r} is not a zoo name '<agent>[-<metric>]/<env>'.")
    head, env = name.split("/")
    agent, _, metric = head.rpartition("-")
    if agent and metric in METRICS:
        return agent, metric, env
    return head, None, env


def offline_argv(name: str, args: argparse.Namespace, extra: list[str]) -> list[str]:
    agent, metric, env = parse_entry(name)
    argv = [
        "--agent",
        agent,
        "--env",
        env,
        "--seed",
        str(args.seed),
        "--run-dir",
        str(run_dir(name, args.seed)),
    ]
    if metric:
        argv += ["--metric", metric]
    if args.preset:
        argv += ["--preset", args.preset]
    if args.steps is not None:
        argv += ["--steps", str(args.steps)]
    return argv + extra


def run_dir(name: str, seed: int) -> Path:
    return REPO / "runs" / "zoo" / f"{name.replace('/', '__')}-s{seed}"


def finished(argv: list[str]) -> bool:
    """Whether the run of `argv` already reached its last step (offline.py would not retrain)."""
    try:
        job = offline.parse(argv)
    except (ValueError, TypeError):
        return False  # offline.main reports the problem
    directory = Path(job.run_dir or job.default_run_dir())
    return (directory / "summary.json").is_file() and (
        checkpoint.latest_step(directory / "checkpoints") == job.train.steps
    )


def build(name: str, args: argparse.Namespace, extra: list[str]) -> None:
    argv = offline_argv(name, args, extra)
    print(f"\n=== {name}: python recipes/offline.py {' '.join(argv)}", flush=True)
    if finished(argv):
        print(f"{run_dir(name, args.seed)} is finished; not retraining.", flush=True)
    else:
        offline.main(argv)
    register(run_dir(name, args.seed), args, name)


def register(directory: Path, args: argparse.Namespace, name: str | None = None) -> None:
    t0 = time.perf_counter()
    entry = zoo.register_run(
        directory,
        name,
        root=args.root,
        episodes=args.episodes,
        eval_seed=args.eval_seed,
        include_agent=not args.policy_only,
        notes=args.notes,
        step=args.step,
        seed=args.run_seed,
        workers=default_eval_workers(),
    )
    ev = entry.evaluation or {}
    print(
        f"registered {entry.name} in {args.root}: success {ev.get('success'):.3f} "
        f"± {ev.get('success_ci95', 0):.3f} ({ev.get('episodes')} episodes, seed "
        f"{ev.get('seed')}), {entry.size_bytes / 1e6:.1f} MB "
        f"[{time.perf_counter() - t0:.0f} s]",
        flush=True,
    )
    if args.docs and args.docs.exists() and args.root == (REPO / "checkpoints").resolve():
        update_doc(args.docs, markdown_table(root=args.root))
        print(f"updated the table of {args.docs}", flush=True)


def background(argv: list[str]) -> None:
    """Re-runs this script detached from the terminal, logging to runs/zoo/logs/."""
    logs = REPO / "runs" / "zoo" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"build_zoo-{time.strftime('%Y%m%d-%H%M%S')}.log"
    argv = [a for a in argv if a != "--background"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-u", str(Path(__file__).resolve()), *argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    print(f"building in the background (pid {proc.pid}); log: {log}\n  tail -f {log}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train, evaluate and register zoo entries. Flags after `--` go to "
        "recipes/offline.py."
    )
    parser.add_argument(
        "entries",
        nargs="*",
        metavar="ENTRY",
        help="zoo names, e.g. fidec/cube-single-play-singletask-task2-v0",
    )
    parser.add_argument("--preset", default=None, help="offline.py preset (default: cpu)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (preset)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--episodes", type=int, default=zoo.DEFAULT_EVAL_EPISODES,
                        help="evaluation episodes (default: %(default)s)")
    parser.add_argument("--eval-seed", type=int, default=zoo.DEFAULT_EVAL_SEED)
    parser.add_argument(
        "--policy-only",
        action="store_true",
        help="ship the policy only, not the whole agent (critic included) that load_agent and "
        "online fine-tuning need",
    )
    parser.add_argument("--notes", default="", help="free text stored with the entry")
    parser.add_argument(
        "--root", type=Path, default=REPO / "checkpoints", help="zoo root to register into"
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=REPO / "docs" / "zoo.md",
        help="markdown file whose entry table is regenerated (when registering "
        "into the repository's checkpoints/)",
    )
    parser.add_argument(
        "--register-only",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="register an already finished offline.py run directory",
    )
    parser.add_argument(
        "--step",
        type=int,
        default=None,
        help="with --register-only: register this checkpoint instead of the last (the run "
        "must have kept it: offline.py --keep-checkpoints 0)",
    )
    parser.add_argument(
        "--run-seed",
        type=int,
        default=None,
        help="with --register-only: which seed of an offline.py --seeds N run to register",
    )
    parser.add_argument(
        "--background",
        action="store_true",
        help="detach and log to runs/zoo/logs/ (prints the log path)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    own, extra = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    args = build_parser().parse_args(own)
    if not args.entries and args.register_only is None:
        build_parser().error("give at least one ENTRY, or --register-only RUN_DIR")
    for flag, value in (("--step", args.step), ("--run-seed", args.run_seed)):
        if value is not None and (args.register_only is None or args.entries):
            build_parser().error(f"{flag} goes with --register-only RUN_DIR alone")
    for name in args.entries:
        parse_entry(name)
    if args.background:
        background(argv)
        return
    args.root = args.root.resolve()
    if args.register_only is not None:
        register(args.register_only, args)
    for name in args.entries:
        build(name, args, extra)
    if args.root == (REPO / "checkpoints").resolve():
        print("\nReview checkpoints/ and docs/zoo.md, then commit them.")


if __name__ == "__main__":
    main()
