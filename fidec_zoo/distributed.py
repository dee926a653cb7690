"""Data-parallel training over a `jax.sharding.Mesh`: the batch is split over devices, everything
else (parameters, optimiser state, dataset, keys) is replicated.

    from fidec_zoo import distributed
    from fidec_zoo.train import fit

    mesh = distributed.make_data_mesh()          # every device, one axis named "data"
    fit(agent, data, steps=..., run_dir=..., key=key, mesh=mesh)

`fit(..., mesh=mesh)` replicates the state and the dataset on the mesh and constrains each sampled
minibatch to `NamedSharding(mesh, P("data"))`; XLA then partitions the per-sample work and inserts
the gradient all-reduce. The result equals a one-device run up to float summation order.

Several hosts: call `jax.distributed.initialize()` first on every process, build the mesh over
`jax.devices()` (all processes' devices), and run the same `fit` call on every process; only
`is_main_process()` writes logs and evaluates (docs/scaling.md).
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import PyTree

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "is_main_process",
    "make_data_mesh",
    "replicate",
    "replicated",
    "shard_batch",
]

#: Name of the mesh axis the batch is split over.
DATA_AXIS = "data"


def make_data_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named `"data"` over `devices`: all of `jax.devices()` (every process's) by
    default, the first `n` for an integer `n`, or the given list."""
    available = jax.devices()
    if devices is None:
        devices = available
    elif isinstance(devices, int):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"Asked for {devices} devices but {len(available)} are available "
                f"({available[0].platform}). On CPU, simulate more with XLA_FLAGS="
                "--xla_force_host_platform_device_count=N set before jax is imported.")
        devices = available[:devices]
    return Mesh(np.asarray(list(devices)), (DATA_AXIS,))


def check_mesh(mesh: Mesh, batch_size: int) -> str:
    """The mesh's only axis name; raises if the mesh is not 1-D or does not divide the batch."""
    if len(mesh.axis_names) != 1:
        raise ValueError(f"fit needs a 1-D data mesh (make_data_mesh), got axes "
                         f"{mesh.axis_names}.")
    if batch_size % mesh.size:
        raise ValueError(f"batch_size={batch_size} must be divisible by the {mesh.size} devices "
                         "of the mesh.")
    return mesh.axis_names[0]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh's data axis."""
    return NamedSharding(mesh, P(mesh.axis_names[0]))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def _global(x, sharding: NamedSharding):
    """`x` (the same value on every process) as a global array with `sharding`, built from
    fresh per-device copies. (`jax.device_put(x, replicated, may_alias=False)` reuses `x`'s own
    buffer for one of the shards, so two leaves sharing a buffer, e.g. a critic and its
    freshly initialised target, would alias and could not both be donated.)"""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jr.wrap_key_data(_global(jr.key_data(x), sharding), impl=jr.key_impl(x))
    if not (isinstance(x, jax.Array) and x.is_fully_addressable):
        x = np.asarray(x)
    index_map = sharding.addressable_devices_indices_map(x.shape)
    shards = [jax.device_put(x[index], device, may_alias=False)
              for device, index in index_map.items()]
    return jax.make_array_from_single_device_arrays(x.shape, sharding, shards)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """The array leaves of `tree` copied onto every device of `mesh` (fresh buffers). With
    several processes each must pass the same values (same seed, same dataset)."""
    arrays, static = eqx.partition(tree, eqx.is_array)
    sharding = replicated(mesh)
    return eqx.combine(jax.tree.map(lambda x: _global(x, sharding), arrays), static)


def shard_batch(local_batch: PyTree, mesh: Mesh) -> PyTree:
    """A global batch, split over the data axis, from each process's own rows.

    For host-side pipelines: process `p` passes its `local_batch` (leading axis = global batch /
    process count), e.g. sampled with `jax.random.fold_in(key, jax.process_index())`; one process
    passes the whole batch. `fit` does not need it (it samples on device from a replicated
    dataset)."""
    sharding = batch_sharding(mesh)
    arrays, static = eqx.partition(local_batch, eqx.is_array)
    put = lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x))  # noqa: E731
    return eqx.combine(jax.tree.map(put, arrays), static)


def is_main_process() -> bool:
    """True on process 0 (the one that logs, evaluates and prints)."""
    return jax.process_index() == 0


def host_copy(tree: PyTree) -> PyTree:
    """`tree` with its array leaves fetched to host numpy (for process-local work such as
    evaluation while the state lives on a multi-process mesh)."""
    arrays, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.device_get(arrays), static)
