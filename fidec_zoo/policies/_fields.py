"""`ActionField`: the references' `ActorVectorField`, an MLP on `concat[s, x(, t)]`."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import MLP
from ..types import Obs, Time


class ActionField(eqx.Module):
    """An MLP mapping a state and an action-space vector (and optionally a time) to an
    action-space vector.

    The same network serves as a flow's velocity `v(s, x, t)`, a diffusion model's noise
    prediction `eps(s, x, t)`, FQL's one-step map `mu(s, z)` (`time=False`) and the residual
    `r(s, a)` of DeFlow/FiDec (`time=False`). The time is a raw scalar feature, as in the
    references, and the output is unbounded.

    **Arguments:**

    - `obs_dim`, `action_dim`: state and action sizes.
    - `hidden`: hidden widths, e.g. `(512,) * 4` (paper) or `(256,) * 4`.
    - `time`: whether the field takes a time input.
    - `layer_norm`: LayerNorm after each hidden activation (off for actors in the references).
    - `key`: a JAX PRNG key. (Keyword only argument.)
    """

    mlp: MLP
    obs_dim: int = eqx.field(static=True)
    action_dim: int = eqx.field(static=True)
    time: bool = eqx.field(static=True)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: tuple[int, ...] = (512, 512, 512, 512),
        *,
        time: bool = True,
        layer_norm: bool = False,
        key: PRNGKeyArray,
    ):
        in_size = obs_dim + action_dim + (1 if time else 0)
        self.mlp = MLP(in_size, action_dim, hidden, layer_norm=layer_norm, key=key)
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.time = time

    def __call__(
        self, obs: Obs, x: Float[Array, " action_dim"], t: Time | None = None
    ) -> Float[Array, " action_dim"]:
        if self.time == (t is None):
            need = "needs a time t" if self.time else "was built with time=False; pass no t"
            raise ValueError(f"This ActionField {need}.")
        parts = [obs, x] if t is None else [obs, x, jnp.reshape(jnp.asarray(t, x.dtype), (1,))]
        return self.mlp(jnp.concatenate(parts))
