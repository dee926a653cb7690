import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fidec_zoo.constraints import FixedPenalty, Lagrangian
from fidec_zoo.critics import QEnsemble, ValueNet, aggregate, td_loss
from fidec_zoo.nn import Frozen, polyak


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


def test_td_helpers():
    q = jnp.array([[1.0, 3.0], [2.0, -2.0]])
    np.testing.assert_allclose(aggregate(q, "mean"), [2.0, 0.0])
    np.testing.assert_allclose(aggregate(q, "min"), [1.0, -2.0])
    with pytest.raises(ValueError, match="q_agg 'max'"):
        aggregate(q, "max")
    target = jnp.array([1.0, 0.0])  # squared errors [[0, 4], [4, 4]]
    np.testing.assert_allclose(td_loss(q, target), 3.0)
    np.testing.assert_allclose(td_loss(q, target, sum_members=True), 6.0)
    # the target is a constant of the TD loss
    np.testing.assert_allclose(jax.grad(lambda t: td_loss(q, t))(target), 0.0)


def test_polyak_moves_the_frozen_target_towards_the_online_module(getkey):
    online, other = QEnsemble(5, 2, (8,), key=getkey()), QEnsemble(5, 2, (8,), key=getkey())
    moved = polyak(Frozen(other), online, 0.25)
    assert isinstance(moved, Frozen)
    for m, t, o in zip(jax.tree.leaves(moved.module), jax.tree.leaves(other),
                       jax.tree.leaves(online), strict=True):
        np.testing.assert_allclose(m, 0.75 * t + 0.25 * o, rtol=1e-6)
