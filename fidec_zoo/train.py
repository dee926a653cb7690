"""`fit`: trains any agent offline, with on-device update chunks, logging, evaluation,
checkpoints and automatic resume.

One optax optimiser covers exactly the leaves selected by `agents.trainable(agent)` (targets in
`Frozen` wrappers and non-float leaves excluded). `update` is one pure update
`(agent, opt_state, data, key, step) -> (agent, opt_state, metrics)`; `fit` runs up to `chunk`
of them per jitted `lax.scan` on device, so Python is visited once per chunk. Update `i`
(0-based, the `step` passed to `agent.loss`) uses the key `fold_in(train_key, i)`, so a resumed
run draws exactly the same minibatches and noise as an uninterrupted one.

Run directory layout::

    run_dir/metrics.csv     step, wall_time, loss, <agent metrics>, val_<...>: one row per log_every
    run_dir/eval.csv        step, success, success_std, return, length, episodes, wall_time
    run_dir/checkpoints/N/  Orbax checkpoint after N updates: {agent, opt_state, key, step}

Scaling (docs/scaling.md):

- `fit(..., seeds=N)` trains N seeds in ONE program: the agent is stacked over a leading seed
  axis (`stack_seeds`, or `eqx.filter_vmap` of a builder over keys) and `update` is `vmap`ped
  over it. Seed `i` computes exactly what `fit(select_seed(agent, i), key=keys[i])` computes.
  Logs go to `run_dir/seed_<i>/{metrics,eval}.csv`; one checkpoint holds all seeds.
- `fit(..., mesh=mesh)` is data-parallel over a 1-D `jax.sharding.Mesh`
  (`fidec_zoo.distributed.make_data_mesh`): minibatches are split over its devices, state and
  dataset replicated; the result equals a one-device run up to float summation order.
"""

import dataclasses
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Key, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from . import checkpoint, distributed
from ._runlog import CsvLog, LogForwarder, Logger, deferred_interrupts, loss_summary
from ._seeds import check_seeds, seed_keys
from ._seeds import select_seed as select_seed
from ._seeds import stack_seeds as stack_seeds
from ._updates import _initial_state, _run_chunk, _val_metrics
from ._updates import make_optimiser as make_optimiser
from ._updates import update as update
from .agents import AbstractAgent
from .dataset import Dataset

