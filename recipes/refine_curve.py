"""Test-time refinement over a range of budgets: a run's behaviour flow moved by its own critic's
closed-form natural-gradient step (`fidec_zoo.refinement`, the FiDec paper's eq. 54), against
the run's trained policy and its behaviour flow alone.

    python recipes/refine_curve.py RUN_DIR [--compare OTHER_RUN_DIR ...]
        [--budgets 1e-4 3e-4 1e-3 3e-3 1e-2] [--metrics fisher l2] [--steps 1]
        [--episodes 200] [--seed 0] [--workers N] [--out DIR]

RUN_DIR is a `recipes/offline.py` run of an agent with a behaviour flow and a critic (DeFlow,
FiDec, FQL, IFQL; `--step`/`--run-seed` choose its checkpoint and seed). Every policy is evaluated
on the same `--episodes` episodes (evaluation seed `--seed`): the behaviour flow, the trained
policy, the trained policies of the `--compare` runs (e.g. a DeFlow run next to a FiDec run), and
the refinement with each metric at each budget. Writes, in `--out` (default
`RUN_DIR/refine_curve`): `refine_curve.md` (the table, with the command that made it),
`refine_curve.png` (success against budget, the fixed policies as horizontal lines) and
`refine_curve.json` (every number).
"""

import dataclasses
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import tyro

from fidec_zoo import envs, zoo
from fidec_zoo.envs import default_eval_workers
from fidec_zoo.policies import AbstractPolicy
from fidec_zoo.refinement import METRICS, natural_gradient_policy, refinement_metric

DEFAULT_BUDGETS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)

MetricName = Literal[tuple(METRICS)]


@dataclasses.dataclass(frozen=True)
class Args:
    """What to refine, at which budgets, and how to evaluate it."""

    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """The run whose flow and critic are refined."""
    compare: tuple[Path, ...] = ()
    """Other runs of the same task whose trained policies are evaluated too."""
    budgets: tuple[float, ...] = DEFAULT_BUDGETS
    """Budgets `d^T G d / action_dim` of the refinement step (evaluated in increasing order)."""
    metrics: tuple[MetricName, ...] = tuple(METRICS)
    """Metrics `G` of the refinement step."""
    steps: int = 1
    """Linearisations of the critic."""
    episodes: int = 200
    """Evaluation episodes per policy."""
    seed: int = 0
    """Evaluation seed."""
    step: int | None = None
    """RUN_DIR's checkpoint (default: its last)."""
    run_seed: int | None = None
    """RUN_DIR's seed (a `--seeds N` run)."""
    workers: int = default_eval_workers()
    """Evaluation worker processes."""
    out: Path | None = None
    """Output directory (default: RUN_DIR/refine_curve)."""


@dataclasses.dataclass(frozen=True)
class Point:
    """One evaluated policy: `metric` and `budget` are set for a refinement, `None` otherwise."""

    policy: str
    success: float
    success_ci95: float
    episodes: int
    metric: str | None = None
    budget: float | None = None


def _evaluate(policy: AbstractPolicy, env_name: str, args: Args, label: str,
              **refinement) -> Point:
    res = envs.evaluate(policy, env_name, episodes=args.episodes, seed=args.seed,
                        workers=args.workers)
    point = Point(label, res.success, res.success_ci95, len(res.episodes), **refinement)
    print(f"{label:<40} {100 * point.success:5.1f}% ± {100 * point.success_ci95:.1f}",
          flush=True)
    return point


