"""The 2-D action problems of recipes/toy2d.py: analytic behaviour densities and Q-functions.

Every behaviour is a Gaussian mixture (so its density, its samples and even the exact
flow-matching velocity are closed-form) and every Q-function is one `AnalyticQ` module (a tilt
plus two Gaussian bumps), so all problems share one pytree structure and one compiled update.

- `bimodal`: two anisotropic modes (0.6 / 0.4); Q rises *along* mode A and *across* mode B, with
  a low-value dip between them.
- `arc`: a thin crescent (48 small components along a circle); Q rises along the arc and has a
  high-Q hotspot 0.12 off the arc (3.4 arc widths: just outside the support).
- `ridge`: one thin Gaussian (0.30 x 0.04); Q rises at 45 degrees to its long axis. The cleanest
  anisotropy test: the exact Fisher of this behaviour is one constant matrix.
- `isotropic`: a round Gaussian with the same tilted Q: the control, where every sensible metric
  is the identity and FiDec must behave like DeFlow.

The measurements that only need a problem (support threshold, mean Q, support fraction, mode
occupancy, along-support directions), their definitions for the JSON and the run's provenance
live here too; recipes/toy2d.py trains, measures the metrics and plots.
"""

import contextlib
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

OBS_DIM, ACTION_DIM = 1, 2  # one constant state s = 0; 2-D actions in [-1, 1]^2
MIXTURE_SIZE = 48


class GaussianMixture(eqx.Module):
    """`p(a) = sum_k w_k N(a; mu_k, L_k L_k^T)` on 2-D actions; `mode_of[k]` names k's mode."""

    log_weights: Float[Array, " k"]
    means: Float[Array, "k 2"]
    chols: Float[Array, "k 2 2"]
    mode_of: Int[Array, " k"]

    def __init__(self, weights, means, covs, mode_of=None):
        weights = jnp.asarray(weights, jnp.float32)
        self.log_weights = jnp.log(weights / weights.sum())
        self.means = jnp.asarray(means, jnp.float32)
        self.chols = jnp.linalg.cholesky(jnp.asarray(covs, jnp.float32))
        k = self.means.shape[0]
        self.mode_of = jnp.zeros(k, jnp.int32) if mode_of is None else jnp.asarray(mode_of)

    @property
    def covs(self) -> Float[Array, "k 2 2"]:
        return self.chols @ jnp.swapaxes(self.chols, -1, -2)

    def tiled(self, total: int) -> "GaussianMixture":
        """The same density written with `total` components (each repeated, weights split), so
        that mixtures of different problems share one array shape (one compilation)."""
        reps = total // self.means.shape[0]
        return GaussianMixture(jnp.repeat(jnp.exp(self.log_weights), reps),
                               jnp.repeat(self.means, reps, 0), jnp.repeat(self.covs, reps, 0),
                               jnp.repeat(self.mode_of, reps))

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n 2"]:
        k_key, z_key = jr.split(key)
        comp = jr.categorical(k_key, self.log_weights, shape=(n,))
        z = jr.normal(z_key, (n, 2))
        return self.means[comp] + jnp.einsum("nij,nj->ni", self.chols[comp], z)

    def component_log_probs(self, a: Float[Array, " 2"]) -> Float[Array, " k"]:
        """`log w_k + log N(a; mu_k, Sigma_k)` for every component."""
        diff = a[None] - self.means
        white = jax.vmap(lambda c, d: jax.scipy.linalg.solve_triangular(c, d, lower=True))(
            self.chols, diff)
        log_det = jnp.sum(jnp.log(jnp.diagonal(self.chols, axis1=-2, axis2=-1)), -1)
        return self.log_weights - 0.5 * jnp.sum(white**2, -1) - log_det - math.log(2 * math.pi)

    def log_density(self, a: Float[Array, " 2"]) -> Float[Array, ""]:
        return jax.nn.logsumexp(self.component_log_probs(a))

    def mode_posterior(self, a: Float[Array, " 2"], num_modes: int) -> Float[Array, " m"]:
        """`P(mode | a)`: component responsibilities summed per mode."""
        resp = jax.nn.softmax(self.component_log_probs(a))
        return jax.ops.segment_sum(resp, self.mode_of, num_segments=num_modes)


