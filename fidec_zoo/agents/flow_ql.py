"""The two composable flow Q-learning families.

Both keep a behaviour flow `F` trained only by flow matching, learn a critic, and move a learned
map away from `F` towards higher Q; a **metric** measures how far, and a **constraint** turns
that into a loss:

- `OneStepFlowQL(metric, constraint)`: a one-step policy `mu(s, z)` distilled from `F(s, z)`
  (same `z`). FQL = `OneStepFlowQL(L2Metric(), FixedPenalty(alpha))`.
- `ResidualFlowQL(metric, constraint)`: the decorated flow `a = F(s, z) + r(s, F(s, z))`.
  DeFlow = `ResidualFlowQL(L2Metric(), Lagrangian(target))`;
  FiDec = `ResidualFlowQL(FisherMetric(), Lagrangian(target))`.

Any `AbstractMetric`, including your own, plugs into either family unchanged. Losses and
stop-gradients follow the reference code (see docs/concepts.md): the critic bootstraps on the
agent's own next actions, the base/flow actions are constants for the refinement, the metric's
matrix is a constant, and only flow matching trains the flow.

Speed: every flow rollout of a step (next actions, base actions, and the anchor samples a metric
asks for through `AbstractMetric.anchor_noise`) is integrated in ONE batched solve of the frozen
flow (`flow_rollouts`), with the same noises as separate calls would use, so the numbers are
those of separate calls while the step has one sequence of `flow_steps` network calls instead of
two or three (benchmarks/update_speed.py).
"""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..constraints import AbstractConstraint
from ..critics import AbstractCritic
from ..dataset import Dataset
from ..metrics import AbstractMetric
from ..nn import stop_gradient_module
from ..policies import FlowPolicy, OneStepPolicy, ResidualPolicy, clip_action
from ..types import Diagnostics, Scalar
from ._base import AbstractAgent, Step, batch_noise, flow_matching_loss, normalized_q_loss


def flow_rollouts(flow: FlowPolicy, groups: list[tuple[Array, Array]]) -> list[Array]:
    """`vmap(flow)(obs, noise)` for every `(obs, noise)` group (`obs` of shape `(*n, obs_dim)`,
    `noise` `(*n, action_dim)`, any `n` per group), as ONE batched solve of the frozen flow. Rows
    are independent, so each group's actions are those of its own call."""
    flow = stop_gradient_module(flow)
    shapes = [noise.shape[:-1] for _, noise in groups]
    obs = jnp.concatenate([o.reshape(-1, o.shape[-1]) for o, _ in groups])
    noise = jnp.concatenate([z.reshape(-1, z.shape[-1]) for _, z in groups])
    actions = jax.vmap(flow)(obs, noise)
    pieces = jnp.split(actions, list(itertools.accumulate(math.prod(s) for s in shapes))[:-1])
    return [p.reshape(*shape, p.shape[-1]) for p, shape in zip(pieces, shapes, strict=True)]


def _with_anchors(
    agent: "OneStepFlowQL | ResidualFlowQL",
    obs: Float[Array, "b obs_dim"],
    groups: list,
    penalty_key: PRNGKeyArray,
) -> tuple[list, Float[Array, "b k action_dim"] | None]:
    """Integrates `groups` plus the metric's anchor samples (if any) in one solve."""
    flow = stop_gradient_module(agent.flow)
    noise = agent.metric.anchor_noise(flow, obs, key=penalty_key)
    if noise is not None:
        groups = [*groups, (jnp.broadcast_to(obs[:, None, :], (*noise.shape[:2], obs.shape[-1])),
                            noise)]
    out = flow_rollouts(flow, groups)
    return (out[:-1], out[-1]) if noise is not None else (out, None)


def refinement_terms(
    agent: "OneStepFlowQL | ResidualFlowQL",
    batch: Dataset,
    flow_actions: Float[Array, "b action_dim"],
    displacements: Float[Array, "b action_dim"],
    key: PRNGKeyArray,
    anchors: Float[Array, "b k action_dim"] | None = None,
) -> tuple[Scalar, Diagnostics]:
    """Penalty-through-constraint plus the Q term for `clip(flow_actions + displacements)`.
    The metric also gets the batch's dataset actions (behaviour samples at these states)."""
    obs = batch.observations
    # the metric freezes the flow itself: its matrix is a constant of the refinement
    penalty = agent.metric.batch_penalty(agent.flow, obs, flow_actions, displacements, key=key,
                                         anchors=anchors, data_actions=batch.actions)
    constraint_loss, constraint_info = agent.constraint.loss(penalty)
    q = agent.critics.policy_value(obs, clip_action(flow_actions + displacements))
    q_loss = normalized_q_loss(q, agent.normalize_q_loss)
    return constraint_loss + q_loss, {
        "penalty": penalty, "q_loss": q_loss, "q_policy": q.mean(),
        "displacement_mse": (displacements**2).mean(), **constraint_info,
    }


