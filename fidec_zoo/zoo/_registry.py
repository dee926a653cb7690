"""Where registries live, reading and writing `registry.json`, and the sha256 of entries.

A *root* is a directory holding `registry.json` (`{"format_version": 2, "entries": {...}}`) and
one directory per entry. Names are looked up through the roots in order: an explicit `root`,
`$FIDEC_ZOO_HOME`, the copy packaged in the wheel (`fidec_zoo/_checkpoints`), and the
repository's `checkpoints/` (editable installs). The first root holding the name wins.
"""

import contextlib
import difflib
import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jaxtyping import PyTree

from .. import checkpoint
from .._durable import atomic_write
from .._hashing import sha256_file
from ._entry import FORMAT_VERSION, IncompatibleVersionError, UnknownModelError, ZooEntry

__all__ = ["files_digest", "find", "locked", "params_digest", "read", "search_roots", "write"]

REGISTRY = "registry.json"
_PACKAGE = Path(__file__).resolve().parent.parent
#: `checkpoints/` copied into the wheel (see pyproject.toml, [tool.hatch.build]).
PACKAGED_ROOT = _PACKAGE / "_checkpoints"


def repository_root() -> Path | None:
    """`<repo>/checkpoints` when fidec_zoo runs from a source checkout, else `None`."""
    repo = _PACKAGE.parent
    if (repo / "pyproject.toml").is_file() and (repo / "checkpoints").is_dir():
        return repo / "checkpoints"
    return None


