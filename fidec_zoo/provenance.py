"""What code produced a file: package versions and the fidec_zoo source revision.

Run directories, zoo entries and generated datasets record these. `fidec_zoo.__version__` alone
does not say which code trained a run: a source checkout keeps one version number over many
commits, and a run resumed over several sessions may span several of them.
"""

import subprocess
import sys
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ._version import __version__

__all__ = ["package_versions", "source_revision"]

_SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the checkout, for an editable install


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Python's, fidec_zoo's and the `names` packages' versions ("not installed" if missing),
    plus `fidec_zoo_source`, the `source_revision()`, when fidec_zoo runs from a git checkout."""
    out = {"fidec_zoo": __version__, "python": sys.version.split()[0]}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    revision = source_revision()
    if revision is not None:
        out["fidec_zoo_source"] = revision
    return out


def source_revision() -> str | None:
    """`git <commit>` of the checkout this fidec_zoo is imported from, with `+dirty` when its
    tracked files differ from that commit; `None` for an installed wheel, or without git."""
    if not (_SOURCE_ROOT / ".git").exists():
        return None
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return f"git {commit}" + ("+dirty" if dirty else "")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(_SOURCE_ROOT), *args], capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()
