"""How far `FisherMetric(anchor_steps=M)` moves FiDec's metric, and what it saves (plain numbers).

    python benchmarks/fisher_anchor_steps.py [--train-steps 3000] [--draws 256]

The default `FisherMetric()` integrates its anchor samples `F(s, z_k)` with the flow's own
sampler (10 Euler steps), exactly as the FiDec reference. `anchor_steps=M` integrates them with M
steps instead: an approximation, never the default. This script measures it on a behaviour flow
trained by flow matching (`fit`, recipe `flow_bc`, 4x128) on a synthetic bimodal,
state-dependent dataset (obs 8, action 5, actions `clip(tanh(W s) +/- 0.5 u + 0.05 eps)`):

1. Agreement: for 32 held-out states, the expected metric `E[G(s)]` (G = trace-normalised
   damped Fisher, exactly what the penalty uses) over `--draws` independent estimates per state,
   for M in (10 = default, 5, 3, 2, 1). Reported: the mean over states of the relative
   Frobenius distance to the default's `E[G]`, next to the Monte Carlo floor (the default against
   itself with independent draws), and the same for the penalty `E[d^T G d / A]` of random
   displacements `d`.
2. Cost: FiDec ms/update with 4x256 MLPs (batch 256, cube-single sizes) for M in
   (default, 5, 2) and FQL, timed round-robin in this one process
   (benchmarks/update_speed.py's harness).
"""

import dataclasses
import importlib.util
import os
import sys
import tempfile
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

from fidec_zoo import recipes  # noqa: E402
from fidec_zoo.configs import TrainConfig  # noqa: E402
from fidec_zoo.dataset import Dataset  # noqa: E402
from fidec_zoo.metrics import FisherMetric  # noqa: E402
from fidec_zoo.train import fit  # noqa: E402

OBS, ACT = 8, 5
STEPS = (None, 5, 3, 2, 1)


def _actions(obs, w, u, mode_key, eps_key):
    n = obs.shape[0]
    mode = jnp.where(jr.bernoulli(mode_key, 0.5, (n, 1)), 1.0, -1.0)
    return jnp.clip(jnp.tanh(obs @ w) + 0.5 * mode * u + 0.05 * jr.normal(eps_key, (n, ACT)),
                    -1, 1)


def _behaviour_params(data_key):
    _, k_w, k_u, _, _ = jr.split(data_key, 5)
    w = jr.normal(k_w, (OBS, ACT)) / jnp.sqrt(OBS)
    u = jr.normal(k_u, (ACT,))
    return w, u / jnp.linalg.norm(u)


def bimodal_data(n: int, key) -> Dataset:
    k_s, _, _, k_m, k_e = jr.split(key, 5)
    obs = jr.normal(k_s, (n, OBS))
    actions = _actions(obs, *_behaviour_params(key), k_m, k_e)
    zeros = jnp.zeros(n)
    return Dataset(obs, actions, zeros, zeros + 1, obs, actions, zeros)


def behaviour_action(obs, key, data_key=jr.key(0)):
    """One fresh action of the behaviour that generated `bimodal_data(n, data_key)` (the
    training data of `trained_flow`) at the state `obs`: an exact behaviour sample."""
    k_m, k_e = jr.split(key)
    return _actions(obs[None], *_behaviour_params(data_key), k_m, k_e)[0]


def trained_flow(train_steps: int):
    data = bimodal_data(50_000, jr.key(0))
    agent = recipes.make("flow_bc", obs_dim=OBS, action_dim=ACT, key=jr.key(1),
                         hidden=(128,) * 4)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        # TrainConfig's defaults are the old fit's: batch 256, Adam 3e-4, no clipping
        config = TrainConfig(steps=train_steps, chunk=500, log_every=train_steps)
        res = fit(agent, data, config, run_dir=tmp, key=jr.key(2), progress=False)
        print(f"behaviour flow: flow_bc 4x128 trained {train_steps} steps in "
              f"{time.perf_counter() - start:.0f} s")
    return res.agent.flow


def agreement(flow, draws: int) -> None:
    states = bimodal_data(32, jr.key(7)).observations
    disp = 0.05 * jr.normal(jr.key(8), (64, ACT))

    @eqx.filter_jit
    def expected_metric(metric, key):
        """E[G(s)] per state over `draws` estimates, and E[d^T G d / A] for the displacements."""

        def one_state(s, k):
            def g(kk):
                m = metric.matrix(flow, s, jnp.zeros(ACT), key=kk)
                return ACT * m / jnp.trace(m)

            return jax.lax.map(g, jr.split(k, draws), batch_size=64).mean(0)

        g = jax.vmap(one_state)(states, jr.split(key, states.shape[0]))
        penalty = jnp.einsum("di,sij,dj->sd", disp, g, disp) / ACT
        return g, penalty

    def rel(a, b):  # per state, then mean over states
        axes = tuple(range(1, a.ndim))
        return float(jnp.mean(jnp.sqrt(jnp.sum((a - b) ** 2, axes) / jnp.sum(b**2, axes))))

    ref_g, ref_p = expected_metric(FisherMetric(), jr.key(10))
    noise_g, noise_p = expected_metric(FisherMetric(), jr.key(11))
    print(f"\nexpected metric E[G(s)] over {draws} estimates per state, 32 states "
          f"(relative Frobenius distance to the default, mean over states)")
    print(f"{'anchor_steps':>14s} {'E[G] distance':>14s} {'E[penalty] distance':>20s}")
    print(f"{'10 (default)':>14s} {rel(noise_g, ref_g):14.4f} {rel(noise_p, ref_p):20.4f}"
          "   <- Monte Carlo floor (independent draws)")
    for m in STEPS[1:]:
        g, p = expected_metric(FisherMetric(anchor_steps=m), jr.key(11))
        print(f"{m:>14d} {rel(g, ref_g):14.4f} {rel(p, ref_p):20.4f}")

HIDDEN = (256,) * 4  # the network size of the published table (docs/scaling.md)


def cost(num_steps: int, rounds: int) -> None:
    import update_speed as us

    data = us.synthetic_data()
    runs = [us.Timed("fql", HIDDEN, data, num_steps),
            us.Timed("fidec", HIDDEN, data, num_steps)]
    for m in (5, 2):
        run = us.Timed("fidec", HIDDEN, data, num_steps,
                       metric=FisherMetric(anchor_steps=m))
        run.name = f"fidec M={m}"
        runs.append(run)
    us.round_robin(runs, rounds)
    fql = runs[0].ms
    print(f"\ncost with 4x256 MLPs (batch 256), median of {rounds} rounds:")
    for run in runs:
        print(f"{run.name:12s} {run.ms:8.1f} ms/update   x{run.ms / fql:.2f} fql")


@dataclasses.dataclass(frozen=True)
class Args:
    train_steps: int = 3000
    """Training steps of the bimodal behaviour flow."""
    draws: int = 256
    """Estimator draws compared per state."""
    steps: int = 5
    """Updates per timed call."""
    rounds: int = 5
    """Timed calls per estimator."""


def main() -> None:
    args = tyro.cli(Args, description=__doc__.split("\n")[0])
    print(f"fidec_zoo Fisher anchor steps | jax {jax.__version__} | "
          f"{jax.devices()[0].device_kind} | {time.strftime('%Y-%m-%d %H:%M')}")
    agreement(trained_flow(args.train_steps), args.draws)
    cost(args.steps, args.rounds)


if __name__ == "__main__":
    main()