__all__ = [
    "FitResult", "fit", "make_optimiser", "restore_agent", "select_seed", "stack_seeds", "update",
]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What `fit` returns: the trained `agent`, the number of updates done (`step`), the total
    training wall time in seconds (summed over resumed sessions), the last evaluation
    (a `fidec_zoo.envs.EvalResult`, or `None`) and the absolute `run_dir`.

    With `fit(..., seeds=N)`: `agent` is stacked over seeds (`select_seed(agent, i)`),
    `last_eval` is a list with one result per seed (or `None`) and `seeds` is `N`."""

    agent: AbstractAgent
    step: int
    wall_time: float
    last_eval: Any
    run_dir: Path
    seeds: int | None = None


def restore_agent(
    run_dir: str | Path,
    agent: AbstractAgent,
    *,
    lr: float = 3e-4,
    grad_clip: float | None = None,
    seeds: int | None = None,
    step: int | None = None,
) -> tuple[AbstractAgent, int]:
    """The agent of checkpoint `step` (default: the latest) in `run_dir` and its step.

    `agent` is a freshly built agent of the same recipe (only its structure is used; build it
    inside `eqx.filter_eval_shape` to allocate nothing); `lr`/`grad_clip` must be the run's,
    since the optimiser state is part of what is stored. For a `fit(..., seeds=N)` run pass
    `seeds=N` and an agent stacked over seeds. Raises `FileNotFoundError`, listing the steps
    there are, when there is no such checkpoint.
    """
    from .checkpoint import restore_checkpoint

    keys = jax.random.key(0) if seeds is None else jax.random.split(jax.random.key(0), seeds)
    skeleton = eqx.filter_eval_shape(  # `agent` as an argument: its shape-only leaves trace
        lambda a: _initial_state(a, make_optimiser(lr, grad_clip), keys, seeds), agent)
    directory = Path(run_dir).expanduser() / "checkpoints"
    tree, step, _ = restore_checkpoint(directory, skeleton, step=step)
    return tree["agent"], step


def _placed(tree: PyTree, mesh=None) -> PyTree:
    """Fresh copies of the arrays of `tree` committed to the first device (or replicated on
    `mesh`): fresh because they get donated (the caller's agent stays valid), committed so that
    new and restored states share one compiled program."""
    if mesh is not None:
        return distributed.replicate(tree, mesh)
    arrays, static = eqx.partition(tree, eqx.is_array)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return eqx.combine(jax.device_put(arrays, device, may_alias=False), static)


def _check_dims(agent: AbstractAgent, data: Dataset, name: str) -> None:
    for dim in ("obs_dim", "action_dim"):
        if getattr(data, dim) != getattr(agent.policy, dim):
            raise ValueError(
                f"Dataset/agent mismatch: {name}.{dim}={getattr(data, dim)} but "
                f"agent.policy.{dim}={getattr(agent.policy, dim)} ({type(agent).__name__})."
            )


class _Run:
    """The host side of `fit`: the current state, the schedule, logging and checkpoints."""

    def __init__(self, agent, train, val, key, cfg: dict[str, Any]):
        self.cfg, self.seeds, self.mesh = cfg, cfg["seeds"], cfg["mesh"]
        self.main = distributed.is_main_process()
        if self.mesh is not None:  # the dataset lives on every device of the mesh
            train = distributed.replicate(train, self.mesh)
            val = None if val is None else distributed.replicate(val, self.mesh)
        self.train, self.val = train, val
        self.optimiser = make_optimiser(cfg["lr"], cfg["grad_clip"])
        self.ckpt_dir = cfg["run_dir"] / "checkpoints"
        key = seed_keys(key, self.seeds)
        # Restore into a skeleton of the given agent (nothing allocated), else start fresh.
        skeleton = eqx.filter_eval_shape(_initial_state, agent, self.optimiser, key, self.seeds)
        self.saved_step = checkpoint.latest_step(self.ckpt_dir)
        if self.saved_step is None:
            state = _initial_state(agent, self.optimiser, key, self.seeds)
            self.wall_before = 0.0
        else:
            state, _, meta = checkpoint.restore_checkpoint(self.ckpt_dir, skeleton)
            self.wall_before = float(meta.get("wall_time", 0.0))
        if not np.array_equal(jr.key_data(key), jr.key_data(state["key"])):
            warnings.warn(
                f"Resuming {cfg['run_dir']} with the key stored there, not the given one."
            )
        self.state, self.step = _placed(state, self.mesh), int(state["step"])
        split = lambda k: jr.split(k, 3)  # noqa: E731
        keys = split(self.state["key"]) if self.seeds is None else \
            jax.vmap(split, out_axes=1)(self.state["key"])
        self.train_key, self.val_key, self.eval_key = keys
        self.last_eval, self.pending, self.t0 = None, [], time.perf_counter()

    def seed_dirs(self) -> list[Path]:
        """Where each seed's CSVs go: the run dir itself, or `run_dir/seed_<i>`."""
        root = self.cfg["run_dir"]
        return [root] if self.seeds is None else [root / f"seed_{i}" for i in range(self.seeds)]

    def wall_time(self) -> float:
        return round(self.wall_before + time.perf_counter() - self.t0, 3)

    def due(self, every: int | None) -> bool:
        """Whether an event with period `every` falls at the current step (always at the end)."""
        return self.step == self.cfg["steps"] or bool(every and self.step % every == 0)

    def next_chunk(self) -> int:
        """Updates until the next chunk, log, eval or checkpoint boundary. Boundaries are
        multiples, so resumed and uninterrupted runs cut the same chunks (same programs)."""
        c = self.cfg
        n = c["steps"] - self.step
        for every in (c["chunk"], c["log_every"], c["eval_every"], c["checkpoint_every"]):
            if every:
                n = min(n, every - self.step % every)
        return n

    def run_chunk(self) -> None:
        n = self.next_chunk()
        inputs = (self.train, self.train_key, jnp.asarray(self.step, jnp.int32))
        agent, opt_state, metrics = _run_chunk(
            inputs, self.state["agent"], self.state["opt_state"], self.optimiser,
            self.cfg["batch_size"], n, self.seeds is not None, self.mesh,
        )  # fmt: skip
        metrics = jax.device_get(metrics)
        self.check_finite(metrics)
        self.pending.append({"loss": metrics.pop("loss"), **metrics})
        self.step += n
        self.state = dict(
            self.state, agent=agent, opt_state=opt_state, step=jnp.asarray(self.step, jnp.int32)
        )

    def check_finite(self, metrics: dict[str, np.ndarray]) -> None:
        """Raises `FloatingPointError` naming the first non-finite step and its loss terms."""
        bad = ~np.isfinite(metrics["loss"])
        if bad.any():
            i, *seed = np.unravel_index(int(np.argmax(bad)), bad.shape)
            where = (i, *seed)
            terms = ", ".join(f"{k}={float(v[where])!r}" for k, v in metrics.items())
            kept = "none" if self.saved_step is None else f"step {self.saved_step}"
            of_seed = f" of seed {seed[0]}" if seed else ""
            raise FloatingPointError(
                f"Non-finite loss at step {self.step + i} (0-based update index){of_seed}: "
                f"{terms}. Training stopped without saving this state; the last good "
                f"checkpoint in {self.ckpt_dir} is {kept}."
            )

    def log_rows(self) -> list[dict[str, Any]]:
        """Per seed: the mean of the pending per-update metrics, plus val losses at the current
        state (one row without seeds)."""
        head = {"step": self.step, "wall_time": self.wall_time()}
        means = {k: np.mean(np.concatenate([p[k] for p in self.pending]), axis=0)
                 for k in self.pending[0]}
        self.pending = []
        val = {}
        if self.val is not None:
            step, batch = jnp.asarray(self.step), self.cfg["batch_size"]
            out = _val_metrics(self.state["agent"], self.val, self.val_key, step, batch,
                               self.seeds is not None)
            val = {f"val_{k}": v for k, v in jax.device_get(out).items()}
        if self.seeds is None:
            return [{**head, **{k: float(v) for k, v in {**means, **val}.items()}}]
        return [{**head, **{k: float(v[i]) for k, v in {**means, **val}.items()}}
                for i in range(self.seeds)]

    def evaluate(self) -> list[dict[str, Any]]:
        """Evaluates the policy (of every seed) on this process; one eval.csv row each."""
        from .envs import evaluate

        rows, results = [], []
        for i in range(self.seeds or 1):
            agent = self.state["agent"] if self.seeds is None else \
                select_seed(self.state["agent"], i)
            eval_key = self.eval_key if self.seeds is None else self.eval_key[i]
            if self.mesh is not None:  # a process-local copy: evaluation is not collective
                agent = distributed.host_copy(agent)
            seed = int(jr.randint(jr.fold_in(eval_key, self.step), (), 0, 2**31 - 1))
            res = evaluate(
                agent.policy, self.cfg["env_name"], episodes=self.cfg["eval_episodes"],
                seed=seed, workers=self.cfg["eval_workers"],
            )  # fmt: skip
            results.append(res)
            rows.append({
                "step": self.step, "success": res.success, "success_std": res.success_std,
                "return": res.return_mean, "length": res.length_mean,
                "episodes": len(res.episodes), "wall_time": self.wall_time(),
            })  # fmt: skip
        self.last_eval = results[0] if self.seeds is None else results
        return rows

    def save(self) -> None:
        """Checkpoints the current (finite, whole-chunk) state unless already saved; skipped
        if its buffers were donated to a call that never returned (a second Ctrl-C)."""
        leaves = jax.tree.leaves(eqx.filter(self.state, eqx.is_array))
        if self.saved_step == self.step or any(x.is_deleted() for x in leaves):
            return
        meta = {k: self.cfg[k] for k in ("lr", "grad_clip", "batch_size", "steps")}
        meta.update(step=self.step, wall_time=self.wall_time())
        meta.update(agent=type(self.state["agent"]).__name__)
        if self.seeds is not None:
            meta.update(seeds=self.seeds)
        checkpoint.save_checkpoint(
            self.ckpt_dir, self.step, self.state, metadata=meta, max_to_keep=self.cfg["max_to_keep"]
        )
        self.saved_step = self.step


def _loop(
    run: _Run, interrupted: threading.Event, progress: bool | None, forward: LogForwarder
) -> None:
    """Chunks, log rows, evaluations and checkpoints until `steps`; Ctrl-C or SIGTERM saves first.
    Every process runs it (the programs are collective); only the main one writes files."""
    c = run.cfg
    dirs = run.seed_dirs() if run.main else []
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    names = [d.relative_to(c["run_dir"]) for d in dirs]  # "." or seed_<i>

    def write(logs: list[CsvLog], kind: str, rows: list[dict[str, Any]]) -> None:
        for log, name, row in zip(logs, names, rows):
            log.write(row)
            forward((name / kind).as_posix(), row)

    metrics_logs = [CsvLog(d / "metrics.csv", keep_until=run.step) for d in dirs]
    eval_logs = [CsvLog(d / "eval.csv", keep_until=run.step) for d in dirs] \
        if c["env_name"] else []
    bar = tqdm(
        total=c["steps"], initial=run.step, unit="step", dynamic_ncols=True, mininterval=1.0,
        disable=(None if progress is None else not progress) if run.main else True,
    )  # fmt: skip
    plain = run.main and bar.disable and progress is None
    t_log, step_log = time.perf_counter(), run.step
    try:
        while run.step < c["steps"]:
            start = run.step
            run.run_chunk()
            if run.due(c["log_every"]):
                rows = run.log_rows()
                write(metrics_logs, "metrics", rows)
                row = rows[0] if len(rows) == 1 else {
                    k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
                bar.set_postfix_str(loss_summary(row, 3), refresh=False)
                if plain:
                    rate = (run.step - step_log) / (time.perf_counter() - t_log)
                    t_log, step_log = time.perf_counter(), run.step
                    seeds = f", mean of {run.seeds} seeds" if run.seeds else ""
                    print(f"[fit] step {run.step}/{c['steps']} {loss_summary(row, 6)} "
                          f"({rate:.0f} steps/s{seeds})", flush=True)  # fmt: skip
            bar.update(run.step - start)
            if run.main and c["env_name"] and run.due(c["eval_every"]):
                write(eval_logs, "eval", run.evaluate())
            if run.due(c["checkpoint_every"]):
                run.save()
            if interrupted.is_set():
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        run.save()
        raise
    finally:
        bar.close()
        for log in metrics_logs + eval_logs:
            log.close()


def fit(
    agent: AbstractAgent,
    train: Dataset,
    *,
    steps: int,
    run_dir: str | Path,
    key: PRNGKeyArray | Key[Array, " seeds"],
    batch_size: int = 256,
    lr: float = 3e-4,
    grad_clip: float | None = None,
    chunk: int = 1000,
    log_every: int = 1000,
    eval_every: int | None = None,
    eval_episodes: int = 50,
    eval_workers: int = 1,
    checkpoint_every: int | None = None,
    env_name: str | None = None,
    val: Dataset | None = None,
    progress: bool | None = None,
    max_to_keep: int | None = 2,
    seeds: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    loggers: Sequence[Logger] = (),
) -> FitResult:
    """Trains `agent` on `train` for `steps` updates, resuming from the latest checkpoint in
    `run_dir` if there is one (pass the same freshly built agent; the stored state and key win).

    **Arguments:**

    - `agent`: any `AbstractAgent`; `train`, `val`: `Dataset`s (`val` only adds `val_*` losses
      to `metrics.csv`).
    - `steps`: total number of updates; a run already at `steps` returns at once.
    - `run_dir`: holds `metrics.csv`, `eval.csv` and `checkpoints/`.
    - `key`: the run's PRNG key (typed or raw).
    - `batch_size`, `lr`, `grad_clip`: minibatch size, Adam step size, global-norm clip.
    - `chunk`: most updates per jitted `lax.scan` call. Chunks are also cut at multiples of
      `log_every`, `eval_every` and `checkpoint_every` (keep them multiples of `chunk`).
    - `log_every`: updates averaged into one `metrics.csv` row (and one printed line when the
      output is not a terminal).
    - `env_name`, `eval_every`, `eval_episodes`: evaluate `agent.policy` with
      `fidec_zoo.envs.evaluate` every `eval_every` updates and at the end (`env_name` alone:
      at the end only). `eval_workers > 1` steps its envs in that many processes (training
      waits meanwhile, so its CPUs are free); the results are the same.
    - `checkpoint_every`: default `eval_every`, else `10 * chunk`. Checkpoints are also written
      at the end and on Ctrl-C or SIGTERM (at the end of the running chunk, its evaluation
      included; a second one stops at once).
    - `progress`: `None` shows a tqdm bar on a terminal; `True`/`False` force it on/off.
    - `max_to_keep`: how many checkpoints to keep (`None`: all).
    - `seeds`: train that many seeds in one program (`vmap` over a leading seed axis). `agent`
      must then be stacked over seeds (`stack_seeds`, or `eqx.filter_vmap` of a builder over
      keys) and `key` is one key (split into `seeds`) or `seeds` keys; seed `i` computes what
      `fit(select_seed(agent, i), key=keys[i])` computes. CSVs go to `run_dir/seed_<i>/`; the
      result's agent is stacked and `last_eval` is a list.
    - `mesh`: a 1-D `jax.sharding.Mesh` (`fidec_zoo.distributed.make_data_mesh`) for
      data-parallel training: each minibatch is split over its devices (`batch_size` must be
      divisible by their number), state and datasets are replicated. With several processes
      (`jax.distributed.initialize`), call `fit` identically on each; only process 0 writes logs
      and evaluates.
    - `loggers`: callables `logger(name, row)` that receive every row written to a CSV, for
      wandb, TensorBoard and the like. `name` is the CSV's path in the run dir without `.csv`
      (`"metrics"`, `"eval"`, or `"seed_<i>/metrics"` with `seeds`); `row` maps its columns
      (`step` included) to numbers. A resumed run sends again the rows after the checkpoint it
      resumes from. A logger that raises is dropped with a warning; training goes on.

    Raises `ValueError` on a dataset/agent size mismatch (before compiling) and
    `FloatingPointError` on a non-finite loss (nothing saved; the last good checkpoint stays).
    """
    _check_dims(agent, train, "train")
    if val is not None:
        _check_dims(agent, val, "val")
    sizes = dict(batch_size=batch_size, chunk=chunk, log_every=log_every)
    sizes.update(eval_episodes=eval_episodes, eval_workers=eval_workers, max_to_keep=max_to_keep)
    optional = dict(eval_every=eval_every, checkpoint_every=checkpoint_every)
    for name, value in dict(sizes, **optional, steps=steps).items():
        low = 0 if name == "steps" else 1
        if value is not None and value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}.")
    if eval_every is not None and env_name is None:
        raise ValueError("eval_every needs env_name (the environment to evaluate in).")
    if seeds is not None:
        check_seeds(agent, seeds)
    if mesh is not None:
        distributed.check_mesh(mesh, batch_size)
    forward = LogForwarder(loggers)
    run_dir = Path(run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = dict(
        sizes, steps=steps, run_dir=run_dir, lr=lr, grad_clip=grad_clip, env_name=env_name,
        eval_every=eval_every, checkpoint_every=checkpoint_every or eval_every or 10 * chunk,
        seeds=seeds, mesh=mesh,
    )  # fmt: skip
    run = _Run(agent, train, val, key, cfg)
    if run.step < steps:
        with deferred_interrupts() as interrupted:
            _loop(run, interrupted, progress, forward)
    return FitResult(run.state["agent"], run.step, run.wall_time(), run.last_eval, run_dir, seeds)
