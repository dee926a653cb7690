"""The main job: train and evaluate a recipe offline on an OGBench task (`recipes/offline.py`).

An `OfflineJob` is the whole run as one typed config: the agent config, the training,
evaluation and dataset configs, and the run settings. Its command line is generated from those
types with tyro, so `--help` shows the true defaults of the chosen recipe and environment
(`--agent`, `--env`, `--preset` and `--metric` choose them first), and a run dir's
`config.json` holds the job, which `--config FILE` runs again as it is.

Flags of earlier versions keep working: `LEGACY_FLAGS` rewrites each to its replacement (with a
note on stderr), e.g. `--eval-every` -> `--eval.every`, `--fisher-t` -> `--t`.
"""

import argparse
import contextlib
import dataclasses
import datetime
import functools
import inspect
import json
import math
import shutil
import sys
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import jax
import numpy as np
import tyro
from tyro.constructors import (
    MISSING_NONPROP,
    ConstructorRegistry,
    StructConstructorSpec,
    StructFieldSpec,
    StructTypeInfo,
)

try:  # tyro's own reader of field comments, for the flags of constructor-built modules
    from tyro._docstrings import get_field_docstring
except ImportError:  # a tyro without it: those flags show their defaults only
    def get_field_docstring(cls: type, field_name: str, markers: tuple) -> str | None:
        return None

from . import distributed, recipes, report
from ._cpus import available_cpus
from ._durable import FileLock, LockedError, atomic_write
from ._version import __version__
from .agents import AbstractAgent
from .checkpoint import checkpoint_steps
from .configs import (
    AbstractAgentConfig,
    ConfigError,
    DataConfig,
    EvalConfig,
    Recipe,
    TrainConfig,
    constructor_arguments,
    from_dict,
    to_dict,
)
from .data import dataset_provenance, load_ogbench
from .envs import default_eval_workers, evaluate, resolve_env_name
from .loggers import make_loggers
from .metrics import FisherMetric, L2Metric
from .policies import FlowPolicy
from .provenance import package_versions
from .train import Evaluator, FitResult, fit, select_seed

__all__ = ["DEFAULT_ENV", "LEGACY_FLAGS", "OfflineJob", "default_job", "finished", "main", "parse",
           "run"]

DEFAULT_ENV = "cube-single-play-singletask-task2-v0"
METRIC_RECIPES = ("fql", "deflow", "fidec")
#: Packages whose versions a run directory records (config.json "versions" and "sessions").
_PACKAGES = ("jax", "equinox", "optax", "diffrax", "orbax-checkpoint", "ogbench", "mujoco", "tyro")
#: Format of config.json: 2 holds the typed job (1 held flat hyperparameters).
CONFIG_FORMAT = 2


@dataclasses.dataclass(frozen=True)
class OfflineJob:
    """One offline run: what to train (`agent`, `train`), how to evaluate it (`eval`), on what
    data (`data`), and the run's own settings.

    `recipe`, `env`, `preset`, `hparams` and `metric` record what chose the defaults
    (`--agent`, `--env`, `--preset`, `--hparams`, `--metric`); `seeds` > 1 trains seeds
    `seed..seed+seeds-1` in one program; `devices` splits each minibatch over that many
    devices; `log` adds TensorBoard and/or W&B (offline mode) logging beside the CSVs.
    """

    agent: Annotated[AbstractAgentConfig, tyro.conf.OmitArgPrefixes,
                     tyro.conf.FlagConversionOff]
    train: Annotated[TrainConfig, tyro.conf.OmitArgPrefixes]
    eval: EvalConfig = EvalConfig()
    data: Annotated[DataConfig, tyro.conf.FlagConversionOff] = DataConfig()
    recipe: Annotated[str, tyro.conf.Suppress] = "fidec"
    env: Annotated[str, tyro.conf.Suppress] = DEFAULT_ENV
    preset: Annotated[str, tyro.conf.Suppress] = "cpu"
    hparams: Annotated[str, tyro.conf.Suppress] = "code"
    metric: Annotated[Literal["l2", "fisher"] | None, tyro.conf.Suppress] = None
    seed: int = 0  # the run's seed: initialisation, minibatches, evaluation episodes
    seeds: int = 1  # train seeds seed..seed+seeds-1 together, in one vmapped program
    devices: int | None = None  # split each minibatch over this many devices (None: one)
    run_dir: str | None = None  # where the run lives (None: runs/RECIPE-ENV-sSEED)
    overwrite: bool = False  # delete an existing run dir and start afresh, not resume it
    log: tuple[Literal["tensorboard", "wandb"], ...] = ()  # extra loggers beside the CSVs

    def __post_init__(self):
        if self.train.steps < 1:
            raise ValueError(
                f"--steps must be >= 1, got {self.train.steps}: a job trains. To evaluate a run's "
                "checkpoint without training, use `python -m fidec_zoo.zoo eval RUN_DIR "
                "[--step N]`.")
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds}.")
        if self.devices is not None and self.devices < 1:
            raise ValueError(f"--devices must be >= 1, got {self.devices}.")

    @property
    def the_recipe(self) -> Recipe:
        """The `Recipe` this job trains (agent and training config)."""
        return Recipe(self.recipe, self.agent, self.train, env_name=self.env, preset=self.preset,
                      hparams=self.hparams)

    def default_run_dir(self) -> Path:
        metric = f"-{self.metric}" if self.metric else ""
        hparams = "" if self.hparams == recipes.default_hparams(self.preset) else \
            f"-{self.hparams}"
        seeds = f"-{self.seeds}seeds" if self.seeds > 1 else ""
        return Path("runs") / f"{self.recipe}{metric}{hparams}-{self.env}-s{self.seed}{seeds}"


