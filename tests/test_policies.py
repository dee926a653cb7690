import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from analytic import GaussianNoisePredictor, GaussianVelocity

from fidec_zoo.policies import (
    AbstractPolicy,
    ActionField,
    BestOfNPolicy,
    DiffusionPolicy,
    FlowPolicy,
    GaussianPolicy,
    OneStepPolicy,
    ResidualPolicy,
    alpha_bar,
    check_inputs,
)
from fidec_zoo.samplers import DiffraxSampler, EulerSampler

OBS, ACT = 7, 3


def make_policies(key):
    keys = jr.split(key, 6)
    flow = FlowPolicy(ActionField(OBS, ACT, (32, 32), key=keys[0]))
    return {
        "gaussian": GaussianPolicy(OBS, ACT, (32, 32), temperature=1.0, key=keys[1]),
        "gaussian_tanh": GaussianPolicy(OBS, ACT, (32,), tanh_squash=True, key=keys[2]),
        "diffusion": DiffusionPolicy(ActionField(OBS, ACT, (32,), key=keys[3])),
        "flow": flow,
        "flow_euler": FlowPolicy(flow.velocity, EulerSampler(5)),
        "onestep": OneStepPolicy(ActionField(OBS, ACT, (32,), time=False, key=keys[4])),
        "residual": ResidualPolicy(flow, ActionField(OBS, ACT, (32,), time=False, key=keys[5])),
    }


@pytest.mark.parametrize("name", list(make_policies(jr.key(0))))
def test_policy_shapes_range_and_vmap(name, getkey):
    policy = make_policies(getkey())[name]
    assert policy.noise_shape == (ACT,)
    obs = 3.0 * jr.normal(getkey(), (64, OBS))
    z = 5.0 * jr.normal(getkey(), (64, ACT))  # large noise pushes raw actions out of range
    actions = jax.jit(jax.vmap(policy))(obs, z)
    assert actions.shape == (64, ACT)
    assert jnp.all(jnp.abs(actions) <= 1.0)
    single = policy(obs[0], z[0])
    np.testing.assert_allclose(single, actions[0], atol=1e-5)
    assert policy.sample(obs[0], key=getkey()).shape == (ACT,)


def test_sample_takes_an_environment_observation_quietly(getkey):
    """Gymnasium gives float64 NumPy observations; acting on one must not warn (x64 is off)."""
    import warnings

    policy, key = make_policies(getkey())["residual"], getkey()
    obs = np.linspace(-1.0, 1.0, OBS)  # float64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        action = policy.sample(obs, key=key)
    assert action.dtype == jnp.float32
    np.testing.assert_array_equal(action, policy.sample(jnp.asarray(obs, jnp.float32), key=key))


class _CountingPolicy(AbstractPolicy):
    """Records each time its `__call__` runs in Python (a trace, when it is compiled)."""

    calls: list = eqx.field(static=True)
    obs_dim: int = OBS
    action_dim: int = ACT

    def __call__(self, obs, noise):
        self.calls.append(None)
        return jnp.tanh(noise + obs[:ACT])


def test_sample_is_compiled_once(getkey):
    """Acting step by step must not run the policy eagerly (a flow's ODE solve op by op)."""
    policy = _CountingPolicy([])
    for _ in range(3):
        action = policy.sample(np.asarray(jr.normal(getkey(), (OBS,))), key=getkey())
    assert len(policy.calls) == 1 and action.shape == (ACT,)


@pytest.mark.parametrize("name", ["flow", "gaussian", "residual"])
def test_wrong_shapes_raise_clear_error(name, getkey):
    policy = make_policies(getkey())[name]
    with pytest.raises(ValueError, match=r"\(7,\)"):
        policy(jnp.ones(OBS + 1), jnp.ones(ACT))
    with pytest.raises(Exception, match="obs_dim"):  # batched input: caught by the type checker
        policy(jnp.ones((4, OBS)), jnp.ones(ACT))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        policy(jnp.ones(OBS), jnp.ones(ACT + 1))


def test_batched_observation_error_names_a_working_vmap(getkey):
    """Outside the type checker, a batch reaches `check_inputs`; the code it suggests must run."""
    policy = make_policies(getkey())["residual"]
    obs = jnp.ones((4, OBS))
    with pytest.raises(ValueError, match=r"jax\.random\.split\(key, 4\)"):
        check_inputs(policy, obs, jnp.ones(ACT))
    key = getkey()
    actions = jax.vmap(lambda o, k: policy.sample(o, key=k))(obs, jax.random.split(key, 4))
    assert actions.shape == (4, ACT)
    with pytest.raises(ValueError) as info:  # not a batch of observations: no batching hint
        check_inputs(policy, jnp.ones(OBS + 1), jnp.ones(ACT))
    assert "vmap" not in str(info.value)


class _NegDistance(eqx.Module):
    """A twin critic with closed-form values: minus the squared distance to two targets."""

    targets: jax.Array

    def __call__(self, obs, action):
        return -jnp.sum((action[None] - self.targets) ** 2, axis=-1)


