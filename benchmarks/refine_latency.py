"""Acting latency of the closed-form natural-gradient refinement against the trained residual
policy of the same agent (plain numbers; nothing is asserted).

    python benchmarks/refine_latency.py [RUN_DIR] [--calls 200] [--steps 1] [--seed S]

Timed is what a user stepping an environment runs: `policy.sample(obs, key=key)` on one float64
NumPy observation, result fetched to the host, median over `--calls` compiled calls (taken
round-robin over the policies, so a passing load weighs on all alike). The agent
is RUN_DIR's (a `recipes/offline.py` run of DeFlow or FiDec), or without one an untrained FiDec
agent of cube-single's sizes and the `cpu` preset's networks: latency does not depend on the
weights. The policies, all of the same agent:

- the behaviour flow `F(s, z)` alone;
- the trained residual policy `F + r` (the reference of the ratios);
- `NaturalGradientPolicy` with `L2Metric()`, `FisherMetric()` (the reference estimator: its
  anchor samples are `num_samples` extra flow solves per action) and
  `FisherMetric(anchor="action")` (scores at the action itself: no extra solve).

Each line gives the latency and its ratio to the residual policy's, measured in this one process:
the machine may be shared, and the ratio is the number to compare between machines.
"""

import dataclasses
import importlib.util
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated

warnings.filterwarnings("ignore")
if importlib.util.find_spec("fidec_zoo") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

from fidec_zoo import recipes, zoo  # noqa: E402
from fidec_zoo.agents import AbstractAgent  # noqa: E402
from fidec_zoo.metrics import FisherMetric, L2Metric  # noqa: E402
from fidec_zoo.policies import AbstractPolicy  # noqa: E402
from fidec_zoo.refinement import natural_gradient_policy  # noqa: E402

ENV = "cube-single-play-singletask-task2-v0"
OBS_DIM, ACTION_DIM = 28, 5  # cube-single


def latencies(policies: dict[str, AbstractPolicy], calls: int, seed: int) -> dict[str, float]:
    """Median seconds of one compiled `policy.sample` on a float64 observation, per policy.

    Every policy is compiled first; then the calls go round-robin, one per policy in turn, so
    that a load that comes and goes on a shared machine weighs on every policy alike."""
    obs_dim = next(iter(policies.values())).obs_dim
    obs = np.random.default_rng(seed).normal(size=(calls + 1, obs_dim))
    keys = jr.split(jr.key(seed), calls + 1)
    times: dict[str, list[float]] = {label: [] for label in policies}
    for i in range(calls + 1):
        for label, policy in policies.items():
            start = time.perf_counter()
            np.asarray(policy.sample(obs[i], key=keys[i]))
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t[1:]) for label, t in times.items()}  # [0]: compiling


def policies(agent: AbstractAgent, steps: int) -> dict[str, AbstractPolicy]:
    """The policies compared, by label, the trained residual policy first."""
    budget = 1e-3  # latency does not depend on it
    refined = {f"natural, {label}": natural_gradient_policy(agent, metric, budget, steps)
               for label, metric in (("L2", L2Metric()), ("Fisher", FisherMetric()),
                                     ("Fisher, anchor=action", FisherMetric(anchor="action")))}
    return {"trained residual F + r": agent.policy, "behaviour flow F": agent.flow, **refined}


@dataclasses.dataclass(frozen=True)
class Args:
    run_dir: Annotated[str | None, tyro.conf.Positional,
                       tyro.conf.arg(metavar="[RUN_DIR]")] = None
    """A DeFlow/FiDec run directory (default: an untrained FiDec agent)."""
    calls: int = 200
    """Timed calls per policy."""
    steps: int = 1
    """The refinement's linearisations."""
    seed: int = 0
    """Seed of the untrained agent and of the observations."""


def main() -> None:
    args = tyro.cli(Args, description=__doc__.splitlines()[0])
    if args.run_dir is None:
        agent, what = (recipes.make("fidec", obs_dim=OBS_DIM, action_dim=ACTION_DIM,
                                    env_name=ENV, key=jr.key(args.seed)),
                       "untrained fidec agent, cpu preset, cube-single sizes")
    else:
        run = zoo.load_run(args.run_dir)
        agent, what = run.agent, f"{run.run_dir.name} step {run.step}"
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {what}; "
          f"refinement steps {args.steps}; median of {args.calls} calls")
    measured = latencies(policies(agent, args.steps), args.calls, args.seed)
    reference = next(iter(measured.values()))
    for label, seconds in measured.items():
        print(f"{label:<32} {1e3 * seconds:8.3f} ms   x{seconds / reference:6.2f}")


if __name__ == "__main__":
    main()
