"""Finding, checking and loading OGBench dataset files.

`load_ogbench` looks for the official files first, then for generated ones in the cache, and
generates them if allowed. It always loads through `ogbench.make_env_and_datasets(...,
dataset_path=...)`, so single-task rewards and masks are OGBench's own and nothing is downloaded.
"""

import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from .._hashing import sha256_file
from ..dataset import Dataset
from ..envs import resolve_env_name
from ._files import read_provenance
from ._generate import dataset_spec, default_cache_dir, generate_ogbench
from ._oracles import SPECS

OFFICIAL_DIR = "~/.ogbench/data"
ACTION_CLIP = 1.0 - 1e-5


class DatasetFileError(ValueError):
    """A dataset file is corrupt, truncated or not in OGBench's format."""


# --------------------------------------------------------------------------- checking


def _required_keys(dataset_name: str) -> tuple[str, ...]:
    keys = ("observations", "actions", "terminals")
    if dataset_name.startswith(("visual-", "powderworld")):
        return keys
    keys += ("qpos",)
    if dataset_name.startswith(("scene", "puzzle")):
        keys += ("button_states",)
    return keys


def check_npz(path: Path, required: tuple[str, ...], *, full: bool = False) -> int:
    """Checks an OGBench `.npz` and returns its row count; `DatasetFileError` naming it if bad.

    The cheap check reads the zip directory, every array header and `terminals`; `full=True`
    also decompresses every array (CRC-checked).
    """

    def bad(why: str) -> DatasetFileError:
        return DatasetFileError(
            f"Dataset file {path} is corrupt or incomplete: {why}. Delete it (and its -val/"
            "train partner) and regenerate with `python -m fidec_zoo.data generate ...`, or "
            "replace it with the official file."
        )

    try:
        with zipfile.ZipFile(path) as zf:
            names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
            missing = [k for k in required if k not in names]
            if missing:
                raise bad(f"missing keys {missing} (has {sorted(names)})")
            rows = {}
            for k in names:
                with zf.open(f"{k}.npy") as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, _ = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _, _ = np.lib.format.read_array_header_2_0(member)
                rows[k] = shape[0] if shape else -1
            if len(set(rows.values())) != 1 or -1 in rows.values():
                raise bad(f"arrays have inconsistent row counts {rows}")
            n = rows["observations"]
            with zf.open("terminals.npy") as member:
                terminals = np.lib.format.read_array(member)
            if n == 0 or not terminals[-1]:
                raise bad(f"{n} rows and the last row is not an episode end")
            if full:
                for k in names:
                    with zf.open(f"{k}.npy") as member:
                        np.lib.format.read_array(member)
            return n
    except DatasetFileError:
        raise
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, KeyError, OSError) as e:
        raise bad(f"{type(e).__name__}: {e}") from e


def check_sha256(paths: tuple[Path, ...], provenance_path: Path) -> None:
    """Checks each file against the sha256 its provenance recorded when it was generated
    (streamed in 4 MiB blocks); `DatasetFileError` naming the first that differs. Files with no
    recorded sha256 (official ones) are not checked."""
    provenance = read_provenance(provenance_path)
    recorded = provenance.get("sha256") or {}
    for path in paths:
        expected = recorded.get(path.name)
        if expected is None:
            continue
        found = sha256_file(path)
        if found != expected:
            raise DatasetFileError(
                f"Dataset file {path} is not the file that was generated: its sha256 is "
                f"{found[:12]}..., {provenance_path.name} recorded {expected[:12]}... It changed "
                "since (a disk or copy error, or an edit). Regenerate it with `python -m "
                f"fidec_zoo.data generate {provenance.get('dataset', '<dataset>')} --episodes "
                f"{provenance.get('episodes', 'N')} --seed {provenance.get('seed', 0)} --out-dir "
                f"{path.parent} --overwrite`, or load it as it is with verify=False "
                "(recipes/offline.py: --data.verify False).")


def check_finite(path: Path, data: dict[str, np.ndarray]) -> None:
    """`DatasetFileError` naming `path` and the file row of the first non-finite value in
    `data`, what OGBench loaded from it (transitions: each episode's last row is an observation
    only, reached as the previous transition's next observation)."""
    episode = np.cumsum(data["terminals"]) - data["terminals"]  # of each transition
    found = []
    for key, name, offset in (("observations", "observations", 0),
                              ("next_observations", "observations", 1),
                              ("actions", "actions", 0), ("rewards", "rewards", 0),
                              ("masks", "masks", 0)):
        if key not in data:
            continue
        x = np.asarray(data[key]).reshape(len(data[key]), -1)
        bad = ~np.isfinite(x)
        if bad.any():
            i = int(np.argmax(bad.any(axis=1)))
            e = int(episode[i])
            found.append((i + e + offset, name, e, x[i][bad[i]][0]))
    if found:
        row, name, e, value = min(found, key=lambda f: f[0])
        raise DatasetFileError(
            f"{path}: {name} row {row} (episode {e}) holds a non-finite value ({value}), which "
            "would make every loss NaN. Regenerate the file, or repair that row.")


# --------------------------------------------------------------------------- finding


def _official_size(dataset_name: str) -> int | None:
    spec = SPECS.get(dataset_name)
    return None if spec is None else spec.default_episodes


