"""Data generation and evaluation speed (plain numbers; nothing is asserted).

    python benchmarks/data_speed.py [--episodes 3] [--profile-episodes 2] [--eval-episodes 50]
        [--eval-workers 2]

1. Generation: env steps per second of `generate_ogbench("cube-single-play-v0")` (one worker,
   `episodes` train + 1 val episode), end to end and without writing the files; then a profile
   of `profile-episodes` episodes in one process: the share of MuJoCo's physics (`mj_step`),
   which bounds what removing everything else could gain.
2. Evaluation: wall time of `evaluate` for a 50-episode cube-single run of an untrained
   `FlowPolicy` (4x256 velocity MLP, 10 Euler steps), cold (env construction + compile) and
   warm, and the share of a warm run spent in the batched policy call.
3. Evaluation workers: the same warm run with its envs stepped in `--eval-workers` processes
   (`evaluate(..., workers=N)`), its speed-up over one process measured in this run, and
   whether its episodes equal the one-process episodes.
4. Env memory: resident memory of a fresh process holding 1, then 5 envs of each family
   (Linux: read from /proc).
"""

import concurrent.futures
import dataclasses
import importlib.util
import json
import multiprocessing
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tyro

warnings.filterwarnings("ignore")
if importlib.util.find_spec("fidec_zoo") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


GEN_DATASET = "cube-single-play-v0"  # what section 1 and its profile generate


def generation(episodes: int) -> None:
    from fidec_zoo.data import generate_ogbench

    name = GEN_DATASET
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = generate_ogbench(name, episodes=episodes, seed=0, out_dir=tmp, progress=False)
        wall = time.perf_counter() - start
        prov = json.loads(Path(path).with_name(f"{name}.provenance.json").read_text())
    steps = prov["rows"]["train"] + prov["rows"]["val"]
    print(f"generation  {name}: {steps} env steps ({episodes}+{prov['val_episodes']} episodes)")
    print(f"  end to end          {steps / wall:8.1f} env steps/s  ({wall:.1f} s)")
    print(f"  without file I/O    {prov['env_steps_per_second']:8.1f} env steps/s")
    print(
        f"  1000+100 episodes   ~{1.1011e6 / prov['env_steps_per_second'] / 60:.0f} min "
        "at this rate (one worker; depends on machine load)"
    )


def generation_profile(episodes: int) -> None:
    """Where one generating process spends its time: MuJoCo's physics (`mujoco.mj_step`, timed
    by a wrapper around it) against everything else (OGBench's env wrapper and controller, the
    scripted oracle, the row copies). Removing all of the rest would speed generation up by at
    most `1 / physics share`, so the share bounds what any non-physics optimisation can gain."""
    import mujoco

    from fidec_zoo.data._oracles import collect_episodes

    name = GEN_DATASET
    collect_episodes(name, 0, [0])  # env and oracle construction, outside the measurement
    step, physics = mujoco.mj_step, [0.0]

    def timed_step(*args, **kwargs):
        t = time.perf_counter()
        step(*args, **kwargs)
        physics[0] += time.perf_counter() - t

    mujoco.mj_step = timed_step
    try:
        start = time.perf_counter()
        collect_episodes(name, 0, list(range(1, 1 + episodes)))
        total = time.perf_counter() - start
    finally:
        mujoco.mj_step = step
    print(f"generation profile  {name}, {episodes} episodes in one process:")
    print(f"  physics (mj_step)   {100 * physics[0] / total:5.1f}% of {total:.1f} s: removing "
          f"everything else would make generation at most {total / physics[0]:.2f}x faster")


EVAL_ENV = "cube-single-play-singletask-v0"


def _untrained_flow():
    """What sections 2 and 3 evaluate: an untrained `FlowPolicy` for cube-single (4x256
    velocity MLP, 10 Euler steps), so every episode runs its full length."""
    from fidec_zoo.policies import ActionField, FlowPolicy

    return FlowPolicy(ActionField(28, 5, hidden=(256,) * 4, key=jax.random.key(0)))