def default_job(agent: str = "fidec", env: str = DEFAULT_ENV, preset: str = "cpu",
                metric: str | None = None, hparams: str | None = None) -> OfflineJob:
    """The job `recipes/offline.py --agent A --env E --preset P [--hparams H] [--metric M]` runs
    with no other flag: the recipe's config for that environment, preset and hyperparameter set
    (default: the preset's). Raises `ValueError` for an unknown name (listing the valid
    ones)."""
    resolve_env_name(env)  # lists the supported envs
    overrides: dict[str, Any] = {}
    if metric is not None:
        if agent not in METRIC_RECIPES:
            raise ValueError(f"--metric applies to {list(METRIC_RECIPES)}; {agent!r} has no "
                             "displacement from a behaviour flow to measure.")
        overrides["metric"] = L2Metric() if metric == "l2" else FisherMetric()
    recipe = recipes.config(agent, env_name=env, preset=preset, hparams=hparams, **overrides)
    size = recipes.PRESETS[preset]
    return OfflineJob(
        agent=recipe.agent, train=recipe.train,
        eval=EvalConfig(every=size.eval_every, episodes=size.eval_episodes,
                        workers=default_eval_workers()),
        data=DataConfig(episodes=size.dataset_episodes, workers=available_cpus()),
        recipe=agent, env=env, preset=preset, hparams=recipe.hparams,
        metric=metric)  # type: ignore[arg-type]


# ---- command line ------------------------------------------------------------------------------

#: Flags of earlier versions and their replacements.
LEGACY_FLAGS = {
    "--eval-every": "--eval.every", "--eval-episodes": "--eval.episodes",
    "--eval-workers": "--eval.workers", "--dataset-episodes": "--data.episodes",
    "--data-seed": "--data.seed", "--workers": "--data.workers",
    "--fisher-t": "--t", "--fisher-t-width": "--t-width", "--fisher-samples": "--num-samples",
    "--fisher-damping": "--damping", "--fisher-score": "--score", "--fisher-anchor": "--anchor",
    "--target-divergence": "--target",
}
_WORDS = {"true": "True", "false": "False", "none": "None", "null": "None"}


def _modernise(argv: list[str]) -> list[str]:
    """Rewrites legacy flags (noting each on stderr), lower-case `true`/`false`/`none`, and
    `--keep-checkpoints 0` (keep all) as `None`."""
    out = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in LEGACY_FLAGS:
            print(f"note: {flag} is now {LEGACY_FLAGS[flag]}", file=sys.stderr)
            arg = LEGACY_FLAGS[flag] + eq + value
        elif arg.lower() in _WORDS:
            arg = _WORDS[arg.lower()]
        elif arg == "0" and i and argv[i - 1] == "--keep-checkpoints":
            arg = "None"
        out.append(arg)
    return out