def find_dataset(
    dataset_name: str,
    *,
    episodes: int | None,
    seed: int,
    dataset_dir: str | os.PathLike | None,
) -> tuple[Path | None, Path]:
    """Returns `(train file or None, directory where generated files go)`.

    Files in `dataset_dir` (default `~/.ogbench/data`; both `X.npz` and `X-val.npz`) win when
    `episodes` is None or matches them (the official size, or the `episodes`/`seed` of a
    generated pair's provenance); then the generated cache for `(episodes, seed)`.
    """
    official = Path(dataset_dir or OFFICIAL_DIR).expanduser()
    train = official / f"{dataset_name}.npz"
    if train.exists() and (official / f"{dataset_name}-val.npz").exists():
        prov = read_provenance(official / f"{dataset_name}.provenance.json")
        if prov.get("source") == "generated":  # generated files placed there by the user
            wanted = episodes is None or (prov.get("episodes"), prov.get("seed")) == (
                episodes,
                seed,
            )
        else:
            wanted = episodes is None or episodes == _official_size(dataset_name)
        if wanted:
            return train, official
    size = episodes if episodes is not None else (_official_size(dataset_name) or 1000)
    cache = default_cache_dir(dataset_name, size, seed)
    train = cache / f"{dataset_name}.npz"
    if train.exists() and (cache / f"{dataset_name}-val.npz").exists():
        return train, cache
    return None, cache


def dataset_provenance(
    env_name: str,
    *,
    episodes: int | None = None,
    seed: int = 0,
    dataset_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Provenance of the files `load_ogbench` would use (`{}` if there are none yet)."""
    _, dataset_name = resolve_env_name(env_name)
    train, _ = find_dataset(dataset_name, episodes=episodes, seed=seed, dataset_dir=dataset_dir)
    if train is None:
        return {}
    prov = read_provenance(train.with_name(f"{dataset_name}.provenance.json"))
    if not prov:
        prov = {"source": "official", "dataset": dataset_name}
    return {**prov, "path": str(train.resolve())}


# --------------------------------------------------------------------------- loading


def _to_dataset(d: dict[str, np.ndarray]) -> Dataset:
    terminals = d["terminals"].astype(np.float32)
    actions = np.clip(d["actions"].astype(np.float32), -ACTION_CLIP, ACTION_CLIP)
    # next action within the episode; the episode's last transition repeats its own action
    next_actions = np.concatenate([actions[1:], actions[-1:]])
    ends = terminals > 0
    next_actions[ends] = actions[ends]
    return Dataset.from_numpy(
        dict(
            observations=d["observations"],
            actions=actions,
            rewards=d["rewards"],
            masks=d["masks"],
            next_observations=d["next_observations"],
            next_actions=next_actions,
            terminals=terminals,
        )
    )


def load_ogbench(
    env_name: str,
    *,
    episodes: int | None = None,
    seed: int = 0,
    dataset_dir: str | os.PathLike | None = None,
    generate: bool = True,
    workers: int = 1,
    verify: bool = True,
) -> tuple[gymnasium.Env, Dataset, Dataset]:
    """Returns `(env, train, val)` for an OGBench single-task env name.

    Files are looked up in this order: official `X.npz` + `X-val.npz` in `dataset_dir` (default
    `~/.ogbench/data`; used when `episodes` is None or the official size), generated files in
    `default_cache_dir(X, episodes, seed)`, then (if `generate`) they are generated there.
    `episodes=None` means the official size (1000; 500 for pointmaze-giant). `workers` is
    passed to `generate_ogbench` when generating.

    With `verify` (default) generated files are checked against the sha256 their provenance
    recorded (`check_sha256`, ~1 GB/s: about 0.3 s per 1M rows, against ~10 s to load them);
    official files have none. A non-finite value is always refused, naming the file and row
    (`check_finite`). Raises `DatasetFileError` for a file that is damaged, changed or holds
    NaN/inf.
    """
    import ogbench  # heavy (MuJoCo and its environments): imported when a dataset is loaded

    try:
        _, dataset_name = resolve_env_name(env_name)
    except ValueError as e:
        raise ValueError(
            f"{e} Datasets that can be generated offline: {', '.join(SPECS)}."
        ) from None
    train, cache = find_dataset(dataset_name, episodes=episodes, seed=seed, dataset_dir=dataset_dir)
    if train is None:
        if dataset_name not in SPECS:
            dataset_spec(dataset_name)  # ValueError: needs experts, or lists the supported ones
        size = episodes if episodes is not None else SPECS[dataset_name].default_episodes
        if not generate:
            raise FileNotFoundError(
                f"No files for {dataset_name!r}: neither official ones in "
                f"{Path(dataset_dir or OFFICIAL_DIR).expanduser()} nor generated ones in {cache}. "
                f"Generate them with `python -m fidec_zoo.data generate {dataset_name} "
                f"--episodes {size} --seed {seed}` or call load_ogbench(..., generate=True)."
            )
        train = generate_ogbench(
            dataset_name, episodes=size, seed=seed, out_dir=cache, workers=workers
        )

    train = train.resolve()
    if str(train).count(".npz") != 1:
        raise ValueError(f"OGBench derives the val path by replacing '.npz'; rename {train}.")
    val = train.with_name(f"{dataset_name}-val.npz")
    required = _required_keys(dataset_name)
    for path in (train, val):
        check_npz(path, required)
    if verify:
        check_sha256((train, val), train.with_name(f"{dataset_name}.provenance.json"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env, train_d, val_d = ogbench.make_env_and_datasets(env_name, dataset_path=str(train))
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, KeyError, OSError) as e:
        for path in (train, val):
            check_npz(path, required, full=True)  # raises DatasetFileError naming the file
        raise DatasetFileError(f"Loading {train} / {val} failed: {e}") from e
    check_finite(train, train_d)
    check_finite(val, val_d)
    return env, _to_dataset(train_d), _to_dataset(val_d)
