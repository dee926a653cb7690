"""`fit`: trains an agent (or a recipe) offline from small parts: an `Updater` (the device
side), a `Checkpointer`, an optional `Evaluator` and a `RunLog`.

Run directory layout::

    run_dir/metrics.csv     step, wall_time, loss, <agent diagnostics>, val_<...>: one row per
                            log_every updates
    run_dir/eval.csv        step, success, success_std, return, length, episodes, eval_seed
                            (the `evaluate` seed, to repeat that evaluation), wall_time
    run_dir/checkpoints/N/  Orbax checkpoint after N updates: {agent, opt_state, key, step},
                            with the sha256 of each array (checked on restore; a resume
                            falls back past corrupt ones, moved to checkpoints-corrupt/)

Scaling (docs/scaling.md):

- `fit(..., seeds=N)` trains N seeds in ONE program: the agent is stacked over a leading seed
  axis (`stack_seeds`, or `eqx.filter_vmap` of a builder over keys) and the update is `vmap`ped
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

import jax
import jax.random as jr
import numpy as np
from jaxtyping import Array, Key, PRNGKeyArray
from optax import GradientTransformation

from .. import checkpoint, distributed
from .._seeds import check_seeds, select_seed, stack_seeds
from ..agents import AbstractAgent
from ..configs import OptimConfig, Recipe, TrainConfig, from_dict, to_dict
from ..dataset import Dataset
from ..envs import EvalResult
from ._checkpointer import Checkpointer
from ._evaluator import Evaluator
from ._runlog import LogForwarder, Logger, RunLog, deferred_interrupts
from ._updater import Updater

__all__ = ["FitResult", "fit", "restore_agent"]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What `fit` returns: the trained `agent`, the number of updates done (`step`), the total
    training wall time in seconds (summed over resumed sessions), the last evaluation (`None` if
    there was none in this call), the absolute `run_dir`, and `start_step`, the step this call
    resumed from (0 for a new run; below the latest checkpoint's step where that one was
    corrupt and an earlier one was restored).

    With `fit(..., seeds=N)`: `agent` is stacked over seeds (`select_seed(agent, i)`),
    `last_eval` is a list with one result per seed and `seeds` is `N`."""

    agent: AbstractAgent
    step: int
    wall_time: float
    last_eval: EvalResult | list[EvalResult] | None
    run_dir: Path
    seeds: int | None = None
    start_step: int = 0


def _check_dims(agent: AbstractAgent, data: Dataset, name: str) -> None:
    for dim in ("obs_dim", "action_dim"):
        if getattr(data, dim) != getattr(agent.policy, dim):
            raise ValueError(
                f"Dataset/agent mismatch: {name}.{dim}={getattr(data, dim)} but "
                f"agent.policy.{dim}={getattr(agent.policy, dim)} ({type(agent).__name__})."
            )


RunKey = PRNGKeyArray | Key[Array, " seeds"]


def build_agent(recipe: Recipe, data: Dataset, key: RunKey,
                seeds: int | None = None) -> tuple[AbstractAgent, RunKey]:
    """The agent of `recipe` for `data`'s sizes and the key to train it with: built from
    `fold_in(k, 0)` and trained with `fold_in(k, 1)` for the run key `k`; with `seeds`, one
    agent per seed key (`key` split, or `seeds` keys given), stacked."""
    if seeds is None:
        return recipe.build(data.obs_dim, data.action_dim, key=jr.fold_in(key, 0)), \
            jr.fold_in(key, 1)
    keys = jr.split(key, seeds) if key.shape == () else key
    agents = [recipe.build(data.obs_dim, data.action_dim, key=jr.fold_in(k, 0)) for k in keys]
    return stack_seeds(agents), jax.vmap(lambda k: jr.fold_in(k, 1))(keys)


def _check_optimiser(meta: dict[str, Any], custom: bool, run_dir: Path) -> None:
    """Resuming must use the kind of optimiser the run was trained with (as the checkpoint's
    metadata `meta` records it): a custom optax one again (its state cannot be rebuilt from the
    config), or the config's."""
    stored = bool(meta.get("custom_optimiser", False))
    if stored and not custom:
        raise ValueError(f"{run_dir} was trained with a custom optax optimiser; resume it with "
                         "the same one (fit(..., optimiser=...)).")
    if custom and not stored:
        raise ValueError(f"{run_dir} was trained with its TrainConfig's optimiser; resume it "
                         "without optimiser=, or start a new run dir.")


