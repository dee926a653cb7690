"""The main job: train and evaluate an offline-RL agent on an OGBench task.

    python recipes/offline.py                                  # FiDec, cube-single task2, cpu
    python recipes/offline.py --agent deflow --steps 50000
    python recipes/offline.py --agent fidec --metric l2        # FiDec's recipe with DeFlow's metric
    python recipes/offline.py --fisher-t 0.8 --hidden 512 512  # any recipe hyperparameter
    python recipes/offline.py --seeds 4                        # seeds 0..3 in one program
    python recipes/offline.py --devices 2                      # batch split over 2 devices

With no dataset on disk, the OGBench dataset is generated locally with OGBench's own scripted
oracles (cached for later runs). Training shows a progress bar and evaluates periodically; at the
end the refined policy AND the behaviour flow inside it are evaluated on the same episodes, and a
table is printed. Everything lands in the run directory (`config.json`, `metrics.csv`,
`eval.csv`, `summary.json`, `learning_curve.png`, `checkpoints/`); running again with the same
`--run-dir` resumes.

`--seeds N` trains seeds `seed, ..., seed+N-1` together (`vmap` over seeds; seed `seed+i` computes
what `--seed <seed+i>` alone computes), with per-seed CSVs and curves in `run_dir/seed_<i>/` and
a per-seed table. `--devices N` splits each minibatch over N devices (data-parallel, same results
up to float rounding); on a CPU-only machine it simulates N host devices (for testing: they share
the same cores). See docs/scaling.md.
"""

import argparse
import datetime
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from fidec_zoo import __version__, recipes, report
from fidec_zoo.data import available_cpus
from fidec_zoo.envs import default_eval_workers
from fidec_zoo.metrics import FisherMetric, L2Metric
from fidec_zoo.policies import FlowPolicy
from fidec_zoo.provenance import package_versions

DEFAULT_ENV = "cube-single-play-singletask-task2-v0"
METRIC_AGENTS = ("fql", "deflow", "fidec")
#: Flags of this script that are recipe/preset parameters themselves.
_MAIN_PARAMS = {"steps", "eval_every", "eval_episodes", "dataset_episodes"}
#: Parameters that may change between a run and its resumption.
_RESUMABLE = {"steps", "eval_every", "eval_episodes"}
#: Packages whose versions a run directory records (config.json "versions" and "sessions").
_PACKAGES = ("jax", "equinox", "optax", "diffrax", "orbax-checkpoint", "ogbench", "mujoco")


# ---- command line ------------------------------------------------------------------------------


def _all_params() -> dict[str, tuple[Any, list[str]]]:
    """Every hyperparameter of every recipe: a default (for the flag's type; the `cpu` preset,
    no environment) and the recipes that use it."""
    params: dict[str, tuple[Any, list[str]]] = {}
    for name in recipes.available():
        for key, value in recipes.config(name).params.items():
            params.setdefault(key, (value, []))[1].append(name)
    return {k: v for k, v in sorted(params.items()) if k not in _MAIN_PARAMS}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "null", "off") else float(text)


