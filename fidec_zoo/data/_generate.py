"""Offline regeneration of OGBench play/navigate datasets with OGBench's own scripted oracles.

The recipe follows `reference/ogbench_offline_data.md` (OGBench's `generate_manipspace.py` and
`generate_locomaze.py`): `data_collection` envs that never stop at a goal, `PlanOracle`s with
noise 0.1 / smoothing 0.5 / segment 0.4 s, per-family `p_stack`, the scene health check, and a
train file of `episodes` episodes plus a `-val` file. Unlike the official script every episode is
seeded from `(seed, episode index, attempt)`, so the output is reproducible and does not depend
on how episodes are sharded over worker processes.
"""

import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import shutil
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .._durable import FileLock
from ._files import read_provenance, write_dataset
from ._oracles import SPECS, DatasetSpec, collect_episodes, oracle_recipe, summarise

EXPERT_ONLY_FAMILIES = ("antmaze", "humanoidmaze", "antsoccer")
SUPPORTED_DATASETS: tuple[str, ...] = tuple(SPECS)


def _place_official(name: str) -> str:
    return (
        f"Place the official '{name}.npz' and '{name}-val.npz' in the OGBench dataset directory "
        "(~/.ogbench/data, or pass dataset_dir=) and they load like any other dataset."
    )


def expert_only_message(name: str) -> str:
    return (
        f"{name!r} cannot be generated offline: OGBench produced it with pretrained SAC experts "
        f"(experts.tar.gz, not in the pip package). {_place_official(name)}"
    )


def dataset_spec(dataset_name: str) -> DatasetSpec:
    """The generation spec of `dataset_name`; `ValueError` naming the supported ones otherwise."""
    if dataset_name in SPECS:
        return SPECS[dataset_name]
    if dataset_name.split("-")[0] in EXPERT_ONLY_FAMILIES:
        raise ValueError(expert_only_message(dataset_name))
    raise ValueError(
        f"fidec_zoo has no offline generator for {dataset_name!r}. Supported: "
        f"{', '.join(SUPPORTED_DATASETS)}. {_place_official(dataset_name)}"
    )


def val_episodes_for(episodes: int) -> int:
    """Size of the `-val` split: `episodes // 10` as OGBench, but at least one episode."""
    return max(1, episodes // 10)


def default_cache_dir(dataset_name: str, episodes: int, seed: int) -> Path:
    """`$FIDEC_ZOO_DATA/<name>-e<episodes>-s<seed>`; the root defaults to
    `~/.cache/fidec_zoo/datasets`."""
    root = os.environ.get("FIDEC_ZOO_DATA") or "~/.cache/fidec_zoo/datasets"
    return Path(root).expanduser() / f"{dataset_name}-e{episodes}-s{seed}"


#: Episodes per resumable block: each finished block is saved, so an interrupted generation
#: loses at most one block per worker and a rerun continues where it stopped.
BLOCK_EPISODES = 20


def _part_path(parts: Path, block: list[int]) -> Path:
    return parts / f"episodes-{block[0]:06d}-{block[-1]:06d}.npz"


def _save_part(parts: Path, block: list[int], result: tuple[dict[str, np.ndarray], list]) -> None:
    """Writes one finished block atomically (uncompressed; merged and deleted at the end)."""
    arrays, stats = result
    path = _part_path(parts, block)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays, __stats__=np.array(json.dumps(stats)))
    os.replace(tmp, path)


