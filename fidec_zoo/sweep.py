"""A grid of offline runs, run one cell at a time (or `jobs` at a time) and resumed after any
interruption (`recipes/sweep.py`).

The grid is arms x tasks x seeds (`SweepConfig`). An arm is a recipe, optionally with a swapped
metric or hyperparameter set (`fidec`, `deflow`, `fidec-l2`, `fidec-paper`); a task is an
environment with the `recipes/offline.py` flags it is trained with. Each cell is an ordinary run
directory, `ROOT/<arm>/<env>/s<seed>`, trained by `recipes/offline.py`'s code in a child
process, so each cell can be rerun, resumed, compared
(`python -m fidec_zoo.report compare ROOT`) or inspected on its own.

Cells run task by task, and within a task arm by arm, all seeds of an arm x task in a row: the
first comparisons are complete as early as possible. `ROOT/manifest.json` (rewritten atomically
at every change) says which cells are done, running, pending or failed, with each cell's
command, attempts and log (`ROOT/logs/`). Rerunning the same command resumes the sweep: cells
whose run dir holds the finished job are skipped, an interrupted cell resumes from its latest
checkpoint, and cells that failed are tried again. Ctrl-C or SIGTERM stops the running cell at
a checkpoint first; if the sweep is killed outright, the cell's process is sent SIGTERM by the
kernel (Linux) and stops the same way. One sweep at a time holds a root (`ROOT/.lock`).

`jobs` N > 1 runs up to N cells at once, each in its own process, taken in the same order: on a
CPU, two cells beside each other finish sooner than one after the other when one cell alone
cannot keep every core busy (docs/study.md); each cell's numbers are those it has alone.

`record` keeps what a study needs of each finished cell (`report.record_run`: its JSON and CSV
files, no checkpoints) in a directory of the repository, laid out like the root: a
grid too long for one session outlives the machine its run dirs were on, and a cell with a
record is done. `python -m fidec_zoo.report compare RECORD` reads the records as run dirs.

`seeds_per_run` N > 1 trains N consecutive seeds vmapped in each run dir (`--seed s --seeds N`):
the same runs (seed s of a `--seeds` run draws the keys and minibatches of `--seed s` alone; the
vmapped arithmetic rounds differently, and training amplifies that, so the two agree at first and
then drift apart like two seeds), at several times the throughput on a GPU (docs/scaling.md);
`python -m fidec_zoo.report compare` counts each seed.
"""

import contextlib
import ctypes
import dataclasses
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any, Literal

import tyro

from . import offline, recipes, report
from ._durable import FileLock, LockedError, atomic_write

__all__ = ["Arm", "Cell", "CellRunner", "Manifest", "SweepConfig", "cells", "main", "recorded",
           "run_cell", "run_sweep", "write_record"]

SCENE_TASK2 = "scene-play-singletask-task2-v0"
CUBE_SINGLE_TASK2 = "cube-single-play-singletask-task2-v0"
MANIFEST = "manifest.json"
State = Literal["pending", "running", "done", "failed"]


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The grid and where it goes. The defaults are the Fisher-vs-L2 study (docs/study.md).

    With `record`, each finished cell's results (its JSON and CSV files and a record.json, no
    checkpoints) are copied to a directory of the repository, to be committed, so that the study
    outlives the machine its run dirs were on. A cell with a record counts as done, and the
    records are compared by `python -m fidec_zoo.report compare RECORD`.
    """

    root: Path = Path("runs/sweep-fisher-vs-l2")
    """Where the cells' run dirs (ROOT/ARM/ENV/sSEED), logs/ and manifest.json go."""
    arms: tuple[str, ...] = ("fidec", "deflow")
    """AGENT[-METRIC][-HPARAMS] each: fidec, deflow, fidec-l2, fidec-paper, ..."""
    tasks: tuple[str, ...] = (
        CUBE_SINGLE_TASK2,
        f"{SCENE_TASK2} --hidden 256 256 256 256 --steps 50000 --eval.every 10000",
    )
    """'ENV [FLAGS]' each: an env and the recipes/offline.py flags it trains with."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Training seeds of every arm x task."""
    flags: str = ""
    """recipes/offline.py flags for every cell, as one string: --flags="--eval.workers 8"."""
    seeds_per_run: int = 1
    """Consecutive seeds trained vmapped in one run dir (--seeds N); > 1 pays off on a GPU."""
    jobs: int = 1
    """Cells run at once, each in its own process, in the grid's order."""
    record: Path | None = None
    """Keep each finished cell's results at RECORD/ARM/ENV/sSEED (see above)."""
    print_commands: bool = False
    """Print each cell's recipes/offline.py command, in the order they run, and exit."""


