"""ReBRAC: TD3+BC with LayerNorm critics, behaviour penalties in actor and critic, delayed actor."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PRNGKeyArray

from ..critics import QEnsemble, td_loss
from ..dataset import Dataset
from ..nn import Frozen, polyak
from ..policies import GaussianPolicy
from ..types import Diagnostics, Scalar
from ._base import AbstractAgent, Step


class ReBRAC(AbstractAgent):
    """Deterministic tanh actor `pi(s)`; critic target with clipped policy noise and a behaviour
    penalty `alpha_critic * ||a' - a'_data||^2`; actor loss `-sg(1/mean|Q|) Q + alpha_actor *
    ||pi(s) - a||^2`, applied every `actor_freq` steps, when both targets also move.

    **Arguments:** `actor`, `critic`; `alpha_actor`, `alpha_critic`, `discount`, `tau`,
    `actor_noise` (0.2), `noise_clip` (0.5), `actor_freq` (2).
    """

    actor: GaussianPolicy
    critic: QEnsemble
    target_actor: Frozen
    target_critic: Frozen
    alpha_actor: float = eqx.field(static=True)
    alpha_critic: float = eqx.field(static=True)
    discount: float = eqx.field(static=True)
    tau: float = eqx.field(static=True)
    actor_noise: float = eqx.field(static=True)
    noise_clip: float = eqx.field(static=True)
    actor_freq: int = eqx.field(static=True)

    def __init__(self, actor: GaussianPolicy, critic: QEnsemble, *, alpha_actor: float,
                 alpha_critic: float, discount: float = 0.99, tau: float = 0.005,
                 actor_noise: float = 0.2, noise_clip: float = 0.5, actor_freq: int = 2):
        if not actor.tanh_squash:
            raise ValueError("ReBRAC's actor must be a GaussianPolicy with tanh_squash=True.")
        self.actor, self.critic = actor, critic
        self.target_actor, self.target_critic = Frozen(actor), Frozen(critic)
        self.alpha_actor, self.alpha_critic = alpha_actor, alpha_critic
        self.discount, self.tau = discount, tau
        self.actor_noise, self.noise_clip, self.actor_freq = actor_noise, noise_clip, actor_freq

    @property
    def policy(self) -> GaussianPolicy:
        return self.actor

    def loss(self, batch: Dataset, *, key: PRNGKeyArray, step: Step) -> tuple[Scalar, Diagnostics]:
        obs, act = batch.observations, batch.actions
        noise = jnp.clip(self.actor_noise * jr.normal(key, act.shape), -self.noise_clip,
                         self.noise_clip)
        next_a = jnp.clip(jax.vmap(self.target_actor.value.mode)(batch.next_observations)
                          + noise, -1, 1)
        next_q = self.target_critic.value.batched(batch.next_observations, next_a).min(-1)
        behaviour = jnp.sum((next_a - batch.next_actions) ** 2, -1)
        target = batch.rewards + self.discount * batch.masks * (
            next_q - self.alpha_critic * behaviour)
        q = self.critic.batched(obs, act)
        critic_loss = td_loss(q, target)

        pi = jax.vmap(self.actor.mode)(obs)
        q_pi = Frozen(self.critic).value.batched(obs, pi).min(-1)
        scale = jax.lax.stop_gradient(1.0 / jnp.maximum(jnp.abs(q_pi).mean(), 1e-6))
        bc = jnp.sum((pi - act) ** 2, -1).mean()
        actor_loss = -(scale * q_pi).mean() + self.alpha_actor * bc
        actor_step = (step % self.actor_freq == 0).astype(actor_loss.dtype)
        return critic_loss + actor_step * actor_loss, {
            "critic_loss": critic_loss, "actor_loss": actor_loss, "bc_mse": bc, "q_mean": q.mean(),
        }

    def update_targets(self, previous: "ReBRAC", step: Step) -> "ReBRAC":
        tau = jnp.where(step % self.actor_freq == 0, self.tau, 0.0)
        return eqx.tree_at(
            lambda a: (a.target_actor, a.target_critic), self,
            (polyak(previous.target_actor, previous.actor, tau),
             polyak(previous.target_critic, previous.critic, tau)))