def evaluation(episodes: int) -> None:
    from fidec_zoo.envs import evaluate
    from fidec_zoo.envs._evaluate import _act

    try:
        policy = _untrained_flow()
    except ImportError as e:
        print(f"evaluation: skipped ({e})")
        return
    env_name = EVAL_ENV
    cold = evaluate(policy, env_name, episodes=episodes, seed=0)
    warm = evaluate(policy, env_name, episodes=episodes, seed=1)
    steps = sum(e["length"] for e in warm.episodes)
    n = warm.num_envs
    obs, ids = jnp.zeros((n, 28)), jnp.zeros(n, jnp.int32)
    key = jax.random.key(0)
    _act(policy, obs, ids, ids, key).block_until_ready()
    reps = 50
    start = time.perf_counter()
    for _ in range(reps):
        np.asarray(_act(policy, obs, ids, ids, key))
    call = (time.perf_counter() - start) / reps
    calls = max(e["length"] for e in warm.episodes) * int(np.ceil(episodes / n))  # upper bound
    print(f"evaluation  {env_name}: {episodes} episodes, {n} envs, FlowPolicy 4x256, 10 steps")
    print(f"  cold (build envs + compile)  {cold.wall_time:6.1f} s")
    print(
        f"  warm                         {warm.wall_time:6.1f} s  ({steps} env steps, "
        f"{steps / warm.wall_time:.0f} steps/s, success {warm.success:.2f})"
    )
    print(
        f"  batched policy call          {call * 1e3:6.2f} ms  (<= {calls} calls, "
        f"<= {calls * call / warm.wall_time:.0%} of the warm run)"
    )


def evaluation_workers(episodes: int, workers: int) -> None:
    from fidec_zoo.envs import evaluate

    env_name, policy = EVAL_ENV, _untrained_flow()
    local = evaluate(policy, env_name, episodes=episodes, seed=1)  # warm: envs kept
    cold = evaluate(policy, env_name, episodes=episodes, seed=1, workers=workers)
    warm = evaluate(policy, env_name, episodes=episodes, seed=1, workers=workers)
    steps = sum(e["length"] for e in warm.episodes)
    print(f"evaluation workers: {episodes} episodes, {warm.num_envs} envs")
    print(f"  1 process (warm)             {local.wall_time:6.1f} s  "
          f"({steps / local.wall_time:.0f} steps/s)")
    print(f"  {workers} workers, first call      {cold.wall_time:6.1f} s  "
          "(start workers, build envs)")
    print(f"  {workers} workers (warm)           {warm.wall_time:6.1f} s  "
          f"({steps / warm.wall_time:.0f} steps/s)")
    print(f"  speed-up {local.wall_time / warm.wall_time:.2f}x; same episodes: "
          f"{warm.episodes == local.episodes == cold.episodes}")


def _rss_mb() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))


def _env_rss(env_name: str) -> tuple[int, int]:
    """Resident MB of this (fresh) process with 1 env of `env_name`, then with 5."""
    from fidec_zoo.envs import make_env

    envs = [make_env(env_name)]
    envs[0].reset(seed=0)
    one = _rss_mb()
    for i in range(1, 5):
        envs.append(make_env(env_name))
        envs[-1].reset(seed=i)
    return one, _rss_mb()


def env_memory() -> None:
    if not Path("/proc/self/status").exists():
        print("env memory: skipped (needs Linux /proc)")
        return
    print("env memory (fresh process per family)")
    ctx = multiprocessing.get_context("spawn")
    for name in ("cube-single-play-singletask-task1-v0", "scene-play-singletask-task2-v0",
                 "puzzle-3x3-play-singletask-task4-v0"):
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            one, five = pool.submit(_env_rss, name).result()
        print(f"  {name:40s} 1 env {one:5d} MB, 5 envs {five:5d} MB, "
              f"{(five - one) / 4:4.0f} MB per further env")


@dataclasses.dataclass(frozen=True)
class Args:
    episodes: int = 3
    """Generation train episodes."""
    profile_episodes: int = 2
    """Episodes of the generation profile."""
    eval_episodes: int = 50
    """Evaluation episodes."""
    eval_workers: int = 2
    """Worker processes of the evaluation section."""


def main() -> None:
    args = tyro.cli(Args, description=__doc__.splitlines()[0])
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    generation(args.episodes)
    generation_profile(args.profile_episodes)
    evaluation(args.eval_episodes)
    evaluation_workers(args.eval_episodes, args.eval_workers)
    env_memory()


if __name__ == "__main__":
    main()