def test_best_of_n_picks_the_candidate_with_the_highest_pessimistic_value(getkey):
    base = make_policies(getkey())["flow_euler"]
    critic = _NegDistance(jnp.array([[0.5, 0.0, -0.5], [0.4, 0.1, -0.5]]))
    policy = BestOfNPolicy(base, critic, num_samples=16)
    assert policy.noise_shape == (16, ACT) and policy.obs_dim == OBS
    obs, noise = jr.normal(getkey(), (OBS,)), jr.normal(getkey(), (16, ACT))
    candidates = jax.vmap(base, in_axes=(None, 0))(obs, noise)
    pessimistic = jnp.min(jax.vmap(lambda a: critic(obs, a))(candidates), axis=1)
    np.testing.assert_array_equal(policy(obs, noise), candidates[jnp.argmax(pessimistic)])
    with pytest.raises(ValueError, match=r"\(16, 3\)"):
        policy(obs, noise[0])
    with pytest.raises(ValueError, match=r"\(7,\)"):
        policy(jnp.ones(OBS + 1), noise)


def test_wrong_dtype_rejected_by_type_checker(getkey):
    policy = make_policies(getkey())["flow"]
    with pytest.raises(Exception, match="Float"):
        policy(jnp.ones(OBS, dtype=jnp.int32), jnp.ones(ACT))


def test_flow_policy_accepts_any_module_and_transports_gaussian():
    mu = jnp.array([0.3, -0.2])
    sigma = jnp.array([[0.04, 0.01], [0.01, 0.02]])
    flow = FlowPolicy(GaussianVelocity(mu, sigma), DiffraxSampler(num_steps=200), obs_dim=1,
                      action_dim=2)
    z = jr.normal(jr.key(0), (20000, 2))
    a = jax.vmap(flow, in_axes=(None, 0))(jnp.zeros(1), z)
    np.testing.assert_allclose(a.mean(0), mu, atol=5e-3)
    np.testing.assert_allclose(jnp.cov(a.T), sigma, atol=3e-3)


def test_flow_policy_needs_sizes_for_custom_modules():
    with pytest.raises(ValueError, match="obs_dim"):
        FlowPolicy(GaussianVelocity(jnp.zeros(2), jnp.eye(2)))


class TestDDIM:
    mu = jnp.array([0.3, -0.2, 0.1])
    var = jnp.array([0.04, 0.01, 0.09])

    def policy(self, steps):
        return DiffusionPolicy(GaussianNoisePredictor(self.mu, self.var), sample_steps=steps,
                               clip_denoised=False, obs_dim=1, action_dim=3)

    def test_one_step_is_the_posterior_mean(self):
        z = jr.normal(jr.key(1), (100, 3))
        a = jax.vmap(self.policy(1), in_axes=(None, 0))(jnp.zeros(1), z)
        ab = alpha_bar(1.0)
        posterior_mean = (jnp.sqrt(ab) * self.var[None] * z + (1 - ab) * self.mu[None]) / (
            ab * self.var[None] + 1 - ab)
        np.testing.assert_allclose(a, posterior_mean, atol=1e-5)

    def test_many_steps_follow_the_probability_flow_map(self):
        # For Gaussian data DDIM converges to the affine ODE map from x_T to x_0.
        z = jr.normal(jr.key(2), (100, 3))
        a = jax.vmap(self.policy(1000), in_axes=(None, 0))(jnp.zeros(1), z)
        ab = alpha_bar(1.0)
        exact = self.mu[None] + jnp.sqrt(self.var[None]) * (z - jnp.sqrt(ab) * self.mu[None]) / (
            jnp.sqrt(ab * self.var[None] + 1 - ab))
        np.testing.assert_allclose(a, exact, atol=5e-3)

    def test_denoising_loss_is_minimised_by_the_exact_predictor(self, getkey):
        exact = self.policy(10)
        wrong = DiffusionPolicy(GaussianNoisePredictor(self.mu + 0.5, self.var), obs_dim=1,
                                action_dim=3)
        actions = self.mu[None] + jnp.sqrt(self.var[None]) * jr.normal(getkey(), (4000, 3))
        keys = jr.split(getkey(), 4000)

        def loss(p):
            return jnp.mean(jax.vmap(lambda a, k: p.noise_prediction_loss(jnp.zeros(1), a,
                                                                          key=k))(actions, keys))

        assert loss(exact) < loss(wrong)


def test_gaussian_log_prob_matches_closed_form(getkey):
    policy = GaussianPolicy(OBS, ACT, (16,), const_std=False, key=getkey())
    obs, act = jnp.ones(OBS), jnp.array([0.1, -0.3, 0.5])
    mean, log_std = policy.mean_and_log_std(obs)
    expected = jnp.sum(-0.5 * ((act - mean) / jnp.exp(log_std)) ** 2 - log_std
                       - 0.5 * jnp.log(2 * jnp.pi))
    np.testing.assert_allclose(policy.log_prob(obs, act), expected, rtol=1e-6)
    assert jnp.allclose(policy(obs, jnp.zeros(ACT)), policy.mode(obs))
