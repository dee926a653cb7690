"""`Updater`: the device side of training, around the core's pure update."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Key, PRNGKeyArray, PyTree
from optax import GradientTransformation

from .. import distributed
from .._seeds import check_seeds, seed_keys
from ..agents import AbstractAgent
from ..dataset import Dataset
from ..updates import Batches, initial_state, run_chunk, val_diagnostics

__all__ = ["Updater"]

State = dict[str, PyTree]
#: One run key, or one per seed.
RunKey = PRNGKeyArray | Key[Array, " seeds"]


class Updater:
    """Runs chunks of updates of one optimiser on device: one agent, `seeds` agents stacked
    over a leading axis (`vmap`), or one agent data-parallel over a 1-D `mesh`.

    The training state is `{agent, opt_state, key, step}` (what a checkpoint holds). Update `i`
    uses `fold_in(train_key, i)`, so chunks of any length give the same numbers and a resumed run
    draws what an uninterrupted one draws.
    """

    def __init__(self, optimiser: GradientTransformation, batch_size: int, *,
                 seeds: int | None = None, mesh: jax.sharding.Mesh | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if mesh is not None:
            distributed.check_mesh(mesh, batch_size)
        self.optimiser, self.batch_size, self.seeds, self.mesh = optimiser, batch_size, seeds, mesh

    def keys(self, key: RunKey) -> RunKey:
        """The run key(s): `key`, or one per seed (split from one key or given as `seeds`)."""
        return seed_keys(key, self.seeds)

    def init(self, agent: AbstractAgent, key: RunKey) -> State:
        """The initial state of `agent` (checked to be stacked when training several seeds)."""
        if self.seeds is not None:
            check_seeds(agent, self.seeds)
        return initial_state(agent, self.optimiser, self.keys(key), self.seeds)

    def skeleton(self, agent: AbstractAgent, key: RunKey) -> State:
        """The shapes of `init(agent, key)`, allocating nothing (to restore a checkpoint into)."""
        keys = self.keys(key)
        return eqx.filter_eval_shape(
            lambda a: initial_state(a, self.optimiser, keys, self.seeds), agent)

    def place(self, state: State) -> State:
        """Fresh copies of the state's arrays on the first device (or replicated on the mesh):
        fresh because `run` donates them, committed so that new and restored states share one
        compiled program."""
        if self.mesh is not None:
            return distributed.replicate(state, self.mesh)
        arrays, static = eqx.partition(state, eqx.is_array)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return eqx.combine(jax.device_put(arrays, device, may_alias=False), static)

    def place_data(self, data: Dataset) -> Dataset:
        """The dataset where the updates read it (every device of the mesh)."""
        return data if self.mesh is None else distributed.replicate(data, self.mesh)

    def stream_keys(self, state: State) -> tuple[RunKey, RunKey, RunKey]:
        """The training, validation and evaluation keys of a run (per seed)."""
        split = lambda k: jr.split(k, 3)  # noqa: E731
        keys = split(state["key"]) if self.seeds is None else \
            jax.vmap(split, out_axes=1)(state["key"])
        return keys[0], keys[1], keys[2]

    def run(self, state: State, data: Batches, key: RunKey,
            num_steps: int) -> tuple[State, dict[str, np.ndarray]]:
        """`num_steps` updates from `state["step"]`; the new state and the per-update
        diagnostics on the host (`(num_steps,)` or `(num_steps, seeds)` each)."""
        step = int(state["step"])
        shardings = None if self.mesh is None else (
            distributed.batch_sharding(self.mesh), distributed.replicated(self.mesh))
        agent, opt_state, diagnostics = run_chunk(
            (data, key, jnp.asarray(step, jnp.int32)), state["agent"], state["opt_state"],
            self.optimiser, self.batch_size, num_steps, self.seeds is not None, shardings)
        new = dict(state, agent=agent, opt_state=opt_state,
                   step=jnp.asarray(step + num_steps, jnp.int32))
        return new, jax.device_get(diagnostics)

    def validate(self, state: State, val: Dataset, key: RunKey) -> dict[str, np.ndarray]:
        """Loss and diagnostics of the current agent on a minibatch of `val` (per seed)."""
        out = val_diagnostics(state["agent"], val, key, jnp.asarray(int(state["step"])),
                              self.batch_size, self.seeds is not None)
        return jax.device_get(out)
