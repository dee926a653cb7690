"""The closed-form natural-gradient refinement (`fidec_zoo.refinement`, the paper's eq. 54)
against the analytic trust-region step, on Gaussian behaviour flows with known Fisher."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from analytic import GaussianVelocity

from fidec_zoo import recipes
from fidec_zoo.critics import QEnsemble
from fidec_zoo.metrics import AbstractMatrixMetric, AbstractMetric, FisherMetric, L2Metric
from fidec_zoo.policies import ActionField, FlowPolicy
from fidec_zoo.refinement import NaturalGradientPolicy, natural_gradient_policy
from fidec_zoo.samplers import DiffraxSampler

MU = jnp.array([0.2, -0.1, 0.05])
SIGMA = jnp.array([[0.09, 0.02, 0.0], [0.02, 0.01, 0.0], [0.0, 0.0, 0.04]])
OBS_DIM, A = 2, 3
BUDGET = 1e-3


def gaussian_flow(steps=10):
    return FlowPolicy(GaussianVelocity(MU, SIGMA), DiffraxSampler(num_steps=steps),
                      obs_dim=OBS_DIM, action_dim=A)


class GaussianFisher(AbstractMatrixMetric):
    """The exact Fisher information of the behaviour N(MU, SIGMA): SIGMA^{-1}, everywhere."""

    def matrix(self, flow, obs, action, *, key):
        return jnp.linalg.inv(SIGMA)


class LinearQ(eqx.Module):
    """`Q(s, a) = w(s)^T a + c(s)` with a state-dependent slope `w(s) = W s + b`."""

    weight: jax.Array
    bias: jax.Array

    def slope(self, obs):
        return self.weight @ obs + self.bias

    def __call__(self, obs, action):
        return self.slope(obs) @ action + obs.sum()


class ConcaveQ(eqx.Module):
    """`Q(s, a) = -|a - target|^2`, as a twin ensemble (both members equal)."""

    target: jax.Array

    def __call__(self, obs, action):
        return -jnp.sum((action - self.target) ** 2) * jnp.ones(2)


class MatrixQ(eqx.Module):
    """Not a critic: a matrix of values."""

    def __call__(self, obs, action):
        return jnp.ones((2, 2)) * action.sum()


class ConstantQ(eqx.Module):
    def __call__(self, obs, action):
        return jnp.zeros(())


LINEAR_Q = LinearQ(jnp.array([[1.0, -0.5], [0.3, 2.0], [-1.0, 0.2]]), jnp.array([0.4, -0.2, 0.7]))


def states(n, key=jr.key(0)):
    return jr.normal(key, (n, OBS_DIM))


def noises(n, key=jr.key(1)):
    return 0.5 * jr.normal(key, (n, A))


def steps_of(policy, obs, z):
    """The unclipped displacements from the base actions, and the base actions, for a batch."""
    base = jax.vmap(policy.base)(obs, z)
    return jax.vmap(policy.displacement)(obs, base), base


def natural_step(cov, w, budget):
    """The analytic step for metric `G ~ cov^{-1}` (trace-normalised): `d = c cov w` with
    `d^T G d / A = budget`, i.e. `c^2 w^T cov w / tr(cov^{-1}) = budget`."""
    c = jnp.sqrt(budget * jnp.trace(jnp.linalg.inv(cov)) / (w @ cov @ w))
    return c * cov @ w


def test_known_fisher_gives_the_analytic_natural_gradient_step():
    policy = NaturalGradientPolicy(gaussian_flow(), LINEAR_Q, GaussianFisher(), BUDGET)
    obs, z = states(16), noises(16)
    d, base = steps_of(policy, obs, z)
    expected = jax.vmap(lambda s: natural_step(SIGMA, LINEAR_Q.slope(s), BUDGET))(obs)
    np.testing.assert_allclose(d, expected, rtol=1e-5, atol=1e-8)
    actions = jax.vmap(policy)(obs, z)
    np.testing.assert_allclose(actions, jnp.clip(base + expected, -1, 1), rtol=1e-5, atol=1e-7)


def test_flow_fisher_estimate_gives_the_marginal_natural_gradient_step():
    # The library's estimator from the flow's own velocity (Tweedie scores of flow samples
    # re-noised to time t) estimates the Fisher of the marginal N(t MU, C_t): the step is
    # the analytic one for C_t, up to the Monte Carlo error of the estimate.
    t = 0.9
    metric = FisherMetric(t=t, t_width=0.0, num_samples=4096, damping=0.0, score="tweedie")
    flow = gaussian_flow(steps=50)
    policy = NaturalGradientPolicy(flow, LINEAR_Q, metric, BUDGET)
    obs, z = states(4), noises(4)
    d, _ = steps_of(policy, obs, z)
    cov_t = flow.velocity.cov(t)
    expected = jax.vmap(lambda s: natural_step(cov_t, LINEAR_Q.slope(s), BUDGET))(obs)
    np.testing.assert_allclose(d, expected, atol=2e-3)  # 3% of the step (|d| ~ 0.07)


def test_l2_metric_gives_the_normalised_gradient_step():
    policy = NaturalGradientPolicy(gaussian_flow(), LINEAR_Q, L2Metric(), BUDGET)
    obs, z = states(16), noises(16)
    d, _ = steps_of(policy, obs, z)
    w = jax.vmap(LINEAR_Q.slope)(obs)
    expected = jnp.sqrt(A * BUDGET) * w / jnp.linalg.norm(w, axis=-1, keepdims=True)
    np.testing.assert_allclose(d, expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(jnp.mean(d**2, axis=-1), BUDGET, rtol=1e-5)


def nonlinear_setup(key=jr.key(2)):
    """A random network flow over 2-d states and a random twin critic: nothing linear."""
    flow_key, q_key = jr.split(key)
    flow = FlowPolicy(ActionField(OBS_DIM, A, hidden=(16, 16), key=flow_key),
                      DiffraxSampler(num_steps=4))
    return flow, QEnsemble(OBS_DIM, A, hidden=(16, 16), key=q_key)


@pytest.mark.parametrize("metric", [FisherMetric(num_samples=4), L2Metric(), GaussianFisher()],
                         ids=["fisher", "l2", "known"])
def test_budget_holds_exactly_for_every_state_of_a_batch(metric):
    flow, critic = nonlinear_setup()
    policy = NaturalGradientPolicy(flow, critic, metric, BUDGET, metric_seed=5)
    obs, z = states(8, jr.key(3)), noises(8, jr.key(4))
    d, base = steps_of(policy, obs, z)
    key = jr.key(5)  # the metric's penalty with the policy's key: the Lagrangian's number
    penalty = jax.vmap(lambda s, a, dd: metric.penalty(flow, s, a, dd, key=key))(obs, base, d)
    np.testing.assert_allclose(penalty, BUDGET, rtol=1e-4)


@pytest.mark.parametrize("steps", [3])
def test_several_steps_stay_inside_the_trust_region(steps):
    flow, _ = nonlinear_setup()
    metric = FisherMetric(num_samples=4)
    target = jnp.array([0.3, -0.2, 0.1])
    one = NaturalGradientPolicy(flow, ConcaveQ(target), metric, 0.05)
    many = NaturalGradientPolicy(flow, ConcaveQ(target), metric, 0.05, steps)
    obs, z = states(8, jr.key(6)), noises(8, jr.key(7))
    d, base = steps_of(many, obs, z)
    penalty = jax.vmap(lambda s, a, dd: metric.penalty(flow, s, a, dd, key=jr.key(0)))(
        obs, base, d)
    assert jnp.all(penalty <= 0.05 * (1 + 1e-4))
    np.testing.assert_array_equal(jax.vmap(many.refine)(obs, base), jax.vmap(many)(obs, z))
    # re-linearising the concave critic ends no further from its optimum than one step, on average
    value = lambda p: jax.vmap(lambda s, a: p.value(s, p.refine(s, a)))(obs, base)  # noqa: E731
    assert jnp.mean(value(many)) >= jnp.mean(value(one))


def test_several_steps_under_a_linear_critic_equal_one_step():
    obs, z = states(8), noises(8)
    one = NaturalGradientPolicy(gaussian_flow(), LINEAR_Q, GaussianFisher(), BUDGET)
    four = NaturalGradientPolicy(gaussian_flow(), LINEAR_Q, GaussianFisher(), BUDGET, steps=4)
    np.testing.assert_allclose(steps_of(four, obs, z)[0], steps_of(one, obs, z)[0], rtol=1e-5,
                               atol=1e-8)


def test_actions_are_clipped_to_the_box():
    policy = NaturalGradientPolicy(gaussian_flow(), LINEAR_Q, L2Metric(), 4.0)
    obs, z = states(16), noises(16)
    d, base = steps_of(policy, obs, z)
    actions = jax.vmap(policy)(obs, z)
    assert jnp.all(jnp.abs(actions) <= 1.0) and jnp.any(jnp.abs(base + d) > 1.0)
    np.testing.assert_allclose(actions, jnp.clip(base + d, -1, 1))


def test_a_zero_gradient_leaves_the_base_action():
    obs, z = states(4), noises(4)
    for metric in (L2Metric(), GaussianFisher()):
        policy = NaturalGradientPolicy(gaussian_flow(), ConstantQ(), metric, BUDGET, steps=3)
        np.testing.assert_array_equal(jax.vmap(policy)(obs, z), jax.vmap(policy.base)(obs, z))
    # the step's scale is differentiable and stays finite (zero) where there is no step
    with_budget = lambda b: eqx.tree_at(lambda p: p.budget, policy, b)  # noqa: E731
    grad = jax.grad(lambda b: with_budget(b)(obs[0], z[0]).sum())(policy.budget)
    assert grad == 0.0


def test_acting_is_one_compiled_call_and_matches_the_map():
    flow, critic = nonlinear_setup()
    policy = NaturalGradientPolicy(flow, critic, FisherMetric(num_samples=4), BUDGET)
    obs = np.asarray(states(1)[0], dtype=np.float64)  # as an environment gives it
    action = policy.sample(obs, key=jr.key(9))
    assert action.shape == (A,) and action.dtype == jnp.float32
    np.testing.assert_allclose(action, policy(jnp.asarray(obs, jnp.float32),
                                              jr.normal(jr.key(9), (A,))), rtol=1e-5)


def test_bad_inputs_give_clear_errors():
    flow, critic = gaussian_flow(), LINEAR_Q
    for budget in (0.0, -1e-3):
        with pytest.raises(ValueError, match="budget must be > 0"):
            NaturalGradientPolicy(flow, critic, L2Metric(), budget)
    with pytest.raises((ValueError, TypeError), match="budget"):  # TypeError: jaxtyping's
        NaturalGradientPolicy(flow, critic, L2Metric(), jnp.ones(2))
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        NaturalGradientPolicy(flow, critic, L2Metric(), BUDGET, steps=0)
    with pytest.raises(ValueError, match="valid options are"):
        NaturalGradientPolicy(flow, critic, L2Metric(), BUDGET, reduce="max")
    with pytest.raises(TypeError, match="metric"):
        NaturalGradientPolicy(flow, critic, "fisher", BUDGET)
    with pytest.raises(TypeError, match="base"):
        NaturalGradientPolicy(LINEAR_Q, critic, L2Metric(), BUDGET)
    with pytest.raises(ValueError, match="has none: refine with a FisherMetric anchored"):
        NaturalGradientPolicy(flow, critic, FisherMetric(anchor="data"), BUDGET)
    policy = NaturalGradientPolicy(flow, critic, L2Metric(), BUDGET)
    with pytest.raises(ValueError, match=r"unbatched observation of shape \(2,\)"):
        policy(jnp.zeros(OBS_DIM + 2), jnp.zeros(A))
    with pytest.raises(ValueError, match=r"noise of shape \(3,\)"):
        policy(jnp.zeros(OBS_DIM), jnp.zeros(A + 1))
    matrix_q = NaturalGradientPolicy(flow, MatrixQ(), L2Metric(), BUDGET)
    with pytest.raises(ValueError, match="scalar or a vector"):
        matrix_q(jnp.zeros(OBS_DIM), jnp.zeros(A))


class HessianOnlyMetric(AbstractMetric):
    """A metric defined by its penalty alone: `G` is read off the penalty's Hessian."""

    def penalty(self, flow, obs, action, displacement, *, key):
        return displacement @ jnp.linalg.inv(SIGMA) @ displacement / displacement.shape[-1]


