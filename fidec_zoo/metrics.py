"""Metrics that measure how far a refined action moves from the behaviour flow.

`AbstractMetric.penalty(flow, obs, action, displacement, *, key)` returns `d^T G d / action_dim`
for one state, where `G = G(s, a)` is a local metric with trace `action_dim`. Normalising the trace
keeps every metric on the same scale as the isotropic one (`G = I`: the per-dimension mean squared
displacement that DeFlow's target divergence is expressed in), so a budget means the same thing
whichever metric is used.

- `L2Metric`: `G = I` (FQL, DeFlow).
- `FisherMetric`: `G` is the damped, trace-normalised Fisher matrix `mean_k s_k s_k^T + damping I`
  of scores `s_k` read off the flow's velocity field (FiDec).
- Your own: subclass `AbstractMetric` and implement `penalty`, or subclass
  `AbstractMatrixMetric` and implement `matrix` (any positive semi-definite matrix; it is
  trace-normalised for you).
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .policies import FlowPolicy
from .types import Action, Matrix, Obs, Scalar, Time

__all__ = [
    "AbstractMetric",
    "AbstractMatrixMetric",
    "L2Metric",
    "FisherMetric",
    "flow_score",
    "SCORE_KINDS",
    "ANCHORS",
]

SCORE_KINDS = ("velocity", "tweedie")
ANCHORS = ("samples", "action")
_EPS = 1e-6


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}; valid options are {list(valid)}.")


def flow_score(
    flow: FlowPolicy,
    obs: Obs,
    x: Float[Array, " action_dim"],
    t: Time,
    *,
    kind: str = "tweedie",
) -> Float[Array, " action_dim"]:
    """Score estimate `grad_x log p_t(x | s)` read off a flow's velocity field.

    For the linear path `x_t = (1 - t) x_0 + t x_1` with `x_0 ~ N(0, I)`, Tweedie's formula gives
    the exact marginal score from the exact velocity: `(t v - x) / (1 - t)` (`kind="tweedie"`,
    the FiDec paper's estimator). `kind="velocity"` returns `v / (1 - t)`, what the FiDec
    reference code uses; it points along the velocity, not along the score.
    """
    _check_choice("score kind", kind, SCORE_KINDS)
    v = flow.velocity(obs, x, t)
    one_minus_t = jnp.maximum(1.0 - jnp.asarray(t, x.dtype), _EPS)
    numerator = v if kind == "velocity" else t * v - x
    return numerator / one_minus_t


def _trace_normalised_form(matrix: Matrix, displacement: Action) -> Scalar:
    """`d^T G d / A` with `G = A * M / tr(M)` (trace floored as in the reference)."""
    dim = displacement.shape[-1]
    scale = jnp.maximum(jnp.trace(matrix) / dim, _EPS)
    return displacement @ (matrix / scale) @ displacement / dim


class AbstractMetric(eqx.Module):
    """A local metric on action space around the behaviour flow's actions."""

    @abc.abstractmethod
    def penalty(
        self,
        flow: FlowPolicy,
        obs: Obs,
        action: Action,
        displacement: Action,
        *,
        key: PRNGKeyArray,
    ) -> Scalar:
        """`d^T G(s, a) d / action_dim` for one state `obs`, base `action` and `displacement`.

        Gradients flow through `displacement` only; the metric itself is a constant.
        """


class AbstractMatrixMetric(AbstractMetric):
    """A metric given by a matrix `M(s, a)`; the penalty trace-normalises it to `action_dim`."""

    @abc.abstractmethod
    def matrix(
        self, flow: FlowPolicy, obs: Obs, action: Action, *, key: PRNGKeyArray
    ) -> Matrix:
        """A positive semi-definite matrix whose shape (not scale) defines the metric."""

    def penalty(
        self,
        flow: FlowPolicy,
        obs: Obs,
        action: Action,
        displacement: Action,
        *,
        key: PRNGKeyArray,
    ) -> Scalar:
        matrix = jax.lax.stop_gradient(self.matrix(flow, obs, action, key=key))
        return _trace_normalised_form(matrix, displacement)


class L2Metric(AbstractMetric):
    """Isotropic metric `G = I`: the penalty is `mean(d ** 2)` (FQL's distillation, DeFlow)."""

    def penalty(
        self,
        flow: FlowPolicy,
        obs: Obs,
        action: Action,
        displacement: Action,
        *,
        key: PRNGKeyArray,
    ) -> Scalar:
        return jnp.mean(displacement**2)


class FisherMetric(AbstractMatrixMetric):
    """FiDec's Fisher metric `F = mean_k s_k s_k^T + damping I`, trace-normalised.

    Scores `s_k = flow_score(flow, obs, x_k, t_k, kind=score)` are evaluated at `num_samples`
    points `x_k` and times `t_k ~ U[max(1e-3, t - t_width), min(0.999, t)]` (`t` exactly when
    `t_width = 0`). With `anchor="samples"` (reference code) the points are fresh flow samples of
    the same state, re-noised to time `t_k`: `x_k = (1 - t_k) x0_k + t_k F(s, z_k)`, so `F` is a
    per-state Fisher. With `anchor="action"` (paper) the points are the base action itself, so
    `F` is the local (rank-one plus damping) Fisher at that action.

    **Arguments** (defaults are the FiDec reference scripts'):

    - `t`: 0.90. `t_width`: 0.05. `num_samples`: 8. `damping`: 1e-3.
    - `score`: `"velocity"` (code) or `"tweedie"` (paper). `anchor`: `"samples"` or `"action"`.
    """

    t: float = eqx.field(static=True, default=0.90)
    t_width: float = eqx.field(static=True, default=0.05)
    num_samples: int = eqx.field(static=True, default=8)
    damping: float = eqx.field(static=True, default=1e-3)
    score: str = eqx.field(static=True, default="velocity")
    anchor: str = eqx.field(static=True, default="samples")

    def __check_init__(self):
        _check_choice("score", self.score, SCORE_KINDS)
        _check_choice("anchor", self.anchor, ANCHORS)
        if not 0.0 < self.t < 1.0:
            raise ValueError(f"FisherMetric t must lie in (0, 1), got {self.t}.")
        if self.t_width < 0 or self.damping < 0:
            raise ValueError("FisherMetric t_width and damping must be non-negative.")
        if self.num_samples < 1:
            raise ValueError(f"FisherMetric num_samples must be >= 1, got {self.num_samples}.")

    def sample_times(self, key: PRNGKeyArray, dtype=jnp.float32) -> Float[Array, " num_samples"]:
        """The times at which the velocity is queried, one per Fisher sample."""
        if self.t_width == 0:
            return jnp.full((self.num_samples,), self.t, dtype)
        low, high = max(1e-3, self.t - self.t_width), min(0.999, self.t)
        return jr.uniform(key, (self.num_samples,), dtype, minval=low, maxval=high)

    def points(
        self, flow: FlowPolicy, obs: Obs, action: Action, times: Float[Array, " k"], *, key
    ) -> Float[Array, "k action_dim"]:
        """Where the scores are evaluated (see the class docstring)."""
        if self.anchor == "action":
            return jnp.broadcast_to(action, (times.shape[0], action.shape[0]))
        z_key, x0_key = jr.split(key)
        shape = (times.shape[0], action.shape[0])
        anchors = jax.vmap(flow, in_axes=(None, 0))(obs, jr.normal(z_key, shape, action.dtype))
        x0 = jr.normal(x0_key, shape, action.dtype)
        return (1 - times)[:, None] * x0 + times[:, None] * anchors

    def matrix(
        self, flow: FlowPolicy, obs: Obs, action: Action, *, key: PRNGKeyArray
    ) -> Matrix:
        t_key, x_key = jr.split(key)
        times = self.sample_times(t_key, action.dtype)
        x = self.points(flow, obs, action, times, key=x_key)
        scores = jax.vmap(lambda xk, tk: flow_score(flow, obs, xk, tk, kind=self.score))(x, times)
        fisher = scores.T @ scores / self.num_samples
        return fisher + self.damping * jnp.eye(action.shape[0], dtype=action.dtype)
