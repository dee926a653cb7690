"""Dataset files on disk: writing a train/val pair and its provenance atomically, and reading
provenance back.

`_generate` writes with these and `_load` reads with them, so both import this module and
`_generate` needs nothing from `_load`.
"""

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._hashing import sha256_file
from ..provenance import package_versions

#: Packages whose versions a generated dataset records (its bytes depend on them).
_DATA_PACKAGES = ("ogbench", "mujoco", "numpy", "gymnasium", "scipy", "jax")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """`np.savez_compressed` (as OGBench) to exactly `path`, fsynced; returns its sha256."""
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    return sha256_file(path)


def write_dataset(
    out: Path,
    name: str,
    train: dict[str, np.ndarray],
    val: dict[str, np.ndarray],
    provenance: dict[str, Any],
    start: float,
) -> None:
    """Writes `<name>.npz`, `<name>-val.npz` and `<name>.provenance.json` into `out` atomically.

    Everything is written under temporary names first; then the old train file is removed, the
    val file and provenance renamed into place, and the train file renamed LAST. A dataset
    counts as present only when both `.npz` files exist, so a crash at any point leaves either
    nothing that looks complete or the new complete pair.
    """
    tmp = f".tmp-{os.getpid()}"
    paths = {
        k: out / f"{name}{suffix}"
        for k, suffix in (("train", ".npz"), ("val", "-val.npz"), ("prov", ".provenance.json"))
    }
    sha_train = write_npz(Path(f"{paths['train']}{tmp}"), train)
    sha_val = write_npz(Path(f"{paths['val']}{tmp}"), val)
    provenance = {
        **provenance,
        "wall_time_seconds": round(time.perf_counter() - start, 2),
        "versions": package_versions(_DATA_PACKAGES),
        "sha256": {paths["train"].name: sha_train, paths["val"].name: sha_val},
    }
    with open(f"{paths['prov']}{tmp}", "w") as f:
        json.dump(provenance, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    paths["train"].unlink(missing_ok=True)
    os.replace(f"{paths['val']}{tmp}", paths["val"])
    os.replace(f"{paths['prov']}{tmp}", paths["prov"])
    os.replace(f"{paths['train']}{tmp}", paths["train"])


def read_provenance(path: Path) -> dict[str, Any]:
    """The JSON object in `path` (a `<name>.provenance.json`); `{}` if it is missing, unreadable
    or not an object."""
    try:
        with open(path) as f:
            out = json.load(f)
        return out if isinstance(out, dict) else {}
    except (OSError, ValueError):
        return {}
