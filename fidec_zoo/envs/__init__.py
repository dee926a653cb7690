"""OGBench environments and batched policy evaluation.

`make_env(env_name)` builds an OGBench environment from a dataset-style name
(`cube-single-play-singletask-task2-v0`); `evaluate(policy, env_name)` measures OGBench's
single-task success by stepping many environments together (in worker processes with
`workers=N`), with one jitted, batched policy call per step; `record_video(policy, env_name,
path)` renders the same episodes to a GIF.

The private modules, by concern: `_names` (names, `make_env`, `env_dims`), `_workers` (where
the envs step: this process or worker processes), `_cache` (envs and workers kept between
calls), `_evaluate` (the protocol and its result) and `_video` (GIFs of it).
"""

from ._cache import clear_env_cache as clear_env_cache
from ._evaluate import EvalResult as EvalResult
from ._evaluate import default_eval_workers as default_eval_workers
from ._evaluate import default_num_envs as default_num_envs
from ._evaluate import episode_seed as episode_seed
from ._evaluate import evaluate as evaluate
from ._names import env_dims as env_dims
from ._names import make_env as make_env
from ._names import resolve_env_name as resolve_env_name
from ._video import RenderError as RenderError
from ._video import record_video as record_video

__all__ = [
    "EvalResult", "RenderError", "clear_env_cache", "default_eval_workers", "default_num_envs",
    "evaluate", "make_env", "record_video", "resolve_env_name",
]
