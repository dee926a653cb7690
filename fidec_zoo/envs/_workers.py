"""Where `evaluate` steps its environments: in this process, or spread over worker processes so
that an evaluation uses more than one CPU.

OGBench steps one environment at a time in Python, and MuJoCo and the inverse-kinematics
controller take most of an evaluation's time, so envs in separate processes step in parallel
while this process only runs the batched policy. Both kinds answer the same requests,
`reset([(slot, seed), ...]) -> [obs, ...]`, `step([(slot, action), ...]) -> [(obs, reward,
done, success), ...]` and, for online training, `transition([(slot, action), ...]) -> [(obs,
reward, terminated, truncated, success), ...]`, with the same per-slot code, so results do not
depend on where the envs live. Workers also report their envs' sizes (`WorkerEnvs.dims`), so
the parent process need not build an env of its own to check a policy against them.
"""

import atexit
import multiprocessing
import signal
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import gymnasium
import numpy as np

from .._env_notices import quiet_env_notices
from ._names import env_dims, make_env

Step = tuple[np.ndarray, float, bool, float]  # obs, reward, episode over, success (when over)
#: obs, reward, terminated, truncated, success
Transition = tuple[np.ndarray, float, bool, bool, float]


def reset_env(env: gymnasium.Env, seed: int) -> np.ndarray:
    """Resets `env` for one episode: seeds `np.random` (some OGBench resets draw from it), the
    action space and the reset itself with `seed`."""
    np.random.seed(seed)
    with quiet_env_notices():  # OGBench builds a new action space on every access
        env.action_space.seed(seed)
        ob, _ = env.reset(seed=seed)
    return ob


def transition_env(env: gymnasium.Env, action: np.ndarray) -> Transition:
    """One step with the action clipped to the box: `(obs, reward, terminated, truncated,
    info['success'])`, what an online replay buffer needs (its mask is `1 - terminated`)."""
    ob, reward, terminated, truncated, info = env.step(np.clip(action, -1, 1))
    return ob, float(reward), bool(terminated), bool(truncated), float(info["success"])


def step_env(env: gymnasium.Env, action: np.ndarray) -> Step:
    """One step with the action clipped to the box; `success` is `info['success']` once the
    episode is over (OGBench's metric: success at the last step), else 0."""
    ob, reward, terminated, truncated, success = transition_env(env, action)
    done = terminated or truncated
    return ob, reward, done, success if done else 0.0