class OneStepFlowQL(AbstractAgent):
    """FQL's family: behaviour flow + one-step policy constrained towards it by `metric`.

    **Arguments:** `flow`, `actor` (`OneStepPolicy`), `critics` (`TwinCritic`, or
    `FixedCritic` for a known Q), `metric`, `constraint`, `normalize_q_loss` (False for FQL,
    whose alpha was tuned without it).
    """

    flow: FlowPolicy
    actor: OneStepPolicy
    critics: AbstractCritic
    metric: AbstractMetric
    constraint: AbstractConstraint
    normalize_q_loss: bool = eqx.field(static=True, default=False)

    @property
    def policy(self) -> OneStepPolicy:
        return self.actor

    def loss(self, batch: Dataset, *, key: PRNGKeyArray, step: Step) -> tuple[Scalar, Diagnostics]:
        bc_key, next_key, z_key, penalty_key = jr.split(key, 4)
        obs = batch.observations
        bc_loss = flow_matching_loss(self.flow, obs, batch.actions, bc_key)
        next_noise = batch_noise(next_key, obs.shape[0], self.actor)
        next_actions = jax.lax.stop_gradient(
            jax.vmap(self.actor)(batch.next_observations, next_noise))
        critic_loss, diagnostics = self.critics.loss(batch, next_actions)
        z = jr.normal(z_key, (obs.shape[0], self.actor.action_dim))
        (flow_actions,), anchors = _with_anchors(self, obs, [(obs, z)], penalty_key)
        raw = jax.vmap(self.actor.raw)(obs, z)
        refine_loss, refine = refinement_terms(self, batch, flow_actions, raw - flow_actions,
                                               penalty_key, anchors)
        total = critic_loss + bc_loss + refine_loss
        return total, {**diagnostics, **refine, "bc_loss": bc_loss}

    def update_targets(self, previous: "OneStepFlowQL", step: Step) -> "OneStepFlowQL":
        return eqx.tree_at(lambda a: a.critics, self,
                           self.critics.update_targets(previous.critics))


class ResidualFlowQL(AbstractAgent):
    """DeFlow/FiDec's family: behaviour flow decorated by a residual map limited by `metric`.

    **Arguments:** `actor` (`ResidualPolicy` holding the flow as `base`), `critics`
    (`TwinCritic`, or `FixedCritic` for a known Q), `metric`, `constraint`, `normalize_q_loss`
    (True in the DeFlow/FiDec OGBench flags).
    """

    actor: ResidualPolicy
    critics: AbstractCritic
    metric: AbstractMetric
    constraint: AbstractConstraint
    normalize_q_loss: bool = eqx.field(static=True, default=True)

    @property
    def flow(self) -> FlowPolicy:
        return self.actor.base

    @property
    def policy(self) -> ResidualPolicy:
        return self.actor

    def loss(self, batch: Dataset, *, key: PRNGKeyArray, step: Step) -> tuple[Scalar, Diagnostics]:
        bc_key, next_key, z_key, penalty_key = jr.split(key, 4)
        obs = batch.observations
        bc_loss = flow_matching_loss(self.flow, obs, batch.actions, bc_key)
        next_obs = batch.next_observations
        next_noise = batch_noise(next_key, obs.shape[0], self.actor)
        z = jr.normal(z_key, (obs.shape[0], self.actor.action_dim))
        # next-action, base-action and metric-anchor rollouts of the frozen flow: one solve
        (next_base, base), anchors = _with_anchors(
            self, obs, [(next_obs, next_noise), (obs, z)], penalty_key)
        next_actions = jax.lax.stop_gradient(jax.vmap(self.actor.refine)(next_obs, next_base))
        critic_loss, diagnostics = self.critics.loss(batch, next_actions)
        displacement = jax.vmap(self.actor.displacement)(obs, base)
        refine_loss, refine = refinement_terms(self, batch, base, displacement, penalty_key,
                                               anchors)
        total = critic_loss + bc_loss + refine_loss
        return total, {**diagnostics, **refine, "bc_loss": bc_loss}

    def update_targets(self, previous: "ResidualFlowQL", step: Step) -> "ResidualFlowQL":
        return eqx.tree_at(lambda a: a.critics, self,
                           self.critics.update_targets(previous.critics))
