"""Silences the notices OGBench environments print on every creation and reset.

GLFW complains that there is no display (evaluation never renders), and gymnasium notes that
OGBench's float64 space bounds are cast to float32. Both repeat for every environment and
worker process, and would bury a job's own output. Other warnings still show.
"""

import contextlib
import warnings
from collections.abc import Iterator

_NOTICES = (
    r".*precision lowered by casting to float32",  # gymnasium Box (UserWarning)
    r".*The DISPLAY environment variable is missing",  # GLFWError
)


@contextlib.contextmanager
def quiet_env_notices() -> Iterator[None]:
    """Within the block, hides the two notices above and nothing else."""
    with warnings.catch_warnings():
        for pattern in _NOTICES:
            warnings.filterwarnings("ignore", message=pattern)
        yield
