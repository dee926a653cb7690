"""How far FiDec's cheap Fisher estimators move its metric from the exact one (plain numbers).

    python benchmarks/fisher_estimators.py [--train-steps 3000] [--draws 256]

The default `FisherMetric()` reads its scores at `num_samples` fresh flow samples of each state
(anchor rollouts: most of FiDec's compute). The candidates here need no anchor rollouts
(`FisherMetric(anchor=...)`: "data" re-noises the batch's dataset action, "base" the step's own
base action, "action" reads the score at the base action itself). Their cost is measured by
benchmarks/update_speed.py (`--estimators`); this script measures their fidelity on the
behaviour flow and synthetic bimodal, state-dependent dataset of
benchmarks/fisher_anchor_steps.py (flow_bc 4x128 trained by flow matching; obs 8, action 5).

For 32 held-out states, each estimator's expected metric `E[G(s)]` (G = trace-normalised damped
Fisher, what the penalty uses) over `--draws` independent estimates per state, each with a fresh
base action (a flow sample) and a fresh dataset action (an exact sample of the behaviour that
generated the training data). Reported: the mean over states of the relative Frobenius distance
to the exact estimator's `E[G]` (same `t`, `t_width` and score), and the same for the expected
penalty `E[d^T G d / A]` of 64 displacements, both fixed ones (`d`) and ones that depend on the
base action (`d(a) = c + R a`, as a residual's does: an estimator whose matrix depends on the
base action moves this one). The first row of each block is the exact estimator against itself
with independent draws: the Monte Carlo floor that every distance includes. "data (flow
samples)" feeds fresh flow samples as the dataset actions: the data anchor for a perfectly
trained flow, which separates the per-state noise of one anchor from the flow's own error.
"""

import dataclasses
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("EQX_ON_ERROR", "nan")
warnings.filterwarnings("ignore")
if importlib.util.find_spec("fidec_zoo") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import tyro  # noqa: E402
from fisher_anchor_steps import ACT, behaviour_action, bimodal_data, trained_flow  # noqa: E402

from fidec_zoo.metrics import FisherMetric  # noqa: E402

CODE = dict(t=0.90, t_width=0.05)  # the reference scripts' times (the default)
PAPER = dict(t=0.8, t_width=0.0)  # the paper's perturbed time

#: (block title, exact estimator, [(row label, candidate, dataset actions from the flow?)])
BLOCKS = [
    ("reference times t ~ U[0.85, 0.90], velocity score (the default)", FisherMetric(), [
        ("data", FisherMetric(anchor="data"), False),
        ("data (flow samples)", FisherMetric(anchor="data"), True),
        ("data, num_samples=1", FisherMetric(anchor="data", num_samples=1), False),
        ("base", FisherMetric(anchor="base"), False),
        ("action", FisherMetric(anchor="action"), False),
    ]),
    ("paper time t = 0.8, velocity score (hparams=paper)", FisherMetric(**PAPER), [
        ("data", FisherMetric(anchor="data", **PAPER), False),
        ("base", FisherMetric(anchor="base", **PAPER), False),
    ]),
    ("paper time t = 0.8, Tweedie score", FisherMetric(score="tweedie", **PAPER), [
        ("data", FisherMetric(anchor="data", score="tweedie", **PAPER), False),
        ("action (one literal reading of the paper)",
         FisherMetric(anchor="action", score="tweedie", **PAPER), False),
    ]),
]


class Probe(eqx.Module):
    """What is measured at each state: `E[G]` and the expected penalties of the displacements."""

    states: jax.Array
    fixed: jax.Array  # (64, ACT) displacements
    offset: jax.Array  # (64, ACT): d(a) = offset + a @ slope^T
    slope: jax.Array  # (64, ACT, ACT)

    def expected(self, flow, metric: FisherMetric, key, draws: int, data_from_flow: bool):
        def one_state(s, k):
            def one(kk):
                z_key, data_key, metric_key = jr.split(kk, 3)
                base = flow(s, jr.normal(z_key, (ACT,)))
                data = (flow(s, jr.normal(data_key, (ACT,))) if data_from_flow
                        else behaviour_action(s, data_key))
                m = metric.matrix(flow, s, base, key=metric_key, data_action=data)
                g = ACT * m / jnp.trace(m)
                coupled = self.offset + jnp.einsum("dij,j->di", self.slope, base)
                form = lambda d: jnp.einsum("di,ij,dj->d", d, g, d) / ACT  # noqa: E731
                return g, form(self.fixed), form(coupled)

            return jax.tree.map(lambda x: x.mean(0),
                                jax.lax.map(one, jr.split(k, draws), batch_size=64))

        return jax.vmap(one_state)(self.states, jr.split(key, self.states.shape[0]))


def rel(a, b) -> float:
    """Relative Frobenius distance per state, then the mean over states."""
    axes = tuple(range(1, a.ndim))
    return float(jnp.mean(jnp.sqrt(jnp.sum((a - b) ** 2, axes) / jnp.sum(b**2, axes))))


def fidelity(flow, draws: int) -> None:
    k_d, k_c, k_r = jr.split(jr.key(8), 3)
    probe = Probe(states=bimodal_data(32, jr.key(7)).observations,
                  fixed=0.05 * jr.normal(k_d, (64, ACT)), offset=0.05 * jr.normal(k_c, (64, ACT)),
                  slope=0.1 * jr.normal(k_r, (64, ACT, ACT)) / jnp.sqrt(ACT))
    run = eqx.filter_jit(probe.expected)
    print(f"\nexpected metric E[G(s)] over {draws} estimates per state, 32 states: relative "
          "Frobenius distance to the exact estimator's, mean over states")
    header = f"{'estimator':44s} {'E[G]':>7s} {'E[pen] d':>9s} {'E[pen] d(a)':>12s}"
    for title, exact, rows in BLOCKS:
        start = time.perf_counter()
        ref = run(flow, exact, jr.key(10), draws, False)
        print(f"\n-- {title} --\n{header}")
        floor = run(flow, exact, jr.key(11), draws, False)
        rows_out = [("exact, independent draws (MC floor)", floor)]
        rows_out += [(label, run(flow, metric, jr.key(11), draws, from_flow))
                     for label, metric, from_flow in rows]
        for label, out in rows_out:
            print(f"{label:44s} " + " ".join(
                f"{rel(o, r):{w}.4f}" for o, r, w in zip(out, ref, (7, 9, 12))))
        print(f"({time.perf_counter() - start:.0f} s)")


@dataclasses.dataclass(frozen=True)
class Args:
    train_steps: int = 3000
    """Training steps of the bimodal behaviour flow."""
    draws: int = 256
    """Estimator draws compared per state."""


def main() -> None:
    args = tyro.cli(Args, description=__doc__.split("\n")[0])
    print(f"fidec_zoo Fisher estimators | jax {jax.__version__} | "
          f"{jax.devices()[0].device_kind} | {os.cpu_count()} CPUs | "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    fidelity(trained_flow(args.train_steps), args.draws)


if __name__ == "__main__":
    main()
