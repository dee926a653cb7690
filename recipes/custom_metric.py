"""Swap the metric: train FiDec's residual family with a metric you define.

A metric only decides how much a displacement `d` of the behaviour action costs:
`penalty = d^T G d / action_dim`, with `G` trace-normalised for you. This example uses a diagonal
Mahalanobis metric built from the dataset: `G = diag(1 / Var[a_i])`. Moving an action dimension
that the behaviour barely varies then costs more than moving one it varies a lot. Everything else
(the behaviour flow, the residual map, the critic and the Lagrangian budget) is FiDec's recipe,
unchanged.

    python recipes/custom_metric.py                       # small run on cube-single task2
    python recipes/custom_metric.py --steps 20000 --dataset-episodes 1000
"""

import dataclasses
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import tyro

from fidec_zoo import recipes
from fidec_zoo.data import load_ogbench
from fidec_zoo.envs import evaluate
from fidec_zoo.metrics import AbstractMatrixMetric
from fidec_zoo.train import fit


class DiagonalMahalanobis(AbstractMatrixMetric):
    """`G = diag(inverse_variance)`. It is the same at every state and action.

    A static field of plain floats, not an array: the metric is a constant of the recipe, so it
    is stored with the recipe's config (`fidec_zoo.configs.to_json`) and a run or zoo entry
    trained with it loads again wherever this module can be imported.
    """

    inverse_variance: tuple[float, ...] = eqx.field(static=True)

    def matrix(self, flow, obs, action, *, key):
        return jnp.diag(jnp.asarray(self.inverse_variance, action.dtype))


@dataclasses.dataclass(frozen=True)
class Args:
    """Train FiDec's residual family with a diagonal Mahalanobis metric, then evaluate it."""

    env: str = "cube-single-play-singletask-task2-v0"
    """OGBench single-task environment."""
    dataset_episodes: int = 100
    """Episodes of the generated training dataset (generated on first use, then cached)."""
    steps: int = 3000
    """Training steps."""
    eval_episodes: int = 20
    """Evaluation episodes of the trained policy."""
    hidden: tuple[int, ...] | None = None
    """Hidden widths of every network (default: the cpu preset's)."""
    run_dir: str = "runs/custom_metric"
    """Where the run's checkpoints and logs go."""


def main(argv: Sequence[str] | None = None) -> float:
    args = tyro.cli(Args, args=argv, prog="recipes/custom_metric.py",
                    description=__doc__.split("\n")[0])

    _, train, val = load_ogbench(args.env, episodes=args.dataset_episodes)
    variance = jnp.var(train.actions, axis=0) + 1e-6
    metric = DiagonalMahalanobis(tuple(float(v) for v in 1.0 / variance))
    sizes = {} if args.hidden is None else {"hidden": args.hidden}
    every = min(1000, args.steps)
    recipe = recipes.config("fidec", env_name=args.env, metric=metric, steps=args.steps,
                            chunk=every, log_every=every, **sizes)
    result = fit(recipe, train, run_dir=args.run_dir, key=jr.key(1), val=val)
    success = evaluate(result.agent.policy, args.env, episodes=args.eval_episodes).success
    print(f"FiDec's residual family with a diagonal Mahalanobis metric: success {success:.2f} "
          f"over {args.eval_episodes} episodes after {result.step} steps ({args.run_dir})")
    return success


if __name__ == "__main__":
    main()
