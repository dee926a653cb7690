import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from analytic import GaussianVelocity

from fidec_zoo.metrics import AbstractMatrixMetric, FisherMetric, L2Metric, flow_score
from fidec_zoo.policies import FlowPolicy
from fidec_zoo.samplers import DiffraxSampler

MU = jnp.array([0.2, -0.1, 0.05])


def gaussian_flow(sigma, steps=100):
    return FlowPolicy(GaussianVelocity(MU, sigma), DiffraxSampler(num_steps=steps), obs_dim=1,
                      action_dim=3)


OBS = jnp.zeros(1)
SIGMA = jnp.diag(jnp.array([0.09, 0.01, 0.04]))


def test_tweedie_score_is_the_exact_score():
    flow = gaussian_flow(SIGMA)
    model = flow.velocity
    for t in (0.3, 0.8, 0.95):
        x = jnp.array([0.4, -0.3, 0.1])
        np.testing.assert_allclose(flow_score(flow, OBS, x, t, kind="tweedie"),
                                   model.score(x, t), rtol=1e-4)
        np.testing.assert_allclose(flow_score(flow, OBS, x, t, kind="velocity"),
                                   model(OBS, x, t) / (1 - t), rtol=1e-5)


def test_unknown_options_list_valid_ones():
    with pytest.raises(ValueError, match="velocity"):
        FisherMetric(score="foo")
    with pytest.raises(ValueError, match="samples"):
        FisherMetric(anchor="nowhere")
    with pytest.raises(ValueError, match="tweedie"):
        flow_score(gaussian_flow(SIGMA), OBS, jnp.zeros(3), 0.5, kind="bar")


def test_fisher_of_flow_samples_is_the_marginal_fisher():
    # E_{x ~ p_t}[score score^T] = C_t^{-1}: the trace-normalised metric has that shape.
    t = 0.9
    metric = FisherMetric(t=t, t_width=0.0, num_samples=8192, damping=0.0, score="tweedie")
    flow = gaussian_flow(SIGMA)
    matrix = metric.matrix(flow, OBS, jnp.zeros(3), key=jr.key(0))
    inv_cov = jnp.linalg.inv(flow.velocity.cov(t))
    normalise = lambda m: m * 3 / jnp.trace(m)  # noqa: E731
    np.testing.assert_allclose(normalise(matrix), normalise(inv_cov), atol=0.06)


def test_isotropic_behaviour_gives_the_l2_penalty():
    flow = gaussian_flow(0.04 * jnp.eye(3))
    metric = FisherMetric(t=0.9, t_width=0.0, num_samples=8192, score="tweedie")
    for d in (jnp.array([0.1, 0.0, 0.0]), jnp.array([0.02, -0.05, 0.03])):
        fisher = metric.penalty(flow, OBS, jnp.zeros(3), d, key=jr.key(1))
        l2 = L2Metric().penalty(flow, OBS, jnp.zeros(3), d, key=jr.key(1))
        np.testing.assert_allclose(fisher, l2, rtol=0.06)


class ScaledIdentity(AbstractMatrixMetric):
    scale: float

    def matrix(self, flow, obs, action, *, key):
        return self.scale * jnp.eye(action.shape[0])


def test_isotropic_matrix_equals_l2_exactly():
    d = jnp.array([0.3, -0.1, 0.2])
    for scale in (1e-3, 1.0, 50.0):
        flow = gaussian_flow(SIGMA)
        pen = ScaledIdentity(scale).penalty(flow, OBS, jnp.zeros(3), d, key=jr.key(0))
        np.testing.assert_allclose(pen, jnp.mean(d**2), rtol=1e-6)


def test_displacement_along_the_score_costs_more_and_matches_closed_form():
    flow = gaussian_flow(SIGMA)
    t, damping = 0.8, 1e-3
    metric = FisherMetric(t=t, t_width=0.0, num_samples=4, damping=damping, score="tweedie",
                          anchor="action")
    action = jnp.array([0.4, 0.1, -0.2])
    s = flow.velocity.score(action, t)
    along = 0.05 * s / jnp.linalg.norm(s)
    ortho = jnp.cross(along, jnp.array([0.0, 0.0, 1.0]))
    ortho = 0.05 * ortho / jnp.linalg.norm(ortho)
    pen = lambda d: metric.penalty(flow, OBS, action, d, key=jr.key(0))  # noqa: E731
    # rank-one Fisher s s^T + damping I, normalised to trace 3, divided by 3
    trace = s @ s + 3 * damping
    np.testing.assert_allclose(pen(along), (0.05**2 * (s @ s) + damping * 0.05**2) / trace,
                               rtol=1e-4)
    np.testing.assert_allclose(pen(ortho), damping * 0.05**2 / trace, rtol=1e-3)
    assert pen(along) > 100 * pen(ortho)


