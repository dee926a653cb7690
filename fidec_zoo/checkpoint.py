"""Orbax checkpoints of Equinox pytrees: the only module of `fidec_zoo` that imports orbax.

Two uses share one format (an Orbax v1 directory of host arrays plus JSON custom metadata):

- **Single pytrees** (`save_pytree`, `load_pytree`, `read_metadata`): e.g. a policy shipped in
  the zoo, with its provenance as metadata.
- **Training checkpoints** (`save_checkpoint`, `restore_checkpoint`, `latest_step`,
  `checkpoint_steps`): numbered step directories inside a run's checkpoint directory, the latest
  `max_to_keep` kept.

A training checkpoint records the sha256 of each of its arrays and of its metadata, and
`restore_checkpoint` checks them after reading (a flipped byte in Orbax's files reads back as
other numbers without any error): a checkpoint that does not read back as it was saved raises
`CorruptCheckpointError`, naming it and the arrays that differ. Checkpoints written before these
checksums restore unchecked.

Any pytree works, Equinox modules included: array leaves are saved (host numpy, so a checkpoint
never remembers the devices it came from), everything else (activation functions, static
fields) is taken from the *skeleton* given at restore time, usually built with
`eqx.filter_eval_shape` so that nothing is allocated. Abstract leaves are given an explicit
single-device sharding, which avoids Orbax's topology errors and warnings. Typed PRNG keys
(`jax.random.key`) round-trip natively. Orbax writes into a temporary directory and renames it
when complete, so a crashed save never looks like a complete checkpoint; leftovers are removed.
Paths are made absolute (Orbax rejects relative ones).
"""

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jaxtyping import PyTree
from orbax.checkpoint import v1 as ocp

__all__ = [
    "CorruptCheckpointError",
    "abstract_arrays",
    "array_leaves",
    "checkpoint_steps",
    "latest_step",
    "load_pytree",
    "read_metadata",
    "restore_checkpoint",
    "save_checkpoint",
    "save_pytree",
]

PathLike = str | os.PathLike
#: The custom-metadata key under which a training checkpoint records its checksums.
_CHECKSUMS = "fidec_zoo_sha256"
#: Orbax's file of a checkpoint's metadata, custom metadata included (Orbax reads an unreadable
#: one as empty, which would look like a checkpoint written before checksums).
_ORBAX_METADATA = "_CHECKPOINT_METADATA"


class CorruptCheckpointError(ValueError):
    """Training checkpoint `step` of `directory` cannot be read, or does not read back as it was
    saved (its arrays or metadata differ from the sha256 recorded then)."""

    def __init__(self, directory: Path, step: int, problem: str):
        self.directory, self.step, self.problem = directory, step, problem
        super().__init__(f"{directory}: checkpoint {step} is corrupt: {problem}")


def _is_array_like(x: Any) -> bool:
    """Leaves that are stored: arrays (typed PRNG keys included) and their abstract versions."""
    return isinstance(x, jax.Array | np.ndarray | np.generic | jax.ShapeDtypeStruct)