def _optimiser_record(config: TrainConfig, custom: bool) -> dict[str, Any]:
    """What a checkpoint records of its training config (what `restore_agent` rebuilds the
    optimiser state's structure from)."""
    return {"train": to_dict(config), "custom_optimiser": custom}


class _Loop:
    """One `fit` call: the parts, the state and the host-side schedule."""

    def __init__(self, updater: Updater, ckpt: Checkpointer, evaluator: Evaluator | None,
                 config: TrainConfig, run_dir: Path, metadata: dict[str, Any]):
        self.updater, self.ckpt, self.evaluator = updater, ckpt, evaluator
        self.config, self.run_dir, self.metadata = config, run_dir, metadata
        self.main = distributed.is_main_process()
        self.last_eval: Any = None
        self.pending: list[dict[str, np.ndarray]] = []

    def start(self, agent: AbstractAgent, key: PRNGKeyArray | Key[Array, " seeds"]) -> None:
        """Restores the latest checkpoint that reads back as saved (`Checkpointer.
        restore_latest`) into a skeleton of `agent`, else starts afresh."""
        if self.ckpt.saved_step is None:
            state, self.wall_before = self.updater.init(agent, key), 0.0
        else:
            custom = self.metadata["custom_optimiser"]
            state, meta = self.ckpt.restore_latest(
                self.updater.skeleton(agent, key),
                check=lambda meta: _check_optimiser(meta, custom, self.run_dir))
            self.wall_before = float(meta.get("wall_time", 0.0))
            if not np.array_equal(jr.key_data(self.updater.keys(key)), jr.key_data(state["key"])):
                warnings.warn(f"Resuming {self.run_dir} with the key stored there, not the "
                              "given one.")
        self.state, self.step = self.updater.place(state), int(state["step"])
        self.train_key, self.val_key, self.eval_key = self.updater.stream_keys(self.state)
        self.t0 = time.perf_counter()

    def wall_time(self) -> float:
        return round(self.wall_before + time.perf_counter() - self.t0, 3)

    def next_chunk(self) -> int:
        """Updates until the next chunk, log, eval or checkpoint boundary. Boundaries are
        multiples, so resumed and uninterrupted runs cut the same chunks (same programs)."""
        c = self.config
        every = [c.chunk, c.log_every, self.ckpt.every]
        every.append(self.evaluator.config.every if self.evaluator else None)
        n = c.steps - self.step
        for e in every:
            if e:
                n = min(n, e - self.step % e)
        return n

    def run_chunk(self, data: Dataset) -> int:
        n = self.next_chunk()
        state, diagnostics = self.updater.run(self.state, data, self.train_key, n)
        self.check_finite(diagnostics)
        self.state, self.step = state, self.step + n
        self.pending.append(diagnostics)
        return n

    def check_finite(self, diagnostics: dict[str, np.ndarray]) -> None:
        """Raises `FloatingPointError` naming the first non-finite step and its loss terms."""
        bad = ~np.isfinite(diagnostics["loss"])
        if bad.any():
            i, *seed = np.unravel_index(int(np.argmax(bad)), bad.shape)
            where = (i, *seed)
            terms = ", ".join(f"{k}={float(v[where])!r}" for k, v in diagnostics.items())
            kept = "none" if self.ckpt.saved_step is None else f"step {self.ckpt.saved_step}"
            of_seed = f" of seed {seed[0]}" if seed else ""
            raise FloatingPointError(
                f"Non-finite loss at step {self.step + i} (0-based update index){of_seed}: "
                f"{terms}. Training stopped without saving this state; the last good "
                f"checkpoint in {self.ckpt.directory} is {kept}.")

    def metrics_rows(self, val: Dataset | None) -> list[dict[str, Any]]:
        """Per seed: the mean of the pending per-update diagnostics, plus validation losses at
        the current state."""
        head = {"step": self.step, "wall_time": self.wall_time()}
        means = {k: np.mean(np.concatenate([p[k] for p in self.pending]), axis=0)
                 for k in self.pending[0]}
        self.pending = []
        if val is not None:
            out = self.updater.validate(self.state, val, self.val_key)
            means.update({f"val_{k}": v for k, v in out.items()})
        seeds = self.updater.seeds
        if seeds is None:
            return [{**head, **{k: float(v) for k, v in means.items()}}]
        return [{**head, **{k: float(v[i]) for k, v in means.items()}} for i in range(seeds)]

    def evaluate(self) -> list[dict[str, Any]]:
        """Evaluates the policy of every seed on this process; one eval.csv row each."""
        seeds = self.updater.seeds
        rows, results = [], []
        for i in range(seeds or 1):
            agent = self.state["agent"] if seeds is None else select_seed(self.state["agent"], i)
            key = self.eval_key if seeds is None else self.eval_key[i]
            if self.updater.mesh is not None:  # a process-local copy: evaluation is not collective
                agent = distributed.host_copy(agent)
            res = self.evaluator(agent.policy, key, self.step)
            results.append(res)
            rows.append({
                "step": self.step, "success": res.success, "success_std": res.success_std,
                "return": res.return_mean, "length": res.length_mean,
                "episodes": len(res.episodes), "eval_seed": res.seed,
                "wall_time": self.wall_time(),
            })  # fmt: skip
        self.last_eval = results[0] if seeds is None else results
        return rows

    def save(self) -> None:
        meta = dict(self.metadata, step=self.step, wall_time=self.wall_time(),
                    agent=type(self.state["agent"]).__name__)
        self.ckpt.save(self.state, self.step, meta)

    def checkpoint(self, due: bool, interrupted: threading.Event) -> None:
        """Saves if `due`, then stops with `KeyboardInterrupt` if Ctrl-C or SIGTERM came during
        the step (the caller's handler saves whatever was not saved yet)."""
        if due:
            self.save()
        if interrupted.is_set():
            raise KeyboardInterrupt

    def run(self, data: Dataset, val: Dataset | None, log: RunLog,
            interrupted: threading.Event) -> None:
        """Chunks, log rows, evaluations and checkpoints until the last step; Ctrl-C or
        SIGTERM saves first. Every process runs it (the programs are collective)."""
        steps, log_every = self.config.steps, self.config.log_every
        try:
            while self.step < steps:
                n = self.run_chunk(data)
                if self.step == steps or self.step % log_every == 0:
                    log.metrics(self.metrics_rows(val))
                log.advance(n)
                if self.main and self.evaluator and self.evaluator.due(self.step, steps):
                    log.write("eval", self.evaluate())
                self.checkpoint(self.ckpt.due(self.step, steps), interrupted)
        except KeyboardInterrupt:
            self.save()
            raise