@dataclasses.dataclass(frozen=True)
class Arm:
    """A recipe with an optional swapped metric and hyperparameter set (`offline.py`'s
    `--agent`, `--metric`, `--hparams`); `name` is its spec, as `report compare --arm-by
    agent` names its runs when the hyperparameter set is not the preset's default."""

    name: str
    agent: str
    metric: str | None = None
    hparams: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "Arm":
        """`fidec-l2-paper` -> Arm(agent="fidec", metric="l2", hparams="paper")."""
        agent, *rest = spec.split("-")
        if agent not in recipes.available():
            raise ValueError(f"arm {spec!r}: unknown recipe {agent!r}; available: "
                             f"{recipes.available()}.")
        metric = [r for r in rest if r in ("l2", "fisher")]
        hparams = [r for r in rest if r in recipes.HPARAMS]
        if len(metric) > 1 or len(hparams) > 1 or len(metric) + len(hparams) < len(rest):
            raise ValueError(f"arm {spec!r}: write AGENT[-METRIC][-HPARAMS], METRIC one of "
                             f"l2/fisher and HPARAMS one of {list(recipes.HPARAMS)}.")
        return cls(spec, agent, metric[0] if metric else None, hparams[0] if hparams else None)

    def flags(self) -> list[str]:
        out = ["--agent", self.agent]
        out += ["--metric", self.metric] if self.metric else []
        return out + (["--hparams", self.hparams] if self.hparams else [])


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run dir of the grid: an arm on a task, seeds `seed..seed+seeds-1`, with the
    `recipes/offline.py` flags that train it (run dir included) and the job they parse to."""

    arm: str
    task: str
    seed: int
    seeds: int
    argv: tuple[str, ...]
    run_dir: Path
    job: offline.OfflineJob
    record_dir: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.arm}/{self.task}/{_seeds_dir(self.seed, self.seeds)}"

    @property
    def command(self) -> str:
        return shlex.join(["python", "recipes/offline.py", *self.argv])


def _seeds_dir(seed: int, count: int) -> str:
    """`s3` for seed 3, `s0-4` for seeds 0..4 in one run dir."""
    return f"s{seed}" + (f"-{seed + count - 1}" if count > 1 else "")


def _seed_blocks(seeds: Sequence[int], per_run: int) -> list[tuple[int, int]]:
    """`(first seed, count)` per run dir: consecutive runs of `per_run` seeds."""
    if per_run < 1:
        raise ValueError(f"--seeds-per-run must be >= 1, got {per_run}.")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seeds must be distinct and not empty, got {list(seeds)}.")
    blocks = []
    for i in range(0, len(seeds), per_run):
        block = list(seeds[i:i + per_run])
        if block != list(range(block[0], block[0] + len(block))):
            raise ValueError(f"--seeds-per-run {per_run} trains consecutive seeds in one run "
                             f"dir (--seed s --seeds N), but {block} are not consecutive.")
        blocks.append((block[0], len(block)))
    return blocks


def cells(config: SweepConfig) -> list[Cell]:
    """The grid's cells in the order they run: task by task, arm by arm, seed by seed. Each
    cell's flags are parsed by `recipes/offline.py`'s parser here, so a bad flag stops the
    sweep before it trains anything. Raises `ValueError` naming the bad arm, task or cell."""
    if config.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {config.jobs}.")
    arms = [Arm.parse(a) for a in config.arms]
    tasks = [shlex.split(t) for t in config.tasks]
    if not arms or not tasks:
        raise ValueError("a sweep needs at least one arm and one task.")
    envs = [t[0] for t in tasks]
    for name, values in (("arm", config.arms), ("task env", envs)):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"{name} {twice} given twice; each names a directory of the root.")
    out = []
    for env, *task_flags in tasks:
        for arm in arms:
            for seed, count in _seed_blocks(config.seeds, config.seeds_per_run):
                run_dir = config.root / arm.name / env / _seeds_dir(seed, count)
                argv = [*arm.flags(), "--env", env, *task_flags, *shlex.split(config.flags),
                        "--seed", str(seed), *(["--seeds", str(count)] if count > 1 else []),
                        "--run-dir", str(run_dir)]
                name = f"{arm.name}/{env}/{_seeds_dir(seed, count)}"
                job = _parse(name, argv)
                record = None if config.record is None else config.record / name
                out.append(Cell(arm.name, env, seed, count, tuple(argv), run_dir, job, record))
                _check_record(out[-1])
    return out


def _parse(name: str, argv: list[str]) -> offline.OfflineJob:
    try:
        return offline.parse(argv)
    except ValueError as e:
        raise ValueError(f"cell {name}: {e}") from None
    except SystemExit:  # tyro has printed what it refused
        raise ValueError(f"cell {name}: recipes/offline.py refuses its flags (above): "
                         f"{shlex.join(argv)}") from None


# ---- records ----------------------------------------------------------------------------------

def recorded(cell: Cell) -> bool:
    """Whether the cell's record holds its job run to the end (as `offline.finished` says of a
    run dir: the record keeps the run's config.json and summary.json)."""
    return cell.record_dir is not None and offline.finished(cell.record_dir, cell.job)


