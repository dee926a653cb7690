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

import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import tyro

from fidec_zoo import checkpoint, offline, zoo
from fidec_zoo.envs import default_eval_workers
from fidec_zoo.zoo._cli import markdown_table, update_doc

REPO = Path(__file__).resolve().parent.parent

METRICS = ("l2", "fisher")


@dataclasses.dataclass(frozen=True)
class Args:
    """Train, evaluate and register zoo entries. Flags after `--` go to recipes/offline.py."""

    entries: Annotated[tuple[str, ...], tyro.conf.Positional,
                       tyro.conf.arg(metavar="[ENTRY ...]")] = ()
    """Zoo names, e.g. fidec/cube-single-play-singletask-task2-v0."""
    preset: str | None = None
    """offline.py preset (None: cpu)."""
    steps: int | None = None
    """Training steps (None: the preset's)."""
    seed: int = 0
    """Training seed."""
    episodes: int = zoo.DEFAULT_EVAL_EPISODES
    """Evaluation episodes."""
    eval_seed: int = zoo.DEFAULT_EVAL_SEED
    """Evaluation seed."""
    policy_only: bool = False
    """Ship the policy only, without the critic that load_agent and online fine-tuning need."""
    notes: str = ""
    """Free text stored with the entry."""
    root: Path = REPO / "checkpoints"
    """Zoo root to register into."""
    docs: Path | None = REPO / "docs" / "zoo.md"
    """Markdown file whose entry table is regenerated (on registering into checkpoints/)."""
    register_only: Annotated[Path | None, tyro.conf.arg(metavar="RUN_DIR")] = None
    """Register an already finished offline.py run directory."""
    step: int | None = None
    """With --register-only: this checkpoint, not the last (kept by --keep-checkpoints 0)."""
    run_seed: int | None = None
    """With --register-only: which seed of an offline.py --seeds N run to register."""
    background: bool = False
    """Detach and log to runs/zoo/logs/ (prints the log path)."""


def parse_entry(name: str) -> tuple[str, str | None, str]:
    """`fidec-l2/cube-...-v0` -> ("fidec", "l2", "cube-...-v0")."""
    if name.count("/") != 1:
        raise SystemExit(f"error: {name!r} is not a zoo name '<agent>[-<metric>]/<env>'.")
    head, env = name.split("/")
    agent, _, metric = head.rpartition("-")
    if agent and metric in METRICS:
        return agent, metric, env
    return head, None, env


def offline_argv(name: str, args: Args, extra: list[str]) -> list[str]:
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


def build(name: str, args: Args, extra: list[str]) -> None:
    argv = offline_argv(name, args, extra)
    print(f"\n=== {name}: python recipes/offline.py {' '.join(argv)}", flush=True)
    if finished(argv):
        print(f"{run_dir(name, args.seed)} is finished; not retraining.", flush=True)
    else:
        offline.main(argv)
    register(run_dir(name, args.seed), args, name)


def register(directory: Path, args: Args, name: str | None = None) -> None:
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


def refuse(message: str) -> None:
    """Stops as a refused command line does: the reason on stderr, exit status 2."""
    print(f"recipes/build_zoo.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    own, extra = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    args = tyro.cli(Args, args=own, prog="recipes/build_zoo.py")
    if not args.entries and args.register_only is None:
        refuse("give at least one ENTRY, or --register-only RUN_DIR.")
    for flag, value in (("--step", args.step), ("--run-seed", args.run_seed)):
        if value is not None and (args.register_only is None or args.entries):
            refuse(f"{flag} goes with --register-only RUN_DIR alone.")
    for name in args.entries:
        parse_entry(name)
    if args.background:
        background(argv)
        return
    args = dataclasses.replace(args, root=args.root.resolve())
    if args.register_only is not None:
        register(args.register_only, args)
    for name in args.entries:
        build(name, args, extra)
    if args.root == (REPO / "checkpoints").resolve():
        print("\nReview checkpoints/ and docs/zoo.md, then commit them.")


if __name__ == "__main__":
    main()
