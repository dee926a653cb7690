import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from fidec_zoo.critics import QEnsemble
from fidec_zoo.nn import MLP, Ensemble, glorot_linear


def test_glorot_uniform_bounds_and_zero_bias(getkey):
    layer = glorot_linear(300, 100, key=getkey())
    limit = np.sqrt(6 / 400)
    assert np.all(np.abs(layer.weight) <= limit)
    assert np.abs(layer.weight).max() > 0.95 * limit  # uniform, fills the range
    np.testing.assert_allclose(np.var(layer.weight), limit**2 / 3, rtol=0.05)
    assert np.all(layer.bias == 0)


def test_mlp_layer_norm_after_activation(getkey):
    mlp = MLP(4, 3, (8, 8), layer_norm=True, key=getkey())
    x = jnp.arange(4.0)
    h = x
    for i in range(2):
        h = jax.nn.gelu(mlp.layers[i](h), approximate=True)
        h = (h - h.mean()) / jnp.sqrt(h.var() + 1e-6)  # LayerNorm, eps 1e-6, identity affine
    expected = mlp.layers[2](h)
    np.testing.assert_allclose(mlp(x), expected, rtol=1e-5, atol=1e-6)
    assert mlp.norms[0].eps == 1e-6


def test_mlp_activate_final(getkey):
    mlp = MLP(4, 3, (8,), activate_final=True, layer_norm=True, key=getkey())
    out = mlp(jnp.ones(4))
    np.testing.assert_allclose(out.mean(), 0.0, atol=1e-5)  # normalised output


def test_ensemble_members_are_independent(getkey):
    ens = Ensemble(lambda k: MLP(3, 1, (16,), key=k), 2, key=getkey())
    out = ens(jnp.ones(3))
    assert out.shape == (2, 1)
    assert out[0, 0] != out[1, 0]
    member0 = jax.tree.map(lambda x: x[0] if isinstance(x, jax.Array) else x, ens.members)
    np.testing.assert_allclose(member0(jnp.ones(3)), out[0], rtol=1e-6)


def test_ensemble_batched_is_vmap_member_major(getkey):
    """`Ensemble.batched` (members outermost) gives `vmap(ensemble)` with its axes swapped, and
    the same gradients, to float32 rounding; `QEnsemble.batched` is `vmap(q)`."""
    ens = Ensemble(lambda k: MLP(7, 1, (32, 32), layer_norm=True, key=k), 2, key=getkey())
    x = jax.random.normal(getkey(), (50, 7))
    np.testing.assert_allclose(ens.batched(x), jnp.swapaxes(jax.vmap(ens)(x), 0, 1),
                               rtol=1e-5, atol=1e-6)
    grads = [eqx.filter_grad(lambda e: (f(e) ** 2).mean())(ens) for f in
             (lambda e: e.batched(x), lambda e: jax.vmap(e)(x))]
    for a, b in zip(*(jax.tree.leaves(eqx.filter(g, eqx.is_array)) for g in grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    q = QEnsemble(5, 2, (16, 16), key=getkey())
    obs, act = jax.random.normal(getkey(), (9, 5)), jax.random.normal(getkey(), (9, 2))
    np.testing.assert_allclose(q.batched(obs, act), jax.vmap(q)(obs, act), rtol=1e-5, atol=1e-6)
