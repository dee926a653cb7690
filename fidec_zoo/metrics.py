"""Metrics that measure how far a refined action moves from the behaviour flow.

`AbstractMetric.penalty(flow, obs, action, displacement, *, key)` returns `d^T G d / action_dim`
for one state, where `G = G(s, a)` is a local metric with trace `action_dim`. Normalising the trace
keeps every metric on the same scale as the isotropic one (`G = I`: the per-dimension mean squared
displacement that DeFlow's target divergence is expressed in), so a budget means the same thing
whichever metric is used.

- `L2Metric`: `G = I` (FQL, DeFlow).
- `FisherMetric`: `G` is the damped, trace-normalised Fisher matrix `mean_k s_k s_k^T + damping I`
  of scores `s_k` read off the flow's velocity field (FiDec). Its options choose the score
  (`"velocity"` or `"tweedie"`) and where it is read (`anchor`: fresh flow samples, the base
  action, or, with no flow rollouts, the re-noised base or dataset action); the defaults are the
  reference code's estimator. docs/concepts.md says what each combination computes and what the
  FiDec paper's text supports.
- Your own: subclass `AbstractMetric` and implement `penalty`, or subclass
  `AbstractMatrixMetric` and implement `matrix` (any positive semi-definite matrix; it is
  trace-normalised for you).

Agents call `metric.batch_penalty` on a whole minibatch, passing the minibatch's dataset actions
too (`data_actions`: exact behaviour samples at those states, which `FisherMetric(anchor="data")`
reads its scores around). By default it is `vmap` of `penalty`; a metric may override it with a
batched computation of the same numbers (`FisherMetric` does, and lets the agent integrate its
anchor samples in the same ODE solve as the agent's own flow rollouts: see `anchor_noise`).
`penalty_matrix` returns the `G` of the penalty itself, for the closed-form refinement of
`fidec_zoo.refinement`.
"""

import abc
import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .nn import stop_gradient_module
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
ANCHORS = ("samples", "action", "base", "data")
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
    the exact marginal score from the exact velocity: `(t v - x) / (1 - t)` (`kind="tweedie"`).
    This is the score of the FiDec paper's Lemma B.4 as far as its text shows: the equation is
    missing from the extracted text, whose prose says the expression's numerator and denominator
    both vanish as `t -> 1`, true of this form and not of `v / (1 - t)`. `kind="velocity"`
    returns `v / (1 - t)`, what the FiDec reference code uses; it points along the velocity, not
    along the score.
    """
    _check_choice("score kind", kind, SCORE_KINDS)
    v = flow.velocity(obs, x, t)
    one_minus_t = jnp.maximum(1.0 - jnp.asarray(t, x.dtype), _EPS)
    numerator = v if kind == "velocity" else t * v - x
    return numerator / one_minus_t


def _trace_normalised(matrix: Matrix) -> Matrix:
    """`G = A * M / tr(M)` (trace floored as in the reference): the metric a matrix defines."""
    scale = jnp.maximum(jnp.trace(matrix) / matrix.shape[-1], _EPS)
    return matrix / scale


def _given(**kwargs):
    """The keyword arguments that are not `None`: optional arguments are passed on only when
    given, so a subclass's method that does not take them still serves the other options."""
    return {k: v for k, v in kwargs.items() if v is not None}


