"""From a fidec_zoo environment name to an OGBench environment and its sizes.

A name is OGBench's dataset-style one, `<env>-<dataset type>-singletask[-taskN]-v0`
(`cube-single-play-singletask-task2-v0`): it names both the gymnasium environment and the dataset
recorded in it. `resolve_env_name` splits it (with a suggestion when it is misspelt), `make_env`
builds the environment and `env_dims` reads its sizes. The evaluator, its worker processes and
`fidec_zoo.data` all start from here.
"""

import difflib
import warnings
from typing import Any

import gymnasium
import numpy as np

from .._env_notices import quiet_env_notices

#: OGBench's dataset types, the word before `singletask` in a name (`cube-single-play-...`).
_DATASET_TYPES = ("play", "noisy", "navigate", "stitch", "explore")


def _registry() -> dict[str, Any]:
    """Gymnasium's registry with OGBench's environments in it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Heavy (MuJoCo and its environments), so imported when a name is first checked, not
        # by `import fidec_zoo.envs`; importing it registers the OGBench environments.
        import ogbench  # noqa: F401
    return gymnasium.registry


def _singletask_families() -> list[str]:
    names = {k.split("-singletask")[0] for k in _registry() if "-singletask" in k}
    return sorted(names)


def _split_singletask(env_name: str) -> tuple[str, str, str] | None:
    """`(dataset type, gymnasium id, dataset name)` of `<env>-<type>-singletask[-taskN]-v0`:
    `cube-single-play-singletask-task2-v0` -> (`play`, `cube-single-singletask-task2-v0`,
    `cube-single-play-v0`). None when the name has no `singletask` after two or more words."""
    splits = env_name.split("-")
    if "singletask" not in splits or splits.index("singletask") < 2:
        return None
    pos = splits.index("singletask")
    return (splits[pos - 1], "-".join(splits[: pos - 1] + splits[pos:]),
            "-".join(splits[:pos] + splits[-1:]))


def _close_names(env_name: str) -> list[str]:
    """Registered single-task names close to a misspelt or task-less `env_name`, written with its
    dataset type: `cube-singel-play-singletask-task2-v0` -> `cube-single-play-singletask-task2-v0`;
    `scene-play-v0` -> `scene-play-singletask-v0`. None when `env_name` names no dataset type."""
    splits, parts = env_name.split("-"), _split_singletask(env_name)
    if parts is not None:
        kind, env_id, _ = parts
    elif len(splits) >= 3 and "singletask" not in splits:  # a dataset name: its default task
        kind, env_id = splits[-2], "-".join(splits[:-2] + ["singletask", splits[-1]])
    else:
        return []
    if kind not in _DATASET_TYPES:
        return []
    ids = [k for k in _registry() if "-singletask" in k]
    return [m.replace("-singletask", f"-{kind}-singletask", 1)
            for m in difflib.get_close_matches(env_id, ids, n=3, cutoff=0.8)]


def _hint(env_name: str) -> str:
    if env_name in _registry():  # a gymnasium id: the dataset type is missing
        return (f" {env_name!r} is OGBench's gymnasium id; a fidec_zoo name also carries the "
                f"dataset type ({', '.join(_DATASET_TYPES)}) before 'singletask', e.g. "
                "'cube-single-play-singletask-task2-v0'.")
    close = _close_names(env_name)
    return f" Did you mean {', '.join(map(repr, close))}?" if close else ""


def resolve_env_name(env_name: str) -> tuple[str, str]:
    """Splits an OGBench name into `(gymnasium env id, dataset name)`, as OGBench does.

    `cube-single-play-singletask-task2-v0` -> (`cube-single-singletask-task2-v0`,
    `cube-single-play-v0`). Raises `ValueError` for anything that is not a registered OGBench
    single-task environment.
    """
    parts = _split_singletask(env_name)
    if parts is None:
        raise ValueError(
            f"{env_name!r} is not an OGBench single-task name.{_hint(env_name)} Expected "
            "'<env>-<dataset type>-singletask[-taskN]-v0', e.g. "
            "'cube-single-play-singletask-task2-v0'. Single-task environments exist for: "
            + ", ".join(_singletask_families())
        )
    _, env_id, dataset_name = parts
    if env_id not in _registry():
        raise ValueError(
            f"Unknown OGBench environment {env_name!r} (gymnasium id {env_id!r} is not "
            f"registered).{_hint(env_name)} Single-task environments exist for: "
            + ", ".join(_singletask_families())
            + " (names like '<env>-<dataset type>-singletask[-task1..5]-v0')."
        )
    return env_id, dataset_name


def make_env(env_name: str, **env_kwargs: Any) -> gymnasium.Env:
    """Builds the OGBench environment for `env_name` (no dataset is touched).

    Single-task names (`cube-single-play-singletask-task2-v0`) give the fixed-task env used by
    `evaluate`; goal-conditioned names (`cube-single-play-v0`) are accepted too. `env_kwargs`
    go to the environment (e.g. `render_mode="rgb_array", width=256, height=256`).
    """
    import ogbench  # heavy: imported when first needed (see `_registry`)

    if "singletask" in env_name.split("-"):
        resolve_env_name(env_name)
    else:
        splits = env_name.split("-")
        env_id = "-".join(splits[:-2] + splits[-1:])
        if len(splits) < 3 or env_id not in _registry():
            raise ValueError(
                f"Unknown OGBench environment {env_name!r}. Expected a name like "
                "'cube-single-play-singletask-task2-v0'; single-task environments exist for: "
                + ", ".join(_singletask_families())
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ogbench.make_env_and_datasets(env_name, env_only=True, **env_kwargs)


def env_dims(env: gymnasium.Env) -> tuple[int, int]:
    """(observation dim, action dim) of `env`, its spaces flattened."""
    with quiet_env_notices():  # OGBench builds a new space on every access
        return int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
