"""Training-free refinement of a behaviour flow: the FiDec paper's closed-form step (eq. 54).

FiDec trains a residual `r` to maximise, per state, the Lagrangian
`Q(s, a + d) - lam * (d^T G d / A - budget)` around the behaviour flow's action `a = F(s, z)`,
where `G = G(s, a)` is the metric's matrix (`AbstractMetric.penalty_matrix`) and `A` the action
dimension. Linearising the critic, `Q(s, a + d) ~ Q(s, a) + g^T d` with `g = grad_a Q(s, a)`
(the paper's eq. 53), makes it concave and quadratic in `d`; its maximiser is the pointwise
natural gradient `d = (A / 2 lam) G^{-1} g` (eq. 54). The multiplier that meets the budget,
`d^T G d / A = budget`, gives

    d* = sqrt(A * budget / (g^T G^{-1} g)) * G^{-1} g,

the step of the trust region `{d : d^T G d / A <= budget}` that gains most under the linear
critic. `NaturalGradientPolicy` computes it at test time, with no training: any behaviour flow,
any metric (`FisherMetric`: the natural gradient; `L2Metric`: the plain gradient normalised to
the budget), any critic `Q(s, a)`. `natural_gradient_policy` builds one from an agent.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.linalg as jsl
from jaxtyping import Array, ArrayLike, Float

from .agents import IFQL, AbstractAgent, OneStepFlowQL, ResidualFlowQL
from .critics import ExpectileCritic, FixedCritic, TwinCritic
from .metrics import AbstractMetric, FisherMetric, L2Metric
from .policies import FlowPolicy, check_inputs, clip_action
from .policies._base import AbstractWrapperPolicy
from .types import Action, Matrix, Noise, Obs, Scalar

__all__ = ["NaturalGradientPolicy", "natural_gradient_policy", "refinement_metric",
           "REDUCTIONS", "METRICS"]

REDUCTIONS = ("mean", "min")
#: The metrics the command line and scripts refine with, by name (library defaults).
METRICS = {"fisher": FisherMetric, "l2": L2Metric}


class NaturalGradientPolicy(AbstractWrapperPolicy):
    """`a = clip(F(s, z) + d)`: a behaviour flow moved by the closed-form step of eq. 54.

    `d` lies along `G^{-1} grad_a Q` at the base action `F(s, z)`, with `G = G(s, F(s, z))` the
    metric's own matrix, and is scaled so that `d^T G d / action_dim = budget`: the convention
    of the FiDec penalty, so a budget means what the Lagrangian's target (`target_divergence`)
    means. Clipping to `[-1, 1]` comes last and may shorten `d`.

    With `steps > 1` the critic is re-linearised at the moved action: `steps` natural-gradient
    steps of length `1 / steps` of the trust region's radius (in the `G` norm, `G` fixed at the
    base action), each followed by the `G`-norm projection back into the region, a radial
    shrink. The total displacement therefore never leaves the budget; under a linear critic
    the steps are collinear and the result equals one step.

    A zero gradient leaves the base action unchanged (no NaN), as does a matrix that cannot be
    inverted there (the metric must give a positive definite `G`: `FisherMetric`'s damping
    does).

    **Arguments:**

    - `base`: the behaviour `FlowPolicy`.
    - `critic`: any module `critic(obs, action)` returning `Q(s, a)`, a scalar or an ensemble of
      values (e.g. an agent's `QEnsemble`), reduced by `reduce`.
    - `metric`: any `AbstractMetric`, e.g. `FisherMetric()` or `L2Metric()`.
    - `budget`: the target `d^T G d / action_dim`, `> 0` (FiDec/DeFlow's 1e-3, say).
    - `steps`: linearisations of the critic (default 1, the paper's closed form).
    - `reduce`: `"mean"` (the flow Q-learning agents' actor objective) or `"min"` over an
      ensemble.
    - `metric_seed`: the key of the metric's random draws (`FisherMetric`'s anchor samples and
      times), fixed so that the policy stays a deterministic map of `(obs, noise)`.
    """

    base: FlowPolicy
    critic: eqx.Module
    metric: AbstractMetric
    budget: Float[Array, ""]
    steps: int = eqx.field(static=True)
    reduce: str = eqx.field(static=True)
    metric_seed: int = eqx.field(static=True)

    def __init__(
        self,
        base: FlowPolicy,
        critic: eqx.Module,
        metric: AbstractMetric,
        budget: float | Float[ArrayLike, ""],
        steps: int = 1,
        *,
        reduce: str = "mean",
        metric_seed: int = 0,
    ):
        budget = jnp.asarray(budget, dtype=jnp.result_type(float))
        if budget.shape != ():
            raise ValueError(f"budget must be a scalar, got shape {budget.shape}.")
        if not isinstance(budget, jax.core.Tracer) and not float(budget) > 0:
            raise ValueError(f"budget must be > 0 (the target d^T G d / action_dim), got "
                             f"{float(budget)}.")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
        if reduce not in REDUCTIONS:
            raise ValueError(f"Unknown reduce {reduce!r}; valid options are {list(REDUCTIONS)}.")
        if not isinstance(base, FlowPolicy):
            raise TypeError(f"base must be a FlowPolicy (the metric reads its velocity), got a "
                            f"{type(base).__name__}.")
        if not isinstance(metric, AbstractMetric):
            raise TypeError(f"metric must be an AbstractMetric, got a {type(metric).__name__}.")
        if isinstance(metric, FisherMetric) and metric.anchor == "data":
            raise ValueError(
                "FisherMetric(anchor='data') re-noises the dataset's action at each state, and "
                "a policy acting at test time has none: refine with a FisherMetric anchored at "
                "'samples' (the default), 'base' or 'action' instead.")
        self.base, self.critic, self.metric, self.budget = base, critic, metric, budget
        self.steps, self.reduce, self.metric_seed = steps, reduce, metric_seed

    def value(self, obs: Obs, action: Action) -> Scalar:
        """`Q(s, a)`, an ensemble reduced by `reduce`."""
        q = self.critic(obs, action)
        if q.ndim > 1:
            raise ValueError(f"critic(obs, action) must return a scalar or a vector of ensemble "
                             f"values, got shape {q.shape}.")
        q = jnp.atleast_1d(q)
        return q.mean() if self.reduce == "mean" else q.min()

    def metric_matrix(self, obs: Obs, base_action: Action) -> Matrix:
        """`G(s, a)` of the metric's penalty at the base action (with the fixed key)."""
        return self.metric.penalty_matrix(self.base, obs, base_action,
                                          key=jr.key(self.metric_seed))

    def displacement(self, obs: Obs, base_action: Action) -> Action:
        """The (unclipped) step `d` from a base action `a = F(s, z)` already integrated."""
        base_action = jax.lax.stop_gradient(base_action)
        chol = jnp.linalg.cholesky(self.metric_matrix(obs, base_action))  # G = L L^T
        radius = jnp.sqrt(base_action.shape[-1] * self.budget).astype(base_action.dtype)
        step_length = radius / self.steps

        def squared_g_norm(d):  # d^T G d = |L^T d|^2
            return jnp.sum((chol.T @ d) ** 2)

        def scaled(v, length):  # v * length / |v|_G, or 0 where v has no finite G-length
            norm2 = squared_g_norm(v)
            ok = jnp.isfinite(norm2) & (norm2 > 0)  # the double where: no NaN in gradients
            return jnp.where(ok, v * (length / jnp.sqrt(jnp.where(ok, norm2, 1.0))), 0.0)

        def step(_, d):
            grad = jax.grad(self.value, argnums=1)(obs, clip_action(base_action + d))
            moved = d + scaled(jsl.cho_solve((chol, True), grad), step_length)
            return jnp.where(squared_g_norm(moved) > radius**2, scaled(moved, radius), moved)

        return jax.lax.fori_loop(0, self.steps, step, jnp.zeros_like(base_action))

    def refine(self, obs: Obs, base_action: Action) -> Action:
        """The refined action `clip(a + d)` for a base action `a = F(s, z)`."""
        return clip_action(base_action + self.displacement(obs, base_action))

    def __call__(self, obs: Obs, noise: Noise) -> Action:
        check_inputs(self, obs, noise)
        return self.refine(obs, self.base(obs, noise))


def _q_network(critic: eqx.Module) -> tuple[eqx.Module, str]:
    """The `Q(s, a)` module inside an agent's critic, and how its agent reduces the ensemble."""
    if isinstance(critic, TwinCritic):
        return critic.critic, "mean"  # the actor loss of FQL, DeFlow and FiDec: the mean
    if isinstance(critic, FixedCritic):
        return critic.q, "mean"
    if isinstance(critic, ExpectileCritic):
        return critic.critic, "min"  # IFQL acts on the pessimistic twin value
    raise TypeError(f"No Q(s, a) known for a {type(critic).__name__}; build "
                    "NaturalGradientPolicy(flow, q, metric, budget) with your critic's Q.")


def natural_gradient_policy(
    agent: AbstractAgent,
    metric: AbstractMetric,
    budget: float,
    steps: int = 1,
    *,
    metric_seed: int = 0,
) -> NaturalGradientPolicy:
    """`NaturalGradientPolicy` refining `agent`'s behaviour flow with `agent`'s own critic.

    Works for the agents that hold both: `ResidualFlowQL` (DeFlow, FiDec), `OneStepFlowQL`
    (FQL) and `IFQL`. The critic's ensemble is reduced as the agent itself reduces it when it
    acts or trains its actor (mean for the flow Q-learning families, min for IFQL).
    """
    if isinstance(agent, (ResidualFlowQL, OneStepFlowQL)):
        flow, critic = agent.flow, agent.critics
    elif isinstance(agent, IFQL):
        flow, critic = agent.flow, agent.values
    else:
        raise TypeError(
            f"A {type(agent).__name__} holds no behaviour flow and Q-critic to refine with; "
            "natural-gradient refinement needs a ResidualFlowQL (DeFlow, FiDec), OneStepFlowQL "
            "(FQL) or IFQL agent.")
    q, reduce = _q_network(critic)
    return NaturalGradientPolicy(flow, q, metric, budget, steps, reduce=reduce,
                                 metric_seed=metric_seed)


def refinement_metric(name: str) -> AbstractMetric:
    """The metric of `METRICS` called `name` (`"fisher"`: `FisherMetric()`, `"l2"`:
    `L2Metric()`), for the command line and scripts."""
    if name not in METRICS:
        raise ValueError(f"Unknown refinement metric {name!r}; valid options are "
                         f"{list(METRICS)}.")
    return METRICS[name]()
