"""IQL's value learning, shared by IQL, IFQL and IDQL.

`V` regresses onto the target critic's pessimistic value with an expectile loss, and `Q` regresses
onto `r + gamma * mask * V(s')`, so no action outside the dataset is ever queried.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..dataset import Dataset
from ..nn import Frozen, polyak
from ..types import Diagnostics, Scalar
from ._networks import QEnsemble, ValueNet
from ._td import td_loss


class ExpectileCritic(eqx.Module):
    """Twin Q-functions, their target copy, and an expectile state-value function.

    **Arguments:** `critic`, `value`, `expectile` (0.9), `discount` (0.99), `tau` (0.005).
    """

    critic: QEnsemble
    target_critic: Frozen
    value: ValueNet
    expectile: float = eqx.field(static=True)
    discount: float = eqx.field(static=True)
    tau: float = eqx.field(static=True)

    def __init__(self, critic: QEnsemble, value: ValueNet, *, expectile: float = 0.9,
                 discount: float = 0.99, tau: float = 0.005):
        self.critic = critic
        self.target_critic = Frozen(critic)
        self.value = value
        self.expectile = expectile
        self.discount = discount
        self.tau = tau

    def loss(self, batch: Dataset) -> tuple[Scalar, Diagnostics]:
        """Expectile value loss plus the critic's TD loss (heads summed, as IQL)."""
        obs, act = batch.observations, batch.actions
        target_q = self.target_critic.value.batched(obs, act).min(-1)
        v = jax.vmap(self.value)(obs)
        diff = target_q - v
        weight = jnp.where(diff >= 0, self.expectile, 1 - self.expectile)
        value_loss = jnp.mean(weight * diff**2)
        next_v = jax.vmap(self.value)(batch.next_observations)
        target = batch.rewards + self.discount * batch.masks * next_v
        q = self.critic.batched(obs, act)
        critic_loss = td_loss(q, target, sum_members=True)
        return value_loss + critic_loss, {
            "value_loss": value_loss, "critic_loss": critic_loss, "v_mean": v.mean(),
            "q_mean": q.mean(),
        }

    def advantage(self, batch: Dataset) -> Float[Array, " b"]:
        """`min_j Q_j(s, a) - V(s)` with the current networks, gradients stopped (AWR)."""
        q = self.critic.batched(batch.observations, batch.actions).min(-1)
        v = jax.vmap(self.value)(batch.observations)
        return jax.lax.stop_gradient(q - v)

    def update_targets(self, previous: "ExpectileCritic") -> "ExpectileCritic":
        new_target = polyak(previous.target_critic, previous.critic, self.tau)
        return eqx.tree_at(lambda c: c.target_critic, self, new_target)
