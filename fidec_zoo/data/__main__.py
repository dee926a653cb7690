"""Command line: `python -m fidec_zoo.data {generate,info,list} ...`.

python -m fidec_zoo.data generate cube-single-play-v0 --episodes 1000
python -m fidec_zoo.data info ~/.cache/fidec_zoo/datasets/cube-single-play-v0-e1000-s0
python -m fidec_zoo.data list
"""

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from .._cpus import available_cpus
from ._files import read_provenance
from ._generate import (
    EXPERT_ONLY_FAMILIES,
    SPECS,
    SUPPORTED_DATASETS,
    generate_ogbench,
)


def _info(path: Path) -> int:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fidec_zoo.data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="regenerate an OGBench dataset offline")
    gen.add_argument("dataset", help="e.g. cube-single-play-v0 (see `list`)")
    gen.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="train episodes (default: the official size, 1000; 500 for giant)",
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--workers", type=int, default=available_cpus(),
                     help="processes to shard episodes over (default: all CPUs, %(default)s)")
    gen.add_argument(
        "--out-dir",
        default=None,
        help="default: $FIDEC_ZOO_DATA or ~/.cache/fidec_zoo/datasets, "
        "in <dataset>-e<episodes>-s<seed>/",
    )
    gen.add_argument("--overwrite", action="store_true", help="regenerate even if complete")
    info = sub.add_parser("info", help="show keys, dtypes, shapes and provenance")
    info.add_argument("path", type=Path, help="an .npz file or a dataset directory")
    sub.add_parser("list", help="list the datasets that can be generated")
    args = parser.parse_args(argv)

    if args.command == "list":
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
    if args.command == "info":
        return _info(args.path.expanduser())
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
            progress=True,
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
