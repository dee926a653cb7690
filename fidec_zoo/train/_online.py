"""`fit_online`: fine-tunes an agent in its environment after offline training (the references'
offline-to-online protocol), composed of the same parts as `fit`: the `Updater` (the core's
update, now on a `ReplayBuffer`), a `Checkpointer`, an `Evaluator` and a `RunLog`.

One env step: ONE jitted, batched policy call for the `envs` environments (stepped in worker
processes as evaluation does), their transitions appended to the buffer, then
`envs * updates_per_step` updates in one compiled `lax.scan`. Rewards and masks are the
environment's own: OGBench's single-task envs give the reward (#subgoals solved - #subgoals) and
terminate on the state that solves the task, so `mask = 1 - terminated`, exactly how the
offline rows were relabelled (docs/data.md).

Run directory, beside the offline phase's files::

    run_dir/online/metrics.csv   step (env transitions), update, losses, env_steps_per_s,
                                 updates_per_s: one row per log_every transitions
    run_dir/online/eval.csv      the evaluations (same protocol as offline; step 0: the policy
                                 it starts from), env_steps_per_s
    run_dir/online/episodes.csv  every online episode: step, episode, return, length, success
    run_dir/online/checkpoints/N after N transitions: {agent, opt_state, key, step, online rows,
                                 added, env_step, episodes}

A resumed run continues from its latest checkpoint with the same buffer, agent, optimiser and
keys; the episodes in flight when it stopped are lost, and new ones start.
"""

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Int, PRNGKeyArray

from ..agents import AbstractAgent
from ..buffer import ReplayBuffer
from ..configs import OnlineConfig, TrainConfig
from ..data._load import ACTION_CLIP
from ..dataset import Dataset
from ..envs import EvalResult, episode_seed, make_env
from ..envs._evaluate import _act
from ..envs._names import env_dims
from ..envs._workers import LocalEnvs, WorkerEnvs
from ._checkpointer import Checkpointer
from ._evaluator import Evaluator
from ._fit import _check_dims, _Loop
from ._runlog import RunLog, deferred_interrupts
from ._updater import Updater

__all__ = ["OnlineResult", "fit_online", "open_envs"]

PHASE = "online"


@dataclasses.dataclass(frozen=True)
class OnlineResult:
    """What `fit_online` returns: the fine-tuned `agent`, the transitions collected
    (`env_step`), the update count (`step`, continuing the offline one), the online phase's
    wall time in seconds, its last evaluation and the `buffer` it ended with."""

    agent: AbstractAgent
    env_step: int
    step: int
    wall_time: float
    last_eval: EvalResult | None
    buffer: ReplayBuffer


def open_envs(env_name: str, envs: int, workers: int) -> LocalEnvs | WorkerEnvs:
    """`envs` environments of `env_name`, in `workers` processes (1: this process). Raises
    `RuntimeError` saying so when the simulator cannot be made."""
    try:
        if workers == 1:
            return LocalEnvs([make_env(env_name) for _ in range(envs)])
        pool = WorkerEnvs(env_name, workers)
        pool.dims()  # builds one env in worker 0: a broken simulator fails here
        return pool
    except (RuntimeError, ValueError, ImportError, OSError) as e:
        raise RuntimeError(f"Cannot make the environment {env_name!r} to fine-tune in: {e}") \
            from None


def _close(envs: LocalEnvs | WorkerEnvs) -> None:
    if isinstance(envs, WorkerEnvs):
        envs.close()
    else:
        for env in envs.envs:
            env.close()


def _dims(envs: LocalEnvs | WorkerEnvs) -> tuple[int, int]:
    return envs.dims() if isinstance(envs, WorkerEnvs) else env_dims(envs.envs[0])


@eqx.filter_jit(donate="all-except-first")
def _append(offline: Dataset, online: Dataset, added: Int[Array, ""],
            rows: Dataset) -> tuple[Dataset, Int[Array, ""]]:
    """The online part of a buffer after `ReplayBuffer.add`, updated in place (donated)."""
    buffer = ReplayBuffer(offline, online, added).add(rows)
    return buffer.online, buffer.added