class LocalEnvs:
    """Envs of this process: the slots index `envs` (what `record_video` renders)."""

    def __init__(self, envs: Sequence[gymnasium.Env]):
        self.envs = list(envs)

    def reset(self, requests: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        return [reset_env(self.envs[i], seed) for i, seed in requests]

    def step(self, requests: Sequence[tuple[int, np.ndarray]]) -> list[Step]:
        return [step_env(self.envs[i], action) for i, action in requests]

    def transition(self, requests: Sequence[tuple[int, np.ndarray]]) -> list[Transition]:
        return [transition_env(self.envs[i], action) for i, action in requests]


def _serve(conn: Connection, env_name: str) -> None:
    """A worker: builds envs of `env_name` as slots first appear and answers requests until
    told to close, or until the parent is gone (its end of the pipe closes with it, also while
    a request is being answered or with an answer unread). Ctrl-C and SIGTERM, which a terminal
    or a cluster's scheduler sends to every process of a job, are left to the parent: it
    finishes the evaluation, checkpoints and closes its workers (killing any that does not
    exit)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    envs: list[gymnasium.Env] = []

    def slot(j: int) -> gymnasium.Env:
        while len(envs) <= j:
            envs.append(make_env(env_name))
        return envs[j]

    try:
        while True:
            try:
                command, requests = conn.recv()
            except (EOFError, ConnectionResetError):  # the parent died without closing us
                return  # (reset: it died with our last answer unread)
            if command == "close":
                return
            try:
                if command == "dims":
                    out: list[Any] = [env_dims(slot(j)) for j, _ in requests]
                elif command == "reset":
                    out = [reset_env(slot(j), seed) for j, seed in requests]
                elif command == "transition":
                    out = [transition_env(envs[j], action) for j, action in requests]
                else:
                    out = [step_env(envs[j], action) for j, action in requests]
                reply = ("ok", out)
            except Exception:
                reply = ("error", traceback.format_exc())
            try:
                conn.send(reply)
            except OSError:  # a broken pipe: the parent died mid-request
                return
    finally:
        for env in envs:
            env.close()


class WorkerEnvs:
    """Envs of `env_name` in `workers` spawned processes: slot `i` lives in worker
    `i % workers`, and each request is sent to every worker concerned before any answer is
    awaited, so the workers step their envs at the same time.

    A failed request (a worker's exception, a dead worker, or an interrupt while waiting)
    closes the pool, since its workers may be mid-request; `closed` then says to build a new
    one.
    """

    def __init__(self, env_name: str, workers: int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}.")
        self.env_name, self.workers, self.closed = env_name, workers, False
        ctx = multiprocessing.get_context("spawn")  # fork is unsafe once JAX has started threads
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for w in range(workers):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(there, env_name), daemon=True,
                               name=f"fidec_zoo-eval-{w}")
            proc.start()
            there.close()
            self._conns.append(here)
            self._procs.append(proc)
        # At exit, before multiprocessing's own handler (registered earlier, so run later), whose
        # SIGTERM the workers ignore: without this, exiting with a pool open would hang.
        atexit.register(self.close)

    def dims(self) -> tuple[int, int]:
        """(observation dim, action dim) of the envs, read in worker 0 from its slot 0 (built
        if needed, then kept for the episodes)."""
        return self._scatter("dims", [(0, None)])[0]

    def reset(self, requests: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        return self._scatter("reset", requests)

    def step(self, requests: Sequence[tuple[int, np.ndarray]]) -> list[Step]:
        return self._scatter("step", requests)

    def transition(self, requests: Sequence[tuple[int, np.ndarray]]) -> list[Transition]:
        return self._scatter("transition", requests)

    def _scatter(self, command: str, requests: Sequence[tuple[int, Any]]) -> list[Any]:
        """Sends each worker its share of `requests` (slots as its local indices), then
        gathers the answers back into request order."""
        shares: dict[int, list[int]] = {}
        for n, (slot, _) in enumerate(requests):
            shares.setdefault(slot % self.workers, []).append(n)
        try:
            for w, ns in shares.items():
                payload = [(requests[n][0] // self.workers, requests[n][1]) for n in ns]
                try:
                    self._conns[w].send((command, payload))
                except OSError:  # a broken pipe or a reset: the worker is gone
                    raise self._gone(w) from None
            out: list[Any] = [None] * len(requests)
            for w, ns in shares.items():
                status, answers = self._receive(w)
                if status == "error":
                    raise RuntimeError(
                        f"Evaluation worker {w} ({self.env_name}) failed:\n{answers}"
                    )
                for n, answer in zip(ns, answers, strict=True):
                    out[n] = answer
            return out
        except BaseException:
            self.close()
            raise

    def _receive(self, w: int) -> tuple[str, Any]:
        try:
            return self._conns[w].recv()
        except (EOFError, ConnectionResetError):  # (reset: it died with our request unread)
            raise self._gone(w) from None

    def _gone(self, w: int) -> RuntimeError:
        """The error for worker `w` found dead (killed, say, by the kernel for lack of memory)."""
        self._procs[w].join(timeout=5)
        return RuntimeError(
            f"Evaluation worker {w} ({self.env_name}) exited unexpectedly (exit code "
            f"{self._procs[w].exitcode}). If the system killed it for lack of memory, "
            "run fewer envs or fewer workers."
        )

    def close(self) -> None:
        """Asks every worker to close its envs and exit; kills those that do not within 10 s."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():  # (SIGKILL: workers ignore SIGTERM)
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()
