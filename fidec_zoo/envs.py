"""OGBench environments and batched policy evaluation.

`make_env(env_name)` builds an OGBench environment from a dataset-style name
(`cube-single-play-singletask-task2-v0`); `evaluate(policy, env_name)` measures OGBench's
single-task success by stepping many environments together (in worker processes with
`workers=N`), with one jitted, batched policy call per step; `record_video(policy, env_name,
path)` renders the same episodes to a GIF.
"""

import dataclasses
import difflib
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
from jaxtyping import Array, Float, Int, PRNGKeyArray
from tqdm.auto import tqdm

from ._cpus import available_cpus
from ._env_workers import LocalEnvs, WorkerEnvs, env_dims

__all__ = [
    "EvalResult", "RenderError", "clear_env_cache", "default_eval_workers", "default_num_envs",
    "evaluate", "make_env", "record_video", "resolve_env_name",
]


class RenderError(RuntimeError):
    """MuJoCo could not render (no usable OpenGL backend); the message says how to choose one."""


def _registry() -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ogbench  # noqa: F401  (registers the OGBench environments)
    return gymnasium.registry


def _singletask_families() -> list[str]:
    names = {k.split("-singletask")[0] for k in _registry() if "-singletask" in k}
    return sorted(names)


#: OGBench's dataset types, the word before `singletask` in a name (`cube-single-play-...`).
_DATASET_TYPES = ("play", "noisy", "navigate", "stitch", "explore")


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
    import ogbench

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


# Building an OGBench env compiles its MJCF model (~1 s, ~160 MB each), and a worker
# process takes seconds to start, so the envs (and workers) of the most recent `env_name` are
# kept for the next `evaluate` call; other names are released.
_POOL: dict[str, list[gymnasium.Env]] = {}
_WORKERS: dict[str, WorkerEnvs] = {}


def _env_pool(env_name: str, n: int) -> list[gymnasium.Env]:
    for other in [k for k in {**_POOL, **_WORKERS} if k != env_name]:
        clear_env_cache(other)
    pool = _POOL.setdefault(env_name, [])
    while len(pool) < n:
        pool.append(make_env(env_name))
    return pool[:n]


def default_eval_workers() -> int:
    """The command lines' `evaluate(workers=...)`: one per CPU this process may use, at most 4,
    since each worker holds its own OGBench and MuJoCo (~0.7 GB with its first env)."""
    return min(available_cpus(), 4)


def default_num_envs(workers: int = 1) -> int:
    """`evaluate`'s default `num_envs`: 10, rounded up to a multiple of `workers`. A round of
    steps waits for the worker holding the most envs, so each worker gets as many (8 workers:
    16 envs, 2 each, rather than 10 with 2 in some and 1 in others)."""
    return math.ceil(10 / workers) * workers