def _constructor_rule(info: StructTypeInfo) -> StructConstructorSpec | None:
    """tyro builds dataclasses from their fields; a module whose constructor takes other
    arguments (`Lagrangian(target, init_alpha)`, which holds a trainable array) is built from
    its constructor's arguments instead, as `fidec_zoo.configs` stores it, each with the help
    of the field of its name."""
    cls = info.type
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return None
    names = constructor_arguments(cls)
    if names == [f.name for f in dataclasses.fields(cls) if f.init]:
        return None
    hints, params = typing.get_type_hints(cls), inspect.signature(cls).parameters
    fields = []
    for name in names:
        if hasattr(info.default, name):
            default = getattr(info.default, name)
        elif params[name].default is not inspect.Parameter.empty:
            default = params[name].default
        else:
            default = MISSING_NONPROP
        fields.append(StructFieldSpec(name=name, type=hints[name], default=default,
                                      helptext=get_field_docstring(cls, name, ())))
    return StructConstructorSpec(instantiate=cls, fields=tuple(fields))


_REGISTRY = ConstructorRegistry()
_REGISTRY.struct_rule(_constructor_rule)

_CHOOSERS = """\
The defaults shown are those of the chosen recipe, environment and preset:
  --agent {agents}  (default fidec)
  --env ENV  an OGBench single-task env (default {env})
  --preset {presets}  (default cpu)
  --hparams {{code,paper}}  the reference code's values or the FiDec paper's (default: paper
      for the paper preset, code otherwise)
  --metric {{l2,fisher}}  swap the metric object ({metric_recipes} only)
  --config FILE  run a saved job: a run dir's config.json, or a job written by to_json

Run `--agent A --env E --help` to see A's flags and defaults for E."""


def _choosers() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--agent", default=None)
    parser.add_argument("--env", default=None)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--hparams", default=None, choices=recipes.HPARAMS)
    parser.add_argument("--metric", default=None, choices=("l2", "fisher"))
    parser.add_argument("--config", type=Path, default=None)
    return parser


def load_job(path: Path) -> OfflineJob:
    """The job stored in `path`: a run dir's `config.json` (its `"job"`), or a job as
    `fidec_zoo.configs.to_json` writes it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--config {path}: cannot read a JSON job ({e}).") from None
    if "format" in data and "job" not in data:
        raise ValueError(f"--config {path}: a config.json of format {data.get('format')} "
                         "without a job")
    if "job" not in data and "identity" in data:
        raise ValueError(f"--config {path}: written by fidec_zoo before typed configs (no job "
                         "in it); rerun it with its recorded argv instead")
    try:
        job = from_dict(data.get("job", data))
    except ConfigError as e:
        raise ValueError(f"--config {path}: {e}") from None
    if not isinstance(job, OfflineJob):
        raise ValueError(f"--config {path} holds a {type(job).__name__}, not an OfflineJob.")
    return job


def parse(argv: list[str]) -> OfflineJob:
    """The job a command line describes. Raises `ValueError` for an unknown recipe, env,
    preset or metric (tyro exits with its own message for a bad flag)."""
    argv = _modernise(argv)
    chosen, rest = _choosers().parse_known_args(argv)
    if chosen.config is not None:
        given = [f"--{k}" for k in ("agent", "env", "preset", "hparams", "metric")
                 if getattr(chosen, k)]
        if given:
            raise ValueError(f"--config sets the recipe, env, preset, hparams and metric; drop "
                             f"{given}.")
        default = load_job(chosen.config)
    else:
        default = default_job(chosen.agent or "fidec", chosen.env or DEFAULT_ENV,
                              chosen.preset or "cpu", chosen.metric, chosen.hparams)
    description = _CHOOSERS.format(
        agents="{" + ",".join(recipes.available()) + "}", env=DEFAULT_ENV,
        presets="{" + ",".join(recipes.PRESETS) + "}", metric_recipes="/".join(METRIC_RECIPES))
    return tyro.cli(OfflineJob, default=default, args=rest, registry=_REGISTRY,
                    prog="recipes/offline.py",
                    description=f"Train and evaluate an offline-RL agent on OGBench "
                                f"(fidec_zoo {__version__}).\n\n{description}")


# ---- run directory -----------------------------------------------------------------------------

#: Job fields that may change when a run is resumed (they do not change what is trained).
_RESUMABLE = {"eval", "run_dir", "overwrite", "log", "devices"}
_RESUMABLE_TRAIN = {"steps", "keep_checkpoints"}
_RESUMABLE_DATA = {"workers", "verify"}
#: The run dir's lock file, held by the job running in it.
LOCK = ".lock"


def identity(job: OfflineJob) -> dict[str, Any]:
    """What must match for a run dir to be resumed: the job less what may change."""
    return identity_of(to_dict(job))


def identity_of(job: dict[str, Any]) -> dict[str, Any]:
    """`identity` of a job stored as a dict (`to_dict`, e.g. the "job" of a config.json)."""
    out = {k: v for k, v in job.items() if k not in _RESUMABLE}
    out["train"] = {k: v for k, v in out["train"].items() if k not in _RESUMABLE_TRAIN}
    out["data"] = {k: v for k, v in out["data"].items() if k not in _RESUMABLE_DATA}
    return out


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Holds the lock of `run_dir` (created if needed) while the job runs in it, so that two
    jobs never train in one run dir; a run dir this job created and leaves empty (refused for
    its dataset, say) is removed. A run dir held by another job or not writable ends the job
    with an error, before any data work."""
    created = not run_dir.exists()
    lock = FileLock(run_dir / LOCK)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except LockedError as e:
        _remove_if_empty(run_dir, created)
        raise SystemExit(
            f"error: {run_dir} is in use by another run: "
            f"{e.holder or 'a process that did not record itself'}. A run dir holds one run at "
            "a time: wait for it to finish or stop it (a killed run's lock is taken over), or "
            "use another --run-dir.") from None
    except OSError as e:
        _remove_if_empty(run_dir, created)
        raise SystemExit(f"error: cannot write the run dir {run_dir} ({e.strerror}); choose a "
                         "writable --run-dir.") from None
    try:
        yield
    finally:
        lock.release()
        _remove_if_empty(run_dir, created)


