"""Files never left half written, and locks that say who holds them.

- `atomic_path(path)` and `atomic_write(path, data)`: the new content goes to a temporary file
  beside `path`, is fsynced, then renamed over `path` in one step, so a crash, `kill -9` or a
  full disk leaves the old file or the new one, never a torn one. A failed write removes its
  temporary file.
- `FileLock(path)`: an exclusive lock on a file that records its holder (pid, host, start time,
  command), so a process finding it held can say who holds it. It is an `flock`, which the
  kernel drops when its holder exits however it exits (`kill -9` and the OOM killer included):
  a lock file left behind by a killed process is stale, and the next process takes it over,
  saying whose it was. (Judging by the recorded pid instead would misjudge a reused pid, or a
  holder on another host or in another container.) A released lock's file is removed.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["FileLock", "LockHolder", "LockedError", "atomic_path", "atomic_write"]


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for the caller to write (with `path`'s suffix, for writers
    that choose a format by it); when the block ends the file is fsynced and renamed over
    `path`. If the block or the rename fails, the temporary file is removed and `path` is left
    as it was."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename itself to disk; not every file system can
        _fsync(path.parent)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Replaces the content of `path` with `data` (text as UTF-8) in one rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """The process holding a `FileLock`, as it recorded itself in the lock file."""

    pid: int
    host: str
    started: str  # ISO 8601 local time, with its UTC offset
    command: str

    @classmethod
    def this_process(cls) -> "LockHolder":
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), started, shlex.join(sys.argv))

    @classmethod
    def parse(cls, data: bytes) -> "LockHolder | None":
        """The holder recorded in a lock file's bytes; `None` for an empty or foreign file."""
        try:
            record: Any = json.loads(data)
            return cls(**record)
        except (ValueError, TypeError):
            return None

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started} (`{self.command}`)"


class LockedError(RuntimeError):
    """A `FileLock` is held by another process: `holder` (`None` if its record is unreadable)."""

    def __init__(self, path: Path, holder: LockHolder | None):
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by {holder or 'a process that did not record itself'}")


class FileLock:
    """An exclusive lock on the file `path` (created if needed) for one process at a time.

    `acquire` raises `LockedError` naming the holder when another process holds it, or with
    `wait` says on stderr whom it waits for and waits. Use it as a context manager, or call
    `acquire` and `release`. Not reentrant: a second `FileLock` on the same path in the same
    process is refused too.
    """

    def __init__(self, path: Path, *, wait: bool = False):
        self.path, self.wait = path, wait
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                self._lock(fd)
                if self._is_current(fd):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # its last holder removed that file when releasing: lock the new one
        stale = LockHolder.parse(os.pread(fd, 1 << 16, 0))
        if stale is not None:
            _note(f"took over the lock of {stale} on {self.path}: that process ended without "
                  "releasing it")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(dataclasses.asdict(LockHolder.this_process())).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Removes the lock file and releases the lock; a no-op when not held."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._is_current(fd):
                os.unlink(self.path)
        except OSError:
            pass  # removed along with its directory: closing still releases the lock
        finally:
            os.close(fd)

    def holder(self) -> LockHolder | None:
        """Who holds the lock, as the lock file says (`None` if nobody recorded). A new holder
        writes its record just after locking, so an empty file is read again for a while."""
        for _ in range(20):
            try:
                found = LockHolder.parse(self.path.read_bytes())
            except FileNotFoundError:
                return None
            if found is not None:
                return found
            time.sleep(0.05)
        return None

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            if not self.wait:
                raise LockedError(self.path, holder) from None
            _note(f"waiting for {holder or 'another process'}, which holds {self.path} ...")
            fcntl.flock(fd, fcntl.LOCK_EX)

    def _is_current(self, fd: int) -> bool:
        """Whether `fd` is still the file at `path` (a releasing holder removes it)."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _note(message: str) -> None:
    print(f"[fidec_zoo] {message}", file=sys.stderr, flush=True)