class ExactVelocity(eqx.Module):
    """The exact flow-matching velocity of a `GaussianMixture` (the ideal BC flow).

    On the path `x_t = (1 - t) x0 + t a`, component k gives `x_t ~ N(t mu_k, C_k)` with
    `C_k = t^2 Sigma_k + (1 - t)^2 I` and
    `E[a | x_t, k] = mu_k + t Sigma_k C_k^{-1} (x_t - t mu_k)`; then
    `v = (E[a | x_t] - x_t) / (1 - t)`. Used only to ask what FiDec's metric would be with a
    perfect flow, separating the estimator from the flow's fitting error.
    """

    behaviour: GaussianMixture

    def __call__(self, obs, x: Float[Array, " 2"], t) -> Float[Array, " 2"]:
        b = self.behaviour
        t = jnp.asarray(t, x.dtype)
        cov_t = t**2 * b.covs + (1 - t) ** 2 * jnp.eye(2)[None]
        diff = x[None] - t * b.means
        # closed-form 2x2 inverse and determinant (far quicker to compile than linalg.solve)
        (p, q), (_, r) = cov_t[:, 0].T, cov_t[:, 1].T
        det = p * r - q * q
        solved = jnp.stack([r * diff[:, 0] - q * diff[:, 1],
                            p * diff[:, 1] - q * diff[:, 0]], -1) / det[:, None]
        log_resp = b.log_weights - 0.5 * jnp.sum(diff * solved, -1) - 0.5 * jnp.log(det)
        resp = jax.nn.softmax(log_resp)
        posterior_means = b.means + t * jnp.einsum("kij,kj->ki", b.covs, solved)
        return (resp @ posterior_means - x) / jnp.maximum(1 - t, 1e-6)


class AnalyticQ(eqx.Module):
    """`Q(s, a) = offset + tilt . a + sum_j h_j exp(-|a - c_j|^2 / (2 w_j^2))` (ignores `s`).

    Holds arrays only so that every problem's Q has the same structure (one compilation);
    `FixedCritic` wraps it in `Frozen`, so none of them is ever trained.
    """

    offset: Float[Array, ""]
    tilt: Float[Array, " 2"]
    centres: Float[Array, "j 2"]
    heights: Float[Array, " j"]
    widths: Float[Array, " j"]

    def __init__(self, tilt, bumps=(), offset=1.0):
        bumps = list(bumps) + [((0.0, 0.0), 0.0, 1.0)] * (2 - len(bumps))
        self.offset = jnp.asarray(offset, jnp.float32)
        self.tilt = jnp.asarray(tilt, jnp.float32)
        self.centres = jnp.asarray([c for c, _, _ in bumps], jnp.float32)
        self.heights = jnp.asarray([h for _, h, _ in bumps], jnp.float32)
        self.widths = jnp.asarray([w for _, _, w in bumps], jnp.float32)

    def __call__(self, obs, action: Float[Array, " 2"]) -> Float[Array, ""]:
        sq = jnp.sum((action[None] - self.centres) ** 2, -1)
        bumps = self.heights * jnp.exp(-sq / (2 * self.widths**2))
        return self.offset + self.tilt @ action + bumps.sum()


@dataclass(frozen=True)
class Problem:
    """A behaviour (always written with `MIXTURE_SIZE` components, so every problem shares one
    compiled density) and a Q-function."""

    name: str
    title: str
    behaviour: GaussianMixture
    q: AnalyticQ
    mode_names: tuple[str, ...] = ()  # non-empty: report mode occupancy