def _remove_if_empty(run_dir: Path, created: bool) -> None:
    """Removes `run_dir` if this job `created` it and wrote nothing into it."""
    if created:
        with contextlib.suppress(OSError):  # not empty: the job wrote to it
            run_dir.rmdir()


def prepare_run_dir(run_dir: Path, job: OfflineJob) -> list[dict]:
    """Refuses a run dir holding a different job (unless `job.overwrite`, which clears it, its
    lock aside), and returns the `sessions` its config.json recorded (none for a new or cleared
    run dir). The job holds the run dir's lock meanwhile."""
    path = run_dir / "config.json"
    if not path.exists():
        return []
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        stored, why = None, (
            f"{path} is not valid JSON ({e}); fidec_zoo writes it atomically, so something "
            "else damaged it. To resume the run's checkpoints with this same command, move it "
            "away (the record of earlier sessions goes with it)")
    else:
        why = None
        if stored.get("format") != CONFIG_FORMAT:
            why = ("it was written by fidec_zoo before typed configs (config.json format "
                   f"{stored.get('format', 1)}); fidec_zoo.zoo.load_run still reads its "
                   "checkpoints, but training cannot resume it")
        elif stored.get("identity") != identity(job):
            why = "it holds a run with a different config"
    if why is None:
        return stored.get("sessions", [])
    if not job.overwrite:
        detail = "" if stored is None or stored.get("format") != CONFIG_FORMAT else (
            f"\n  stored:    {json.dumps(stored.get('identity'))}"
            f"\n  requested: {json.dumps(identity(job))}")
        raise SystemExit(f"error: {run_dir}: {why}. Use another --run-dir, or --overwrite to "
                         f"discard it.{detail}")
    for entry in run_dir.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return []


def finished(run_dir: Path, job: OfflineJob) -> bool:
    """Whether `run_dir` holds `job` run to its end: its config.json is of this job (the fields
    that may change on a resume aside) and its summary.json is of the job's last step. A sweep
    skips such a run; rerunning `job` there would only repeat its final evaluation."""
    try:
        stored = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return stored.get("identity") == identity(job) and \
        _read_summary(run_dir).get("steps") == job.train.steps


