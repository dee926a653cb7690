"""The online job: offline training, then fine-tuning in the environment (`recipes/online.py`).

An `OnlineJob` is an `OfflineJob` (what to train offline, or what the run or zoo entry it starts
from was trained as), an `OnlineConfig` and where it starts from:

- from scratch (`source=None`): the offline job runs first (or resumes, or is found finished)
  in its run dir, then the online phase continues its agent, optimiser state and update count;
- from a run dir (`--from runs/...`): that run's job and latest checkpoint, the online phase in
  `<run dir>/online/` (or `--run-dir`'s);
- from a zoo entry (`--from fidec/cube-single-...`): its whole agent (entries shipping only a
  policy are refused, saying how to get a critic), a fresh optimiser state, the online phase in
  `--run-dir` (default `runs/online-<entry>`).

The online phase lives in `<run dir>/online/` (see `fidec_zoo.train.fit_online`), with its own
`config.json`, `summary.json` and `learning_curve.png`; rerunning the same command resumes it.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.random as jr
import tyro

from . import offline, recipes, report, zoo
from ._version import __version__
from .agents import AbstractAgent
from .agents.flow_ql import OneStepFlowQL
from .checkpoint import checkpoint_steps
from .configs import DataConfig, OnlineConfig, to_dict
from .constraints import FixedPenalty
from .data import load_ogbench
from .offline import OfflineJob
from .provenance import package_versions
from .train import Checkpointer, Evaluator, Updater, fit_online
from .train._online import PHASE
from .zoo._entry import slug
from .zoo._load import recipe_of

__all__ = ["OnlineJob", "main", "parse", "run"]


@dataclasses.dataclass(frozen=True)
class OnlineJob:
    """Offline training (`offline`, or the job `source` was trained with), then `online`
    fine-tuning; `source`: `None` (from scratch), a run dir or a zoo entry name."""

    offline: OfflineJob
    online: OnlineConfig
    source: str | None = None


@dataclasses.dataclass(frozen=True)
class _Flags:
    """Online fine-tuning (`--online.*`; env steps count transitions)."""

    online: OnlineConfig = OnlineConfig()


_USAGE = """\
usage: recipes/online.py [--from RUN_DIR | --from ZOO_ENTRY] [--online.FLAG VALUE ...]
                         [offline flags (from scratch) | --run-dir DIR (with --from)]

  --from RUN_DIR    fine-tune a recipes/offline.py run's latest checkpoint (agent, optimiser)
  --from ZOO_ENTRY  fine-tune a zoo entry that ships its whole agent (critic included)
  without --from    train offline first: every flag of recipes/offline.py applies
                    (recipes/offline.py --help lists them)
"""


def _split(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(`--online.*` flags with their values, `--from`'s value, the other flags)."""
    online, rest, source, i = [], [], None, 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, value = arg.partition("=")
        if flag.startswith("--online."):
            online += [arg] if eq or i + 1 == len(argv) else [arg, argv[i + 1]]
            i += 1 if eq else 2
        elif flag == "--from":
            if not eq and i + 1 == len(argv):
                raise ValueError("--from needs a run dir or a zoo entry name.")
            source = value if eq else argv[i + 1]
            i += 1 if eq else 2
        else:
            rest.append(arg)
            i += 1
    return online, source, rest


def _is_run_dir(source: str) -> bool:
    return (Path(source).expanduser() / "config.json").is_file()


def _entry_job(name: str, run_dir: str | None) -> OfflineJob:
    """The offline job a zoo entry was trained as (its recipe, env and dataset)."""
    entry = zoo.model_info(name)
    if not entry.has_agent:
        raise ValueError(
            f"Zoo entry {name!r} ships its policy only, not its critic, and fine-tuning trains "
            "both. Train the agent yourself (`python recipes/offline.py --agent "
            f"{entry.recipe} --env {entry.env_name}`, the entry's recipe) and fine-tune that "
            "run with `--from runs/<run>`, or use an entry registered with its agent "
            f"(`register_run` ships it by default; entries with one: "
            f"{[n for n in zoo.list_models() if zoo.model_info(n).has_agent]}).")
    recipe = recipe_of(entry)
    job = offline.default_job(entry.recipe if entry.recipe in recipes.available() else "fidec",
                              entry.env_name)
    data = entry.dataset
    return dataclasses.replace(
        job, agent=recipe.agent, train=recipe.train, recipe=entry.recipe,
        data=DataConfig(episodes=int(data.get("episodes", job.data.episodes)),
                        seed=int(data.get("seed", job.data.seed)), workers=job.data.workers),
        run_dir=run_dir or f"runs/online-{slug(name)}")