def _check_record(cell: Cell) -> None:
    """A record of another configuration at the cell's place is refused: the sweep would
    retrain the cell and replace results that may be the only copy."""
    if cell.record_dir is not None and (cell.record_dir / "config.json").exists() \
            and not recorded(cell):
        raise ValueError(f"cell {cell.name}: its record {cell.record_dir} holds another "
                         "configuration or length of run (its config.json or summary.json is "
                         "not of the cell's job). Move it away (`git mv`), or record this grid "
                         "elsewhere (--record).")


def write_record(cell: Cell, entry: dict[str, Any]) -> None:
    """Records the cell's finished run dir (`report.record_run`) with the cell, its command and
    when and where it ran (`entry` is its manifest entry) in record.json."""
    assert cell.record_dir is not None
    about = {"cell": cell.name, "command": cell.command,
             **{k: entry[k] for k in ("started", "finished", "attempts") if k in entry}}
    report.record_run(cell.run_dir, cell.record_dir, about)


# ---- running a cell ----------------------------------------------------------------------------

#: Runs one cell, its output appended to the log file given; returns its exit status. When the
#: event is set (the sweep is interrupted), it stops the cell at a checkpoint and raises
#: KeyboardInterrupt; a KeyboardInterrupt raised from it stops the sweep, leaving the cell to be
#: resumed.
CellRunner = Callable[[Cell, Path, threading.Event], int]


_PARENT_PID = "FIDEC_ZOO_SWEEP_PID"