def _resume_step(run_dir: Path, job: OfflineJob) -> int:
    """The step the run dir's latest checkpoint is at (0 for none); a run past `--steps` is
    refused, since training cannot go back and the run's summary would not be of `--steps`."""
    steps = checkpoint_steps(run_dir / "checkpoints")
    done = steps[-1] if steps else 0
    if done > job.train.steps:
        raise SystemExit(
            f"error: {run_dir} is at step {done}, past --steps {job.train.steps}. Rerun it with "
            f"--steps {done} or more, or measure one of its checkpoints (steps {steps}) with "
            f"`python -m fidec_zoo.zoo eval {run_dir} --step N`.")
    return done


def _write_json(path: Path, data: Any) -> None:
    """Writes `path` atomically: a crash or full disk leaves the old file, never a torn one."""
    atomic_write(path, json.dumps(data, indent=2, default=list))


def _session(from_step: int, argv: list[str], versions: dict[str, str]) -> dict[str, Any]:
    """This invocation's record in config.json's `sessions`: its start, first step, argv and
    versions (a run resumed over several sessions keeps one per session)."""
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {"started": started, "from_step": from_step, "argv": argv, "versions": versions}


# ---- the job -----------------------------------------------------------------------------------


def behaviour_flow(agent: AbstractAgent) -> FlowPolicy | None:
    """The BC flow inside an agent (the policy FQL/DeFlow/FiDec refine), if it has one."""
    flow = getattr(agent, "flow", None)
    return flow if isinstance(flow, FlowPolicy) and agent.policy is not flow else None


def _run_train(job: OfflineJob) -> TrainConfig:
    """The training config as run: chunks and log rows cut at a common divisor of the steps
    and the evaluation period, so every evaluation and the last step fall on a chunk end."""
    train, every = job.train, job.eval.every or job.train.steps
    size = math.gcd(train.chunk, train.steps, every) if train.steps else 1
    log = math.gcd(train.log_every, train.steps, every) if train.steps else 1
    checkpoint_every = train.checkpoint_every or job.eval.every
    return dataclasses.replace(train, chunk=size, log_every=log,
                               checkpoint_every=checkpoint_every)


def _recorded_eval_seed(log_dir: Path, previous: dict[str, Any], seed: int,
                        step: int) -> int:
    """The evaluation seed of a finished run's final evaluation at `step`, so that evaluating it
    again reproduces the run's summary: from the eval.csv row of `step` of training seed
    `seed` (in `log_dir`), else from the previous summary.json; 0, with a note, for a run dir
    that recorded neither."""
    for row in report.read_csv(log_dir / "eval.csv"):
        if row.get("step") == step and "eval_seed" in row:
            return int(row["eval_seed"])
    final = next((s for s in previous.get("seeds", []) if s.get("seed") == seed), previous)
    if previous.get("steps") == step and final.get("eval_seed") is not None:
        return int(final["eval_seed"])
    print(f"note: {log_dir} recorded no evaluation seed at step {step}; evaluating with seed 0.",
          file=sys.stderr)
    return 0


def _final_evaluations(agent: AbstractAgent, last_eval, job: OfflineJob,
                       eval_seed: Callable[[], int]) -> dict[str, Any]:
    """Final success of the refined policy and of the behaviour flow inside it (same episodes),
    for one seed's agent. `last_eval` is None when a finished run is resumed: its final
    evaluation is then repeated with the seed `eval_seed()` it recorded."""
    episodes, workers = job.eval.episodes, job.eval.workers
    final = last_eval or evaluate(agent.policy, job.env, episodes=episodes, seed=eval_seed(),
                                  workers=workers)
    flow = behaviour_flow(agent)
    flow_eval = None if flow is None else evaluate(flow, job.env, episodes=episodes,
                                                   seed=final.seed, workers=workers)
    return {"success": final.success, "success_ci95": final.success_ci95,
            "return": final.return_mean, "eval_seed": final.seed,
            "behaviour_flow_success": None if flow_eval is None else flow_eval.success,
            "behaviour_flow_return": None if flow_eval is None else flow_eval.return_mean}


