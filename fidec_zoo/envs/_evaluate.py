"""Batched evaluation: OGBench's single-task success of a policy over many episodes.

`evaluate(policy, env_name)` steps many environments together (in worker processes with
`workers=N`), with one jitted, batched policy call per step. `rollouts` is the protocol itself,
shared with `record_video`, so a video shows the very episodes an evaluation scores.
"""

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray
from tqdm.auto import tqdm

from .._cpus import available_cpus
from ._cache import clear_env_cache, env_pool, worker_pool
from ._names import env_dims, resolve_env_name
from ._workers import LocalEnvs, WorkerEnvs


def default_eval_workers() -> int:
    """The command lines' `evaluate(workers=...)`: one per CPU this process may use, at most 4,
    since each worker holds its own OGBench and MuJoCo (~0.7 GB with its first env)."""
    return min(available_cpus(), 4)


def default_num_envs(workers: int = 1) -> int:
    """`evaluate`'s default `num_envs`: 10, rounded up to a multiple of `workers`. A round of
    steps waits for the worker holding the most envs, so each worker gets as many (8 workers:
    16 envs, 2 each, rather than 10 with 2 in some and 1 in others)."""
    return math.ceil(10 / workers) * workers


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


def check_policy(policy: eqx.Module, dims: tuple[int, int], env_name: str) -> None:
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


def _check_observation(ob: np.ndarray, env_name: str, episode: int, step: int,
                       seed: int) -> None:
    """Raises `FloatingPointError` for an observation holding NaN or inf: the simulation became
    unstable, and a policy fed it would act NaN, scoring failures that are not the policy's."""
    if not np.isfinite(ob).all():
        raise FloatingPointError(
            f"{env_name} returned a non-finite observation in episode {episode}, step {step} "
            f"(reset seed {episode_seed(seed, episode)}; values {ob[~np.isfinite(ob)][:3]}). "
            "Its simulation became unstable; the evaluation stops rather than score it.")


def _check_actions(policy: eqx.Module, actions: np.ndarray, slots: list[int], env_name: str,
                   episode_ids: np.ndarray, steps: np.ndarray) -> None:
    """Raises `FloatingPointError` for a non-finite action of an active slot (its observation
    was finite): stepping MuJoCo with it would score a failure without a word."""
    for i in slots:
        if not np.isfinite(actions[i]).all():
            raise FloatingPointError(
                f"{type(policy).__name__} gave a non-finite action ({actions[i]}) in {env_name}, "
                f"episode {int(episode_ids[i])}, step {int(steps[i])}, from a finite "
                "observation: its parameters are probably non-finite (a diverged run or a "
                "damaged checkpoint). The evaluation stops rather than score NaN actions.")


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
    `fold_in(key(seed), k)`, so results do not depend on `num_envs` or `workers`. A
    non-finite observation (an unstable simulation) or action (a policy with non-finite
    parameters) raises `FloatingPointError` naming the episode and step, rather than being
    scored as a failure.

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
        envs = worker_pool(env_name, workers)
        check_policy(policy, envs.dims(), env_name)
    else:  # one env is checked before the others are built
        check_policy(policy, env_dims(env_pool(env_name, 1)[0]), env_name)
        envs = LocalEnvs(env_pool(env_name, num_envs))
    try:
        return rollouts(policy, envs, num_envs, env_name, episodes, seed, start=start,
                        progress=progress)
    finally:
        if not keep_envs:
            clear_env_cache(env_name)


def rollouts(
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
            _check_observation(ob, env_name, k, 0, seed)
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
            _check_actions(policy, actions, slots, env_name, ep_ids, steps)
            finished = []
            for i, (ob, reward, done, success) in zip(
                slots, envs.step([(i, actions[i]) for i in slots])
            ):
                steps[i] += 1
                _check_observation(ob, env_name, int(ep_ids[i]), int(steps[i]), seed)
                obs[i] = ob
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
