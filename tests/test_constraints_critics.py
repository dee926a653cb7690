import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fidec_zoo.constraints import FixedPenalty, Lagrangian
from fidec_zoo.critics import QEnsemble, ValueNet


def test_fixed_penalty():
    loss, info = FixedPenalty(300.0).loss(jnp.asarray(0.01))
    np.testing.assert_allclose(loss, 3.0, rtol=1e-6)
    assert info["alpha"] == 300.0


@pytest.mark.parametrize("penalty, direction", [(0.01, 1.0), (1e-4, -1.0)])
def test_lagrange_multiplier_moves_toward_the_budget(penalty, direction):
    constraint = Lagrangian(target=1e-3, init_alpha=10.0)
    grad = jax.grad(lambda c: c.loss(jnp.asarray(penalty))[0])(constraint)
    # gradient descent raises log_alpha iff penalty > target
    assert np.sign(-grad.log_alpha) == direction
    np.testing.assert_allclose(grad.log_alpha, -(penalty - 1e-3), rtol=1e-6)
    np.testing.assert_allclose(constraint.alpha, 10.0, rtol=1e-6)


def test_lagrangian_penalty_gradient_uses_stopped_alpha():
    constraint = Lagrangian(target=1e-3, init_alpha=10.0)
    g = jax.grad(lambda p: constraint.loss(p)[0])(jnp.asarray(0.5))
    np.testing.assert_allclose(g, 10.0, rtol=1e-6)


def test_critics(getkey):
    q = QEnsemble(5, 2, (32, 32), key=getkey())
    out = q(jnp.ones(5), jnp.ones(2))
    assert out.shape == (2,) and out[0] != out[1]
    v = ValueNet(5, (32,), key=getkey())
    assert v(jnp.ones(5)).shape == ()
