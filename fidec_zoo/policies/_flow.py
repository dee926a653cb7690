"""`FlowPolicy`: a flow-matching policy integrating `dx/dt = v(s, x, t)` from noise to action."""

import equinox as eqx

from ..samplers import AbstractSampler, DiffraxSampler
from ..types import Action, Noise, Obs
from ._base import AbstractPolicy, check_inputs, clip_action
from ._fields import ActionField


def infer_dims(net: eqx.Module, obs_dim: int | None, action_dim: int | None) -> tuple[int, int]:
    """Takes the sizes from an `ActionField`, or requires them for any other module."""
    if isinstance(net, ActionField):
        return net.obs_dim, net.action_dim
    if obs_dim is None or action_dim is None:
        raise ValueError(
            f"Cannot infer sizes from a {type(net).__name__}: pass obs_dim= and action_dim=."
        )
    return obs_dim, action_dim


class FlowPolicy(AbstractPolicy):
    """Behaviour flow `a = clip(x(1))` with `x(0) = z` and `dx/dt = velocity(s, x, t)`.

    **Arguments:**

    - `velocity`: ANY Equinox module `velocity(obs, x, t) -> dx/dt` on unbatched inputs, e.g.
      `ActionField(obs_dim, action_dim, key=key)`.
    - `sampler`: the ODE integration strategy; default `DiffraxSampler()` (10 Euler steps, times
      `i/10`), the references' sampler.
    - `obs_dim`, `action_dim`: needed only when `velocity` is not an `ActionField`.
    """

    velocity: eqx.Module
    sampler: AbstractSampler
    obs_dim: int = eqx.field(static=True)
    action_dim: int = eqx.field(static=True)

    def __init__(
        self,
        velocity: eqx.Module,
        sampler: AbstractSampler | None = None,
        *,
        obs_dim: int | None = None,
        action_dim: int | None = None,
    ):
        self.velocity = velocity
        self.sampler = DiffraxSampler() if sampler is None else sampler
        self.obs_dim, self.action_dim = infer_dims(velocity, obs_dim, action_dim)

    def __call__(self, obs: Obs, noise: Noise) -> Action:
        check_inputs(self, obs, noise)
        x1 = self.sampler.integrate(lambda x, t: self.velocity(obs, x, t), noise)
        return clip_action(x1)
