"""`OneStepPolicy`: FQL's distilled one-step map `a = clip(mu(s, z))`."""

import equinox as eqx

from ..types import Action, Noise, Obs
from ._base import AbstractPolicy, check_inputs, clip_action
from ._flow import infer_dims


class OneStepPolicy(AbstractPolicy):
    """One network call from noise to action: `a = clip(net(s, z))`.

    **Arguments:**

    - `net`: a module `net(obs, z) -> action`, e.g. `ActionField(obs_dim, action_dim,
      time=False, key=key)`.
    - `obs_dim`, `action_dim`: needed only when `net` is not an `ActionField`.
    """

    net: eqx.Module
    obs_dim: int = eqx.field(static=True)
    action_dim: int = eqx.field(static=True)

    def __init__(
        self, net: eqx.Module, *, obs_dim: int | None = None, action_dim: int | None = None
    ):
        self.net = net
        self.obs_dim, self.action_dim = infer_dims(net, obs_dim, action_dim)

    def raw(self, obs: Obs, noise: Noise) -> Action:
        """The unclipped output `net(s, z)`, which FQL's distillation loss compares."""
        check_inputs(self, obs, noise)
        return self.net(obs, noise)

    def __call__(self, obs: Obs, noise: Noise) -> Action:
        return clip_action(self.raw(obs, noise))
