import jax
import jax.numpy as jnp
import numpy as np

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