class _OnlineLoop(_Loop):
    """`fit`'s loop state and parts (finite checks, metrics rows, evaluation), stepping envs
    between update chunks."""

    def __init__(self, updater: Updater, ckpt: Checkpointer, evaluator: Evaluator,
                 train: TrainConfig, online: OnlineConfig, run_dir: Path,
                 metadata: dict[str, Any], data: Dataset, capacity: int):
        super().__init__(updater, ckpt, evaluator, train, run_dir, metadata)
        self.online, self.data = online, data
        self.capacity = capacity

    def buffer(self) -> ReplayBuffer:
        return ReplayBuffer(self.data, self.state["online"], self.state["added"],
                            self.online.online_fraction)

    def start_online(self, agent: AbstractAgent, key: PRNGKeyArray, opt_state: Any,
                     step: int) -> None:
        """Restores the latest online checkpoint, else starts from `agent` (and `opt_state`,
        else a fresh one) at update `step`."""
        fresh = self.updater.init(agent, key)
        if opt_state is not None:
            fresh["opt_state"] = opt_state
        empty = ReplayBuffer.create(self.data, self.capacity)
        zero = jnp.zeros((), jnp.int32)
        fresh.update(step=jnp.asarray(step, jnp.int32), online=empty.online, added=zero,
                     env_step=zero, episodes=zero)
        if self.ckpt.saved_step is None:
            state, self.wall_before = fresh, 0.0
        else:
            state, meta = self.ckpt.restore_latest(fresh, check=lambda meta: None)
            self.wall_before = float(meta.get("wall_time", 0.0))
        self.state, self.step = self.updater.place(state), int(state["step"])
        self.env_step = int(state["env_step"])
        self.train_key, self.val_key, self.eval_key = self.updater.stream_keys(self.state)
        self.explore_key = jr.fold_in(self.state["key"], 3)
        self.reset_seed = int(jr.randint(jr.fold_in(self.state["key"], 4), (), 0, 2**31 - 1))
        self.t0 = time.perf_counter()

    def save(self) -> None:
        self.state["env_step"] = jnp.asarray(self.env_step, jnp.int32)
        meta = dict(self.metadata, step=self.step, env_step=self.env_step,
                    wall_time=self.wall_time(), agent=type(self.state["agent"]).__name__)
        self.ckpt.save(self.state, self.env_step, meta)

    def reset(self, envs: LocalEnvs | WorkerEnvs, slots: list[int]) -> None:
        """Starts the next online episodes on `slots`, each reset with its own seed."""
        first = int(self.state["episodes"])
        ids = list(range(first, first + len(slots)))
        for i, ob in zip(slots, envs.reset([(i, episode_seed(self.reset_seed, k))
                                            for i, k in zip(slots, ids)]), strict=True):
            self.obs[i] = ob
        self.ep_ids[slots], self.lengths[slots], self.returns[slots] = ids, 0, 0.0
        self.state["episodes"] = jnp.asarray(first + len(slots), jnp.int32)

    def collect(self, envs: LocalEnvs | WorkerEnvs) -> list[dict[str, Any]]:
        """One step of every env; appends the transitions, resets finished episodes and
        returns their episodes.csv rows."""
        policy = self.state["agent"].policy
        actions = np.asarray(_act(policy, jnp.asarray(self.obs), jnp.asarray(self.ep_ids),
                                  jnp.asarray(self.lengths), self.explore_key))
        if not np.isfinite(actions).all():
            raise FloatingPointError(f"The policy acted non-finite ({actions}) at online step "
                                     f"{self.env_step}: its parameters diverged.")
        out = envs.transition(list(enumerate(actions)))
        next_obs = np.stack([o[0] for o in out]).astype(np.float32)
        rewards, terminated, truncated, success = (np.array([o[k] for o in out], np.float32)
                                                   for k in (1, 2, 3, 4))
        done = np.maximum(terminated, truncated)
        kept = np.clip(actions, -ACTION_CLIP, ACTION_CLIP)
        rows = Dataset.from_numpy(dict(
            observations=self.obs, actions=kept, rewards=rewards, masks=1.0 - terminated,
            next_observations=next_obs, next_actions=kept, terminals=done))
        self.state["online"], self.state["added"] = _append(
            self.data, self.state["online"], self.state["added"], rows)
        self.env_step += len(out)
        self.obs = next_obs.copy()  # the rows may alias `next_obs` while `reset` writes here
        self.returns += rewards
        self.lengths += 1
        finished = [int(i) for i in np.flatnonzero(done)]
        episodes = [{"step": self.env_step, "episode": int(self.ep_ids[i]),
                     "return": float(self.returns[i]), "length": int(self.lengths[i]),
                     "success": float(success[i]), "wall_time": self.wall_time()}
                    for i in finished]
        if finished:
            self.reset(envs, finished)
        return episodes

    def run_online(self, envs: LocalEnvs | WorkerEnvs, val: Dataset | None, log: RunLog,
                   interrupted: threading.Event) -> None:
        """Env steps, updates, log rows, evaluations and checkpoints until `online.steps`
        transitions; Ctrl-C or SIGTERM saves first."""
        c, n_envs = self.online, len(self.obs)
        crossed = lambda every: bool(every) and \
            self.env_step // every > (self.env_step - n_envs) // every  # noqa: E731
        eval_every = c.eval_every or self.evaluator.config.every
        ckpt_every = c.checkpoint_every or eval_every
        t_env = t_update = 0.0
        n_steps = n_updates = 0
        try:
            if self.env_step == 0:  # the policy fine-tuning starts from, on the same protocol
                log.write("eval", [self.evaluate_online()])
            self.reset(envs, list(range(n_envs)))
            while self.env_step < c.steps:
                t = time.perf_counter()
                episodes = self.collect(envs)
                t_env += time.perf_counter() - t
                for row in episodes:
                    log.write("episodes", [row])
                t, n = time.perf_counter(), n_envs * c.updates_per_step
                state, diagnostics = self.updater.run(self.state, self.buffer(),
                                                      self.train_key, n)
                self.check_finite(diagnostics)
                self.state, self.step = state, self.step + n
                jax.block_until_ready(self.state["step"])
                t_update += time.perf_counter() - t
                self.pending.append(diagnostics)
                n_steps, n_updates = n_steps + n_envs, n_updates + n
                last = self.env_step >= c.steps
                if last or crossed(c.log_every):
                    rows = self.metrics_rows(val)
                    rates = {"env_steps_per_s": n_steps / max(t_env, 1e-9),
                             "updates_per_s": n_updates / max(t_update, 1e-9)}
                    log.metrics([{**r, "step": self.env_step, "update": self.step, **rates}
                                 for r in rows])
                    t_env = t_update = 0.0
                    n_steps = n_updates = 0
                log.advance(n_envs)
                if last or crossed(eval_every):
                    log.write("eval", [self.evaluate_online()])
                self.checkpoint(last or crossed(ckpt_every), interrupted)
        except KeyboardInterrupt:
            self.save()
            raise

    def evaluate_online(self) -> dict[str, Any]:
        """An eval.csv row: `fit`'s, at this env step, with the evaluation's env-bound rate."""
        row = self.evaluate()[0]
        res = self.last_eval
        steps = sum(e["length"] for e in res.episodes)
        return {**row, "step": self.env_step, "update": self.step,
                "env_steps_per_s": steps / max(res.wall_time, 1e-9)}


