"""IQL with advantage-weighted regression (AWR) policy extraction."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from ..critics import ExpectileCritic
from ..dataset import Dataset
from ..policies import GaussianPolicy
from ..types import Diagnostics, Scalar
from ._base import AbstractAgent, Step


class IQL(AbstractAgent):
    """Expectile value learning; the actor maximises `min(exp(beta * A), 100) * log pi(a | s)`.

    **Arguments:** `actor` (Gaussian), `values` (`ExpectileCritic`), `awr_temperature` (the
    inverse temperature beta, 10 in the references).
    """

    actor: GaussianPolicy
    values: ExpectileCritic
    awr_temperature: float = eqx.field(static=True)

    @property
    def policy(self) -> GaussianPolicy:
        return self.actor

    def loss(self, batch: Dataset, *, key: PRNGKeyArray, step: Step) -> tuple[Scalar, Diagnostics]:
        value_loss, diagnostics = self.values.loss(batch)
        weights = jnp.minimum(jnp.exp(self.awr_temperature * self.values.advantage(batch)), 100.0)
        log_prob = jax.vmap(self.actor.log_prob)(batch.observations, batch.actions)
        actor_loss = -(weights * log_prob).mean()
        return value_loss + actor_loss, {**diagnostics, "actor_loss": actor_loss,
                                             "awr_weight": weights.mean()}

    def update_targets(self, previous: "IQL", step: Step) -> "IQL":
        return eqx.tree_at(lambda a: a.values, self, self.values.update_targets(previous.values))
