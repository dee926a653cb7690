"""The environments and worker processes `evaluate` keeps from one call to the next.

Building an OGBench env compiles its MJCF model (~1 s, ~160 MB each), and a worker process takes
seconds to start, so the envs (and workers) of the most recent `env_name` are kept for the next
`evaluate` call; other names are released.
"""

import gymnasium

from ._names import make_env
from ._workers import WorkerEnvs

_POOL: dict[str, list[gymnasium.Env]] = {}
_WORKERS: dict[str, WorkerEnvs] = {}


def env_pool(env_name: str, n: int) -> list[gymnasium.Env]:
    """`n` envs of `env_name` in this process, built as needed; other names' envs and workers
    are released."""
    for other in [k for k in {**_POOL, **_WORKERS} if k != env_name]:
        clear_env_cache(other)
    pool = _POOL.setdefault(env_name, [])
    while len(pool) < n:
        pool.append(make_env(env_name))
    return pool[:n]


def worker_pool(env_name: str, workers: int) -> WorkerEnvs:
    """The kept `workers` worker processes of `env_name`, started anew if there are none, they
    are closed or their number differs."""
    pool = _WORKERS.get(env_name)
    if pool is None or pool.closed or pool.workers != workers:
        if pool is not None:
            pool.close()
        pool = _WORKERS[env_name] = WorkerEnvs(env_name, workers)
    return pool


def clear_env_cache(env_name: str | None = None) -> None:
    """Closes and forgets the environments (and worker processes) `evaluate` keeps between
    calls."""
    for name in list({**_POOL, **_WORKERS}) if env_name is None else [env_name]:
        for env in _POOL.pop(name, []):
            env.close()
        if name in _WORKERS:
            _WORKERS.pop(name).close()
