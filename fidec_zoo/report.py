"""Run-directory reports: the learning-curve figure, the printed results table, and the
multi-seed summary of several run directories (`python -m fidec_zoo.report RUN_DIR...`).
`python -m fidec_zoo.report compare RUN_DIR...` compares arms with rliable
(`fidec_zoo.compare`)."""

import csv
import dataclasses
import datetime
import json
import os
import platform
import shutil
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from ._durable import atomic_path

__all__ = [
    "RunSummary",
    "SeedScore",
    "format_summaries",
    "format_table",
    "plot_learning_curve",
    "plot_summaries",
    "read_csv",
    "record_run",
    "summarize",
]

#: The file `record_run` writes beside the run's own files.
RECORD = "record.json"

_LOSS_KEYS = ("critic_loss", "bc_loss", "actor_loss", "q_loss", "penalty", "alpha", "value_loss")


def read_csv(path: Path) -> list[dict[str, float]]:
    """Rows of a numeric CSV written by `fit` (empty list if the file does not exist)."""
    if not path.exists():
        return []
    with path.open() as f:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        ]


def _record_files(run_dir: Path) -> list[Path]:
    """The results of a run dir, relative to it: its JSON and CSV files (config, summary,
    learning curves, logs of metrics and online episodes) at its top, in `seed_<i>/` of a
    `--seeds` run and in `online/` of a fine-tuned one; not its checkpoints, lock or figures."""
    found = []
    for folder in [run_dir, *sorted(run_dir.glob("seed_*")), run_dir / "online"]:
        found += [p for p in sorted(folder.glob("*")) if p.is_file() and
                  p.suffix in (".json", ".csv") and not p.name.startswith(".")]
    return [p.relative_to(run_dir) for p in found]