def _cov(std_long: float, std_short: float, angle_deg: float) -> list[list[float]]:
    """Covariance with standard deviations `std_long` along `angle_deg` and `std_short` across."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    rot = jnp.array([[c, -s], [s, c]])
    return (rot @ jnp.diag(jnp.array([std_long**2, std_short**2])) @ rot.T).tolist()


def _direction(angle_deg: float, length: float) -> tuple[float, float]:
    rad = math.radians(angle_deg)
    return length * math.cos(rad), length * math.sin(rad)


def bimodal() -> Problem:
    behaviour = GaussianMixture(
        [0.6, 0.4], [[-0.45, -0.10], [0.45, 0.10]],
        [_cov(0.20, 0.045, 75.0), _cov(0.20, 0.045, -10.0)], mode_of=[0, 1])
    behaviour = behaviour.tiled(MIXTURE_SIZE)
    q = AnalyticQ(_direction(70.0, 0.8), [((0.0, 0.0), -0.6, 0.18)])
    return Problem("bimodal", "bimodal: Q along A, across B", behaviour, q, ("A", "B"))


def arc(radius=0.75, centre=(0.0, -0.45), width=0.035, hotspot_offset=0.12) -> Problem:
    angles = jnp.deg2rad(jnp.linspace(20.0, 160.0, MIXTURE_SIZE))
    means = jnp.stack([centre[0] + radius * jnp.cos(angles),
                       centre[1] + radius * jnp.sin(angles)], -1)
    covs = jnp.tile(width**2 * jnp.eye(2), (MIXTURE_SIZE, 1, 1))
    behaviour = GaussianMixture(jnp.ones(MIXTURE_SIZE), means, covs)
    hx, hy = _direction(60.0, radius - hotspot_offset)
    q = AnalyticQ((0.6, 0.0), [((centre[0] + hx, centre[1] + hy), 0.8, 0.06)])
    return Problem("arc", "arc: Q along arc, hotspot off it", behaviour, q)


def ridge() -> Problem:
    behaviour = GaussianMixture([1.0], [[0.0, 0.0]], [_cov(0.30, 0.04, 30.0)])
    behaviour = behaviour.tiled(MIXTURE_SIZE)
    return Problem("ridge", "ridge: Q at 45 deg to it", behaviour, AnalyticQ(_direction(75.0, 0.8)))


def isotropic() -> Problem:
    behaviour = GaussianMixture([1.0], [[0.0, 0.0]], [_cov(0.20, 0.20, 0.0)])
    behaviour = behaviour.tiled(MIXTURE_SIZE)
    return Problem("isotropic", "isotropic control", behaviour, AnalyticQ(_direction(75.0, 0.8)))


def make_problems() -> list[Problem]:
    return [bimodal(), arc(), ridge(), isotropic()]


def support_directions(behaviour: GaussianMixture, a: Float[Array, " 2"]):
    """Unit vectors (along, across) the support at `a`: the eigenvectors of the Hessian of
    `log p` with the least and the most negative eigenvalue (across = where density falls
    fastest)."""
    _, vecs = jnp.linalg.eigh(jax.hessian(behaviour.log_density)(a))
    return vecs[:, 1], vecs[:, 0]


# ---- measurements ------------------------------------------------------------------------------


@eqx.filter_jit
def log_density_and_q(behaviour, q, actions):
    """`log p(a)`, `Q(a)` and `P(mode | a)` (two modes at most) for a batch of actions."""
    obs = jnp.zeros((actions.shape[0], OBS_DIM))
    modes = jax.vmap(lambda a: behaviour.mode_posterior(a, 2))(actions)
    return jax.vmap(behaviour.log_density)(actions), jax.vmap(q)(obs, actions), modes


def support_threshold(problem: Problem, key, n: int = 50_000) -> float:
    """1% quantile of `log p` over the behaviour's own samples."""
    samples = problem.behaviour.sample(key, n)
    return float(jnp.quantile(log_density_and_q(problem.behaviour, problem.q, samples)[0], 0.01))


