import os
import platform

# Headless rendering for record_video's test: MuJoCo picks its OpenGL backend when first
# imported, which happens in some test module before that test runs.
if platform.system() == "Linux" and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

import jax  # noqa: E402
import jax.random as jr  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """Returns a function producing fresh, deterministic PRNG keys."""
    keys = iter(jr.split(jr.key(1234), 1000))
    return lambda: next(keys)
