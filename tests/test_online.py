"""Offline-to-online fine-tuning: the replay buffer's semantics, the online phase end to end for
FQL, DeFlow and FiDec on a tiny generated dataset, its bad inputs, and kill-and-resume."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from fidec_zoo.buffer import ReplayBuffer
from fidec_zoo.dataset import Dataset


def rows(n: int, start: int = 0, obs_dim: int = 3, action_dim: int = 2) -> Dataset:
    """`n` rows whose every value is the row's number (`start`, `start + 1`, ...), so a sampled
    row tells which one it is."""
    ids = jnp.arange(start, start + n, dtype=jnp.float32)
    obs = jnp.repeat(ids[:, None], obs_dim, axis=1)
    act = jnp.repeat(ids[:, None], action_dim, axis=1)
    return Dataset(obs, act, ids, ids, obs, act, ids)


def test_buffer_keeps_offline_rows_and_appends_online_rows_in_order():
    offline = rows(10)
    buffer = ReplayBuffer.create(offline, capacity=16)
    assert buffer.capacity == 16 and len(buffer) == 10
    add = jax.jit(ReplayBuffer.add)
    buffer = add(buffer, rows(2, 100))
    buffer = add(buffer, rows(3, 102))
    assert len(buffer) == 15 and int(buffer.added) == 5
    np.testing.assert_array_equal(buffer.online_rows().rewards, np.arange(100, 105))
    buffer = add(buffer, rows(4, 105))  # 9 online rows in 6 slots: the 3 oldest are replaced
    assert len(buffer) == 16 and int(buffer.added) == 9
    np.testing.assert_array_equal(buffer.online_rows().rewards, np.arange(103, 109))
    np.testing.assert_array_equal(buffer.offline.rewards, np.arange(10))


@pytest.mark.parametrize("capacity", [5, 10])
def test_buffer_capacity_must_exceed_the_dataset(capacity):
    with pytest.raises(ValueError, match="must exceed the offline dataset's 10 rows"):
        ReplayBuffer.create(rows(10), capacity=capacity)


def sampled_ids(buffer: ReplayBuffer, draws: int = 200, batch: int = 64) -> np.ndarray:
    keys = jr.split(jr.key(0), draws)
    batches = jax.jit(jax.vmap(lambda k: buffer.sample(k, batch).rewards))(keys)
    return np.asarray(batches)


def test_uniform_sampling_covers_every_row_held_equally():
    buffer = ReplayBuffer.create(rows(30), capacity=100).add(rows(10, 100))
    ids = sampled_ids(buffer).ravel()
    assert set(np.unique(ids)) == set(range(30)) | set(range(100, 110))
    online = np.mean(ids >= 100)
    assert abs(online - 10 / 40) < 0.02  # 12800 draws: the standard error is 0.004
    # rows are whole: every field of a sampled row is that row's
    batch = buffer.sample(jr.key(1), 32)
    np.testing.assert_array_equal(batch.observations[:, 0], batch.rewards)
    np.testing.assert_array_equal(batch.next_actions[:, 1], batch.terminals)


@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_balanced_sampling_draws_the_online_fraction(fraction):
    buffer = ReplayBuffer.create(rows(1000), capacity=2000, online_fraction=fraction)
    only_offline = sampled_ids(buffer, draws=5)
    assert (only_offline < 1000).all()  # no online row yet: every row offline
    buffer = buffer.add(rows(4, 5000))
    ids = sampled_ids(buffer)
    assert (np.mean(ids >= 5000, axis=1) == fraction).all()  # exactly that many per batch
    assert set(np.unique(ids[ids >= 5000])) == {5000, 5001, 5002, 5003}
    assert len(np.unique(ids[ids < 1000])) > 900


def test_online_fraction_is_checked():
    with pytest.raises(ValueError, match="online_fraction"):
        ReplayBuffer.create(rows(4), capacity=8, online_fraction=1.5)