def test_a_penalty_only_metric_steps_in_its_own_quadratic_form():
    obs, z = states(8), noises(8)
    own = NaturalGradientPolicy(gaussian_flow(), LINEAR_Q, HessianOnlyMetric(), BUDGET)
    d, base = steps_of(own, obs, z)
    expected = jax.vmap(lambda s: jnp.sqrt(A * BUDGET / (LINEAR_Q.slope(s) @ SIGMA
                                                         @ LINEAR_Q.slope(s)))
                        * SIGMA @ LINEAR_Q.slope(s))(obs)
    np.testing.assert_allclose(d, expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", ["fidec", "deflow", "fql", "ifql"])
def test_built_from_an_agent_uses_its_flow_and_critic(name):
    agent = recipes.make(name, obs_dim=OBS_DIM, action_dim=A,
                         env_name="cube-single-play-singletask-task2-v0", key=jr.key(0),
                         hidden=(16, 16))
    policy = natural_gradient_policy(agent, FisherMetric(num_samples=4), BUDGET)
    assert policy.base is agent.flow
    assert policy.reduce == ("min" if name == "ifql" else "mean")
    action = jax.vmap(policy)(states(4), noises(4))
    assert action.shape == (4, A) and jnp.all(jnp.isfinite(action))


def test_an_agent_without_flow_and_critic_is_refused():
    agent = recipes.make("iql", obs_dim=OBS_DIM, action_dim=A,
                         env_name="cube-single-play-singletask-task2-v0", key=jr.key(0),
                         hidden=(16, 16))
    with pytest.raises(TypeError, match="no behaviour flow and Q-critic"):
        natural_gradient_policy(agent, L2Metric(), BUDGET)


@pytest.mark.parametrize("metric", [FisherMetric(num_samples=4), L2Metric(), GaussianFisher(),
                                    HessianOnlyMetric()], ids=["fisher", "l2", "known", "hessian"])
def test_penalty_matrix_is_the_matrix_of_the_penalty(metric):
    flow, obs, action = gaussian_flow(), jnp.zeros(OBS_DIM), jnp.array([0.1, -0.3, 0.2])
    matrix = metric.penalty_matrix(flow, obs, action, key=jr.key(0))
    for d in jr.normal(jr.key(1), (3, A)):
        np.testing.assert_allclose(d @ matrix @ d / A,
                                   metric.penalty(flow, obs, action, d, key=jr.key(0)),
                                   rtol=1e-5)
    np.testing.assert_allclose(matrix, matrix.T, rtol=1e-6)
