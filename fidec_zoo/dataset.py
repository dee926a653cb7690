"""`Dataset`: an offline RL dataset as a pytree of device arrays, with on-device sampling."""

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

FIELDS = (
    "observations",
    "actions",
    "rewards",
    "masks",
    "next_observations",
    "next_actions",
    "terminals",
)


class Dataset(eqx.Module):
    """Transitions `(s, a, r, mask, s', a', terminal)`, one row each, as float32 device arrays.

    `masks` is 0 exactly where the state already solves the task (OGBench single-task), so the
    Q-target is `r + gamma * mask * V(s')`. `terminals` marks the last transition of each
    episode (a time-limit truncation, not a goal). `next_actions` is the dataset action at `s'`
    (the row's own action on an episode's last transition).

    Every leaf is an array, so a `Dataset` passes through `jax.jit`, `vmap` and `tree_map`.
    """

    observations: Float[Array, "n obs_dim"]
    actions: Float[Array, "n action_dim"]
    rewards: Float[Array, " n"]
    masks: Float[Array, " n"]
    next_observations: Float[Array, "n obs_dim"]
    next_actions: Float[Array, "n action_dim"]
    terminals: Float[Array, " n"]

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[-1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[-1]

    def __len__(self) -> int:
        return self.observations.shape[0]

    def sample(self, key: PRNGKeyArray, batch_size: int) -> "Dataset":
        """`batch_size` rows drawn uniformly with replacement (jittable; `batch_size` static)."""
        idx = jax.random.randint(key, (batch_size,), 0, len(self))
        return jax.tree.map(lambda x: x[idx], self)

    @classmethod
    def from_numpy(cls, arrays: Mapping[str, np.ndarray | Array]) -> "Dataset":
        """Builds a `Dataset` from a mapping holding (at least) the seven fields, cast to f32."""
        missing = [k for k in FIELDS if k not in arrays]
        if missing:
            raise KeyError(f"Dataset.from_numpy: missing fields {missing}")
        return cls(**{k: jnp.asarray(arrays[k], dtype=jnp.float32) for k in FIELDS})

    def to_numpy(self) -> dict[str, np.ndarray]:
        """The fields as host numpy arrays."""
        return {k: np.asarray(getattr(self, k)) for k in FIELDS}
