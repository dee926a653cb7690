"""Network building blocks matching the reference (FQL / DeFlow / FiDec) MLPs exactly.

Each hidden layer is `Linear -> GELU(tanh approximation) -> LayerNorm(eps=1e-6)` (LayerNorm only
when asked), kernels are Glorot-uniform (`variance_scaling(1, fan_avg, uniform)`), biases zero, and
the output layer is linear. `Ensemble` stacks independent members and evaluates them with
`eqx.filter_vmap`, which is how the references build their twin critics.

`Frozen` marks a module the optimiser must not update (a target network, a fixed critic) and
`polyak` moves such a target towards its online module; both critics and agents hold targets.
"""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

__all__ = ["MLP", "Ensemble", "Frozen", "glorot_linear", "polyak", "stop_gradient_module"]


def stop_gradient_module(module: PyTree) -> PyTree:
    """`module` with `stop_gradient` applied to its array leaves (static parts untouched)."""
    arrays, rest = eqx.partition(module, eqx.is_array)
    return eqx.combine(jax.lax.stop_gradient(arrays), rest)


class Frozen(eqx.Module):
    """Wraps a module that the optimiser must not update (a target network, a fixed critic).

    The trainer leaves its leaves out of the trainable set (`fidec_zoo.agents.trainable`), and
    every use goes through `stop_gradient`, so no loss can move it by accident.
    """

    module: eqx.Module

    @property
    def value(self) -> eqx.Module:
        """The wrapped module with gradients stopped."""
        return stop_gradient_module(self.module)

    def __call__(self, *args, **kwargs):
        return self.value(*args, **kwargs)


def polyak(target: Frozen, online: eqx.Module, tau: Float[Array, ""] | float) -> Frozen:
    """`tau * online + (1 - tau) * target`, leaf by leaf (the target's static parts are kept)."""
    t_arrays, t_rest = eqx.partition(target.module, eqx.is_array)
    o_arrays = eqx.filter(online, eqx.is_array)
    mixed = jax.tree.map(lambda t, o: (1 - tau) * t + tau * o, t_arrays, o_arrays)
    return Frozen(eqx.combine(mixed, t_rest))


def glorot_linear(
    in_size: int, out_size: int, *, scale: float = 1.0, key: PRNGKeyArray
) -> eqx.nn.Linear:
    """A `Linear` layer with variance-scaling (fan_avg, uniform) kernel and zero bias.

    `scale=1` is Glorot-uniform; the Gaussian policies' mean head uses `scale=1e-2`.
    """
    limit = (3.0 * scale / ((in_size + out_size) / 2.0)) ** 0.5
    layer = eqx.nn.Linear(in_size, out_size, key=key)
    weight = jr.uniform(key, (out_size, in_size), minval=-limit, maxval=limit)
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, (weight, jnp.zeros(out_size)))


class MLP(eqx.Module):
    """Multi-layer perceptron on an unbatched input vector.

    **Arguments:**

    - `in_size`, `out_size`: input and output widths.
    - `hidden`: widths of the hidden layers, e.g. `(512, 512, 512, 512)`.
    - `layer_norm`: apply LayerNorm (eps 1e-6) after each hidden activation.
    - `activate_final`: also apply the activation (and LayerNorm) after the output layer; used
      for trunks whose output feeds a separate head.
    - `final_scale`: variance scale of the output layer's Glorot init (1 = plain Glorot).
    - `key`: a JAX PRNG key. (Keyword only argument.)
    """

    layers: tuple[eqx.nn.Linear, ...]
    norms: tuple[eqx.nn.LayerNorm, ...]
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    layer_norm: bool = eqx.field(static=True)
    activate_final: bool = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        hidden: Sequence[int],
        *,
        layer_norm: bool = False,
        activate_final: bool = False,
        final_scale: float = 1.0,
        key: PRNGKeyArray,
    ):
        sizes = [in_size, *hidden, out_size]
        keys = jr.split(key, len(sizes) - 1)
        last = len(sizes) - 2
        self.layers = tuple(
            glorot_linear(a, b, scale=final_scale if i == last else 1.0, key=k)
            for i, (a, b, k) in enumerate(zip(sizes[:-1], sizes[1:], keys))
        )
        normed = sizes[1:] if activate_final else sizes[1:-1]
        self.norms = tuple(eqx.nn.LayerNorm(n, eps=1e-6) for n in normed) if layer_norm else ()
        self.in_size = in_size
        self.out_size = out_size
        self.layer_norm = layer_norm
        self.activate_final = activate_final

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, " out_size"]:
        num_activated = len(self.layers) if self.activate_final else len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < num_activated:
                x = jax.nn.gelu(x, approximate=True)
                if self.layer_norm:
                    x = self.norms[i](x)
        return x


class Ensemble(eqx.Module):
    """`num` independent copies of a module, stacked along a leading axis and run with `vmap`.

    **Arguments:**

    - `make`: builds one member from a PRNG key, e.g. `lambda k: MLP(3, 1, (64,), key=k)`.
    - `num`: number of members.
    - `key`: a JAX PRNG key. (Keyword only argument.)

    Calling the ensemble with unbatched inputs returns the members' outputs stacked on axis 0.
    """

    members: eqx.Module
    num: int = eqx.field(static=True)

    def __init__(self, make: Callable[[PRNGKeyArray], eqx.Module], num: int, *, key: PRNGKeyArray):
        self.members = eqx.filter_vmap(make)(jr.split(key, num))
        self.num = num

    def __call__(self, *args: Array) -> Array:
        in_axes = (eqx.if_array(0),) + (None,) * len(args)
        return eqx.filter_vmap(lambda member, *a: member(*a), in_axes=in_axes)(self.members, *args)

    def batched(self, *args: Array) -> Array:
        """The members on a batch (inputs with a leading batch axis), shape `(num, batch, ...)`:
        `vmap(self)(*args)` with the axes swapped, computed member-major, so that each layer is
        one batched matrix product over `(num, batch, width)` activations. `vmap(self)` lays
        them out `(batch, num, width)`, and XLA then transposes them around every product
        (benchmarks/reference_speed.py measures what that costs)."""
        in_axes = (eqx.if_array(0),) + (None,) * len(args)
        return eqx.filter_vmap(lambda member, *a: jax.vmap(member)(*a),
                               in_axes=in_axes)(self.members, *args)
