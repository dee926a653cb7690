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