def parse(argv: list[str]) -> OnlineJob:
    """The job a command line describes (see `_USAGE`). Raises `ValueError` for flags that do
    not apply (offline flags with `--from`) or an unknown zoo entry."""
    if "-h" in argv or "--help" in argv:
        print(_USAGE)
        tyro.cli(_Flags, args=["--help"], prog="recipes/online.py")
    online_args, source, rest = _split(argv)
    online = tyro.cli(_Flags, args=online_args, prog="recipes/online.py").online
    if source is None:
        return OnlineJob(offline.parse(rest), online)
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--run-dir", default=None)
    known, unknown = extra.parse_known_args(rest)
    if unknown:
        raise ValueError(f"--from {source} fine-tunes what it was trained as; drop {unknown} "
                         "(only --run-dir and --online.* apply).")
    if _is_run_dir(source):
        job = offline.load_job(Path(source).expanduser() / "config.json")
        job = dataclasses.replace(job, run_dir=known.run_dir or str(Path(source).expanduser()))
        return OnlineJob(job, online, str(Path(source).expanduser().resolve()))
    try:
        return OnlineJob(_entry_job(source, known.run_dir), online, source)
    except zoo.UnknownModelError as e:
        raise ValueError(f"--from {source}: neither a run dir (no config.json there) nor a zoo "
                         f"entry. {e}") from None


def _checkpoint_state(run_dir: Path, job: OfflineJob, agent: AbstractAgent) -> dict[str, Any]:
    """The training state {agent, opt_state, key, step} of the run's latest checkpoint."""
    if job.seeds > 1:
        raise SystemExit(f"error: {run_dir} trained {job.seeds} seeds in one program; "
                         "fine-tune a single-seed run.")
    updater = Updater(job.train.optimiser.make(job.train.steps), job.train.batch_size)
    skeleton = updater.skeleton(agent, jr.key(0))
    return Checkpointer(run_dir / "checkpoints").restore(skeleton)[0]


def _offline_done(run_dir: Path, job: OfflineJob) -> bool:
    steps = checkpoint_steps(run_dir / "checkpoints")
    return bool(steps) and steps[-1] >= job.train.steps and (run_dir / "summary.json").exists()


def online_agent(agent: AbstractAgent, env_name: str, config: OnlineConfig) -> AbstractAgent:
    """`agent` with FQL's online distillation weight (`config.fql_alpha`, else the references'
    for the env, else unchanged); other agents as they are."""
    if not (isinstance(agent, OneStepFlowQL) and isinstance(agent.constraint, FixedPenalty)):
        return agent
    alpha = config.fql_alpha or recipes.online_alpha(env_name)
    if alpha is None:
        return agent
    return eqx.tree_at(lambda a: a.constraint, agent, FixedPenalty(alpha))


def _write_config(phase_dir: Path, job: OnlineJob, argv: list[str], start_step: int) -> None:
    """The online phase's `config.json`: the job, the offline step it starts from (kept from
    the first session when it resumes, which restores no offline checkpoint), the package
    versions (with the source's git commit), and one record per session that ran it (its
    `from_step`: the online env steps its latest checkpoint held when it started)."""
    path = phase_dir / "config.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    kept = checkpoint_steps(phase_dir / "checkpoints")
    if kept:  # resumed: the phase started where its first session said
        start_step = stored.get("start_step", start_step)
    sessions = stored.get("sessions", [])
    versions = package_versions(offline._PACKAGES)
    offline._write_json(path, {
        "job": to_dict(job), "argv": argv, "start_step": start_step, "versions": versions,
        "sessions": [*sessions, offline._session(kept[-1] if kept else 0, argv,
                                                 versions)]})