def fit_online(
    agent: AbstractAgent,
    data: Dataset,
    env_name: str,
    online: OnlineConfig,
    train: TrainConfig,
    *,
    run_dir: str | Path,
    key: PRNGKeyArray,
    evaluator: Evaluator,
    opt_state: Any = None,
    start_step: int = 0,
    val: Dataset | None = None,
    progress: bool | None = None,
) -> OnlineResult:
    """Fine-tunes `agent` online in `env_name` for `online.steps` transitions, on a replay
    buffer that starts with `data` (the offline rows), resuming from `run_dir/online/`'s
    latest checkpoint if there is one.

    `train` gives the batch size and the optimiser (`opt_state`, e.g. the offline run's, else a
    fresh one); updates are numbered on from `start_step` (the offline run's last). `key` seeds
    the online phase: its updates, the policy's exploration noise and the episodes' reset
    seeds. `evaluator` evaluates every `online.eval_every` transitions (default: its own
    period) and at the end, with the offline protocol. Raises `ValueError` when the agent, the
    dataset and the environment do not share their sizes or the buffer's capacity does not
    exceed the dataset, `RuntimeError` when the environment cannot be made.
    """
    _check_dims(agent, data, "data")
    capacity = online.capacity or len(data) + online.steps
    ReplayBuffer.create(data, capacity)  # refuses a capacity that leaves no room, before any env
    run_dir = Path(run_dir).expanduser().resolve()
    updater = Updater(train.optimiser.make(train.steps), train.batch_size)
    ckpt = Checkpointer(run_dir / PHASE / "checkpoints", keep=train.keep_checkpoints)
    metadata = {"online": dataclasses.asdict(online), "capacity": capacity,
                "custom_optimiser": False}
    loop = _OnlineLoop(updater, ckpt, evaluator, train, online, run_dir, metadata, data,
                       capacity)
    loop.start_online(agent, key, opt_state, start_step)
    if loop.env_step < online.steps:
        envs = open_envs(env_name, online.envs, online.workers)
        try:
            dims = _dims(envs)
            if dims != (data.obs_dim, data.action_dim):
                raise ValueError(
                    f"Dataset/env mismatch: {env_name} has (observation, action) dims {dims}, "
                    f"the dataset {(data.obs_dim, data.action_dim)}.")
            loop.obs = np.zeros((online.envs, data.obs_dim), np.float32)
            loop.ep_ids = np.zeros(online.envs, np.int32)
            loop.lengths = np.zeros(online.envs, np.int32)
            loop.returns = np.zeros(online.envs, np.float32)
            log = RunLog(run_dir, seeds=None, start=loop.env_step, total=online.steps,
                         kinds=("metrics", "eval", "episodes"), progress=progress,
                         prefix=PHASE)
            try:
                with deferred_interrupts() as interrupted:
                    loop.run_online(envs, val, log, interrupted)
            finally:
                log.close()
        finally:
            _close(envs)
    return OnlineResult(loop.state["agent"], loop.env_step, loop.step, loop.wall_time(),
                        loop.last_eval, loop.buffer())