def test_penalty_invariant_to_score_scale():
    class Scaled(eqx.Module):
        inner: GaussianVelocity
        c: float

        def __call__(self, obs, x, t):
            return self.c * self.inner(obs, x, t)

    base = gaussian_flow(SIGMA).velocity
    d = jnp.array([0.05, -0.02, 0.01])
    metric = FisherMetric(num_samples=16, damping=0.0, anchor="action")
    pens = [metric.penalty(FlowPolicy(Scaled(base, c), obs_dim=1, action_dim=3), OBS,
                           jnp.array([0.1, 0.2, 0.0]), d, key=jr.key(3)) for c in (0.1, 1.0, 7.0)]
    np.testing.assert_allclose(pens, pens[1], rtol=1e-4)


def test_penalty_gradient_flows_through_displacement_only():
    flow = gaussian_flow(SIGMA, steps=10)
    metric = FisherMetric()
    grad = jax.grad(lambda d: metric.penalty(flow, OBS, jnp.zeros(3), d, key=jr.key(0)))(
        jnp.array([0.1, 0.1, 0.1]))
    assert jnp.all(jnp.isfinite(grad)) and jnp.any(grad != 0)


# ---- cheap anchors against the exact estimator, in closed form (Gaussian behaviour) ----------

#: A correlated Gaussian behaviour narrow enough that clipping to [-1, 1] never matters.
NARROW = jnp.array([[0.040, 0.010, 0.0], [0.010, 0.010, 0.002], [0.0, 0.002, 0.0225]])


def second_moment(f, mean, cov):
    """`E[f(a) f(a)^T]` for an affine `f` and `a ~ N(mean, cov)`."""
    jac, value = jax.jacfwd(f)(mean), f(mean)
    return jnp.outer(value, value) + jac @ cov @ jac.T


def expected_fisher(metric, flow, *, at_action=False):
    """`E[F]` of `metric.matrix` (before trace normalisation) for the Gaussian behaviour, in
    closed form: the score is affine in the point, the points are `x ~ p_t = N(t mu, C_t)`
    (re-noised behaviour samples) or the behaviour's action itself (`at_action`), and `t` is
    integrated over its uniform range by Gauss-Legendre quadrature."""
    model = flow.velocity
    if metric.t_width == 0:
        times, weights = np.array([metric.t]), np.array([1.0])
    else:
        low, high = max(1e-3, metric.t - metric.t_width), min(0.999, metric.t)
        nodes, weights = np.polynomial.legendre.leggauss(16)
        times, weights = low + (high - low) * (nodes + 1) / 2, weights / 2

    @jax.jit
    @jax.vmap
    def at(t):
        score = lambda x: flow_score(flow, OBS, x, t, kind=metric.score)  # noqa: E731
        if at_action:
            return second_moment(score, model.mu, model.sigma)
        return second_moment(score, t * model.mu, model.cov(t))

    moment = jnp.einsum("t,tij->ij", jnp.asarray(weights, jnp.float32),
                        at(jnp.asarray(times, jnp.float32)))
    return moment + metric.damping * jnp.eye(3)


def estimates(metric, flow, key, n):
    """`n` independent per-state estimates `F`, each with its own base and dataset actions drawn
    exactly from the behaviour; also the displacement `d(a)` of each base action."""
    k_base, k_data, k_metric = jr.split(key, 3)
    normal = lambda k: jr.multivariate_normal(  # noqa: E731
        k, flow.velocity.mu, flow.velocity.sigma, (n,))
    base, data = normal(k_base), normal(k_data)

    @jax.jit
    def run(base, data, keys):
        return jax.vmap(lambda a, ad, k: metric.matrix(flow, OBS, a, key=k, data_action=ad))(
            base, data, keys)

    return run(base, data, jr.split(k_metric, n)), jax.vmap(displacement)(base)


