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

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from fidec_zoo import recipes
from fidec_zoo.data import load_ogbench
from fidec_zoo.envs import evaluate
from fidec_zoo.metrics import AbstractMatrixMetric
from fidec_zoo.train import fit


class DiagonalMahalanobis(AbstractMatrixMetric):
    """`G = diag(inverse_variance)`. It is the same at every state and action.

    `AbstractMatrixMetric` stops gradients through `matrix`, so the optimiser never changes
    `inverse_variance`.
    """

    inverse_variance: Float[Array, " action_dim"]

    def matrix(self, flow, obs, action, *, key):
        return jnp.diag(self.inverse_variance)


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
    metric = DiagonalMahalanobis(1.0 / (jnp.var(train.actions, axis=0) + 1e-6))
    sizes = {} if args.hidden is None else {"hidden": tuple(args.hidden)}
    recipe = recipes.config("fidec", env_name=args.env, metric=metric, **sizes)
    agent = recipes.build(recipe, obs_dim=train.obs_dim, action_dim=train.action_dim,
                          key=jr.key(0))
    result = fit(agent, train, steps=args.steps, run_dir=args.run_dir, key=jr.key(1), val=val,
                 batch_size=recipe["batch_size"], lr=recipe["lr"],
                 grad_clip=recipe["grad_clip"], chunk=min(1000, args.steps))
    success = evaluate(result.agent.policy, args.env, episodes=args.eval_episodes).success
    print(f"FiDec's residual family with a diagonal Mahalanobis metric: success {success:.2f} "
          f"over {args.eval_episodes} episodes after {result.step} steps ({args.run_dir})")
    return success


if __name__ == "__main__":
    main()
