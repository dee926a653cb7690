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

import argparse

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

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


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="cube-single-play-singletask-task2-v0")
    parser.add_argument("--dataset-episodes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--hidden", type=int, nargs="+", default=None,
                        help="hidden widths (default: the cpu preset's)")
    parser.add_argument("--run-dir", default="runs/custom_metric")
    args = parser.parse_args(argv)

    _, train, val = load_ogbench(args.env, episodes=args.dataset_episodes)
    variance = jnp.var(train.actions, axis=0) + 1e-6
    metric = DiagonalMahalanobis(tuple(float(v) for v in 1.0 / variance))
    sizes = {} if args.hidden is None else {"hidden": tuple(args.hidden)}
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
