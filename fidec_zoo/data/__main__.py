"""Command line: `python -m fidec_zoo.data {generate,info,list} ...`.

python -m fidec_zoo.data generate cube-single-play-v0 --episodes 1000
python -m fidec_zoo.data info ~/.cache/fidec_zoo/datasets/cube-single-play-v0-e1000-s0
python -m fidec_zoo.data list
"""

import dataclasses
import json
import sys
import zipfile
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

from .._cpus import available_cpus
from .._pipes import reader_gone
from ._files import read_provenance
from ._generate import (
    EXPERT_ONLY_FAMILIES,
    SPECS,
    SUPPORTED_DATASETS,
    generate_ogbench,
)


def _info(path: Path) -> int:
    if not path.exists():
        print(f"error: {path} does not exist; `python -m fidec_zoo.data generate` writes "
              "datasets to $FIDEC_ZOO_DATA or ~/.cache/fidec_zoo/datasets.", file=sys.stderr)
        return 1
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files:
        print(f"no .npz files in {path}", file=sys.stderr)
        return 1
    for f in files:
        print(f"{f}  ({f.stat().st_size / 2**20:.1f} MiB)")
        try:
            with np.load(f) as z:
                for k in z.files:
                    a = z[k]
                    print(f"  {k:15s} {a.dtype!s:8s} {a.shape}")
                    if k == "terminals":
                        print(f"  {'episodes':15s} {int(a.sum())}")
        except BrokenPipeError:
            raise
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
            print(f"  CORRUPT: {type(e).__name__}: {e}")
        name = f.name[: -len("-val.npz")] if f.name.endswith("-val.npz") else f.stem
        prov = read_provenance(f.with_name(f"{name}.provenance.json"))
        if prov and not f.name.endswith("-val.npz"):
            show = {
                k: prov[k]
                for k in (
                    "source",
                    "episodes",
                    "val_episodes",
                    "seed",
                    "created",
                    "wall_time_seconds",
                    "sanity",
                    "versions",
                )
                if k in prov
            }
            print("  provenance: " + json.dumps(show, indent=2).replace("\n", "\n  "))
    return 0


@dataclasses.dataclass(frozen=True)
class Generate:
    """Regenerate an OGBench dataset offline."""

    dataset: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="DATASET")]
    """E.g. cube-single-play-v0 (see the list subcommand)."""
    episodes: int | None = None
    """Train episodes (None: the official size, 1000; 500 for giant)."""
    seed: int = 0
    """Generation seed: episode k is seeded by (seed, k)."""
    workers: int = available_cpus()
    """Processes to shard episodes over (default: all CPUs)."""
    out_dir: str | None = None
    """None: $FIDEC_ZOO_DATA or ~/.cache/fidec_zoo/datasets, in DATASET-eEPISODES-sSEED/."""
    overwrite: bool = False
    """Regenerate even if complete."""


@dataclasses.dataclass(frozen=True)
class Info:
    """Show keys, dtypes, shapes and provenance."""

    path: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="PATH")]
    """An .npz file or a dataset directory."""


@dataclasses.dataclass(frozen=True)
class ListDatasets:
    """List the datasets that can be generated."""


Command = (Annotated[Generate, tyro.conf.subcommand("generate")]
           | Annotated[Info, tyro.conf.subcommand("info")]
           | Annotated[ListDatasets, tyro.conf.subcommand("list")])


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Command, args=argv, prog="python -m fidec_zoo.data",
                    description=__doc__.split("\n\n")[0])

    if isinstance(args, ListDatasets):
        for name in SUPPORTED_DATASETS:
            print(
                f"{name:32s} {SPECS[name].default_episodes} episodes x "
                f"{SPECS[name].max_episode_steps} steps"
            )
        print(
            "official files only (need OGBench's experts): "
            + ", ".join(f"{f}-*" for f in EXPERT_ONLY_FAMILIES)
        )
        return 0
    if isinstance(args, Info):
        try:
            return _info(args.path.expanduser())
        except BrokenPipeError:  # `info | head` stopped reading
            return reader_gone()
    try:
        episodes = args.episodes
        if episodes is None:
            episodes = SPECS[args.dataset].default_episodes if args.dataset in SPECS else 1000
        path = generate_ogbench(
            args.dataset,
            episodes=episodes,
            seed=args.seed,
            out_dir=args.out_dir,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=None,  # a bar on a terminal, else a line every 30 s
        )
    except (ValueError, OSError) as e:  # DatasetFileError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    prov = read_provenance(path.with_name(f"{args.dataset}.provenance.json"))
    print(f"wrote {path} and {path.with_name(args.dataset + '-val.npz')}")
    print(
        json.dumps(
            {
                k: prov.get(k)
                for k in ("rows", "wall_time_seconds", "env_steps_per_second", "sanity")
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