def _absolute(path: PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _json(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON-serialisable copy of `metadata` (fails early, naming the problem)."""
    metadata = dict(metadata or {})
    try:
        return json.loads(json.dumps(metadata))
    except TypeError as e:
        raise TypeError(f"Checkpoint metadata must be JSON-serialisable: {e}") from e


def _host_arrays(tree: PyTree) -> PyTree:
    """The array leaves of `tree` copied to host (non-array leaves become `None`).

    Typed PRNG keys stay JAX arrays (they have no numpy dtype); Orbax stores them natively.
    """
    return jax.device_get(eqx.filter(tree, _is_array_like))


def abstract_arrays(skeleton: PyTree) -> tuple[PyTree, PyTree]:
    """Splits `skeleton` into abstract array leaves, each a `ShapeDtypeStruct` on the first
    local device, and the static rest (to `eqx.combine` with the restored arrays).

    `skeleton` may hold concrete arrays or `ShapeDtypeStruct`s (from `eqx.filter_eval_shape`).
    """
    arrays, static = eqx.partition(skeleton, _is_array_like)
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def to_abstract(x):
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

    return jax.tree.map(to_abstract, arrays), static


def _shape_problems(stored: Any, abstract: PyTree) -> list[str]:
    """Leaves of `abstract` missing from the stored tree metadata or stored with another shape.

    Checked before any read, so a wrong architecture fails naming the leaf (and leaves no
    half-done asynchronous read behind).
    """
    problems = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        node, name = stored, jax.tree_util.keystr(path)
        try:
            for entry in path:
                k = getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", None)))
                node = node[str(k)] if isinstance(node, Mapping) else node[int(k)]
        except (KeyError, IndexError, TypeError, ValueError):
            problems.append(f"{name}: not in the checkpoint")
            continue
        is_key = jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)  # stored as key data
        if not is_key and tuple(getattr(node, "shape", ())) != tuple(leaf.shape):
            problems.append(f"{name}: stored shape {tuple(node.shape)}, expected {leaf.shape}")
    return problems


class _Mismatch(ValueError):
    """The skeleton's arrays are not those Orbax recorded (`problems`, one line each)."""

    def __init__(self, where: Path, problems: list[str]):
        self.problems = problems
        super().__init__(f"Cannot restore {where} into the given skeleton (was it saved from the "
                         "same architecture?): " + "; ".join(problems[:10]))


def _restored(load, stored_metadata, skeleton: PyTree, where: Path) -> PyTree:
    """Loads `where` into the skeleton's abstract arrays (`load(abstract)`) after checking
    their shapes against `stored_metadata()`, then recombines with the static parts."""
    abstract, static = abstract_arrays(skeleton)
    problems = _shape_problems(stored_metadata(), abstract)
    if problems:
        raise _Mismatch(where, problems)
    return eqx.combine(load(abstract), static)


# ---- checksums ---------------------------------------------------------------------------------


def array_leaves(tree: PyTree) -> list[tuple[str, np.ndarray]]:
    """`(key path, host array)` for every array leaf of `tree`, sorted by key path, typed PRNG
    keys as their key data: the form that checksums of a pytree are taken over."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(eqx.filter(tree, _is_array_like))[0]:
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append((jax.tree_util.keystr(path), np.asarray(jax.device_get(leaf))))
    return sorted(out, key=lambda leaf: leaf[0])


def hash_leaf(h: Any, name: str, x: np.ndarray) -> None:
    """Feeds one leaf of `array_leaves` into the hashlib object `h`: its key path, dtype, shape
    and bytes (as a contiguous array of at least one dimension, as the zoo's `params_sha256`
    has always been taken)."""
    x = np.ascontiguousarray(x)
    h.update(f"{name}|{x.dtype.str}|{x.shape}\n".encode())
    h.update(x.tobytes())


def _leaf_sha256(name: str, x: np.ndarray) -> str:
    h = hashlib.sha256()
    hash_leaf(h, name, x)
    return h.hexdigest()


def _metadata_sha256(metadata: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()


def _checksums(tree: PyTree, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What a training checkpoint records to be checked on restore."""
    leaves = array_leaves(tree)
    return {"arrays": {name: _leaf_sha256(name, x) for name, x in leaves},
            "shapes": {name: list(x.shape) for name, x in leaves},
            "metadata": _metadata_sha256(metadata)}


def _saved_as(skeleton: PyTree, recorded: Mapping[str, Any]) -> bool:
    """Whether a checkpoint's recorded checksums were taken over arrays of `skeleton`'s key
    paths and shapes (typed keys by path only), so that a mismatch found while reading it is
    damage rather than another architecture."""
    shapes = recorded.get("shapes", {})
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_arrays(skeleton)[0])[0]:
        name = jax.tree_util.keystr(path)
        is_key = jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        if name not in shapes or not (is_key or tuple(shapes[name]) == tuple(leaf.shape)):
            return False
    return True


def _mismatches(tree: PyTree, metadata: Mapping[str, Any],
                recorded: Mapping[str, Any]) -> list[str]:
    """The leaves of `tree` (and "the metadata") whose sha256 differs from `recorded`."""
    arrays = recorded.get("arrays", {})
    bad = [name for name, x in array_leaves(tree) if arrays.get(name) != _leaf_sha256(name, x)]
    if recorded.get("metadata") != _metadata_sha256(metadata):
        bad.append("the metadata")
    return bad


def _readable(read: Callable, directory: Path, step: int) -> Callable:
    """`read`, raising `CorruptCheckpointError` when Orbax cannot read the checkpoint."""

    def wrapped(*args):
        try:
            return read(*args)
        except Exception as e:
            raise CorruptCheckpointError(
                directory, step, f"Orbax cannot read it ({type(e).__name__}: {e})") from e

    return wrapped


# ---- single pytrees (the zoo) ----------------------------------------------------------------


def save_pytree(
    path: PathLike,
    tree: PyTree,
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Saves the array leaves of `tree` as host numpy into the Orbax directory `path`, with
    `metadata` (a JSON-serialisable dict) as custom metadata. Returns the absolute path.

    Raises `FileExistsError` if `path` exists and `overwrite` is false.
    """
    path = _absolute(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    ocp.save(path, _host_arrays(tree), overwrite=overwrite, custom_metadata=_json(metadata))
    return path


def load_pytree(path: PathLike, skeleton: PyTree) -> PyTree:
    """Restores the pytree saved at `path` into `skeleton`'s structure (Module types, static
    fields and dtypes come from the skeleton; shapes must match the stored ones)."""
    path = _absolute(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    return _restored(
        lambda abstract: ocp.load(path, abstract),
        lambda: ocp.metadata(path).metadata,
        skeleton,
        path,
    )


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The JSON custom metadata stored with `save_pytree` (no arrays are read)."""
    path = _absolute(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    return dict(ocp.metadata(path).custom_metadata or {})


# ---- training checkpoints ---------------------------------------------------------------------


def _checkpointer(
    directory: PathLike, max_to_keep: int | None = None, *, writer: bool = False
) -> ocp.training.Checkpointer:
    """An Orbax training checkpointer on `directory`. Only a `writer` removes leftover
    temporary directories of crashed saves: a reader must not delete a save in progress."""
    policies = ocp.training.preservation_policies
    keep = policies.PreserveAll() if max_to_keep is None else policies.LatestN(max_to_keep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ocp.training.Checkpointer(
            _absolute(directory), preservation_policy=keep, cleanup_tmp_directories=writer
        )


def checkpoint_steps(directory: PathLike) -> list[int]:
    """Steps of the complete checkpoints in `directory`, ascending (empty if none)."""
    if not _absolute(directory).is_dir():
        return []
    with _checkpointer(directory) as ck:
        return [c.step for c in ck.checkpoints]


def latest_step(directory: PathLike) -> int | None:
    """Step of the latest complete checkpoint in `directory`, or `None`."""
    steps = checkpoint_steps(directory)
    return steps[-1] if steps else None


def save_checkpoint(
    directory: PathLike,
    step: int,
    tree: PyTree,
    *,
    metadata: Mapping[str, Any] | None = None,
    max_to_keep: int | None = 2,
) -> Path:
    """Saves `tree` (host copies of its arrays) as checkpoint `step` of `directory`, with JSON
    `metadata`, then deletes all but the latest `max_to_keep` checkpoints (`None`: keep all).

    The save is blocking and atomic, and records the sha256 of every array and of the metadata
    for `restore_checkpoint` to check. Returns the checkpoint's absolute path.
    """
    if max_to_keep is not None and max_to_keep < 1:
        raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}.")
    directory = _absolute(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = _json(metadata)
    if _CHECKSUMS in metadata:
        raise ValueError(f"Checkpoint metadata may not use the key {_CHECKSUMS!r}; it holds the "
                         "checkpoint's checksums.")
    arrays = _host_arrays(tree)
    with _checkpointer(directory, max_to_keep, writer=True) as ck:
        ck.save(
            int(step),
            arrays,
            force=True,
            overwrite=True,
            custom_metadata={**metadata, _CHECKSUMS: _checksums(arrays, metadata)},
        )
        ck.wait()
    return directory / str(int(step))


def restore_checkpoint(
    directory: PathLike, skeleton: PyTree, *, step: int | None = None, verify: bool = True
) -> tuple[PyTree, int, dict[str, Any]]:
    """Restores checkpoint `step` (default: the latest) of `directory` into `skeleton`.

    Returns `(tree, step, metadata)`. Raises `FileNotFoundError` when there is none, and
    `CorruptCheckpointError` when it cannot be read or (with `verify`) its arrays or metadata
    differ from the sha256 recorded when it was saved.
    """
    directory = _absolute(directory)
    step = _existing_step(directory, step)
    with _checkpointer(directory) as ck:
        recorded, metadata = _stored_metadata(ck, directory, step)
        try:
            tree = _restored(
                _readable(lambda abstract: ck.load(step, abstract), directory, step),
                _readable(lambda: ck.metadata(step).metadata, directory, step),
                skeleton,
                directory / str(step),
            )
        except _Mismatch as e:  # damage, if the checksums were taken over these very arrays
            if recorded is None or not _saved_as(skeleton, recorded):
                raise
            raise CorruptCheckpointError(
                directory, step, "Orbax's record of its arrays is damaged (it lacks or "
                f"misshapes arrays it was saved with: {'; '.join(e.problems[:3])} ...)") from e
    if verify and recorded is not None:
        bad = _mismatches(tree, metadata, recorded)
        if bad:
            raise CorruptCheckpointError(
                directory, step,
                f"the sha256 of {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} differs "
                "from the one recorded when it was saved (its files changed since: a disk or "
                "copy error, or an edit)")
    return tree, step, metadata


def checkpoint_metadata(directory: PathLike, *, step: int | None = None) -> tuple[int, dict]:
    """`(step, metadata)` of checkpoint `step` (default: the latest), reading no arrays.
    Raises `FileNotFoundError` when there is none."""
    directory = _absolute(directory)
    step = _existing_step(directory, step)
    with _checkpointer(directory) as ck:
        return step, _stored_metadata(ck, directory, step)[1]


def _stored_metadata(ck: ocp.training.Checkpointer, directory: Path,
                     step: int) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """`(recorded checksums or None, the caller's metadata)` of checkpoint `step`."""
    metadata = dict(_readable(lambda: ck.metadata(step).custom_metadata, directory, step)() or {})
    recorded = metadata.pop(_CHECKSUMS, None)
    if recorded is None and not _valid_json(directory / str(step) / _ORBAX_METADATA):
        raise CorruptCheckpointError(directory, step, f"its {_ORBAX_METADATA} is not valid JSON")
    return recorded, metadata


def _valid_json(path: Path) -> bool:
    """False only for a file that exists and does not hold JSON."""
    try:
        json.loads(path.read_bytes())
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return True


def _existing_step(directory: Path, step: int | None) -> int:
    """`step` (default: the latest) if `directory` holds that complete checkpoint; else
    `FileNotFoundError` listing the steps there are."""
    steps = checkpoint_steps(directory)
    if not steps or (step is not None and step not in steps):
        want = "any checkpoint" if step is None else f"checkpoint {step}"
        raise FileNotFoundError(f"No {want} in {directory} (found steps {steps}).")
    return steps[-1] if step is None else step
