"""The critic component of the flow Q-learning families (FQL, DeFlow, FiDec).

`TwinCritic` learns Q by bootstrapping; `FixedCritic` holds a known Q-function that is never
trained (for analytic demos such as recipes/toy2d.py, or a critic trained elsewhere).
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..dataset import Dataset
from ..nn import Frozen, polyak
from ..types import Diagnostics, Scalar
from ._networks import QEnsemble
from ._td import aggregate, td_loss


class AbstractCritic(eqx.Module):
    """What a flow Q-learning agent needs from its critic."""

    @abc.abstractmethod
    def loss(
        self, batch: Dataset, next_actions: Float[Array, "b action_dim"]
    ) -> tuple[Scalar, Diagnostics]:
        """The critic's own loss, given the agent's actions at the next states."""

    @abc.abstractmethod
    def policy_value(
        self, obs: Float[Array, "b obs_dim"], actions: Float[Array, "b action_dim"]
    ) -> Float[Array, " b"]:
        """`Q(s, a)` for the actor loss, with the critic's weights frozen."""

    @abc.abstractmethod
    def update_targets(self, previous: "AbstractCritic") -> "AbstractCritic":
        """This critic with its targets moved (from `previous`, the pre-update critic)."""


class TwinCritic(AbstractCritic):
    """Twin Q-functions with a Polyak target; bootstraps on the agent's own next actions.

    `y = r + gamma * mask * agg_j Qbar_j(s', a')` with `agg` = `q_agg` (`"mean"` or `"min"`); the
    loss averages the squared errors over members and batch. **Arguments:** `critic`,
    `discount` (0.99), `q_agg` ("mean"), `tau` (0.005).
    """

    critic: QEnsemble
    target_critic: Frozen
    discount: float = eqx.field(static=True)
    q_agg: str = eqx.field(static=True)
    tau: float = eqx.field(static=True)

    def __init__(self, critic: QEnsemble, *, discount: float = 0.99, q_agg: str = "mean",
                 tau: float = 0.005):
        aggregate(jax.numpy.zeros((1, 2)), q_agg)  # validates q_agg early
        self.critic, self.target_critic = critic, Frozen(critic)
        self.discount, self.q_agg, self.tau = discount, q_agg, tau

    def loss(
        self, batch: Dataset, next_actions: Float[Array, "b action_dim"]
    ) -> tuple[Scalar, Diagnostics]:
        next_q = aggregate(self.target_critic.value.batched(batch.next_observations, next_actions),
                           self.q_agg)
        target = batch.rewards + self.discount * batch.masks * next_q
        q = self.critic.batched(batch.observations, batch.actions)
        loss = td_loss(q, target)
        return loss, {"critic_loss": loss, "q_mean": q.mean(), "q_max": q.max()}

    def policy_value(
        self, obs: Float[Array, "b obs_dim"], actions: Float[Array, "b action_dim"]
    ) -> Float[Array, " b"]:
        """Mean over members of `Q(s, a)` with the critic's weights frozen (actor loss)."""
        return Frozen(self.critic).value.batched(obs, actions).mean(-1)

    def update_targets(self, previous: "TwinCritic") -> "TwinCritic":
        new_target = polyak(previous.target_critic, previous.critic, self.tau)
        return eqx.tree_at(lambda c: c.target_critic, self, new_target)


class FixedCritic(AbstractCritic):
    """A given Q-function `q(obs, action) -> scalar` that is never trained (no loss, no target).

    **Arguments:** `q`: any module or callable pytree; it is wrapped in `Frozen`.
    """

    q: Frozen

    def __init__(self, q: eqx.Module):
        self.q = Frozen(q)

    def loss(
        self, batch: Dataset, next_actions: Float[Array, "b action_dim"]
    ) -> tuple[Scalar, Diagnostics]:
        return jnp.zeros(()), {}

    def policy_value(
        self, obs: Float[Array, "b obs_dim"], actions: Float[Array, "b action_dim"]
    ) -> Float[Array, " b"]:
        return jax.vmap(self.q)(obs, actions)

    def update_targets(self, previous: "FixedCritic") -> "FixedCritic":
        return self
