"""fidec_zoo.envs: env construction and batched evaluation on every manipulation family."""

import math
import os
import signal
import subprocess
import sys
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fidec_zoo.envs import (
    EvalResult,
    clear_env_cache,
    evaluate,
    make_env,
    record_video,
    resolve_env_name,
)
from fidec_zoo.policies import ActionField, FlowPolicy

# env -> (obs dim, eval episode length)
FAMILIES = {
    "cube-single-play-singletask-v0": (28, 200),
    "cube-double-play-singletask-v0": (37, 500),
    "scene-play-singletask-v0": (40, 750),
    "puzzle-3x3-play-singletask-v0": (55, 500),
    "puzzle-4x4-play-singletask-v0": (83, 500),
}


class TinyPolicy(eqx.Module):
    """Satisfies the policy contract: unbatched `(obs, noise) -> action` plus the dims."""

    linear: eqx.nn.Linear
    obs_dim: int = eqx.field(static=True)
    action_dim: int = eqx.field(static=True)
    noise_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, obs_dim, action_dim=5, *, key):
        self.linear = eqx.nn.Linear(obs_dim, action_dim, key=key)
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.noise_shape = (action_dim,)

    def __call__(self, obs, noise):
        assert obs.shape == (self.obs_dim,) and noise.shape == self.noise_shape
        return jnp.clip(jnp.tanh(self.linear(obs)) + 0.3 * noise, -1.0, 1.0)


@pytest.fixture(scope="module", autouse=True)
def _release_envs():
    yield
    clear_env_cache()


@pytest.mark.parametrize("env_name", list(FAMILIES))
def test_evaluate_runs_every_family(env_name):
    obs_dim, max_len = FAMILIES[env_name]
    policy = TinyPolicy(obs_dim, key=jax.random.key(0))
    res = evaluate(policy, env_name, episodes=2, seed=0)
    assert isinstance(res, EvalResult) and res.num_envs == 2
    assert len(res.episodes) == 2
    for value in (
        res.success,
        res.success_std,
        res.success_ci95,
        res.return_mean,
        res.length_mean,
        res.wall_time,
    ):
        assert math.isfinite(value)
    assert 0.0 <= res.success <= 1.0 and res.return_mean <= 0.0
    for ep in res.episodes:
        assert set(ep) == {"success", "return", "length", "seed"}
        assert 1 <= ep["length"] <= max_len and ep["success"] in (0.0, 1.0)
    assert res.episodes[0]["seed"] != res.episodes[1]["seed"]


def test_evaluate_is_deterministic_and_recycles_envs():
    env_name = "cube-single-play-singletask-task1-v0"
    policy = TinyPolicy(28, key=jax.random.key(1))
    a = evaluate(policy, env_name, episodes=3, seed=4, num_envs=2)  # one env runs 2 episodes
    b = evaluate(policy, env_name, episodes=3, seed=4, num_envs=2)
    assert a.episodes == b.episodes and a.num_envs == 2 and len(a.episodes) == 3
    assert evaluate(policy, env_name, episodes=3, seed=4, num_envs=1).episodes == a.episodes
    c = evaluate(policy, env_name, episodes=3, seed=5, num_envs=2)
    assert [e["seed"] for e in c.episodes] != [e["seed"] for e in a.episodes]


def test_evaluate_in_worker_processes_gives_the_same_episodes():
    """`workers=2` steps the envs in two spawned processes (slots 0 and 2 in one, 1 in the
    other); the episodes equal the one-process ones, the workers are kept for the next call
    and `clear_env_cache` ends them."""
    from fidec_zoo.envs import _cache

    env_name = "cube-single-play-singletask-task1-v0"
    policy = TinyPolicy(28, key=jax.random.key(1))
    local = evaluate(policy, env_name, episodes=4, seed=4, num_envs=3)
    assert evaluate(policy, env_name, episodes=4, seed=4, num_envs=3, workers=2).episodes == \
        local.episodes
    pool = _cache._WORKERS[env_name]
    _cache._POOL.clear()  # (the local run's envs)
    again = evaluate(policy, env_name, episodes=4, seed=4, num_envs=3, workers=2)
    assert env_name not in _cache._POOL  # the workers reported the sizes: no env built here
    with pytest.raises(ValueError, match="policy.obs_dim=27 but .* observation dim 28"):
        evaluate(TinyPolicy(27, key=jax.random.key(1)), env_name, episodes=4, workers=2)
    assert again.episodes == local.episodes and _cache._WORKERS[env_name] is pool
    _cache.clear_env_cache(env_name)
    assert pool.closed and env_name not in _cache._WORKERS
    assert not any(proc.is_alive() for proc in pool._procs)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        evaluate(policy, env_name, episodes=2, workers=0)