def curve(args: Args) -> tuple[zoo.TrainedRun, list[Point]]:
    """Evaluates the fixed policies, then every (metric, budget) refinement of RUN_DIR."""
    run = zoo.load_run(args.run_dir, step=args.step, seed=args.run_seed)
    refined = {(metric, budget): natural_gradient_policy(run.agent, refinement_metric(metric),
                                                         budget, args.steps)
               for metric in args.metrics for budget in args.budgets}  # refuses an agent
    flow = next(iter(refined.values())).base                      # without flow and critic
    points = [_evaluate(flow, run.env_name, args, "behaviour flow"),
              _evaluate(run.policy, run.env_name, args, f"trained {run.recipe.name}")]
    for other_dir in args.compare:
        other = zoo.load_run(other_dir)
        if other.env_name != run.env_name:
            raise ValueError(f"{other.run_dir} trained on {other.env_name}, not {run.env_name}.")
        points.append(_evaluate(other.policy, run.env_name, args,
                                f"trained {other.recipe.name} ({other.run_dir.name})"))
    for (metric, budget), policy in refined.items():
        points.append(_evaluate(policy, run.env_name, args,
                                f"natural ({metric}), budget {budget:g}", metric=metric,
                                budget=budget))
    return run, points


def markdown(run: zoo.TrainedRun, points: Sequence[Point], args: Args,
             command: str) -> str:
    """The table of `points`, headed by what was evaluated and the command that did it."""
    lines = [
        f"Test-time natural-gradient refinement of {run.run_dir.name} (step {run.step}, "
        f"training seed {run.seed}) on {run.env_name}: {args.episodes} episodes per policy, "
        f"evaluation seed {args.seed}, {args.steps} linearisation(s) of the critic. Made by "
        f"`{command}`.",
        "",
        "| policy | metric | budget | success (± 95% CI) |",
        "|---|---|---|---|",
    ]
    for p in points:
        lines.append(f"| {p.policy} | {p.metric or '–'} | "
                     f"{'–' if p.budget is None else f'{p.budget:g}'} | "
                     f"{100 * p.success:.1f}% ± {100 * p.success_ci95:.1f} |")
    return "\n".join(lines) + "\n"


def plot(points: Sequence[Point], title: str, path: Path) -> None:
    """Success against budget (log scale) per metric, with 95% bands; the fixed policies as
    horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for metric in dict.fromkeys(p.metric for p in points if p.metric is not None):
        mine = [p for p in points if p.metric == metric]
        x = [p.budget for p in mine]
        y = [100 * p.success for p in mine]
        ci = [100 * p.success_ci95 for p in mine]
        ax.plot(x, y, marker="o", label=f"natural gradient ({metric})")
        ax.fill_between(x, [a - c for a, c in zip(y, ci, strict=True)],
                        [a + c for a, c in zip(y, ci, strict=True)], alpha=0.2)
    for i, p in enumerate(p for p in points if p.metric is None):
        ax.axhline(100 * p.success, color=f"C{i + len(METRICS)}", linestyle="--", label=p.policy)
    ax.set(xscale="log", xlabel="budget  d^T G d / action_dim", ylabel="success (%)",
           title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = tyro.cli(Args, args=argv, prog="recipes/refine_curve.py",
                    description=__doc__.splitlines()[0])
    if not args.budgets or not args.metrics:
        print("recipes/refine_curve.py: error: give at least one value to --budgets and to "
              "--metrics.", file=sys.stderr)
        return 2
    args = dataclasses.replace(args, budgets=tuple(sorted(args.budgets)))
    run, points = curve(args)
    out = args.out or run.run_dir / "refine_curve"
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "recipes/refine_curve.py", *argv])
    (out / "refine_curve.md").write_text(markdown(run, points, args, command))
    (out / "refine_curve.json").write_text(json.dumps(
        {"run_dir": str(run.run_dir), "step": run.step, "seed": run.seed,
         "env": run.env_name, "episodes": args.episodes, "eval_seed": args.seed,
         "steps": args.steps, "command": command,
         "points": [dataclasses.asdict(p) for p in points]}, indent=2) + "\n")
    plot(points, f"{run.run_dir.name} (step {run.step}), {args.episodes} episodes",
         out / "refine_curve.png")
    print(f"wrote {out}/refine_curve.md, .png and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