def _load_part(parts: Path, block: list[int]) -> tuple[dict[str, np.ndarray], list] | None:
    path = _part_path(parts, block)
    if not path.exists():
        return None
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files if k != "__stats__"}
            return arrays, json.loads(str(f["__stats__"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        path.unlink(missing_ok=True)  # a damaged part is regenerated
        return None


def _exit_with_parent() -> None:
    """Makes this pool worker exit as soon as the process that spawned it is gone. Killed
    (`kill -9`, the OOM killer), a parent leaves its workers blocked forever on queues they
    hold both ends of, each with its OGBench and MuJoCo (~0.8 GB). A thread waits on the
    parent's sentinel, a pipe the kernel closes when the parent dies."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="fidec_zoo-exit-with-parent", daemon=True).start()


class _Progress:
    """Generation progress: a tqdm bar on a terminal; without one (and `progress` None) a
    line at most every `every` seconds and at the end, so that a log file shows how far a
    generation of many minutes has come."""

    def __init__(self, total: int, desc: str, progress: bool | None, every: float = 30.0):
        self.bar = tqdm(total=total, desc=desc, unit="ep",
                        disable=None if progress is None else not progress)
        self.plain = self.bar.disable and progress is None
        self.desc, self.total, self.every = desc, total, every
        self.done = self.reused = 0
        self.t0 = self.t_line = time.perf_counter()

    def reuse(self, n: int) -> None:
        """Counts `n` episodes found finished by an earlier, interrupted generation."""
        self.bar.update(n)
        self.done += n
        self.reused += n

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.done += n
        now = time.perf_counter()
        if self.plain and n and (now - self.t_line >= self.every or self.done == self.total):
            rate = (self.done - self.reused) / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / rate if rate else float("inf")
            print(f"[{self.desc}] {self.done}/{self.total} episodes "
                  f"({rate:.2f} ep/s, about {left / 60:.0f} min left)", flush=True)
            self.t_line = now

    def close(self) -> None:
        self.bar.close()


def _collect(
    dataset_name: str, seed: int, total: int, workers: int, bar: _Progress, parts: Path
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """All episodes in order, reusing the finished blocks found in `parts`."""
    parts.mkdir(parents=True, exist_ok=True)
    blocks = [list(range(i, min(i + BLOCK_EPISODES, total))) for i in range(0, total,
                                                                        BLOCK_EPISODES)]
    results: list[Any] = [_load_part(parts, b) for b in blocks]
    bar.reuse(sum(len(b) for b, r in zip(blocks, results) if r is not None))
    todo = [j for j, r in enumerate(results) if r is None]
    if workers == 1:
        for j in todo:
            results[j] = collect_episodes(dataset_name, seed, blocks[j], lambda n: bar.update(1))
            _save_part(parts, blocks[j], results[j])
    elif todo:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                                    initializer=_exit_with_parent) as pool:
            futures = {pool.submit(collect_episodes, dataset_name, seed, blocks[j]): j
                       for j in todo}
            for fut in concurrent.futures.as_completed(futures):
                j = futures[fut]
                results[j] = fut.result()
                _save_part(parts, blocks[j], results[j])
                bar.update(len(blocks[j]))
    merged = {k: np.concatenate([r[0][k] for r in results]) for k in results[0][0]}
    return merged, [s for r in results for s in r[1]]


@contextlib.contextmanager
def _generating_into(out: Path, dataset_name: str) -> Iterator[None]:
    """Holds the lock of `out` for generating `dataset_name` into it (another process
    generating there is waited for, naming it; a killed one's lock is taken over). An
    unwritable `out` is an `OSError` that says where to point instead."""
    lock = FileLock(out / f"{dataset_name}.lock", wait=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as e:
        raise type(e)(f"cannot write the dataset directory {out} ({e.strerror}): point "
                      "$FIDEC_ZOO_DATA (or out_dir=) at a writable directory, or place the "
                      "files there first.") from e
    try:
        yield
    finally:
        lock.release()


def generate_ogbench(
    dataset_name: str,
    *,
    episodes: int,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Regenerates an OGBench dataset offline and returns the path of its train `.npz`.

    Writes `<name>.npz` (`episodes` episodes), `<name>-val.npz` (`max(1, episodes // 10)`
    episodes) and `<name>.provenance.json` into `out_dir` (default `default_cache_dir`). Files
    are written under temporary names and renamed at the end, the train file last, so an
    interrupted run never leaves a pair that looks complete; finished blocks of
    `BLOCK_EPISODES` episodes are kept in a hidden `.parts` directory meanwhile, so rerunning an
    interrupted generation continues where it stopped. A complete pair with the same
    `episodes` and `seed` is reused unless `overwrite`. `workers > 1` shards episodes over
    spawned processes, which exit if this process is killed; the output is identical for any
    `workers`. Another process generating `dataset_name` into `out_dir` is waited for (named
    on stderr); an unwritable `out_dir` raises `OSError` saying what to do. `progress`: `None`
    shows a bar on a terminal and otherwise prints a progress line every 30 s.
    """
    spec = dataset_spec(dataset_name)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}.")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    out = default_cache_dir(dataset_name, episodes, seed) if out_dir is None else Path(out_dir)
    out = out.expanduser()
    train_path = out / f"{dataset_name}.npz"
    val_path = out / f"{dataset_name}-val.npz"
    prov_path = out / f"{dataset_name}.provenance.json"
    val_episodes = val_episodes_for(episodes)

    with _generating_into(out, dataset_name):
        prov = read_provenance(prov_path)
        if (
            not overwrite
            and train_path.exists()
            and val_path.exists()
            and prov.get("source") == "generated"
            and (prov.get("episodes"), prov.get("seed")) == (episodes, seed)
        ):
            return train_path

        start, created = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        total = episodes + val_episodes
        bar = _Progress(total, f"generate {dataset_name}", progress)
        try:
            parts = out / f".{dataset_name}-s{seed}-n{total}.parts"
            data, stats = _collect(dataset_name, seed, total, min(workers, total), bar, parts)
        finally:
            bar.close()
        split = episodes * spec.max_episode_steps
        train = {k: v[:split] for k, v in data.items()}
        val = {k: v[split:] for k, v in data.items()}
        gen_time = time.perf_counter() - start

        provenance = {
            "source": "generated",
            "dataset": dataset_name,
            "env_id": spec.env_id,
            "episodes": episodes,
            "val_episodes": val_episodes,
            "seed": seed,
            "max_episode_steps": spec.max_episode_steps,
            "rows": {"train": len(train["terminals"]), "val": len(val["terminals"])},
            "transitions": {
                "train": len(train["terminals"]) - episodes,
                "val": len(val["terminals"]) - val_episodes,
            },
            "recipe": oracle_recipe(spec),
            "sanity": {"train+val": summarise(stats)},
            "workers": workers,
            "generation_seconds": round(gen_time, 2),
            "env_steps_per_second": round(total * spec.max_episode_steps / gen_time, 1),
            "created": created,
        }
        write_dataset(out, dataset_name, train, val, provenance, start)
        shutil.rmtree(parts, ignore_errors=True)
    return train_path