def test_default_num_envs_shares_the_envs_evenly_among_workers():
    from fidec_zoo.envs import default_num_envs

    assert [default_num_envs(w) for w in (1, 2, 3, 4, 5, 8, 16)] == [10, 10, 12, 12, 10, 16, 16]


def test_a_failed_worker_request_raises_and_closes_the_pool():
    from fidec_zoo.envs._workers import WorkerEnvs

    pool = WorkerEnvs("cube-single-play-singletask-task1-v0", 2)
    with pytest.raises(RuntimeError, match=r"(?s)Evaluation worker 1 .*IndexError"):
        pool.step([(1, np.zeros(5))])  # slot 1 was never reset: worker 1 has no env for it
    assert pool.closed and not any(proc.is_alive() for proc in pool._procs)


@pytest.mark.parametrize("request_unread", [False, True], ids=["idle", "request-unread"])
def test_a_dead_worker_is_named_and_closes_the_pool(request_unread):
    """A worker killed from outside (the kernel's OOM killer, say) surfaces as one error naming
    it, whether it died idle (the request meets a broken pipe) or with the request unread (the
    wait for its answer finds the connection reset), and the pool closes."""
    import threading

    from fidec_zoo.envs._workers import WorkerEnvs

    pool = WorkerEnvs("cube-single-play-singletask-task1-v0", 1)
    assert pool.dims() == (28, 5)
    proc = pool._procs[0]
    if request_unread:  # stopped, it cannot read the request; killed while the pool waits
        os.kill(proc.pid, signal.SIGSTOP)
        threading.Timer(0.5, os.kill, (proc.pid, signal.SIGKILL)).start()
    else:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=60)
    with pytest.raises(RuntimeError, match=r"worker 0 .*exited unexpectedly \(exit code -9\)"):
        pool.reset([(0, 0)])
    assert pool.closed


@pytest.mark.parametrize("answered", [False, True], ids=["mid-request", "answer-unread"])
def test_a_worker_whose_parent_is_gone_exits_quietly(capfd, answered):
    """A worker ignores SIGTERM (its parent decides when it ends), and once its parent died
    (killed mid-evaluation, say) it exits with code 0 and prints no traceback: whether its answer
    then meets a broken pipe, or was sent before the parent died and left unread there, so that
    the worker's next read finds the connection reset."""
    from fidec_zoo.envs._workers import WorkerEnvs

    pool = WorkerEnvs("cube-single-play-singletask-task1-v0", 1)
    assert pool.dims() == (28, 5)
    conn, proc = pool._conns[0], pool._procs[0]
    os.kill(proc.pid, signal.SIGTERM)  # left to the parent (a cluster signals every process)
    assert pool.dims() == (28, 5) and proc.is_alive()
    if answered:
        conn.send(("reset", [(0, 0)]))  # slot 0's env exists: answered at once
        assert conn.poll(60)  # the answer waits here, unread
    else:
        conn.send(("reset", [(1, 0)]))  # slot 1 first builds an env (about a second)
    conn.close()  # as if this process had died
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert "Traceback" not in capfd.readouterr().err


def test_a_process_with_open_workers_exits():
    """Workers ignore SIGTERM, which multiprocessing's exit handler sends its daemons; the pool
    closes itself at exit first, so a script that leaves its pool open still ends."""
    code = ("from fidec_zoo.envs._workers import WorkerEnvs\n"
            "pool = WorkerEnvs('cube-single-play-singletask-task1-v0', 2)\n"
            "print(pool.dims())")  # `pool` lives until the interpreter's exit
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "(28, 5)", proc.stderr[-2000:]


def test_env_notices_are_silenced_and_other_warnings_are_not():
    """OGBench's per-reset space notices would flood a job's log; only they are hidden."""
    from fidec_zoo._env_notices import quiet_env_notices
    from fidec_zoo.data._oracles import _Collector

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate(TinyPolicy(28, key=jax.random.key(2)), "cube-single-play-singletask-v0",
                 episodes=2, seed=0)
        _Collector("cube-single-play-v0").episode(seed=0, index=0)  # one generated episode
        with quiet_env_notices():
            warnings.warn("a warning of the caller's own", UserWarning)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "precision lowered" in m], messages
    assert "a warning of the caller's own" in messages