def fit(
    model: AbstractAgent | Recipe,
    data: Dataset,
    config: TrainConfig | None = None,
    *,
    run_dir: str | Path,
    key: PRNGKeyArray | Key[Array, " seeds"],
    steps: int | None = None,
    val: Dataset | None = None,
    evaluator: Evaluator | None = None,
    optimiser: GradientTransformation | None = None,
    seeds: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    loggers: Sequence[Logger] = (),
    progress: bool | None = None,
) -> FitResult:
    """Trains on `data`, resuming from the latest checkpoint in `run_dir` if there is one.

    **Arguments:**

    - `model`: a `Recipe` (its agent is built for `data`'s sizes from `fold_in(key, 0)` and
      trained with `fold_in(key, 1)`), or an agent you built (pass the same freshly built agent
      to resume; the stored state and key win).
    - `data`, `val`: `Dataset`s (`val` only adds `val_*` losses to `metrics.csv`).
    - `config`: a `TrainConfig`; default the recipe's own (`recipe.train`), or `TrainConfig()`
      for an agent. `steps` overrides its number of updates.
    - `run_dir`: holds `metrics.csv`, `eval.csv` and `checkpoints/`. `key`: the run's PRNG key.
    - `evaluator`: an `Evaluator(env_name, every=..., episodes=...)`, which evaluates the
      policy periodically and at the end into `eval.csv` (training waits meanwhile).
    - `optimiser`: any optax `GradientTransformation` instead of `config.optimiser` (resuming
      such a run, or restoring it with `restore_agent`, needs the same one).
    - `seeds`: train that many seeds in one program. An agent must then be stacked over seeds
      (`stack_seeds`), a recipe is built once per seed key; `key` is one key (split) or
      `seeds` keys. CSVs go to `run_dir/seed_<i>/`; the agent comes back stacked.
    - `mesh`: a 1-D `jax.sharding.Mesh` for data-parallel training (batch size divisible by its
      size). With several processes, call `fit` identically on each; only process 0 writes.
    - `loggers`: callables `logger(name, row)` receiving every CSV row (`fidec_zoo.loggers`
      has TensorBoard and W&B ones). A logger that raises is dropped with a warning.
    - `progress`: `None` shows a tqdm bar on a terminal (else one line per log row);
      `True`/`False` force it on/off.

    Checkpoints are written every `config.checkpoint_every` (default: every evaluation, else
    `10 * chunk`), at the end and on Ctrl-C or SIGTERM (at the end of the running chunk, its
    evaluation included; a second one stops at once). Raises `ValueError` on a dataset/agent
    size mismatch (before compiling) and `FloatingPointError` on a non-finite loss (nothing
    saved; the last good checkpoint stays).
    """
    if isinstance(model, Recipe):
        config = config or model.train
        agent, key = build_agent(model, data, key, seeds)
    elif isinstance(model, AbstractAgent):
        config, agent = config or TrainConfig(), model
    else:
        raise TypeError(f"fit trains an agent or a Recipe, got {type(model).__name__}.")
    if steps is not None:
        config = dataclasses.replace(config, steps=steps)
    if seeds is not None:
        check_seeds(agent, seeds)  # before indexing seed 0 of it
    one = agent if seeds is None else select_seed(agent, 0)
    _check_dims(one, data, "data")
    if val is not None:
        _check_dims(one, val, "val")
    loggers = LogForwarder(loggers).loggers  # checked before anything is created
    every = config.checkpoint_every or (evaluator.config.every if evaluator else None) \
        or 10 * config.chunk
    run_dir = Path(run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    updater = Updater(optimiser or config.optimiser.make(config.steps), config.batch_size,
                      seeds=seeds, mesh=mesh)
    ckpt = Checkpointer(run_dir / "checkpoints", every=every, keep=config.keep_checkpoints)
    metadata = _optimiser_record(config, optimiser is not None)
    if seeds is not None:
        metadata["seeds"] = seeds
    loop = _Loop(updater, ckpt, evaluator, config, run_dir, metadata)
    loop.start(agent, key)
    start_step = loop.step
    if loop.step < config.steps:
        kinds = ("metrics", "eval") if evaluator else ("metrics",)
        log = RunLog(run_dir, seeds=seeds, start=loop.step, total=config.steps, kinds=kinds,
                     loggers=loggers, progress=progress, write=loop.main)
        data, val = updater.place_data(data), None if val is None else updater.place_data(val)
        try:
            with deferred_interrupts() as interrupted:
                loop.run(data, val, log, interrupted)
        finally:
            log.close()
    return FitResult(loop.state["agent"], loop.step, loop.wall_time(), loop.last_eval, run_dir,
                     seeds, start_step)


def _stored_optimiser(meta: dict[str, Any], where: Path) -> GradientTransformation:
    """The optimiser a checkpoint was trained with, from its metadata (older checkpoints
    recorded `lr` and `grad_clip` only)."""
    if meta.get("custom_optimiser"):
        raise ValueError(f"{where} was trained with a custom optax optimiser; pass the same one "
                         "as optimiser=.")
    if "train" in meta:
        config = from_dict(meta["train"])
        return config.optimiser.make(config.steps)
    return OptimConfig(lr=meta.get("lr", 3e-4), grad_clip=meta.get("grad_clip")).make(0)


def restore_agent(
    run_dir: str | Path,
    agent: AbstractAgent,
    *,
    seeds: int | None = None,
    step: int | None = None,
    optimiser: GradientTransformation | None = None,
) -> tuple[AbstractAgent, int]:
    """The agent of checkpoint `step` (default: the latest) in `run_dir` and its step.

    `agent` is a freshly built agent of the same config (only its structure is used; build it
    inside `eqx.filter_eval_shape` to allocate nothing). The optimiser state's structure comes
    from the training config the checkpoint recorded (pass `optimiser=` for a run trained with
    a custom one). For a `fit(..., seeds=N)` run pass `seeds=N` and a stacked agent. Raises
    `FileNotFoundError`, listing the steps there are, when there is no such checkpoint.
    """
    directory = Path(run_dir).expanduser() / "checkpoints"
    step, meta = checkpoint.checkpoint_metadata(directory, step=step)
    optimiser = optimiser or _stored_optimiser(meta, directory / str(step))
    keys = jr.key(0) if seeds is None else jr.split(jr.key(0), seeds)
    skeleton = Updater(optimiser, 1, seeds=seeds).skeleton(agent, keys)
    state, _ = Checkpointer(directory).restore(skeleton, step=step)
    return state["agent"], step