def _die_with_parent() -> None:
    """Called first in a cell's process (Linux): SIGTERM when the sweep's process ends however
    it ends, so a killed sweep leaves no cell training unowned; SIGTERM makes the cell save a
    checkpoint and exit, as Ctrl-C does. It runs in the child's own interpreter, not as a
    `preexec_fn`: code between fork and exec in a multithreaded parent (JAX's threads) can
    deadlock. A sweep gone before this ran is caught by comparing the parent's pid."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    parent = os.environ.get(_PARENT_PID)
    if parent is not None and os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


#: What `recipes/offline.py` runs, in a child process: the package's module imported by name, so
#: that config.json records `fidec_zoo.offline:OfflineJob` (as `python -m fidec_zoo.offline` does).
_OFFLINE = "from fidec_zoo.offline import main; main()"


def run_cell(cell: Cell, log: Path, stop: threading.Event | None = None) -> int:
    """The default runner: `recipes/offline.py ARGV`'s code in a child process. When `stop` is
    set (or on Ctrl-C in this thread) the child is sent one SIGTERM and waited for: it saves its
    checkpoint at the end of its running chunk. The child has a session of its own, so a
    terminal's Ctrl-C does not reach it too (a second signal would make it stop without
    saving)."""
    program = f"from fidec_zoo.sweep import _die_with_parent; _die_with_parent(); {_OFFLINE}"
    with log.open("a") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", program, *cell.argv], stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", _PARENT_PID: str(os.getpid())})
        try:
            while True:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    return process.wait(timeout=None if stop is None else 0.2)
                if stop.is_set():
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            process.send_signal(signal.SIGTERM)
            process.wait()
            raise


# ---- the manifest ------------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class Manifest:
    """`ROOT/manifest.json`: per cell its state, command, run dir, log, attempts and last
    outcome, with counts per state; written atomically at every change. History (attempts,
    last error) carries over from an earlier manifest of the same root, by cell name. Cells of
    earlier invocations that this one's grid leaves out (another `--arms`, `--tasks` or
    `--seeds`) stay listed as they were last seen, with `"in_grid": false`; `counts` are this
    grid's, and `counts_outside_grid` theirs."""

    def __init__(self, config: SweepConfig, grid: Sequence[Cell]):
        self.path = config.root / MANIFEST
        self.config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                       if f.name != "print_commands"}
        old = self._read()
        self.entries: dict[str, dict[str, Any]] = {}
        for cell in grid:
            entry = {"arm": cell.arm, "task": cell.task, "seed": cell.seed, "seeds": cell.seeds,
                     "run_dir": str(cell.run_dir), "command": cell.command,
                     "log": str(_log_path(config.root, cell)), "attempts": 0}
            before = old.get(cell.name, {})
            entry.update({k: before[k] for k in ("attempts", "started", "finished",
                                                 "returncode", "error") if k in before})
            done = offline.finished(cell.run_dir, cell.job) or recorded(cell)
            entry["state"] = "done" if done else "pending"
            if cell.record_dir is not None:
                entry["record"] = str(cell.record_dir)
            if before.get("state") == "running" and entry["state"] == "pending":  # killed sweep
                entry["error"] = "interrupted; resumes from its latest checkpoint"
            self.entries[cell.name] = entry
        self.outside = {name: {**entry, "in_grid": False} for name, entry in old.items()
                        if name not in self.entries}

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.path.read_text())["cells"]
        except (OSError, ValueError, KeyError):
            return {}

    def set(self, cell: Cell, state: State, **fields: Any) -> None:
        self.entries[cell.name].update(state=state, **fields)
        self.write()

    def counts(self, entries: dict[str, dict[str, Any]] | None = None) -> dict[str, int]:
        states = [e["state"] for e in (self.entries if entries is None else entries).values()]
        return {s: states.count(s) for s in ("done", "running", "pending", "failed")}

    def write(self) -> None:
        data = {"format": 1, "updated": _now(), "sweep": self.config, "counts": self.counts(),
                "cells": {**self.entries, **self.outside}}
        if self.outside:
            data["counts_outside_grid"] = self.counts(self.outside)
        atomic_write(self.path, json.dumps(data, indent=2, default=str))


def _log_path(root: Path, cell: Cell) -> Path:
    return root / "logs" / (cell.name.replace("/", "__") + ".log")