def measure(problem: Problem, actions, base, threshold: float) -> dict:
    log_p, q, modes = log_density_and_q(problem.behaviour, problem.q, actions)
    inside = log_p >= threshold
    out = {"mean_q": float(q.mean()), "support_fraction": float(inside.mean()),
           "msd": float(((actions - base) ** 2).mean())}
    if problem.mode_names:
        label = jnp.argmax(modes, -1)
        out["mode_occupancy"] = {n: float((label == i).mean())
                                 for i, n in enumerate(problem.mode_names)}
        out["mode_occupancy_in_support"] = {n: float(((label == i) & inside).mean())
                                            for i, n in enumerate(problem.mode_names)}
    return out


def action_grid(n: int) -> jax.Array:
    g = jnp.linspace(-1, 1, n)
    return jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)


def q_landscape(problem: Problem, threshold: float, n: int = 201) -> dict:
    """Q range over the action box and the best Q inside the support (grid search)."""
    log_p, q, _ = log_density_and_q(problem.behaviour, problem.q, action_grid(n))
    return {"q_min_box": float(q.min()), "q_max_box": float(q.max()),
            "best_q_in_support": float(jnp.where(log_p >= threshold, q, -jnp.inf).max())}


@eqx.filter_jit
def support_geometry(behaviour, points):
    """At each point: the along-support unit vector, the cost of moving along it under the
    behaviour's own local precision `-Hess log p` (negative curvature clipped; trace 2), and
    the point's most probable mode."""

    def one(a):
        along, _ = support_directions(behaviour, a)
        w, v = jnp.linalg.eigh(-jax.hessian(behaviour.log_density)(a))
        h = v @ jnp.diag(jnp.maximum(w, 0.0)) @ v.T
        cost = ACTION_DIM * along @ h @ along / jnp.maximum(jnp.trace(h), 1e-12)
        return along, cost, jnp.argmax(behaviour.mode_posterior(a, 2))

    return jax.vmap(one)(points)


DEFINITIONS = {
    "mean_q": "mean analytic Q over the policy's samples (eval_samples of them)",
    "support_fraction": "fraction of samples with log p(a) >= the 1% quantile of log p over "
                        "50k behaviour samples (support_log_density_threshold)",
    "msd": "per-dimension mean squared displacement from the base action F(z) of the same "
           "noise z (the unit of the budget delta); 0 for behaviour and bc_flow",
    "mode_occupancy": "fraction of samples whose most probable behaviour mode is A / B",
    "mode_occupancy_in_support": "the same, counting only samples inside the support",
    "train": "diagnostics averaged over the last chunk of updates: penalty (the metric's "
             "batch-mean D, which the Lagrangian drives to delta), alpha, q_policy",
    "metric_geometry": "mean of u^T G u over behaviour samples, G the metric normalised to "
                       "trace 2 and u the unit vector along the support (Hessian of log p): "
                       "1 = isotropic, 0 = moving along the support is free, 2 = only along "
                       "is penalised; learned_flow = the BC flow, exact_flow = the mixture's "
                       "exact velocity; behaviour_precision uses -Hess log p itself; "
                       "*_by_mode: the same mean over the points of each mode",
    "fidec_t{t}": "velocity score, samples anchor, fixed t (t_width 0)",
    "fidec_tweedie_action_t{t}": "Tweedie score at the base action, fixed t (t_width 0)",
}


# ---- provenance --------------------------------------------------------------------------------


def machine() -> dict:
    """Where the numbers (and the wall time) come from; the load average says how busy it was."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                   cpu)
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "load_average_at_start": os.getloadavg()[0],
            "platform": platform.platform(), "jax_backend": jax.default_backend(),
            "jax": jax.__version__, "equinox": eqx.__version__, "python": platform.python_version()}


def code_version() -> str:
    """`git describe --always --dirty` of the repository (the library may be edited locally)."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
