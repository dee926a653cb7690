"""Host-side bookkeeping of a run directory: CSV logs that survive an interrupted run, rows
forwarded to user loggers, the progress bar, Ctrl-C and SIGTERM deferred to the end of an update
chunk, and one-line loss summaries."""

import csv
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .._durable import atomic_path

__all__ = ["CsvLog", "Logger", "LogForwarder", "RunLog", "deferred_interrupts", "loss_summary"]

Logger = Callable[[str, dict[str, int | float]], None]


@contextmanager
def deferred_interrupts() -> Iterator[threading.Event]:
    """Turns the first Ctrl-C or SIGTERM into a flag checked at chunk ends (so what is saved is a
    whole chunk's state); a second one raises `KeyboardInterrupt` at once. SIGTERM is what a
    cluster's time limit, `timeout` or `docker stop` sends before killing. Outside the main
    thread, does nothing."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(sig, handler) for sig in signals]
    try:
        yield flag
    finally:
        for sig, handler_before in zip(signals, previous, strict=True):
            signal.signal(sig, handler_before)


class CsvLog:
    """A CSV file written one flushed row at a time. On open, rows with `step > keep_until`
    (written after the checkpoint being resumed) and torn lines are dropped; a row with new
    columns rewrites the file with the widened header."""

    def __init__(self, path: Path, keep_until: int):
        self.path, self.rows, self.fields, self.file = path, [], [], None
        if path.exists():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or [])
                self.rows = [r for r in reader if _row_step(r) <= keep_until]
            self._rewrite()

    def _rewrite(self) -> None:
        """Writes the header and every row anew, in one rename (`atomic_path`)."""
        if self.file is not None:
            self.file.close()
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        self.file = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.file, self.fields, restval="")

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        new = [k for k in row if k not in self.fields]
        if new or self.file is None:
            self.fields += new
            self._rewrite()
        else:
            self.writer.writerow(row)
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class LogForwarder:
    """Hands every CSV row to user loggers as `logger(name, row)` too. A logger that raises is
    warned about and gets no more rows: a broken external logger never stops training, and the
    CSVs stay complete."""

    def __init__(self, loggers: Sequence[Logger]):
        for logger in loggers:
            if not callable(logger):
                raise TypeError(
                    f"loggers must be callables logger(name, row); got {type(logger).__name__}."
                )
        self.loggers = list(loggers)

    def __call__(self, name: str, row: dict[str, int | float]) -> None:
        for logger in list(self.loggers):
            try:
                logger(name, dict(row))
            except Exception as e:
                self.loggers.remove(logger)
                warnings.warn(
                    f"logger {logger!r} raised {type(e).__name__}: {e}. It gets no more rows; "
                    "the CSVs in the run dir are complete.", stacklevel=2,
                )


def _row_step(row: dict[str, str]) -> float:
    try:
        return float(row["step"])
    except (KeyError, TypeError, ValueError):  # a torn line
        return float("inf")


def loss_summary(row: dict[str, Any], n: int) -> str:
    """`loss=... bc_loss=...`: the total and up to `n - 1` other losses of a metrics row."""
    keys = ["loss"] + [k for k in row if k.endswith("loss") and k != "loss"]
    return " ".join(f"{k}={row[k]:.4g}" for k in keys[:n] if k in row)


class RunLog:
    """The logs of one run: per seed a `metrics.csv` and (when evaluating) an `eval.csv` in
    `run_dir` (or `run_dir/seed_<i>`), every row also handed to `loggers`, and a progress bar
    from `start` to `total` (or, when the output is not a terminal and `progress` is `None`, one
    printed line per metrics row). `write=False` (a non-main process) writes nothing.

    `prefix` names a phase inside the run dir (e.g. `"online"`): its CSVs go to
    `run_dir/<prefix>/` and its loggers' names start with `<prefix>/`.
    """

    def __init__(self, run_dir: Path, *, seeds: int | None, start: int, total: int,
                 kinds: Sequence[str] = ("metrics", "eval"), loggers: Sequence[Logger] = (),
                 progress: bool | None = None, write: bool = True, prefix: str = ""):
        base = run_dir / prefix if prefix else run_dir
        dirs = [base] if seeds is None else [base / f"seed_{i}" for i in range(seeds)]
        dirs = dirs if write else []
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        self.names = [d.relative_to(run_dir) for d in dirs]  # "." or [prefix/]seed_<i>
        self.logs = {kind: [CsvLog(d / f"{kind}.csv", keep_until=start) for d in dirs]
                     for kind in kinds}
        self.forward, self.seeds, self.total = LogForwarder(loggers), seeds, total
        self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                        mininterval=1.0,
                        disable=True if not write else None if progress is None else not progress)
        self.plain = write and self.bar.disable and progress is None
        self.t_line, self.step_line = time.perf_counter(), start

    def write(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """One row per seed into `kind.csv`, and to the loggers."""
        for log, name, row in zip(self.logs[kind], self.names, rows):
            log.write(row)
            self.forward((name / kind).as_posix(), row)

    def metrics(self, rows: list[dict[str, Any]]) -> None:
        """Writes a metrics row per seed and shows their (seed-mean) losses."""
        self.write("metrics", rows)
        row = rows[0] if len(rows) == 1 else {
            k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        self.bar.set_postfix_str(loss_summary(row, 3), refresh=False)
        if self.plain:
            step = int(row["step"])
            rate = (step - self.step_line) / max(time.perf_counter() - self.t_line, 1e-9)
            self.t_line, self.step_line = time.perf_counter(), step
            seeds = f", mean of {self.seeds} seeds" if self.seeds else ""
            print(f"[fit] step {step}/{self.total} {loss_summary(row, 6)} "
                  f"({rate:.0f} steps/s{seeds})", flush=True)

    def advance(self, steps: int) -> None:
        self.bar.update(steps)

    def close(self) -> None:
        self.bar.close()
        for logs in self.logs.values():
            for log in logs:
                log.close()