def _absolute(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def search_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The roots searched for names, in order (read `$FIDEC_ZOO_HOME` at every call)."""
    candidates = []
    if root is not None:
        candidates.append(_absolute(root))
    if os.environ.get("FIDEC_ZOO_HOME"):
        candidates.append(_absolute(os.environ["FIDEC_ZOO_HOME"]))
    candidates.append(PACKAGED_ROOT)
    repo = repository_root()
    if repo is not None:
        candidates.append(repo.resolve())
    roots: list[Path] = []
    for c in candidates:
        if c not in roots:
            roots.append(c)
    return roots


def write_root(root: str | os.PathLike | None = None) -> Path:
    """Where new entries go: `root`, else `$FIDEC_ZOO_HOME`, else the repository's
    `checkpoints/` (never an installed package)."""
    if root is not None:
        return _absolute(root)
    if os.environ.get("FIDEC_ZOO_HOME"):
        return _absolute(os.environ["FIDEC_ZOO_HOME"])
    repo = repository_root()
    if repo is None:
        raise ValueError(
            "No zoo root to write to: pass root=..., or set $FIDEC_ZOO_HOME (the repository's "
            "checkpoints/ is used only from a source checkout)."
        )
    return repo.resolve()


# ---- registry.json ------------------------------------------------------------------------------


def _empty() -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "entries": {}}


def read_raw(root: Path) -> dict[str, Any]:
    """The registry of `root` as stored (an empty one if the file does not exist), after
    checking its format version."""
    path = root / REGISTRY
    if not path.is_file():
        return _empty()
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise IncompatibleVersionError(f"{path} is not valid JSON: {e}") from e
    version = data.get("format_version") if isinstance(data, dict) else None
    if version == 1:
        raise IncompatibleVersionError(
            f"{path} has format_version 1 (flat hyperparameters, before typed configs). Migrate "
            f"it once, in place (checkpoint files and hashes are unchanged): "
            f"python -m fidec_zoo.zoo migrate {root}")
    if version != FORMAT_VERSION or not isinstance(data.get("entries"), dict):
        raise IncompatibleVersionError(
            f"{path} has format_version {version!r}; this fidec_zoo reads registry format "
            f"{FORMAT_VERSION} only. It was written by another fidec_zoo version: install a "
            "matching one, or point FIDEC_ZOO_HOME / root= elsewhere."
        )
    return data


def read(root: Path) -> dict[str, dict[str, Any]]:
    """`{name: entry dict}` of the registry in `root` (empty if there is none)."""
    return dict(read_raw(root)["entries"])


def write(root: Path, entries: dict[str, dict[str, Any]]) -> Path:
    """Writes `root/registry.json` atomically, entries sorted by name."""
    root.mkdir(parents=True, exist_ok=True)
    data = {"format_version": FORMAT_VERSION, "entries": dict(sorted(entries.items()))}
    path = root / REGISTRY
    atomic_write(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Serialises writers of `root` (an advisory lock on the directory itself, so no lock file
    is left to be packaged). A no-op where `fcntl` is missing."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _check_root(root: str | os.PathLike | None) -> None:
    if root is not None and not (_absolute(root) / REGISTRY).is_file():
        raise FileNotFoundError(f"No {REGISTRY} in the zoo root {_absolute(root)}.")


def all_entries(root: str | os.PathLike | None = None) -> dict[str, tuple[Path, dict[str, Any]]]:
    """`{name: (root, entry dict)}` over the search path; earlier roots win."""
    _check_root(root)
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for r in search_roots(root):
        for name, entry in read(r).items():
            found.setdefault(name, (r, entry))
    return found


def find(name: str, root: str | os.PathLike | None = None) -> tuple[Path, ZooEntry]:
    """`(root, entry)` of `name` from the first root that has it; `UnknownModelError` with close
    matches if none has. An unreadable registry only matters if no earlier root has the name."""
    _check_root(root)
    names: set[str] = set()
    error: IncompatibleVersionError | None = None
    for r in search_roots(root):
        try:
            entries = read(r)
        except IncompatibleVersionError as e:
            error = error or e
            continue
        if name in entries:
            return r, ZooEntry.from_dict(entries[name], where=str(r / REGISTRY))
        names.update(entries)
    if error is not None:
        raise error
    raise UnknownModelError(_unknown_message(name, sorted(names), search_roots(root)))


def matching(pattern: str, root: str | os.PathLike | None = None) -> list[str]:
    """Names matching the shell-style `pattern`, sorted."""
    return sorted(n for n in all_entries(root) if fnmatch.fnmatchcase(n, pattern))


def _words(name: str) -> set[str]:
    return set(re.split(r"[/_-]+", name.lower())) - {""}


def close_matches(name: str, names: list[str], n: int = 5) -> list[str]:
    """The `n` entries of `names` most like `name`, best first.

    Ranked first by the share of `name`'s words (split on `/`, `-`, `_`) that an entry contains,
    then by difflib's similarity, so a shorthand such as `fidec/cube-single-task2` ranks
    `fidec/cube-single-play-singletask-task2-v0` above the task2 entries of other environments,
    which plain string similarity does not. An entry is kept if it holds half of the words or
    difflib's ratio is at least 0.6 (its default cutoff).
    """
    words = _words(name)

    def score(candidate: str) -> tuple[float, float]:
        shared = len(words & _words(candidate)) / max(len(words), 1)
        similarity = difflib.SequenceMatcher(None, name.lower(), candidate.lower()).ratio()
        return shared, similarity

    scored = sorted(((score(c), c) for c in names), key=lambda sc: sc[0], reverse=True)
    return [c for (shared, similarity), c in scored if shared >= 0.5 or similarity >= 0.6][:n]


def _unknown_message(name: str, names: list[str], roots: list[Path]) -> str:
    close = close_matches(name, names)
    where = ", ".join(str(r) for r in roots if (r / REGISTRY).is_file()) or "none found"
    msg = f"Unknown zoo entry {name!r}."
    if close:
        msg += f" Did you mean: {', '.join(repr(c) for c in close)}?"
    elif names:
        msg += f" Available: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}."
    else:
        msg += " The zoo has no entries yet."
    return msg + f" (registries searched: {where}; see fidec_zoo.zoo.list_models())"


# ---- hashes ------------------------------------------------------------------------------------


def file_hashes(directory: Path) -> dict[str, str]:
    """`{relative posix path: sha256}` of every file under `directory`, sorted by path."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() or p.is_symlink())
    return {p.relative_to(directory).as_posix(): sha256_file(p) for p in files}


def files_digest(files: dict[str, str]) -> str:
    """sha256 over the sorted `(relative path, file sha256)` pairs."""
    h = hashlib.sha256()
    for rel, digest in sorted(files.items()):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


def params_digest(tree: PyTree) -> tuple[str, int]:
    """`(sha256, number of parameters)` over the array leaves of `tree`: their sorted key paths,
    dtypes, shapes and bytes. Independent of how the arrays were stored."""
    h, count = hashlib.sha256(), 0
    for name, x in checkpoint.array_leaves(tree):
        checkpoint.hash_leaf(h, name, x)
        count += int(x.size)
    return h.hexdigest(), count
