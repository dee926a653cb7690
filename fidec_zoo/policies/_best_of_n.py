"""`BestOfNPolicy`: value-based selection among N candidate actions (IFQL, IDQL)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..types import Action, Obs
from ._base import AbstractPolicy, AbstractWrapperPolicy, check_inputs


class BestOfNPolicy(AbstractWrapperPolicy):
    """Draws `num_samples` actions from `base` and returns the one with the highest value.

    The noise holds one draw per candidate, shape `(num_samples, *base.noise_shape)`, so this is
    still a deterministic map of `(obs, noise)`. Candidates are scored by `critic(obs, action)`;
    an ensemble output is reduced by its minimum (IFQL/IDQL use the pessimistic twin value).

    **Arguments:** `base` (any policy), `critic` (a module returning a scalar or an ensemble of
    values), `num_samples` (32 in IFQL).
    """

    base: AbstractPolicy
    critic: eqx.Module
    num_samples: int = eqx.field(static=True, default=32)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return (self.num_samples, *self.base.noise_shape)

    def __call__(self, obs: Obs, noise: Float[Array, "n ..."]) -> Action:
        check_inputs(self, obs, noise)
        candidates = jax.vmap(self.base, in_axes=(None, 0))(obs, noise)
        values = jax.vmap(lambda a: jnp.min(jnp.atleast_1d(self.critic(obs, a))))(candidates)
        return candidates[jnp.argmax(values)]