def _tail(path: Path, lines: int = 5) -> str:
    """The last non-empty lines of a log (what a failed cell said last)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so the running cell is stopped at a
    checkpoint and the manifest written (main thread only; elsewhere a no-op)."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_sweep(config: SweepConfig, runner: CellRunner = run_cell) -> dict[str, int]:
    """Runs every cell of `config` that is not done, in order and `config.jobs` at a time, with
    `runner`, and returns the manifest's counts per state. A cell that fails is recorded (with
    the end of its log) and the sweep goes on. Ctrl-C/SIGTERM: the running cells are stopped at
    a checkpoint, recorded as pending, and `SystemExit(130)` raised. Raises `SystemExit` if
    another sweep holds the root."""
    grid = cells(config)
    config.root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(config.root / ".lock")
    try:
        lock.acquire()
    except LockedError as e:
        raise SystemExit(f"error: another sweep runs in {config.root}: "
                         f"{e.holder or 'a process that did not record itself'}. Wait for it, "
                         "or stop it (its running cell stops at a checkpoint) and rerun.") from None
    try:
        with _interrupt_on_sigterm():
            return _run_cells(config, grid, runner)
    finally:
        lock.release()


def _run_cells(config: SweepConfig, grid: Sequence[Cell], runner: CellRunner) -> dict[str, int]:
    manifest = Manifest(config, grid)
    manifest.write()
    for cell in grid:  # finished before this sweep recorded (or before it had a record dir)
        if cell.record_dir is not None and not recorded(cell) \
                and offline.finished(cell.run_dir, cell.job):
            write_record(cell, manifest.entries[cell.name])
    todo = [c for c in grid if manifest.entries[c.name]["state"] != "done"]
    print(f"sweep {config.root}: {len(grid)} cells, {len(grid) - len(todo)} done, "
          f"{len(todo)} to run" + (f", {config.jobs} at a time" if config.jobs > 1 else ""),
          flush=True)
    stop = threading.Event()
    running: dict[futures.Future, tuple[int, Cell]] = {}
    queue = iter(enumerate(todo, 1))
    with futures.ThreadPoolExecutor(config.jobs, thread_name_prefix="sweep-cell") as pool:
        try:
            while True:
                while len(running) < config.jobs and (nxt := next(queue, None)) is not None:
                    i, cell = nxt
                    running[pool.submit(runner, cell, _start(config, manifest, cell, i,
                                                             len(todo)), stop)] = (i, cell)
                if not running:
                    break
                done, _ = futures.wait(running, timeout=1.0,
                                       return_when=futures.FIRST_COMPLETED)
                for future in done:
                    i, cell = running[future]
                    code = future.result()  # a runner's KeyboardInterrupt: still running here
                    del running[future]
                    _finished(config, manifest, cell, code, f"[{i}/{len(todo)}]")
        except KeyboardInterrupt:
            stop.set()  # every running cell stops at a checkpoint
            futures.wait(running)
            for _, cell in running.values():
                manifest.set(cell, "pending", error="interrupted; resumes from its latest "
                                                    "checkpoint when the sweep is rerun")
            names = ", ".join(cell.name for _, cell in running.values())
            print(f"\ninterrupted: {names} stopped at the latest checkpoint; rerun the same "
                  "command to resume the sweep.", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        except BaseException:
            stop.set()  # a runner's own error: the other cells stop at a checkpoint too
            raise
    counts = manifest.counts()
    print(f"sweep {config.root}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n),
          flush=True)
    return counts


def _start(config: SweepConfig, manifest: Manifest, cell: Cell, i: int, n: int) -> Path:
    """Marks `cell` running (the log's header, the manifest) and returns its log."""
    log = _log_path(config.root, cell)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n=== {_now()} sweep: {cell.command}\n")
    attempts = manifest.entries[cell.name]["attempts"] + 1
    manifest.set(cell, "running", attempts=attempts, started=_now(), finished=None,
                 returncode=None, error=None)
    print(f"[{i}/{n}] {cell.name}: running (log {log})", flush=True)
    return log


def _finished(config: SweepConfig, manifest: Manifest, cell: Cell, code: int,
              counter: str) -> None:
    """Records how `cell`'s run ended: done (and recorded), or failed with its log's end."""
    log = _log_path(config.root, cell)
    if code == 0 and offline.finished(cell.run_dir, cell.job):
        manifest.set(cell, "done", finished=_now(), returncode=0)
        if cell.record_dir is not None:
            write_record(cell, manifest.entries[cell.name])
        print(f"{counter} {cell.name}: done", flush=True)
        return
    why = _tail(log) or "(no output)"
    if code == 0:
        why = f"exited 0 without finishing its run dir; its log ends:\n{why}"
    manifest.set(cell, "failed", finished=_now(), returncode=code, error=why)
    print(f"{counter} {cell.name}: FAILED (exit {code}); see {log}:\n{why}", file=sys.stderr,
          flush=True)


_DESCRIPTION = """\
Run a grid of recipes/offline.py runs (arms x tasks x seeds) one cell at a time, each cell a
run dir ROOT/ARM/ENV/sSEED. Rerun the same command to resume: finished cells are skipped, an
interrupted cell resumes from its checkpoint, failed cells are tried again. ROOT/manifest.json
says which cells are done, running, pending or failed. Compare the arms with
`python -m fidec_zoo.report compare ROOT`."""


def main(argv: Sequence[str] | None = None) -> int:
    """`recipes/sweep.py`: 0 when every cell is done, 1 when some failed (rerun to retry)."""
    config = tyro.cli(SweepConfig, args=sys.argv[1:] if argv is None else list(argv),
                      prog="recipes/sweep.py", description=_DESCRIPTION)
    try:
        if config.print_commands:
            for cell in cells(config):
                print(cell.command)
            return 0
        counts = run_sweep(config)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return 1 if counts["failed"] else 0
