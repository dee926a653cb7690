"""The pure update and what compiles it: one update, chunks of updates in one jitted
`lax.scan` (optionally `vmap`ped over seeds or split over devices), validation losses and the
training state a checkpoint holds. Core: it knows agents and datasets, not files or envs, so
the offline `fit` and an online loop share it."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Int, PRNGKeyArray, PyTree
from optax import GradientTransformation

from .agents import AbstractAgent, trainable
from .buffer import ReplayBuffer
from .dataset import Dataset
from .types import Diagnostics

__all__ = ["Batches", "initial_state", "run_chunk", "update", "val_diagnostics"]

#: What an update draws its minibatch from: the offline dataset, or the online replay buffer.
Batches = Dataset | ReplayBuffer


def update(
    agent: AbstractAgent,
    opt_state: PyTree,
    data: Batches,
    key: PRNGKeyArray,
    step: Int[Array, ""],
    *,
    optimiser: GradientTransformation,
    batch_size: int,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> tuple[AbstractAgent, PyTree, Diagnostics]:
    """One update: a minibatch from `data` (a `Dataset` or a `ReplayBuffer`) drawn with
    `fold_in(key, step)`, the gradient of `agent.loss` over the trainable leaves, one optimiser
    step, then `new_agent.update_targets(agent, step)` (targets follow the pre-update online
    weights).

    Pure and jittable, so it can be `vmap`ped over seeds. `metrics` holds `loss` (the total)
    and the agent's own metrics. `batch_sharding` (e.g. `NamedSharding(mesh, P("data"))`)
    constrains the minibatch inside a jitted program, making the update data-parallel.
    `optimiser` is any optax `GradientTransformation` over the trainable leaves.
    """
    sample_key, loss_key = jr.split(jr.fold_in(key, step))
    batch = data.sample(sample_key, batch_size)
    if batch_sharding is not None:
        batch = eqx.filter_shard(batch, batch_sharding)
    params, static = eqx.partition(agent, trainable(agent))

    def loss_fn(params):
        return eqx.combine(params, static).loss(batch, key=loss_key, step=step)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimiser.update(grads, opt_state, params)
    new_agent = eqx.combine(optax.apply_updates(params, updates), static)
    new_agent = new_agent.update_targets(agent, step)
    metrics = {"loss": loss, **metrics}
    return new_agent, opt_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


@eqx.filter_jit(donate="all-except-first")
def run_chunk(inputs, agent, opt_state, optimiser, batch_size, num_steps, seeded=False,
              shardings=None):
    """`num_steps` updates from step `start` in one `lax.scan`; diagnostics come back stacked.

    `inputs = (data, key, start)` is not donated (the dataset and key are reused, and the
    dataset is an argument, not a constant baked into the program); agent and optimiser are.
    `seeded`: agent, optimiser state and key carry a leading seed axis and `update` is
    `vmap`ped over it (diagnostics `(num_steps, seeds)`). `shardings = (batch, state)`: the
    minibatch is split by `batch` and the state kept as `state` (e.g. replicated over a mesh;
    `fidec_zoo.distributed` makes both).
    """
    data, key, start = inputs
    arrays, static = eqx.partition((agent, opt_state), eqx.is_array)
    if shardings is None:
        sharding = None
        keep = lambda tree: tree  # noqa: E731
    else:
        sharding, state_sharding = shardings
        keep = lambda tree: eqx.filter_shard(tree, state_sharding)  # noqa: E731

    def one(arrays, key, step):
        agent, opt_state = eqx.combine(arrays, static)
        agent, opt_state, metrics = update(agent, opt_state, data, key, step, optimiser=optimiser,
                                           batch_size=batch_size, batch_sharding=sharding)
        return eqx.filter((agent, opt_state), eqx.is_array), metrics

    step_fn = jax.vmap(one, in_axes=(0, 0, None)) if seeded else one

    def body(arrays, step):
        arrays, metrics = step_fn(arrays, key, step)
        return keep(arrays), metrics

    arrays, metrics = jax.lax.scan(body, keep(arrays),
                                   start + jnp.arange(num_steps, dtype=start.dtype))
    agent, opt_state = eqx.combine(arrays, static)
    return agent, opt_state, metrics


def _val_loss(agent, val, key, step, batch_size):
    sample_key, loss_key = jr.split(jr.fold_in(key, step))
    loss, metrics = agent.loss(val.sample(sample_key, batch_size), key=loss_key, step=step)
    return {"loss": loss, **metrics}


@eqx.filter_jit
def val_diagnostics(agent, val, key, step, batch_size, seeded=False):
    """The agent's loss and diagnostics on a minibatch of `val` (per seed when `seeded`)."""
    if not seeded:
        return _val_loss(agent, val, key, step, batch_size)
    return eqx.filter_vmap(lambda a, k: _val_loss(a, val, k, step, batch_size))(agent, key)


def initial_state(agent, optimiser, key, seeds=None) -> dict[str, Any]:
    """The training state {agent, opt_state, key, step}: what a checkpoint holds (agent,
    optimiser state and key stacked over seeds when `seeds` is given)."""
    init = optimiser.init if seeds is None else jax.vmap(optimiser.init)
    opt_state = init(eqx.filter(agent, trainable(agent)))
    return dict(agent=agent, opt_state=opt_state, key=key, step=jnp.zeros((), jnp.int32))
