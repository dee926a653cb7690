"""Host-side bookkeeping of a run directory for `fidec_zoo.train.fit`: CSV logs that survive an
interrupted run, rows forwarded to user loggers, Ctrl-C and SIGTERM deferred to the end of an
update chunk, and one-line loss summaries."""

import csv
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["CsvLog", "Logger", "LogForwarder", "deferred_interrupts", "loss_summary"]

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
        if self.file is not None:
            self.file.close()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)
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