def _read_summary(run_dir: Path) -> dict[str, Any]:
    """The run dir's summary.json, `{}` if there is none (or it is unreadable)."""
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _summary(job: OfflineJob, result: FitResult, data_time: float, t0: float,
             mesh) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """summary.json and the rows of the printed table."""
    many = job.seeds > 1
    previous = _read_summary(result.run_dir)
    per_seed = []
    for i in range(job.seeds):
        agent = select_seed(result.agent, i) if many else result.agent
        last = result.last_eval[i] if many and result.last_eval else result.last_eval
        log_dir = result.run_dir / f"seed_{i}" if many else result.run_dir
        seed = functools.partial(_recorded_eval_seed, log_dir, previous, job.seed + i,
                                 result.step)
        per_seed.append({"seed": job.seed + i, **_final_evaluations(agent, last, job, seed)})
    rows = []
    for s in per_seed:
        tag = f", seed {s['seed']}" if many else ""
        rows.append({"policy": f"{job.recipe} (final){tag}", "success": s["success"],
                     "return": s["return"], "steps": result.step})
        if s["behaviour_flow_success"] is not None:
            rows.append({"policy": f"behaviour flow (inside it){tag}",
                         "success": s["behaviour_flow_success"],
                         "return": s["behaviour_flow_return"], "steps": result.step})
    summary = {
        "agent": job.recipe, "env": job.env, "metric": job.metric, "hparams": job.hparams,
        "steps": result.step,
        **{k: v for k, v in per_seed[0].items() if k != "seed"},
        "eval_episodes": job.eval.episodes,
        "train_wall_time_s": result.wall_time,
        "steps_per_s": result.step / result.wall_time if result.wall_time else None,
        "data_time_s": data_time, "total_time_s": time.perf_counter() - t0,
        "device": jax.devices()[0].device_kind,
    }
    if many:  # the mean over seeds, the per-seed results, and the throughput of all seeds
        mean = lambda key: float(np.mean([s[key] for s in per_seed]))  # noqa: E731
        has_flow = None not in [s["behaviour_flow_success"] for s in per_seed]
        summary.update(
            success=mean("success"),
            success_std_over_seeds=float(np.std([s["success"] for s in per_seed])),
            success_ci95=None, eval_seed=None, **{"return": mean("return")},
            behaviour_flow_success=mean("behaviour_flow_success") if has_flow else None,
            behaviour_flow_return=mean("behaviour_flow_return") if has_flow else None,
            seeds=per_seed, num_seeds=job.seeds,
            steps_per_s_all_seeds=job.seeds * result.step / max(result.wall_time, 1e-9))
        rows.append({"policy": f"{job.recipe} (final), mean of {job.seeds} seeds",
                     "success": summary["success"], "return": summary["return"],
                     "steps": result.step})
    if mesh is not None:
        summary["devices"] = mesh.size
    for row in rows:  # summed over every resume of the run, periodic evaluations included
        row["train time (s)"] = round(result.wall_time)
    return summary, rows


def _mesh(job: OfflineJob):
    if job.devices is None:
        return None
    try:
        mesh = distributed.make_data_mesh(job.devices)
    except ValueError as e:
        raise SystemExit(f"error: --devices: {e}") from None
    print(f"data-parallel over {mesh.size} x {mesh.devices.flat[0].device_kind} devices",
          flush=True)
    return mesh


def run(job: OfflineJob, argv: list[str] | None = None) -> dict[str, Any]:
    """Runs `job` (resuming its run dir) and returns its summary (`{}` on a non-main process).
    `argv` is recorded in config.json. The job's main process holds the run dir's lock
    throughout (the other processes of a multi-process job run in it with it)."""
    t0 = time.perf_counter()
    run_dir = Path(job.run_dir or job.default_run_dir()).expanduser().resolve()
    lock = _locked(run_dir) if distributed.is_main_process() else contextlib.nullcontext()
    with lock:
        return _run_in(run_dir, job, sys.argv[1:] if argv is None else argv, t0)


