"""`ResidualPolicy`: DeFlow/FiDec's decorated flow `a = clip(F(s, z) + r(s, F(s, z)))`."""

import equinox as eqx
import jax

from ..types import Action, Noise, Obs
from ._base import AbstractWrapperPolicy, check_inputs, clip_action
from ._flow import FlowPolicy


class ResidualPolicy(AbstractWrapperPolicy):
    """A behaviour flow `F` refined by a residual map `r` acting on the flow's action.

    The base action `F(s, z)` is treated as a constant (stop-gradient) when refining, as in the
    references: only `r` learns from the critic, and how far it may move the action is what a
    metric (L2 for DeFlow, Fisher for FiDec) limits.

    **Arguments:**

    - `base`: the behaviour `FlowPolicy`.
    - `residual`: a module `residual(obs, base_action) -> displacement`, e.g.
      `ActionField(obs_dim, action_dim, time=False, key=key)`.
    """

    base: FlowPolicy
    residual: eqx.Module

    def displacement(self, obs: Obs, base_action: Action) -> Action:
        """The (unclipped) residual `r(s, a)` added to a base action."""
        return self.residual(obs, base_action)

    def refine(self, obs: Obs, base_action: Action) -> Action:
        """The refined action `clip(a + r(s, a))` for a base action `a = F(s, z)` already
        integrated (agents batch all their flow rollouts into one solve and refine after)."""
        return clip_action(base_action + self.displacement(obs, base_action))

    def __call__(self, obs: Obs, noise: Noise) -> Action:
        check_inputs(self, obs, noise)
        return self.refine(obs, jax.lax.stop_gradient(self.base(obs, noise)))
