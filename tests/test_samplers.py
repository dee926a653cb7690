import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fidec_zoo.policies import ActionField, FlowPolicy
from fidec_zoo.samplers import DiffraxSampler, EulerSampler


@pytest.mark.parametrize("sampler", [EulerSampler(10), DiffraxSampler(num_steps=10)])
def test_euler_closed_forms(sampler):
    # dx/dt = lam * x  ->  Euler gives (1 + lam/N)^N x0
    x1 = sampler.integrate(lambda x, t: -0.7 * x, jnp.array([2.0, -1.0]))
    np.testing.assert_allclose(x1, (1 - 0.07) ** 10 * jnp.array([2.0, -1.0]), rtol=1e-5)
    # dx/dt = t  ->  Euler at times i/N gives sum_i (i/N)/N = (N-1)/(2N): checks the time grid
    x1 = sampler.integrate(lambda x, t: jnp.ones_like(x) * t, jnp.zeros(1))
    np.testing.assert_allclose(x1, [9 / 20], rtol=1e-5)


def test_diffrax_and_scan_agree_on_a_network(getkey):
    field = ActionField(6, 3, (32, 32), key=getkey())
    obs = jax.random.normal(getkey(), (16, 6))
    z = jax.random.normal(getkey(), (16, 3))
    for steps in (1, 4, 10):
        a = jax.vmap(FlowPolicy(field, EulerSampler(steps)))(obs, z)
        b = jax.vmap(FlowPolicy(field, DiffraxSampler(num_steps=steps)))(obs, z)
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_higher_order_solver_is_more_accurate():
    exact = jnp.exp(-1.0)
    euler = DiffraxSampler(num_steps=5).integrate(lambda x, t: -x, jnp.ones(1))
    heun = DiffraxSampler(diffrax.Heun(), num_steps=5).integrate(lambda x, t: -x, jnp.ones(1))
    assert abs(heun[0] - exact) < 0.1 * abs(euler[0] - exact)


def test_invalid_steps():
    with pytest.raises(ValueError, match="positive"):
        EulerSampler(0)
