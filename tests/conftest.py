import jax
import jax.random as jr
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """Returns a function producing fresh, deterministic PRNG keys."""
    keys = iter(jr.split(jr.key(1234), 1000))
    return lambda: next(keys)