def _trace_normalised_form(matrix: Matrix, displacement: Action) -> Scalar:
    """`d^T G d / A` with `G = A * M / tr(M)` (trace floored as in the reference)."""
    return displacement @ _trace_normalised(matrix) @ displacement / displacement.shape[-1]


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

    def penalty_matrix(
        self, flow: FlowPolicy, obs: Obs, action: Action, *, key: PRNGKeyArray
    ) -> Matrix:
        """The matrix `G(s, a)` with `penalty(..., d, key=key) = d^T G d / action_dim`.

        This is what a budget on the penalty constrains, so the closed-form refinement
        (`fidec_zoo.refinement`) steps in it. The default reads it off `penalty` as
        `action_dim / 2` times its Hessian at `d = 0`, exact for any penalty that is a
        quadratic form in `d`, as a metric's must be; matrix metrics and `L2Metric` return it
        directly.
        """
        dim = action.shape[-1]
        hessian = jax.hessian(lambda d: self.penalty(flow, obs, action, d, key=key))(
            jnp.zeros_like(action))
        return jax.lax.stop_gradient(hessian) * dim / 2

    def anchor_noise(
        self, flow: FlowPolicy, obs: Float[Array, "b obs_dim"], *, key: PRNGKeyArray
    ) -> Float[Array, "b k action_dim"] | None:
        """Noises `z[b, k]` of the flow rollouts `flow(obs[b], z[b, k])` that
        `batch_penalty(..., key=key)` needs, drawn exactly as it would draw them; `None` (the
        default) when it needs none.

        A caller that integrates the flow anyway may integrate these in the same solve and pass
        the resulting actions as `batch_penalty(..., anchors=...)`: same numbers, one solve.
        """
        return None

    def batch_penalty(
        self,
        flow: FlowPolicy,
        obs: Float[Array, "b obs_dim"],
        actions: Float[Array, "b action_dim"],
        displacements: Float[Array, "b action_dim"],
        *,
        key: PRNGKeyArray,
        anchors: Float[Array, "b k action_dim"] | None = None,
        data_actions: Float[Array, "b action_dim"] | None = None,
    ) -> Scalar:
        """Batch mean of `penalty`, sample `i` with key `jr.split(key, b)[i]` and the flow's
        weights frozen. `anchors`: the flow rollouts of `anchor_noise(flow, obs, key=key)`, if
        the metric asked for any (ignored otherwise). `data_actions`: the dataset's actions at
        `obs`, for a metric that uses them (ignored here)."""
        flow = stop_gradient_module(flow)
        keys = jr.split(key, obs.shape[0])
        per_sample = jax.vmap(lambda s, a, d, k: self.penalty(flow, s, a, d, key=k))(
            obs, actions, displacements, keys)
        return per_sample.mean()


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

    def penalty_matrix(
        self, flow: FlowPolicy, obs: Obs, action: Action, *, key: PRNGKeyArray
    ) -> Matrix:
        """`matrix`, trace-normalised to `action_dim` and frozen: the `G` of `penalty`."""
        return _trace_normalised(jax.lax.stop_gradient(self.matrix(flow, obs, action, key=key)))


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

    def penalty_matrix(
        self, flow: FlowPolicy, obs: Obs, action: Action, *, key: PRNGKeyArray
    ) -> Matrix:
        """The identity: `mean(d ** 2) = d^T I d / action_dim`."""
        return jnp.eye(action.shape[-1], dtype=action.dtype)