def _add_param_flag(
    group: argparse._ArgumentGroup, name: str, default: Any, users: list[str]
) -> None:
    flag = "--" + name.replace("_", "-")
    kwargs: dict[str, Any] = {"default": None, "dest": f"param_{name}"}
    if isinstance(default, bool):
        kwargs.update(type=_bool, metavar="BOOL")
    elif isinstance(default, tuple):
        kwargs.update(type=int, nargs="+", metavar="N")
    elif default is None:
        kwargs.update(type=_optional_float, metavar="FLOAT|none")
    else:
        kwargs.update(type=type(default), metavar=type(default).__name__.upper())
    used_by = "all recipes" if len(users) == len(recipes.available()) else ", ".join(users)
    group.add_argument(flag, help=f"used by {used_by}; default {default} (per-environment "
                       "tables may set it; see recipes.config)", **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train and evaluate an offline-RL agent on OGBench (fidec_zoo main job).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--agent", default="fidec", choices=recipes.available())
    parser.add_argument("--env", default=DEFAULT_ENV, help="OGBench single-task env name")
    parser.add_argument("--metric", choices=("l2", "fisher"), default=None,
                        help=f"swap the metric object ({'/'.join(METRIC_AGENTS)} only)")
    parser.add_argument("--preset", choices=list(recipes.PRESETS), default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="training steps (preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1,
                        help="train seeds seed..seed+N-1 in one program (vmap over seeds)")
    parser.add_argument("--devices", type=int, default=None,
                        help="data-parallel over N devices (batch split; default: one device). "
                             "CPU-only: N simulated host devices")
    parser.add_argument("--eval-every", type=int, default=None, help="(preset)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="(preset)")
    parser.add_argument("--dataset-episodes", type=int, default=None,
                        help="episodes of the generated dataset (preset)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated dataset")
    parser.add_argument("--workers", type=int, default=available_cpus(),
                        help="processes that generate the dataset if it is missing "
                             "(default: all CPUs, %(default)s)")
    parser.add_argument("--eval-workers", type=int, default=default_eval_workers(),
                        help="processes that step the evaluation envs while training waits "
                             "(default: min(CPUs, 4) = %(default)s; same results for any)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="default: runs/<agent>[-<metric>]-<env>-s<seed>")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in a run dir that holds a different config")
    parser.add_argument("--keep-checkpoints", type=int, default=2, metavar="N",
                        help="keep the latest N checkpoints of the run dir; 0 keeps every one "
                             "(one per evaluation), so any of them can be registered later")
    group = parser.add_argument_group("recipe hyperparameters (override the recipe's values)")
    for name, (default, users) in _all_params().items():
        _add_param_flag(group, name, default, users)
    return parser


def resolve(args: argparse.Namespace) -> recipes.Recipe:
    """Validates names and builds the recipe, before any data work."""
    from fidec_zoo.envs import resolve_env_name

    resolve_env_name(args.env)  # ValueError listing supported envs
    overrides = {k[len("param_"):]: v for k, v in vars(args).items()
                 if k.startswith("param_") and v is not None}
    for flag in ("steps", "eval_every", "eval_episodes", "dataset_episodes"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    if args.metric is not None:
        if args.agent not in METRIC_AGENTS:
            raise ValueError(f"--metric applies to {list(METRIC_AGENTS)}; {args.agent!r} has no "
                             "displacement from a behaviour flow to measure.")
        if args.metric == "l2":
            overrides["metric"] = L2Metric()
        elif args.agent != "fidec":  # fidec builds its Fisher metric from its own parameters
            overrides["metric"] = FisherMetric()
    return recipes.config(args.agent, env_name=args.env, preset=args.preset, **overrides)


def default_run_dir(args: argparse.Namespace) -> Path:
    metric = f"-{args.metric}" if args.metric else ""
    seeds = f"-{args.seeds}seeds" if args.seeds > 1 else ""
    return Path("runs") / f"{args.agent}{metric}-{args.env}-s{args.seed}{seeds}"


# ---- run directory -----------------------------------------------------------------------------


def _identity(recipe: recipes.Recipe, args: argparse.Namespace) -> dict[str, Any]:
    """What must match for a run dir to be resumed (everything that changes training)."""
    rec = recipe.to_dict()
    rec["params"] = {k: v for k, v in rec["params"].items() if k not in _RESUMABLE}
    identity = {"recipe": rec, "seed": args.seed, "data_seed": args.data_seed}
    if args.seeds > 1:  # (absent for one seed, so older run dirs keep resuming)
        identity["seeds"] = args.seeds
    return json.loads(json.dumps(identity, default=list))


def prepare_run_dir(run_dir: Path, identity: dict[str, Any], overwrite: bool) -> list[dict]:
    """Refuses a run dir holding a different config (unless `overwrite`, which clears it), and
    returns the `sessions` its config.json recorded (none for a new or cleared run dir).

    It does not create `run_dir`: `main` does once the dataset is loaded, so a bad env or
    dataset leaves no empty run dir behind."""
    path = run_dir / "config.json"
    if not path.exists():
        return []
    stored = json.loads(path.read_text())
    if stored.get("identity") != identity:
        if not overwrite:
            raise SystemExit(
                f"error: {run_dir} holds a run with a different config. Use another "
                "--run-dir, or --overwrite to discard it.\n"
                f"  stored:    {json.dumps(stored.get('identity'))}\n"
                f"  requested: {json.dumps(identity)}")
        shutil.rmtree(run_dir)
        return []
    return stored.get("sessions", [])


def _session(run_dir: Path, argv: list[str], versions: dict[str, str]) -> dict[str, Any]:
    """This invocation's record in config.json's `sessions`: its start, first step, argv and
    versions. A run resumed over several sessions keeps one per session, so it says what each
    ran (with the source revision, which `fidec_zoo.__version__` alone does not give)."""
    from fidec_zoo.checkpoint import latest_step

    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {"started": started, "from_step": latest_step(run_dir / "checkpoints") or 0,
            "argv": argv, "versions": versions}


# ---- the job -----------------------------------------------------------------------------------


def behaviour_flow(agent) -> FlowPolicy | None:
    """The BC flow inside an agent (the policy FQL/DeFlow/FiDec refine), if it has one."""
    flow = getattr(agent, "flow", None)
    return flow if isinstance(flow, FlowPolicy) and agent.policy is not flow else None


def _chunk(steps: int, eval_every: int) -> int:
    return math.gcd(1000, steps, eval_every) if steps else 1


def _check_run_flags(args: argparse.Namespace) -> None:
    """Validates --seeds/--eval-workers/--keep-checkpoints/--devices; on a CPU-only machine,
    `--devices N` simulates N host devices (possible only before JAX starts its backend, i.e.
    as a script)."""
    for flag in ("seeds", "eval_workers"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag.replace('_', '-')} must be >= 1, "
                             f"got {getattr(args, flag)}")
    if args.keep_checkpoints < 0:
        raise SystemExit(f"error: --keep-checkpoints must be >= 0 (0: keep all), "
                         f"got {args.keep_checkpoints}")
    if args.devices is None:
        return
    if args.devices < 1:
        raise SystemExit(f"error: --devices must be >= 1, got {args.devices}")
    try:
        jax.config.update("jax_num_cpu_devices", max(args.devices, 1))
    except RuntimeError:  # backend already running (e.g. called from Python): use what exists
        pass


def _seed_state(recipe: recipes.Recipe, args: argparse.Namespace, obs_dim: int,
                action_dim: int):
    """The agent (stacked over seeds for --seeds > 1) and the run key(s): seed s builds its
    agent from fold_in(key(s), 0) and trains with fold_in(key(s), 1), as a one-seed run."""
    from fidec_zoo.train import stack_seeds

    keys = [jr.key(s) for s in range(args.seed, args.seed + args.seeds)]
    agents = [recipes.build(recipe, obs_dim=obs_dim, action_dim=action_dim,
                            key=jr.fold_in(k, 0)) for k in keys]
    fit_keys = [jr.fold_in(k, 1) for k in keys]
    if args.seeds == 1:
        return agents[0], fit_keys[0]
    return stack_seeds(agents), jr.wrap_key_data(jnp.stack([jr.key_data(k) for k in fit_keys]))


def _final_evaluations(agent, last_eval, args, p) -> dict[str, Any]:
    """Final success of the refined policy and of the behaviour flow inside it (same episodes),
    for one seed's agent. `last_eval` is None when a finished run is resumed."""
    from fidec_zoo.envs import evaluate

    final = last_eval
    if final is None:
        final = evaluate(agent.policy, args.env, episodes=p["eval_episodes"], seed=0,
                         workers=args.eval_workers)
    flow = behaviour_flow(agent)
    flow_eval = None
    if flow is not None:  # same episodes (reset seeds) as the final evaluation
        flow_eval = evaluate(flow, args.env, episodes=p["eval_episodes"], seed=final.seed,
                             workers=args.eval_workers)
    return {"success": final.success, "success_ci95": final.success_ci95,
            "return": final.return_mean, "eval_seed": final.seed,
            "behaviour_flow_success": None if flow_eval is None else flow_eval.success,
            "behaviour_flow_return": None if flow_eval is None else flow_eval.return_mean}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    _check_run_flags(args)
    try:
        recipe = resolve(args)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {e}") from None
    p = recipe.params
    run_dir = (args.run_dir or default_run_dir(args)).resolve()
    identity = _identity(recipe, args)
    sessions = prepare_run_dir(run_dir, identity, args.overwrite)
    seeds = f" | seeds {args.seed}..{args.seed + args.seeds - 1}" if args.seeds > 1 else ""
    print(f"fidec_zoo {__version__} | {args.agent} on {args.env} | preset {args.preset} | "
          f"{p['steps']} steps{seeds} | run dir {run_dir}", flush=True)

    from fidec_zoo import distributed
    from fidec_zoo.data import dataset_provenance, load_ogbench
    from fidec_zoo.train import fit, select_seed

    mesh = None
    if args.devices is not None:
        try:
            mesh = distributed.make_data_mesh(args.devices)
        except ValueError as e:
            raise SystemExit(f"error: --devices: {e}") from None
        print(f"data-parallel over {mesh.size} x {mesh.devices.flat[0].device_kind} devices",
              flush=True)
    t0 = time.perf_counter()
    try:
        _, train, val = load_ogbench(args.env, episodes=p["dataset_episodes"],
                                     seed=args.data_seed, workers=args.workers)
    except (ValueError, FileNotFoundError) as e:  # no generator, or a broken dataset file
        raise SystemExit(f"error: {e}") from None
    data_time = time.perf_counter() - t0
    argv = sys.argv[1:] if argv is None else argv
    versions = package_versions(_PACKAGES)
    config = {"identity": identity, "recipe": recipe.to_dict(), "seed": args.seed,
              "env": args.env, "obs_dim": train.obs_dim, "action_dim": train.action_dim,
              "dataset": dataset_provenance(args.env, episodes=p[
                  "dataset_episodes"], seed=args.data_seed),
              "versions": versions, "argv": argv,
              "sessions": [*sessions, _session(run_dir, argv, versions)]}
    if args.seeds > 1 or mesh is not None:
        config.update(seeds=args.seeds, devices=1 if mesh is None else mesh.size)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2, default=list))

    agent, key = _seed_state(recipe, args, train.obs_dim, train.action_dim)
    many = args.seeds > 1
    chunk = _chunk(p["steps"], p["eval_every"])
    try:
        result = fit(agent, train, steps=p["steps"], run_dir=run_dir, key=key,
                     batch_size=p["batch_size"], lr=p["lr"], grad_clip=p["grad_clip"],
                     chunk=chunk, log_every=chunk, eval_every=p["eval_every"],
                     eval_episodes=p["eval_episodes"], eval_workers=args.eval_workers,
                     env_name=args.env, val=val,
                     seeds=args.seeds if many else None, mesh=mesh,
                     max_to_keep=args.keep_checkpoints or None)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: `fit` saved a whole chunk (unless sent twice)
        print(f"\ninterrupted: the latest checkpoint is in {run_dir / 'checkpoints'}; rerun the "
              "same command to resume from it.", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    if not distributed.is_main_process():
        return {}
    per_seed = []
    for i in range(args.seeds):
        seed_agent = select_seed(result.agent, i) if many else result.agent
        last = result.last_eval[i] if many and result.last_eval else result.last_eval
        per_seed.append({"seed": args.seed + i,
                         **_final_evaluations(seed_agent, last, args, p)})
    rows = []
    for s in per_seed:
        name = f"{args.agent} (final)" + (f", seed {s['seed']}" if many else "")
        rows.append({"policy": name, "success": s["success"], "return": s["return"],
                     "steps": result.step})
        if s["behaviour_flow_success"] is not None:
            rows.append({"policy": "behaviour flow (inside it)" + (
                f", seed {s['seed']}" if many else ""),
                "success": s["behaviour_flow_success"],
                "return": s["behaviour_flow_return"], "steps": result.step})
    summary = {
        "agent": args.agent, "env": args.env, "metric": args.metric, "steps": result.step,
        **{k: v for k, v in per_seed[0].items() if k != "seed"},
        "eval_episodes": p["eval_episodes"],
        "train_wall_time_s": result.wall_time, "steps_per_s": result.step / result.wall_time,
        "data_time_s": data_time, "total_time_s": time.perf_counter() - t0,
        "device": jax.devices()[0].device_kind,
    }
    if many:  # the mean over seeds, the per-seed results, and the throughput of all seeds
        successes = [s["success"] for s in per_seed]
        flows = [s["behaviour_flow_success"] for s in per_seed]
        summary.update(
            success=float(np.mean(successes)), success_std_over_seeds=float(np.std(successes)),
            success_ci95=None, eval_seed=None, **{"return": float(np.mean(
                [s["return"] for s in per_seed]))},
            behaviour_flow_success=None if None in flows else float(np.mean(flows)),
            behaviour_flow_return=None if None in flows else float(np.mean(
                [s["behaviour_flow_return"] for s in per_seed])),
            seeds=per_seed, num_seeds=args.seeds,
            steps_per_s_all_seeds=args.seeds * result.step / result.wall_time)
        rows.append({"policy": f"{args.agent} (final), mean of {args.seeds} seeds",
                     "success": summary["success"], "return": summary["return"],
                     "steps": result.step})
    if mesh is not None:
        summary["devices"] = mesh.size
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    title = f"{args.agent} on {args.env}"
    if many:
        for i in range(args.seeds):
            report.plot_learning_curve(run_dir / f"seed_{i}",
                                       title=f"{title}, seed {args.seed + i}")
    else:
        report.plot_learning_curve(run_dir, title=title)
    for row in rows:  # summed over every resume of the run, periodic evaluations included
        row["train time (s)"] = round(result.wall_time)
    print("\n" + report.format_table(rows, ["policy", "success", "return", "steps",
                                            "train time (s)"]))
    print(f"\nrun dir: {run_dir}")
    return summary


if __name__ == "__main__":
    main()
