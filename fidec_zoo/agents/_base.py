"""The agent contract and the pieces every agent shares.

An agent is an `eqx.Module` holding its policy, critics, target copies and dual variables. The
trainer differentiates `agent.loss` with respect to every inexact array leaf **except** those
inside `Frozen` wrappers (target networks, fixed critics), takes one optimiser step, then calls
`agent.update_targets(previous, step)` to move the targets (Polyak averaging).
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ..dataset import Dataset
from ..nn import Frozen
from ..policies import AbstractPolicy, FlowPolicy
from ..types import Diagnostics, Scalar

Step = Int[Array, ""] | int


def trainable(agent: PyTree) -> PyTree:
    """Filter spec: True on inexact array leaves outside `Frozen` wrappers."""
    is_frozen = lambda x: isinstance(x, Frozen)  # noqa: E731
    return jax.tree.map(
        lambda x: False if is_frozen(x) else eqx.is_inexact_array(x), agent, is_leaf=is_frozen
    )


class AbstractAgent(eqx.Module):
    """An offline-RL algorithm: a loss over a batch and how its targets move."""

    @property
    @abc.abstractmethod
    def policy(self) -> AbstractPolicy:
        """The policy that acts (what is evaluated and shipped to the zoo)."""

    @abc.abstractmethod
    def loss(
        self, batch: Dataset, *, key: PRNGKeyArray, step: Step
    ) -> tuple[Scalar, Diagnostics]:
        """The total loss on a minibatch and scalar diagnostics (all losses summed, one step)."""

    @abc.abstractmethod
    def update_targets(self, previous: "AbstractAgent", step: Step) -> "AbstractAgent":
        """This (post-update) agent with its targets moved, using `previous` (pre-update) online
        weights as the references do. Agents without targets return `self`."""


# ---- losses shared by several agents ---------------------------------------------------------


def batch_noise(key: PRNGKeyArray, batch: int, policy: AbstractPolicy) -> Float[Array, "b ..."]:
    """Standard normal noise for `batch` calls of `policy`."""
    return jr.normal(key, (batch, *policy.noise_shape))


def flow_matching_loss(
    flow: FlowPolicy,
    obs: Float[Array, "b obs_dim"],
    actions: Float[Array, "b action_dim"],
    key: PRNGKeyArray,
) -> Scalar:
    """Linear-path flow matching: `mean((v(s, x_t, t) - (a - x_0))^2)` over batch and dims."""
    t_key, x_key = jr.split(key)
    t = jr.uniform(t_key, (actions.shape[0], 1))
    x0 = jr.normal(x_key, actions.shape)
    x_t = (1 - t) * x0 + t * actions
    v = jax.vmap(flow.velocity)(obs, x_t, t[:, 0])
    return jnp.mean((v - (actions - x0)) ** 2)


def normalized_q_loss(q: Float[Array, " b"], normalize: bool) -> Scalar:
    """`-mean(q)`, divided by `sg(max(mean|q|, 1e-6))` when `normalize` (the agents'
    `normalize_q_loss`: True for DeFlow/FiDec), so the actor's step does not scale with Q."""
    loss = -q.mean()
    if normalize:
        loss = loss / jax.lax.stop_gradient(jnp.maximum(jnp.abs(q).mean(), 1e-6))
    return loss
