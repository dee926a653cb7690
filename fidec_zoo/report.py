"""Run-directory reports: the learning-curve figure and the printed results table."""

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["read_csv", "plot_learning_curve", "format_table"]

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


def plot_learning_curve(run_dir: Path, *, title: str = "") -> Path:
    """Writes `learning_curve.png`: evaluation success and the main losses against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = read_csv(run_dir / "metrics.csv")
    evals = read_csv(run_dir / "eval.csv")
    keys = [k for k in _LOSS_KEYS if metrics and k in metrics[0]]
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(3.2 * (1 + len(keys)), 3.0), squeeze=False)
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
    fig.tight_layout()
    path = run_dir / "learning_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table (what the main job prints at the end)."""
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)