class FisherMetric(AbstractMatrixMetric):
    """FiDec's Fisher metric `F = mean_k s_k s_k^T + damping I`, trace-normalised.

    Scores `s_k = flow_score(flow, obs, x_k, t_k, kind=score)` are evaluated at `num_samples`
    points `x_k` and times `t_k ~ U[max(1e-3, t - t_width), min(0.999, t)]` (`t` exactly when
    `t_width = 0`). `anchor` chooses the points:

    - `"samples"` (the reference code's): fresh flow samples of the same state, re-noised to
      time `t_k`: `x_k = (1 - t_k) x0_k + t_k F(s, z_k)`, so `F` is a per-state sample Fisher.
      It costs `num_samples` flow rollouts per state, most of FiDec's compute.
    - `"action"`: the base action itself, so `F` is the local Fisher at that action: rank one
      plus damping when `t_width = 0`, nearly so otherwise. That rank-one matrix at the action
      is one literal reading of the FiDec paper's Theorem 3.1 and Definition A.5; the paper's
      estimator equations are missing from its extracted text, so which anchor its runs used is
      not known (docs/concepts.md, "What the paper's text supports").
    - `"data"`: the batch's own dataset action `a_data` at that state, re-noised `num_samples`
      times: `x_k = (1 - t_k) x0_k + t_k a_data`. No flow rollouts. `a_data` is an exact
      behaviour sample at the state and independent of the base action, so every `x_k` has the
      marginal `p_t` of the behaviour, as the reference's points have for an exact flow: the
      same expected (unnormalised) matrix, noisier per state (one behaviour sample, not
      `num_samples`). Needs the dataset action (`data_action`, or `data_actions` in
      `batch_penalty`, which the agents pass).
    - `"base"`: the base action re-noised the same way: `x_k = (1 - t_k) x0_k + t_k a`, reusing
      the step's own base-action rollout, so no extra rollouts either. Same expected matrix as
      `"data"`, but the matrix now depends on the very action whose displacement it measures,
      so the expected penalty differs from the reference's when the displacement depends on
      the action (as a residual's does).

    **Arguments** (defaults are the FiDec reference scripts'):

    - `t`: 0.90. `t_width`: 0.05. `num_samples`: 8. `damping`: 1e-3. (The paper fixes `t` at
      0.8: `recipes.config(..., hparams="paper")`.)
    - `score`: `"velocity"` (`v / (1 - t)`, the reference code) or `"tweedie"` (the marginal
      score, the paper's Lemma B.4). `anchor`: `"samples"` (the reference code), `"action"`,
      `"data"` or `"base"` (above).
    - `anchor_steps`: `None` (default) integrates the anchor samples `F(s, z_k)` with the flow's
      own sampler, exactly as the reference. An integer integrates them with that many steps of
      the same sampler instead: cheaper (the anchors are most of FiDec's compute) but a
      different, approximate estimator; benchmarks/fisher_anchor_steps.py measures how far the
      expected matrix moves. Only `anchor="samples"` integrates anchors.

    `matrix` is the straightforward per-state estimator; `batch_penalty` computes the same
    numbers for a whole batch at once (same random draws per state), with all anchor rollouts in
    one batched solve that the agent may also share with its own rollouts (`anchor_noise`).
    """

    t: float = eqx.field(static=True, default=0.90)
    """the top of the scores' time range"""
    t_width: float = eqx.field(static=True, default=0.05)
    """the width of the scores' time range (0: `t` exactly)"""
    num_samples: int = eqx.field(static=True, default=8)
    """scores per state"""
    damping: float = eqx.field(static=True, default=1e-3)
    """added to the matrix's diagonal"""
    score: str = eqx.field(static=True, default="velocity")
    """how the velocity gives the score: velocity (the reference code) or tweedie"""
    anchor: str = eqx.field(static=True, default="samples")
    """where the scores are taken: samples (the reference code), action, data or base"""
    anchor_steps: int | None = eqx.field(static=True, default=None)
    """Euler steps of the anchor rollouts (None: the flow's own sampler, as the reference)"""

    def __check_init__(self):
        _check_choice("score", self.score, SCORE_KINDS)
        _check_choice("anchor", self.anchor, ANCHORS)
        if not 0.0 < self.t < 1.0:
            raise ValueError(f"FisherMetric t must lie in (0, 1), got {self.t}.")
        if self.t_width < 0 or self.damping < 0:
            raise ValueError("FisherMetric t_width and damping must be non-negative.")
        if self.num_samples < 1:
            raise ValueError(f"FisherMetric num_samples must be >= 1, got {self.num_samples}.")
        if self.anchor_steps is not None and self.anchor_steps < 1:
            raise ValueError(f"FisherMetric anchor_steps must be >= 1, got {self.anchor_steps}.")

    def sample_times(self, key: PRNGKeyArray, dtype=jnp.float32) -> Float[Array, " num_samples"]:
        """The times at which the velocity is queried, one per Fisher sample."""
        if self.t_width == 0:
            return jnp.full((self.num_samples,), self.t, dtype)
        low, high = max(1e-3, self.t - self.t_width), min(0.999, self.t)
        return jr.uniform(key, (self.num_samples,), dtype, minval=low, maxval=high)

    def draws(
        self, key: PRNGKeyArray, action_dim: int, dtype=jnp.float32
    ) -> tuple[Float[Array, " k"], Float[Array, "k action_dim"], Float[Array, "k action_dim"]]:
        """The random numbers of one state's estimate from its key: the times, the anchors'
        flow noises `z_k` and the re-noising draws `x0_k` (what `matrix` uses)."""
        t_key, x_key = jr.split(key)
        z_key, x0_key = jr.split(x_key)
        shape = (self.num_samples, action_dim)
        return (self.sample_times(t_key, dtype), jr.normal(z_key, shape, dtype),
                jr.normal(x0_key, shape, dtype))

    def anchor_flow(self, flow: FlowPolicy) -> FlowPolicy:
        """The flow that draws the anchor samples: `flow` itself unless `anchor_steps` asks for
        another number of steps of its sampler."""
        if self.anchor_steps is None or self.anchor_steps == flow.sampler.num_steps:
            return flow
        sampler = dataclasses.replace(flow.sampler, num_steps=self.anchor_steps)
        return eqx.tree_at(lambda f: f.sampler, flow, sampler)

    def anchor_action(self, action: Array, data_action: Array | None) -> Array:
        """The action that `anchor="base"` (the base `action`) or `"data"` (`data_action`)
        re-noises for every score sample; works on one state or a batch alike."""
        if self.anchor == "base":
            return action
        if data_action is None:
            raise ValueError('FisherMetric(anchor="data") reads its scores around the dataset '
                             "action: pass data_action= (one state) or data_actions= (a batch).")
        return data_action

    def points(
        self,
        flow: FlowPolicy,
        obs: Obs,
        action: Action,
        times: Float[Array, " k"],
        *,
        key: PRNGKeyArray,
        data_action: Action | None = None,
    ) -> Float[Array, "k action_dim"]:
        """Where the scores are evaluated (see the class docstring)."""
        shape = (times.shape[0], action.shape[0])
        if self.anchor == "action":
            return jnp.broadcast_to(action, shape)
        z_key, x0_key = jr.split(key)
        if self.anchor == "samples":
            z = jr.normal(z_key, shape, action.dtype)
            clean = jax.vmap(self.anchor_flow(flow), in_axes=(None, 0))(obs, z)
        else:
            clean = jnp.broadcast_to(self.anchor_action(action, data_action), shape)
        x0 = jr.normal(x0_key, shape, action.dtype)
        return (1 - times)[:, None] * x0 + times[:, None] * clean

    def matrix(
        self,
        flow: FlowPolicy,
        obs: Obs,
        action: Action,
        *,
        key: PRNGKeyArray,
        data_action: Action | None = None,
    ) -> Matrix:
        t_key, x_key = jr.split(key)
        times = self.sample_times(t_key, action.dtype)
        x = self.points(flow, obs, action, times, key=x_key, data_action=data_action)
        scores = jax.vmap(lambda xk, tk: flow_score(flow, obs, xk, tk, kind=self.score))(x, times)
        fisher = scores.T @ scores / self.num_samples
        return fisher + self.damping * jnp.eye(action.shape[0], dtype=action.dtype)

    def penalty(
        self,
        flow: FlowPolicy,
        obs: Obs,
        action: Action,
        displacement: Action,
        *,
        key: PRNGKeyArray,
        data_action: Action | None = None,
    ) -> Scalar:
        """`AbstractMatrixMetric.penalty`, with the dataset action at `obs` for
        `anchor="data"` (passed on to `matrix` only when given)."""
        matrix = jax.lax.stop_gradient(
            self.matrix(flow, obs, action, key=key, **_given(data_action=data_action)))
        return _trace_normalised_form(matrix, displacement)

    def _per_state_overridden(self) -> bool:
        """A subclass that redefines the per-state estimator keeps the generic batch path."""
        cls = type(self)
        return any(getattr(cls, m) is not getattr(FisherMetric, m)
                   for m in ("penalty", "matrix", "points", "sample_times", "anchor_action"))

    def anchor_noise(
        self, flow: FlowPolicy, obs: Float[Array, "b obs_dim"], *, key: PRNGKeyArray
    ) -> Float[Array, "b k action_dim"] | None:
        if (self.anchor != "samples" or self.anchor_flow(flow) is not flow
                or self._per_state_overridden()):
            return None  # nothing to share with the agent's own (flow-sampler) rollouts
        keys = jr.split(key, obs.shape[0])
        return jax.vmap(lambda k: self.draws(k, flow.action_dim, obs.dtype)[1])(keys)

    def batch_penalty(
        self,
        flow: FlowPolicy,
        obs: Float[Array, "b obs_dim"],
        actions: Float[Array, "b action_dim"],
        displacements: Float[Array, "b action_dim"],
        *,
        key: PRNGKeyArray,
        anchors: Float[Array, "b k action_dim"] | None = None,
        data_actions: Float[Array, "b action_dim"] | None = None,
    ) -> Scalar:
        """The same numbers as the per-state `penalty` (same draws from `jr.split(key, b)`),
        computed batch-wide: one batched solve for all `b * num_samples` anchor rollouts (or
        none, when the caller passes the `anchors` drawn with `anchor_noise`, or when the anchor
        needs no rollouts), one batched velocity evaluation for all scores. `data_actions`: the
        dataset actions at `obs`, which `anchor="data"` needs."""
        flow = stop_gradient_module(flow)
        (b, dim), k = actions.shape, self.num_samples
        keys = jr.split(key, b)
        data_actions = data_actions if self.anchor == "data" else None
        if self._per_state_overridden():
            per_sample = jax.vmap(lambda s, a, d, kk, da: self.penalty(
                flow, s, a, d, key=kk, **_given(data_action=da)))(
                obs, actions, displacements, keys, data_actions)
            return per_sample.mean()
        times, z, x0 = jax.vmap(lambda kk: self.draws(kk, dim, actions.dtype))(keys)
        obs_k = jnp.broadcast_to(obs[:, None, :], (b, k, obs.shape[-1])).reshape(b * k, -1)
        if self.anchor == "action":
            x = jnp.broadcast_to(actions[:, None, :], (b, k, dim))
        else:
            if self.anchor != "samples":
                anchors = self.anchor_action(actions, data_actions)[:, None, :]
            elif anchors is None:
                anchors = jax.vmap(self.anchor_flow(flow))(obs_k, z.reshape(b * k, dim))
                anchors = anchors.reshape(b, k, dim)
            x = (1 - times)[..., None] * x0 + times[..., None] * anchors
        score = lambda s, xx, tt: flow_score(flow, s, xx, tt, kind=self.score)  # noqa: E731
        scores = jax.vmap(score)(obs_k, x.reshape(b * k, dim), times.reshape(b * k))
        scores = scores.reshape(b, k, dim)
        fisher = jnp.einsum("bki,bkj->bij", scores, scores) / k
        fisher = fisher + self.damping * jnp.eye(dim, dtype=actions.dtype)[None]
        return jax.vmap(_trace_normalised_form)(fisher, displacements).mean()
