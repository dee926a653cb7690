"""Many seeds in one program: agents stacked over a leading seed axis, and their keys.

`fit(..., seeds=N)` trains such a stack with `vmap`; `select_seed` takes one seed back out.
`fidec_zoo.train` re-exports the public names.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Key, PRNGKeyArray, PyTree

__all__ = ["check_seeds", "seed_keys", "select_seed", "stack_seeds"]


def select_seed(tree: PyTree, i: int) -> PyTree:
    """Seed `i` of a tree stacked over seeds (`fit(..., seeds=N)`'s agent): every array leaf
    indexed `[i]`."""
    arrays, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.tree.map(lambda x: x[i], arrays), static)


def stack_seeds(trees: list[PyTree]) -> PyTree:
    """One tree with the array leaves of `trees` (same structure, e.g. agents built from
    different keys) stacked along a new leading seed axis: `fit(..., seeds=len(trees))`'s input.
    Equivalent to `eqx.filter_vmap(build)(jr.split(key, n))` for a builder `build(key)`."""
    parts = [eqx.partition(t, eqx.is_array) for t in trees]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[a for a, _ in parts])
    return eqx.combine(stacked, parts[0][1])


def check_seeds(agent: PyTree, seeds: int) -> None:
    """Check that `agent` is stacked for `fit(seeds=...)`: every array leaf has a leading axis of
    length `seeds`. Raises a `ValueError` for `seeds < 1`, or one saying how to stack the agent."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}.")
    shapes = [x.shape for x in jax.tree.leaves(eqx.filter(agent, eqx.is_array))]
    bad = [shape for shape in shapes if not shape or shape[0] != seeds]
    if bad:
        raise ValueError(
            f"fit(seeds={seeds}) needs an agent stacked over seeds (leading axis {seeds} on "
            "every array): build it with eqx.filter_vmap over jr.split(key, seeds), or "
            f"fidec_zoo.train.stack_seeds([...]). Got array shapes {bad[:3]}.")


def seed_keys(key: PRNGKeyArray | Key[Array, " seeds"], seeds: int | None) -> Array:
    """The run key(s): one key, or `seeds` keys (a given batch of them, else `split(key)`)."""
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.wrap_key_data(key)
    if seeds is None:
        if key.shape:
            raise ValueError(f"key must be a single PRNG key, got shape {key.shape} (a batch of "
                             "keys is for fit(..., seeds=N)).")
        return key
    if key.shape == ():
        return jr.split(key, seeds)
    if key.shape != (seeds,):
        raise ValueError(f"fit(seeds={seeds}) takes one key or {seeds} keys, got a key array of "
                         f"shape {key.shape}.")
    return key