def _worker_pool(env_name: str, workers: int) -> WorkerEnvs:
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


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Outcome of `evaluate`.

    `success` is the mean over episodes of `info['success']` at the last step (OGBench's metric);
    `success_std` its standard deviation over episodes and `success_ci95` the half-width of a
    normal-approximation 95% interval of the mean. `episodes` holds one dict per episode with
    keys `success`, `return`, `length` and `seed` (the reset seed), in episode order.
    """

    env_name: str
    success: float
    success_std: float
    success_ci95: float
    return_mean: float
    length_mean: float
    episodes: tuple[dict[str, Any], ...]
    wall_time: float
    num_envs: int
    seed: int


def episode_seed(seed: int, episode: int) -> int:
    """The reset seed of evaluation episode `episode` (independent of how envs are batched)."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


@eqx.filter_jit
def _act(
    policy: eqx.Module,
    obs: Float[Array, "envs obs_dim"],
    episode_ids: Int[Array, " envs"],
    steps: Int[Array, " envs"],
    key: PRNGKeyArray,
) -> Float[Array, "envs action_dim"]:
    # Noise depends only on (key, episode, step), so results do not depend on `num_envs`.
    def one(o, ep, t):
        k = jax.random.fold_in(jax.random.fold_in(key, ep), t)
        return policy(o, jax.random.normal(k, tuple(policy.noise_shape), jnp.float32))

    return jax.vmap(one)(obs, episode_ids, steps)


def _check_policy(policy: eqx.Module, dims: tuple[int, int], env_name: str) -> None:
    """Raises unless `policy` acts on `dims` = (observation dim, action dim) of `env_name`."""
    for attr in ("obs_dim", "action_dim", "noise_shape"):
        if not hasattr(policy, attr):
            raise TypeError(
                f"{type(policy).__name__} lacks `{attr}`; a policy needs obs_dim, action_dim, "
                "noise_shape and __call__(obs, noise) -> action on unbatched inputs."
            )
    obs_dim, action_dim = dims
    if policy.obs_dim != obs_dim:
        raise ValueError(
            f"policy.obs_dim={policy.obs_dim} but {env_name} has observation dim {obs_dim}."
        )
    if policy.action_dim != action_dim:
        raise ValueError(
            f"policy.action_dim={policy.action_dim} but {env_name} has action dim {action_dim}."
        )


def evaluate(
    policy: eqx.Module,
    env_name: str,
    *,
    episodes: int = 50,
    seed: int = 0,
    num_envs: int | None = None,
    workers: int = 1,
    progress: bool = False,
    keep_envs: bool = True,
) -> EvalResult:
    """Runs `policy` for `episodes` episodes of the single-task env `env_name`.

    `num_envs` environments are stepped together (default `default_num_envs(workers)`: 10, or
    a multiple of `workers`; at most `episodes`); each step makes
    ONE call of a jitted `vmap` of `policy(obs, noise)` over a fixed-size batch, so it compiles
    once. Finished envs start the next pending episode; idle slots are padded and ignored.
    Episode `k` resets with seed `episode_seed(seed, k)` and draws its noise from
    `fold_in(key(seed), k)`, so results do not depend on `num_envs` or `workers`.

    Building an OGBench env takes ~1 s and ~160 MB (docs/data.md). Stepping is Python, one env
    at a time, and takes most of the time: `workers > 1` steps the envs in that many spawned
    processes (at most `num_envs`) at once, for machines with CPUs to spare. Like any spawned
    process, they import the calling script's main module, so a script must keep its work
    under `if __name__ == "__main__":`. With `keep_envs` (default) the envs and workers of the
    latest `env_name` are kept for the next call; `clear_env_cache()` releases them.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}.")
    for name, value in (("num_envs", num_envs), ("workers", workers)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    num_envs = min(default_num_envs(workers) if num_envs is None else num_envs, episodes)
    workers = min(workers, num_envs)
    resolve_env_name(env_name)  # single-task names only
    start = time.perf_counter()
    envs: LocalEnvs | WorkerEnvs
    if workers > 1:  # the workers report the env's sizes: no env is built in this process
        envs = _worker_pool(env_name, workers)
        _check_policy(policy, envs.dims(), env_name)
    else:  # one env is checked before the others are built
        _check_policy(policy, env_dims(_env_pool(env_name, 1)[0]), env_name)
        envs = LocalEnvs(_env_pool(env_name, num_envs))
    try:
        return _rollouts(policy, envs, num_envs, env_name, episodes, seed, start=start,
                         progress=progress)
    finally:
        if not keep_envs:
            clear_env_cache(env_name)


def _rollouts(
    policy: eqx.Module,
    envs: LocalEnvs | WorkerEnvs,
    num_envs: int,
    env_name: str,
    episodes: int,
    seed: int,
    *,
    start: float,
    progress: bool,
    on_step: Callable[[int, int, bool], None] | None = None,
) -> EvalResult:
    """Episodes 0..episodes-1 of the protocol, stepped on slots 0..num_envs-1 of `envs`
    together. `on_step(i, t, done)` runs after every reset (`t = 0`) and step `t` of slot `i`,
    `done` after an episode's last step (what `record_video` renders)."""
    obs_dim = policy.obs_dim
    key = jax.random.key(seed)
    obs = np.zeros((num_envs, obs_dim), np.float32)
    ep_ids = np.zeros(num_envs, np.int32)
    steps = np.zeros(num_envs, np.int32)
    returns = np.zeros(num_envs, np.float64)
    active = np.zeros(num_envs, bool)
    results: list[dict[str, Any] | None] = [None] * episodes
    next_episode = 0
    state = np.random.get_state()  # local resets seed the global np.random

    def start_episodes(slots: Sequence[int]) -> None:
        """The next pending episodes, in slot order, all reset in one request."""
        nonlocal next_episode
        assigned = list(zip(slots, range(next_episode, episodes)))  # (slot, episode)
        next_episode += len(assigned)
        obs_new = envs.reset([(i, episode_seed(seed, k)) for i, k in assigned])
        for (i, k), ob in zip(assigned, obs_new, strict=True):
            obs[i], ep_ids[i], steps[i], returns[i], active[i] = ob, k, 0, 0.0, True
            if on_step is not None:
                on_step(i, 0, False)

    bar = tqdm(total=episodes, desc=f"eval {env_name}", unit="ep", disable=not progress)
    try:
        start_episodes(range(num_envs))
        while active.any():
            actions = np.asarray(
                _act(policy, jnp.asarray(obs), jnp.asarray(ep_ids), jnp.asarray(steps), key)
            )
            slots = [int(i) for i in np.flatnonzero(active)]
            finished = []
            for i, (ob, reward, done, success) in zip(
                slots, envs.step([(i, actions[i]) for i in slots])
            ):
                obs[i] = ob
                steps[i] += 1
                returns[i] += reward
                if on_step is not None:
                    on_step(i, int(steps[i]), done)
                if done:
                    k = int(ep_ids[i])
                    results[k] = {
                        "success": success,
                        "return": float(returns[i]),
                        "length": int(steps[i]),
                        "seed": episode_seed(seed, k),
                    }
                    bar.update(1)
                    active[i] = False
                    finished.append(i)
            start_episodes(finished)
    finally:
        bar.close()
        np.random.set_state(state)

    done = tuple(r for r in results if r is not None)
    success = np.array([r["success"] for r in done])
    std = float(success.std(ddof=1)) if len(done) > 1 else 0.0
    return EvalResult(
        env_name=env_name,
        success=float(success.mean()),
        success_std=std,
        success_ci95=1.96 * std / math.sqrt(len(done)),
        return_mean=float(np.mean([r["return"] for r in done])),
        length_mean=float(np.mean([r["length"] for r in done])),
        episodes=done,
        wall_time=time.perf_counter() - start,
        num_envs=num_envs,
        seed=seed,
    )


def record_video(
    policy: eqx.Module,
    env_name: str,
    path: str | os.PathLike,
    *,
    episodes: int = 1,
    seed: int = 0,
    width: int = 256,
    height: int = 256,
    fps: int = 25,
    frame_skip: int = 1,
    progress: bool = False,
) -> EvalResult:
    """Renders episodes 0..episodes-1 of `evaluate(policy, env_name, seed=seed)` to a GIF.

    The episodes are the very ones `evaluate` scores with the same `seed` (same reset seeds,
    same noise), so a video shows what a recorded success rate counts; the returned
    `EvalResult` says which of them succeeded. Every `frame_skip`-th frame is kept, and each
    episode's last frame is held for half a second. Writing uses Pillow (no video codec needed).

    MuJoCo needs an OpenGL backend to render, fixed when mujoco is first imported. On Linux
    with no display, `import fidec_zoo` sets `MUJOCO_GL=egl` (headless GPU or Mesa EGL) if
    libEGL loads, unless `MUJOCO_GL` is set or mujoco was imported first; otherwise choose it
    yourself before anything imports mujoco, e.g. `MUJOCO_GL=egl python ...` (or `osmesa`). A
    backend that cannot render raises `RenderError`.
    """
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"record_video writes GIFs; got {str(path)!r}. Use a .gif path.")
    sizes = dict(episodes=episodes, width=width, height=height, fps=fps, frame_skip=frame_skip)
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    resolve_env_name(env_name)
    start = time.perf_counter()
    env = make_env(env_name, render_mode="rgb_array", width=width, height=height)
    frames: list[PIL.Image.Image] = []

    def capture(_: int, t: int, done: bool) -> None:
        if done or t % frame_skip == 0:
            frames.extend([_gif_frame(_render(env))] * (max(1, fps // 2) if done else 1))

    try:
        _check_policy(policy, env_dims(env), env_name)
        result = _rollouts(policy, LocalEnvs([env]), 1, env_name, episodes, seed, start=start,
                           progress=progress, on_step=capture)
    finally:
        env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_gif(frames, path, fps)
    return result


def _render(env: gymnasium.Env) -> np.ndarray:
    try:
        return np.asarray(env.render())
    except Exception as e:  # mujoco.FatalError and friends: no usable OpenGL context
        raise RenderError(
            f"MuJoCo could not render ({type(e).__name__}: {e}). It needs an OpenGL backend "
            f"chosen before mujoco is imported (MUJOCO_GL is {os.environ.get('MUJOCO_GL')!r}). "
            "On a machine with no display run e.g. `MUJOCO_GL=egl python ...` (or osmesa), "
            "with EGL (libegl1) or OSMesa installed."
        ) from e


def _gif_frame(rgb: np.ndarray) -> PIL.Image.Image:
    """`rgb` with its own adaptive 256-colour palette: what Pillow's GIF writer makes of an RGB
    frame (the file is byte-identical), done at capture so that a kept frame takes 1 byte per
    pixel rather than 3: 64 KiB at 256x256 instead of 192 KiB."""
    return PIL.Image.fromarray(rgb).convert("P", palette=PIL.Image.Palette.ADAPTIVE)


def _write_gif(frames: Sequence[PIL.Image.Image], path: Path, fps: int) -> None:
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps),
                   loop=0)
