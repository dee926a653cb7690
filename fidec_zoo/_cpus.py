"""How many CPUs this process may use: the default worker count of data generation and
evaluation (shared by `fidec_zoo.data` and `fidec_zoo.envs`, neither of which imports the other)."""

import os


def available_cpus() -> int:
    """CPUs this process may run on: the default number of generation workers of the CLIs
    (generation is CPU-bound, one MuJoCo env per worker, and shards without changing output)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
