import jax
import jax.random as jr
import pytest

from fidec_zoo.data import load_ogbench

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """Returns a function producing fresh, deterministic PRNG keys."""
    keys = iter(jr.split(jr.key(1234), 1000))
    return lambda: next(keys)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """$FIDEC_ZOO_DATA pointed at a fresh directory for one test module."""
    root = tmp_path_factory.mktemp("fidec_zoo_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FIDEC_ZOO_DATA", str(root))
        yield root


@pytest.fixture(scope="module")
def tiny_ogbench(data_root):
    """(train, val) of a real 2-episode cube-single task2 dataset, generated into `data_root`."""
    _, train, val = load_ogbench("cube-single-play-singletask-task2-v0", episodes=2, seed=0)
    return train, val
