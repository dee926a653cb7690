"""The critics' networks: an ensemble of Q-functions `Q_j(s, a)` and a state-value function `V(s)`.

Both are the references' `Value` network: an MLP on `concat[s, a]` (or `s`) with LayerNorm after
every hidden activation; the twin Q-functions are independent members evaluated with `vmap`.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import MLP, Ensemble
from ..types import Action, Obs, Scalar


class QEnsemble(eqx.Module):
    """`num` independent Q-functions; `q(obs, action)` returns their values, shape `(num,)`.

    **Arguments:** `obs_dim`, `action_dim`, `hidden` (default 4x512), `num` (2),
    `layer_norm` (True), `key` (keyword only).
    """

    ensemble: Ensemble
    obs_dim: int = eqx.field(static=True)
    action_dim: int = eqx.field(static=True)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: tuple[int, ...] = (512, 512, 512, 512),
        *,
        num: int = 2,
        layer_norm: bool = True,
        key: PRNGKeyArray,
    ):
        def make(k):
            return MLP(obs_dim + action_dim, 1, hidden, layer_norm=layer_norm, key=k)

        self.ensemble = Ensemble(make, num, key=key)
        self.obs_dim = obs_dim
        self.action_dim = action_dim

    @property
    def num(self) -> int:
        return self.ensemble.num

    def __call__(self, obs: Obs, action: Action) -> Float[Array, " num"]:
        return self.ensemble(jnp.concatenate([obs, action]))[:, 0]

    def batched(self, obs: Float[Array, "b obs_dim"],
                action: Float[Array, "b action_dim"]) -> Float[Array, "b num"]:
        """`vmap(self)(obs, action)`, computed member-major (`Ensemble.batched`): the same
        values, faster on a batch."""
        return self.ensemble.batched(jnp.concatenate([obs, action], axis=-1))[..., 0].T


class ValueNet(eqx.Module):
    """State-value function `V(s)` (IQL, IFQL, IDQL). Same trunk as one Q member."""

    mlp: MLP
    obs_dim: int = eqx.field(static=True)

    def __init__(
        self,
        obs_dim: int,
        hidden: tuple[int, ...] = (512, 512, 512, 512),
        *,
        layer_norm: bool = True,
        key: PRNGKeyArray,
    ):
        self.mlp = MLP(obs_dim, 1, hidden, layer_norm=layer_norm, key=key)
        self.obs_dim = obs_dim

    def __call__(self, obs: Obs) -> Scalar:
        return self.mlp(obs)[0]