def _run_in(run_dir: Path, job: OfflineJob, argv: list[str], t0: float) -> dict[str, Any]:
    """`run`, once the run dir is locked."""
    sessions = prepare_run_dir(run_dir, job)
    done = _resume_step(run_dir, job)
    seeds = f" | seeds {job.seed}..{job.seed + job.seeds - 1}" if job.seeds > 1 else ""
    resuming = f" (resuming at step {done})" if done else ""
    print(f"fidec_zoo {__version__} | {job.recipe} on {job.env} | preset {job.preset} | "
          f"hparams {job.hparams} | "
          f"{job.train.steps} steps{resuming}{seeds} | run dir {run_dir}", flush=True)
    mesh = _mesh(job)
    try:
        _, data, val = load_ogbench(job.env, episodes=job.data.episodes, seed=job.data.seed,
                                    workers=job.data.workers, verify=job.data.verify)
    except (ValueError, OSError) as e:  # no generator, a broken dataset file, an unwritable dir
        raise SystemExit(f"error: {e}") from None
    data_time = time.perf_counter() - t0
    versions = package_versions(_PACKAGES)
    config = {"format": CONFIG_FORMAT, "job": to_dict(job), "identity": identity(job),
              "seed": job.seed, "seeds": job.seeds, "env": job.env,
              "obs_dim": data.obs_dim, "action_dim": data.action_dim,
              "dataset": dataset_provenance(job.env, episodes=job.data.episodes,
                                            seed=job.data.seed),
              "devices": 1 if mesh is None else mesh.size, "versions": versions, "argv": argv,
              "sessions": [*sessions, _session(done, argv, versions)]}
    run_dir.mkdir(parents=True, exist_ok=True)  # the main process made it; the others may not
    _write_json(run_dir / "config.json", config)
    loggers = make_loggers(job.log, run_dir, config["job"]) if job.log else []
    # Seed s builds its agent from fold_in(key(s), 0) and trains with fold_in(key(s), 1), so
    # seed s of a --seeds run draws what --seed s alone draws (equal up to float rounding).
    keys = jax.random.wrap_key_data(np.stack([
        np.asarray(jax.random.key_data(jax.random.key(s)))
        for s in range(job.seed, job.seed + job.seeds)]))
    try:
        result = fit(job.the_recipe, data, _run_train(job), run_dir=run_dir,
                     key=keys[0] if job.seeds == 1 else keys, val=val,
                     evaluator=Evaluator.from_config(job.env, job.eval),
                     seeds=job.seeds if job.seeds > 1 else None, mesh=mesh, loggers=loggers)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: `fit` saved a whole chunk (unless sent twice)
        print(f"\ninterrupted: the latest checkpoint is in {run_dir / 'checkpoints'}; rerun the "
              "same command to resume from it.", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    finally:
        for logger in loggers:
            logger.close()
    if not distributed.is_main_process():
        return {}
    if result.start_step != done:  # the latest checkpoint was corrupt: an earlier one resumed
        config["sessions"][-1]["from_step"] = result.start_step
        _write_json(run_dir / "config.json", config)
    summary, rows = _summary(job, result, data_time, t0, mesh)
    _write_json(run_dir / "summary.json", summary)
    title = f"{job.recipe} on {job.env}"
    if job.seeds > 1:
        for i in range(job.seeds):
            report.plot_learning_curve(run_dir / f"seed_{i}",
                                       title=f"{title}, seed {job.seed + i}")
    else:
        report.plot_learning_curve(run_dir, title=title)
    print("\n" + report.format_table(rows, ["policy", "success", "return", "steps",
                                            "train time (s)"]))
    print(f"\nrun dir: {run_dir}")
    return summary


def _simulated_devices(argv: list[str]) -> None:
    """On a CPU-only machine, `--devices N` simulates N host devices: possible only before JAX
    starts its backend, so it is set before anything builds an array."""
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--devices=") else \
            argv[i + 1] if arg == "--devices" and i + 1 < len(argv) else None
        if value is not None and value.isdigit() and int(value) >= 1:
            try:
                jax.config.update("jax_num_cpu_devices", int(value))
            except RuntimeError:  # the backend already runs (called from Python): use it
                pass


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """`recipes/offline.py`: parse, then run."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _simulated_devices(argv)
    try:
        job = parse(argv)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {e}") from None
    return run(job, argv)


if __name__ == "__main__":  # `python -m fidec_zoo.offline` = recipes/offline.py
    # through the package's own module, so that config.json records fidec_zoo.offline's classes
    # (run as __main__, this file's classes would be recorded as '__main__:...')
    from fidec_zoo.offline import main as _main

    _main()