def test_evaluate_compiles_once():
    env_name = "cube-single-play-singletask-v0"
    policy = TinyPolicy(28, key=jax.random.key(2))
    traces = []

    class Counting(TinyPolicy):
        def __call__(self, obs, noise):
            traces.append(1)
            return super().__call__(obs, noise)

    counting = Counting(28, key=jax.random.key(2))
    evaluate(counting, env_name, episodes=3, seed=0, num_envs=2)
    evaluate(counting, env_name, episodes=3, seed=1, num_envs=2)
    assert len(traces) == 1  # one trace of the vmapped policy for all steps of both calls
    del policy


def test_flow_policy_evaluates():
    field = ActionField(28, 5, hidden=(32, 32), key=jax.random.key(0))
    res = evaluate(FlowPolicy(field), "cube-single-play-singletask-v0", episodes=2)
    assert math.isfinite(res.return_mean) and len(res.episodes) == 2


def test_record_video_renders_the_evaluated_episodes(tmp_path):
    """The GIF shows episodes 0 and 1 of `evaluate(..., seed=3)`: same outcomes, every 25th
    frame (plus each last one, held for fps // 2 frames)."""
    from PIL import Image

    env_name, path = "cube-single-play-singletask-task1-v0", tmp_path / "clip" / "tiny.gif"
    policy = TinyPolicy(28, key=jax.random.key(3))
    video = record_video(policy, env_name, path, episodes=2, seed=3, width=48, height=40,
                         fps=10, frame_skip=25)
    assert video.episodes == evaluate(policy, env_name, episodes=2, seed=3).episodes
    lengths = [ep["length"] for ep in video.episodes]  # 200: the tiny policy never succeeds
    # Per episode: frames 0, 25, ... before its last step, then the last one 5 times.
    kept = sum(len(range(0, n, 25)) + 5 for n in lengths)
    with Image.open(path) as gif:
        assert gif.size == (48, 40)
        durations = []
        for i in range(gif.n_frames):  # Pillow merges repeated frames, adding their durations
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert sum(durations) == kept * 100
    with pytest.raises(ValueError, match="Use a .gif path"):
        record_video(policy, env_name, tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="frame_skip must be >= 1"):
        record_video(policy, env_name, path, frame_skip=0)


def test_obs_dim_mismatch_names_both():
    policy = TinyPolicy(30, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"obs_dim=30.*observation dim 28"):
        evaluate(policy, "cube-single-play-singletask-v0", episodes=1)


def test_names():
    assert resolve_env_name("cube-single-play-singletask-task2-v0") == (
        "cube-single-singletask-task2-v0",
        "cube-single-play-v0",
    )
    assert resolve_env_name("pointmaze-giant-navigate-singletask-v0") == (
        "pointmaze-giant-singletask-v0",
        "pointmaze-giant-navigate-v0",
    )
    env = make_env("puzzle-3x3-play-singletask-task4-v0")
    assert env.observation_space.shape == (55,) and env.action_space.shape == (5,)
    with pytest.raises(ValueError, match="cube-single"):
        make_env("cube-sextuple-play-singletask-v0")
    with pytest.raises(ValueError):
        evaluate(TinyPolicy(28, key=jax.random.key(0)), "nope-v0", episodes=1)
    # A misspelt or task-less name gets the registered names it is close to, in its own words.
    with pytest.raises(ValueError, match="Did you mean 'cube-single-play-singletask-task2-v0'"):
        resolve_env_name("cube-singel-play-singletask-task2-v0")
    with pytest.raises(ValueError, match="Did you mean 'scene-play-singletask-v0'"):
        resolve_env_name("scene-play-v0")
    with pytest.raises(ValueError) as info:
        resolve_env_name("nope-v0")
    assert "Did you mean" not in str(info.value)
    # A gymnasium id lacks the dataset type: say so, rather than guess names from its words.
    for gym_id in ("cube-single-singletask-task2-v0", "scene-singletask-v0"):
        with pytest.raises(ValueError, match="is OGBench's gymnasium id") as info:
            resolve_env_name(gym_id)
        assert "Did you mean" not in str(info.value)


def test_headless_mujoco_gl_is_egl_only_where_libegl_loads(monkeypatch):
    """With no display, `import fidec_zoo` picks EGL for MuJoCo so record_video can render, but
    only where libEGL loads: on a machine without it (an H100 image here), an EGL choice made
    every OGBench env construction fail, and GLFW (MuJoCo's default) still steps envs."""
    import ctypes
    import platform

    from fidec_zoo._mujoco_gl import headless_mujoco_gl

    monkeypatch.setattr(platform, "system", lambda: "Linux")
    for var in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: name)
    assert headless_mujoco_gl() == "egl"
    monkeypatch.setenv("DISPLAY", ":0")
    assert headless_mujoco_gl() is None
    monkeypatch.delenv("DISPLAY")

    def no_egl(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_egl)
    assert headless_mujoco_gl() is None