def displacement(a):
    """An action-dependent displacement, as a residual's is."""
    return 0.05 * jnp.array([1.0, -0.5, 0.3]) + 0.4 * (a - MU_NARROW)[::-1]


MU_NARROW = jnp.array([0.2, -0.1, 0.05])
N_DRAWS = 4096


def assert_within_mc_error(samples, expected, sigmas=5.0):
    mean = samples.mean(0)
    stderr = samples.std(0) / np.sqrt(samples.shape[0])
    assert np.all(np.abs(mean - expected) <= sigmas * stderr + 1e-6 * np.abs(expected).max()), (
        (mean - expected) / stderr)


def narrow_flow():
    """The behaviour's exact velocity, integrated accurately enough (Tsit5, 20 steps) that the
    exact estimator's anchor samples are the behaviour's to well below Monte Carlo error."""
    return FlowPolicy(GaussianVelocity(MU_NARROW, NARROW),
                      DiffraxSampler(diffrax.Tsit5(), num_steps=20), obs_dim=1, action_dim=3)


@pytest.mark.parametrize("anchor, options", [
    pytest.param("samples", {}, marks=pytest.mark.slow),  # (default: the Tweedie test above)
    ("data", {}), ("base", {}),
    ("data", {"score": "tweedie", "t": 0.8, "t_width": 0.0}), ("data", {"num_samples": 1}),
    ("base", {"score": "tweedie", "t": 0.8, "t_width": 0.0})])
def test_cheap_anchors_have_the_exact_estimators_expected_fisher(anchor, options):
    """Re-noised flow samples (the reference), re-noised dataset actions and re-noised base
    actions all put the score points at `x ~ p_t`: the same expected matrix, the closed form,
    within Monte Carlo error. (The trace normalisation is nonlinear, so `E[G]` of the
    normalised matrix moves with the per-state noise: benchmarks/fisher_estimators.py.)"""
    flow = narrow_flow()
    metric = FisherMetric(anchor=anchor, **options)
    fisher, _ = estimates(metric, flow, jr.key(0), N_DRAWS)
    assert_within_mc_error(fisher, expected_fisher(metric, flow))


def test_data_anchors_leave_the_expected_penalty_unbiased_and_base_anchors_do_not():
    """With a displacement that depends on the base action, the dataset action (independent of
    it, as the exact estimator's fresh samples are) keeps `E[d^T F d]` the exact estimator's,
    `tr(E[F] E[d d^T])`; re-noising the base action itself makes `F` depend on it and moves the
    expected penalty."""
    flow = narrow_flow()
    exact = jnp.trace(expected_fisher(FisherMetric(), flow)
                      @ second_moment(displacement, MU_NARROW, NARROW))
    form = lambda f, d: jnp.einsum("ni,nij,nj->n", d, f, d)  # noqa: E731
    data = form(*estimates(FisherMetric(anchor="data"), flow, jr.key(1), N_DRAWS))
    assert_within_mc_error(data, exact)
    base = form(*estimates(FisherMetric(anchor="base"), flow, jr.key(1), 2 * N_DRAWS))
    stderr = base.std() / np.sqrt(base.shape[0])
    assert abs(base.mean() - exact) > 6 * stderr and abs(base.mean() - exact) > 0.1 * exact


def test_action_anchor_is_a_different_matrix():
    """`anchor="action"` (the base action itself, not re-noised) has its own closed form, the
    Fisher at the behaviour's clean actions, which is not the exact estimator's."""
    flow = narrow_flow()
    metric = FisherMetric(anchor="action", score="tweedie", t=0.8, t_width=0.0)
    fisher, _ = estimates(metric, flow, jr.key(2), N_DRAWS)
    own = expected_fisher(metric, flow, at_action=True)
    assert_within_mc_error(fisher, own)
    exact = expected_fisher(FisherMetric(score="tweedie", t=0.8, t_width=0.0), flow)
    normalise = lambda m: 3 * m / jnp.trace(m)  # noqa: E731
    assert jnp.linalg.norm(normalise(own) - normalise(exact)) > 0.1 * jnp.linalg.norm(
        normalise(exact))


def test_data_anchor_needs_the_dataset_action():
    flow = gaussian_flow(SIGMA, steps=10)
    with pytest.raises(ValueError, match="data_action"):
        FisherMetric(anchor="data").matrix(flow, OBS, jnp.zeros(3), key=jr.key(0))
