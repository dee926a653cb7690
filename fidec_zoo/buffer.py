"""`ReplayBuffer`: the offline dataset plus the transitions collected online, sampled on device.

Offline-to-online fine-tuning (the FQL protocol, reference/algorithms.md §12) trains on a buffer
that starts with the offline dataset and receives every online transition. Here the offline rows
and the online rows are two `Dataset`s: the offline one is the loaded dataset itself (never copied
or overwritten), the online one has a fixed capacity and is filled in order, the oldest online
rows overwritten once it is full. Shapes never change, so sampling and appending compile once,
and the online part with its counter is all a checkpoint needs.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Int, PRNGKeyArray

from .dataset import Dataset

__all__ = ["ReplayBuffer"]


def _empty(like: Dataset, rows: int) -> Dataset:
    """`rows` zero rows with the fields and row shapes of `like`."""
    return jax.tree.map(lambda x: jnp.zeros((rows, *x.shape[1:]), x.dtype), like)


class ReplayBuffer(eqx.Module):
    """The offline rows, then up to `capacity - len(offline)` online rows.

    `added` counts the online rows ever appended; the online part holds the latest
    `min(added, len(online))` of them, in order until it wraps. `online_fraction`: `None`
    samples uniformly over every row held (the references' default); a fraction `f` draws
    `round(f * batch_size)` rows of each batch from the online rows and the rest from the offline
    ones (FQL's `balanced_sampling` is `f = 0.5`), all offline while no online row exists yet.

    It samples like a `Dataset` (`sample(key, batch_size)`), so `fidec_zoo.updates.update`
    trains on it unchanged.
    """

    offline: Dataset
    online: Dataset
    added: Int[Array, ""]
    online_fraction: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.online_fraction is not None and not 0.0 <= self.online_fraction <= 1.0:
            raise ValueError(
                f"online_fraction must be in [0, 1] (or None: uniform), got "
                f"{self.online_fraction}.")

    @classmethod
    def create(cls, offline: Dataset, capacity: int,
               online_fraction: float | None = None) -> "ReplayBuffer":
        """A buffer holding `offline` with room for `capacity - len(offline)` online rows.
        Raises `ValueError` when `capacity` leaves no room for any."""
        if capacity <= len(offline):
            raise ValueError(
                f"Replay buffer capacity {capacity} must exceed the offline dataset's "
                f"{len(offline)} rows, which it keeps; the online transitions come on top (the "
                f"references use {2_000_000:,} rows for 1M offline + 1M online).")
        return cls(offline, _empty(offline, capacity - len(offline)),
                   jnp.zeros((), jnp.int32), online_fraction)

    @property
    def obs_dim(self) -> int:
        return self.offline.obs_dim

    @property
    def action_dim(self) -> int:
        return self.offline.action_dim

    @property
    def capacity(self) -> int:
        return len(self.offline) + len(self.online)

    def online_size(self) -> Int[Array, ""]:
        """How many online rows are held."""
        return jnp.minimum(self.added, len(self.online))

    def __len__(self) -> int:
        """Rows held (host value)."""
        return len(self.offline) + int(self.online_size())

    def add(self, rows: Dataset) -> "ReplayBuffer":
        """The buffer with `rows` appended after the online rows held (jittable; the oldest
        online rows are overwritten once the online part is full)."""
        n = rows.observations.shape[0]
        if n > len(self.online):
            raise ValueError(f"Cannot add {n} rows at once to {len(self.online)} online slots.")
        where = (self.added + jnp.arange(n, dtype=self.added.dtype)) % len(self.online)
        online = jax.tree.map(lambda x, r: x.at[where].set(r.astype(x.dtype)), self.online, rows)
        return eqx.tree_at(lambda b: (b.online, b.added), self, (online, self.added + n))

    def online_rows(self) -> Dataset:
        """The online rows held, oldest first (host-side: the number is not static)."""
        size, start = int(self.online_size()), int(self.added) % len(self.online)
        order = (start + jnp.arange(size)) % len(self.online) if size == len(self.online) \
            else jnp.arange(size)
        return jax.tree.map(lambda x: x[order], self.online)

    def sample(self, key: PRNGKeyArray, batch_size: int) -> Dataset:
        """`batch_size` rows drawn with replacement: uniformly over every row held, or with
        `online_fraction` of them from the online rows (jittable; `batch_size` static)."""
        n_off, n_on = len(self.offline), self.online_size()
        k_off, k_on, k_all = jr.split(key, 3)
        if self.online_fraction is None:
            idx = jr.randint(k_all, (batch_size,), 0, n_off + n_on)
            from_online = idx >= n_off
            off_idx, on_idx = jnp.minimum(idx, n_off - 1), jnp.maximum(idx - n_off, 0)
        else:
            first_online = batch_size - round(self.online_fraction * batch_size)
            from_online = (jnp.arange(batch_size) >= first_online) & (n_on > 0)
            off_idx = jr.randint(k_off, (batch_size,), 0, n_off)
            on_idx = jr.randint(k_on, (batch_size,), 0, jnp.maximum(n_on, 1))
        pick = lambda off, on: jnp.where(  # noqa: E731
            from_online.reshape(-1, *([1] * (off.ndim - 1))), on[on_idx], off[off_idx])
        return jax.tree.map(pick, self.offline, self.online)