def run(job: OnlineJob, argv: list[str] | None = None) -> dict[str, Any]:
    """Runs `job` (resuming what is there) and returns the online phase's summary."""
    t0 = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    off = job.offline
    run_dir = Path(off.run_dir or off.default_run_dir()).expanduser().resolve()
    from_entry = job.source is not None and not _is_run_dir(job.source)
    source_dir = Path(job.source) if job.source and not from_entry else run_dir
    started = bool(checkpoint_steps(run_dir / PHASE / "checkpoints"))
    if job.source is None and not started and not _offline_done(run_dir, off):
        offline.run(off, argv)
    try:
        _, data, val = load_ogbench(off.env, episodes=off.data.episodes, seed=off.data.seed,
                                    workers=off.data.workers, verify=off.data.verify)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    agent = off.the_recipe.build(data.obs_dim, data.action_dim, key=jr.key(0))
    opt_state, step = None, 0
    if from_entry:
        agent = zoo.load_agent(job.source)
        step = int(zoo.model_info(job.source).training.get("steps", 0))
    elif not started:
        if not checkpoint_steps(source_dir / "checkpoints"):
            raise SystemExit(f"error: {source_dir} has no checkpoint to fine-tune.")
        state = _checkpoint_state(source_dir, off, agent)
        agent, opt_state, step = state["agent"], state["opt_state"], int(state["step"])
    agent = online_agent(agent, off.env, job.online)
    print(f"fidec_zoo {__version__} | {off.recipe} on {off.env} | online {job.online.steps} "
          f"env steps from {job.source or 'its offline run'} | run dir {run_dir}", flush=True)
    with offline._locked(run_dir):
        (run_dir / PHASE).mkdir(exist_ok=True)
        _write_config(run_dir / PHASE, job, argv, step)
        try:
            result = fit_online(
                agent, data, off.env, job.online, off.train, run_dir=run_dir,
                key=jr.fold_in(jr.key(off.seed), 2), opt_state=opt_state, start_step=step,
                evaluator=Evaluator.from_config(off.env, off.eval), val=val)
        except KeyboardInterrupt:
            print(f"\ninterrupted: the latest checkpoint is in {run_dir / PHASE / 'checkpoints'}"
                  "; rerun the same command to resume from it.", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        except (ValueError, RuntimeError) as e:
            raise SystemExit(f"error: {e}") from None
    summary = _summary(run_dir / PHASE, result, t0)
    offline._write_json(run_dir / PHASE / "summary.json", summary)
    report.plot_learning_curve(run_dir / PHASE, title=f"{off.recipe} on {off.env}, online")
    print(report.format_table([summary], ["success_before", "success", "env_steps",
                                          "episodes", "online_success", "wall_time_s"]))
    return summary


def _summary(phase_dir: Path, result, t0: float) -> dict[str, Any]:
    evals = report.read_csv(phase_dir / "eval.csv")
    episodes = report.read_csv(phase_dir / "episodes.csv")
    metrics = report.read_csv(phase_dir / "metrics.csv")
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows) if rows else None  # noqa: E731
    return {
        "env_steps": result.env_step, "updates": result.step,
        "success_before": evals[0]["success"] if evals and evals[0]["step"] == 0 else None,
        "success": evals[-1]["success"] if evals else None,
        "episodes": len(episodes), "online_success": mean(episodes, "success"),
        "online_return": mean(episodes, "return"),
        "env_steps_per_s": mean(metrics, "env_steps_per_s"),
        "updates_per_s": mean(metrics, "updates_per_s"),
        "eval_env_steps_per_s": mean(evals, "env_steps_per_s"),
        "wall_time_s": result.wall_time, "total_time_s": time.perf_counter() - t0,
        "buffer_rows": len(result.buffer), "device": jax.devices()[0].device_kind,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """`recipes/online.py`: parse, then run."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        job = parse(argv)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {e}") from None
    return run(job, argv)



if __name__ == "__main__":  # `python -m fidec_zoo.online` = recipes/online.py
    # through the package's own module, so that config.json records fidec_zoo.online's classes
    # (run as __main__, this file's classes would be recorded as '__main__:...')
    from fidec_zoo.online import main as _main

    _main()