def record_run(run_dir: Path, dest: Path, about: Mapping[str, Any] | None = None) -> Path:
    """Copies the results of `run_dir` (its JSON and CSV files; no checkpoints: a few KB) to
    `dest`, with `dest/record.json` saying where they came from, when, on which machine, plus
    `about`; in one rename, so a record is whole or absent, and a record already at `dest` is
    replaced. What lasts of a run whose machine goes away: `report compare` and `report` read a
    record as they read the run dir. Returns `dest`."""
    run_dir, dest = Path(run_dir), Path(dest)
    if not any((d / "summary.json").is_file() for d in (run_dir, run_dir / "online")):
        raise FileNotFoundError(f"{run_dir} holds no finished run (no summary.json, nor "
                                "online/summary.json): record it once its job has finished.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name in _record_files(run_dir):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / name, tmp / name)
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        info = {"format": 1, "run_dir": str(run_dir), "recorded": now,
                "host": platform.node(), "cpus": os.cpu_count(), **(about or {})}
        (tmp / RECORD).write_text(json.dumps(info, indent=2) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def plot_learning_curve(run_dir: Path, *, title: str = "") -> Path:
    """Writes `learning_curve.png`: evaluation success and the main losses against steps."""
    metrics = read_csv(run_dir / "metrics.csv")
    evals = read_csv(run_dir / "eval.csv")
    keys = [k for k in _LOSS_KEYS if metrics and k in metrics[0]]
    fig, axes = _subplots(1, 1 + len(keys), figsize=(3.2 * (1 + len(keys)), 3.0))
    ax = axes[0, 0]
    if evals:
        ax.plot([r["step"] for r in evals], [r["success"] for r in evals], "o-")
    ax.set(title="success", xlabel="step", ylim=(-0.02, 1.02))
    for ax, key in zip(axes[0, 1:], keys):
        ax.plot([r["step"] for r in metrics], [r[key] for r in metrics])
        ax.set(title=key, xlabel="step")
        if key in ("alpha", "penalty") and all(r[key] > 0 for r in metrics):
            ax.set_yscale("log")
    fig.suptitle(title)
    return _save(fig, run_dir / "learning_curve.png")


def _subplots(rows: int = 1, columns: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    """`plt.subplots(rows, columns, squeeze=False, **kwargs)` on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, columns, squeeze=False, **kwargs)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    """Lays out the matplotlib figure `fig`, saves it to `path` in one rename (never a
    half-written image) and closes it; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table (what the main job prints at the end)."""
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


# ---- multi-seed summaries ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SeedScore:
    """One training seed's score: its success averaged over its last evaluations."""

    seed: int
    success: float
    steps: tuple[int, ...]  # the evaluations averaged
    csv_dir: Path  # where its eval.csv is


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """The seeds of one configuration (same recipe, hyperparameters, env and data; the seed and
    the run length aside) whose averaged evaluations fall at the same steps."""

    label: str
    config: dict[str, Any]  # the run's identity without its seed
    scores: tuple[SeedScore, ...]

    @property
    def steps(self) -> tuple[int, ...]:
        return self.scores[0].steps

    @property
    def mean(self) -> float:
        return float(np.mean([s.success for s in self.scores]))

    @property
    def std(self) -> float:
        """Standard deviation over seeds (numpy's default, ddof=0; 0 for one seed)."""
        return float(np.std([s.success for s in self.scores]))


def summarize(run_dirs: Sequence[str | os.PathLike], *, last: int = 3) -> list[RunSummary]:
    """Scores the seeds of `recipes/offline.py` run directories and groups them by configuration.

    Each seed's score is the mean success of its `last` evaluations in `eval.csv`; FiDec's
    published summarizers report the mean over seeds of this with `last=3` (the evaluations at
    800k, 900k and 1M steps). A run trained with `--seeds N` counts as N seeds.

    Seeds are grouped when their runs' identities (`config.json`) match apart from the seed and
    their averaged evaluations fall at the same steps, so runs of different lengths are never
    mixed; the same seed twice in a group is a `ValueError`. A directory with no `config.json`
    of its own stands for the run directories below it. Of those, a seed with fewer
    than `last` evaluations (a run still in progress) is left out with a warning; a run
    directory named directly raises `ValueError` instead.
    """
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}.")
    groups: dict[str, list[SeedScore]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for run_dir, named in _expand(run_dirs):
        config = json.loads((run_dir / "config.json").read_text())
        identity = {k: v for k, v in config["identity"].items() if k not in ("seed", "seeds")}
        seeds = config.get("seeds", 1)
        csv_dirs = [run_dir] if seeds == 1 else [run_dir / f"seed_{i}" for i in range(seeds)]
        for i, csv_dir in enumerate(csv_dirs):
            try:
                score = _seed_score(csv_dir, config["identity"]["seed"] + i, last)
            except ValueError as e:
                if named:
                    raise
                warnings.warn(f"left out: {e}", stacklevel=2)
                continue
            key = json.dumps([identity, score.steps], sort_keys=True)
            twin = next((s for s in groups.get(key, []) if s.seed == score.seed), None)
            if twin is not None:
                raise ValueError(
                    f"Seed {score.seed} of one configuration is in both {twin.csv_dir} and "
                    f"{csv_dir}; a seed counts once, so pass only one of them."
                )
            groups.setdefault(key, []).append(score)
            configs[key] = identity
    summaries = [
        RunSummary(_label(configs[k], configs.values()), configs[k],
                   tuple(sorted(scores, key=lambda s: s.seed)))
        for k, scores in groups.items()
    ]
    return sorted(summaries, key=lambda r: (r.label, r.steps))


def format_summaries(summaries: Sequence[RunSummary]) -> str:
    """The table `python -m fidec_zoo.report` prints: one row per configuration."""
    rows = [
        {
            "configuration": r.label,
            "seeds": ", ".join(str(s.seed) for s in r.scores),
            "success (mean ± std over seeds)": f"{r.mean:.3f} ± {r.std:.3f}",
            "per seed": ", ".join(f"{s.success:.3f}" for s in r.scores),
            "evaluations averaged (steps)": ", ".join(f"{t:,}" for t in r.steps),
        }
        for r in summaries
    ]
    return format_table(rows, list(rows[0]) if rows else ["configuration"])


def plot_summaries(summaries: Sequence[RunSummary], path: str | os.PathLike) -> Path:
    """Writes a figure of success against steps, one line per configuration: the mean over its
    seeds, with a band of ± one std, at the steps every seed has evaluated."""
    fig, axes = _subplots(figsize=(6.4, 4.0))
    ax = axes[0, 0]
    for r in summaries:
        curves = [{row["step"]: row["success"] for row in read_csv(s.csv_dir / "eval.csv")}
                  for s in r.scores]
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        values = np.array([[c[t] for t in steps] for c in curves])
        mean, std = values.mean(axis=0), values.std(axis=0)
        label = f"{r.label} ({len(r.scores)} seed{'s' if len(r.scores) > 1 else ''})"
        ax.plot(steps, mean, label=label)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="step", ylabel="success (mean ± std over seeds)", ylim=(-0.02, 1.02))
    ax.legend(fontsize="small")
    return _save(fig, path)


def _expand(run_dirs: Sequence[str | os.PathLike]) -> list[tuple[Path, bool]]:
    """`(run_dir, named)` pairs: `named` is False for a run found inside a given directory. A
    directory without a `config.json` stands for every run directory below it, at any depth (a
    sweep root holds `<arm>/<task>/s<seed>`); nothing inside a run directory is searched."""
    found: list[tuple[Path, bool]] = []
    for given in map(Path, run_dirs):
        if (given / "config.json").is_file():
            found.append((given, True))
            continue
        inner = []
        for parent, dirs, files in os.walk(given):
            if "config.json" in files:
                inner.append(Path(parent))
                dirs.clear()
            dirs.sort()
        if not inner:
            raise FileNotFoundError(
                f"{given} is not a run directory of recipes/offline.py (no config.json) and "
                "holds none."
            )
        found.extend((d, False) for d in sorted(inner))
    return found


def _seed_score(csv_dir: Path, seed: int, last: int) -> SeedScore:
    rows = read_csv(csv_dir / "eval.csv")
    if len(rows) < last:
        raise ValueError(
            f"{csv_dir / 'eval.csv'} has {len(rows)} evaluation(s), fewer than last={last}: "
            "train the run further, or average fewer (--last)."
        )
    tail = rows[-last:]
    return SeedScore(
        seed=seed,
        success=float(np.mean([r["success"] for r in tail])),
        steps=tuple(int(r["step"]) for r in tail),
        csv_dir=csv_dir,
    )


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """`{"agent": {"metric": {"t": 0.8}}}` -> `{"agent.metric.t": 0.8}` (lists kept whole)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def _describe(identity: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The words naming a run's configuration (recipe, env, a swapped metric) and its other
    settings, flat: `hidden`, `metric.t`, `optimiser.lr`, `data.seed`, ... Run dirs written
    before typed configs stored `recipe.params` and `data_seed`."""
    if isinstance(identity.get("recipe"), dict):
        recipe = identity["recipe"]
        objects = [f"{k}={v}" for k, v in sorted(recipe.get("objects", {}).items())]
        settings = {**recipe["params"], "data_seed": identity.get("data_seed")}
        return [recipe["name"], recipe["env_name"], *objects], settings
    words = [identity["recipe"], identity["env"]]
    if identity.get("metric"):
        words.append(f"metric={identity['metric']}")
    rest = {k: v for k, v in identity.items()
            if k not in ("recipe", "env", "metric", "seed", "seeds")}
    settings = {}
    for path, value in _flat(rest).items():
        head, _, tail = path.partition(".")
        settings[tail if head in ("agent", "train") and tail else path] = value
    return words, settings


def _label(identity: dict[str, Any], all_identities: Any) -> str:
    """`recipe env`, a swapped metric (`metric=l2`), and the settings in which it differs from
    another configuration of the same recipe and env (e.g. `hidden=[256, 256, 256, 256]`)."""
    words, settings = _describe(identity)
    differs: set[str] = set()
    for other in all_identities:
        other_words, other_settings = _describe(other)
        if other_words == words:
            differs |= {k for k in settings.keys() | other_settings.keys()
                        if other_settings.get(k) != settings.get(k)}
    return " ".join([*words, *(f"{k}={settings.get(k)}" for k in sorted(differs))])


@dataclasses.dataclass(frozen=True)
class SummaryArgs:
    """Mean and std over seeds of the last evaluations of recipes/offline.py run directories,
    grouped by configuration. See also `python -m fidec_zoo.report compare --help` (arms
    compared with rliable: IQM, bootstrap CIs, probability of improvement) and the record
    subcommand, `python -m fidec_zoo.report record --help` (a finished run's results kept for
    the repository)."""

    run_dirs: Annotated[tuple[str, ...], tyro.conf.Positional,
                        tyro.conf.arg(metavar="RUN_DIR ...")]
    """Run directories, or directories of them."""
    plot: Annotated[Path | None, tyro.conf.arg(metavar="FILE.png")] = None
    """Also write success against steps, mean ± std over seeds."""
    last: int = 3
    """Evaluations averaged per seed (FiDec's summarizers: 3, at 800k/900k/1M)."""


@dataclasses.dataclass(frozen=True)
class RecordArgs:
    """Copy the results of a finished run dir (its JSON and CSV files, no checkpoints) to DEST,
    with DEST/record.json saying where and when it ran: a few KB to commit, which the report
    and its compare subcommand read as a run dir once the machine and its runs/ are gone."""

    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """A finished run dir."""
    dest: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DEST")]
    """Where the record goes (replaced if present)."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:
        from . import compare

        return compare.main(argv[1:])
    if argv[:1] == ["record"]:
        return _record_main(argv[1:])
    args = tyro.cli(SummaryArgs, args=argv, prog="python -m fidec_zoo.report")
    if not args.run_dirs:
        print("error: give the run directories to summarise (RUN_DIR ...).", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings(record=True) as left_out:  # printed as plain lines below
            warnings.simplefilter("always")
            summaries = summarize(args.run_dirs, last=args.last)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for w in left_out:
        print(w.message, file=sys.stderr)
    if not summaries:
        print(f"error: no run has {args.last} evaluations yet.", file=sys.stderr)
        return 1
    print(format_summaries(summaries))
    if args.plot is not None:
        print(f"wrote {plot_summaries(summaries, args.plot)}")
    return 0


def _record_main(argv: Sequence[str]) -> int:
    args = tyro.cli(RecordArgs, args=argv, prog="python -m fidec_zoo.report record")
    try:
        print(f"recorded {args.run_dir} in {record_run(args.run_dir, args.dest)}")
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
