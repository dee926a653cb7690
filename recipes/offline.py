"""The main job: train and evaluate an offline-RL agent on an OGBench task.

    python recipes/offline.py                                  # FiDec, cube-single task2, CPU preset
    python recipes/offline.py --agent deflow --steps 50000
    python recipes/offline.py --agent fidec --metric l2        # FiDec's recipe with DeFlow's metric
    python recipes/offline.py --fisher-t 0.8 --hidden 512 512  # any recipe hyperparameter

With no dataset on disk, the OGBench dataset is generated locally with OGBench's own scripted
oracles (cached for later runs). Training shows a progress bar and evaluates periodically; at the
end the refined policy AND the behaviour flow inside it are evaluated on the same episodes, and a
table is printed. Everything lands in the run directory (`config.json`, `metrics.csv`,
`eval.csv`, `summary.json`, `learning_curve.png`, `checkpoints/`); running again with the same
`--run-dir` resumes.
"""

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.random as jr

from fidec_zoo import __version__, recipes, report
from fidec_zoo.metrics import FisherMetric, L2Metric
from fidec_zoo.policies import FlowPolicy

DEFAULT_ENV = "cube-single-play-singletask-task2-v0"
METRIC_AGENTS = ("fql", "deflow", "fidec")
#: Flags of this script that are recipe/preset parameters themselves.
_MAIN_PARAMS = {"steps", "eval_every", "eval_episodes", "dataset_episodes"}
#: Parameters that may change between a run and its resumption.
_RESUMABLE = {"steps", "eval_every", "eval_episodes"}


# ---- command line ------------------------------------------------------------------------------


def _all_params() -> dict[str, Any]:
    """Every hyperparameter of every recipe, with a representative default (for flag types)."""
    params: dict[str, Any] = {}
    for name in recipes.available():
        params.update({k: v for k, v in recipes.config(name).params.items() if k not in params})
    return {k: v for k, v in sorted(params.items()) if k not in _MAIN_PARAMS}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "null", "off") else float(text)


def _add_param_flag(group: argparse._ArgumentGroup, name: str, default: Any) -> None:
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
    group.add_argument(flag, help=f"recipe hyperparameter (default for fidec/cpu: {default})",
                       **kwargs)


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
    parser.add_argument("--eval-every", type=int, default=None, help="(preset)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="(preset)")
    parser.add_argument("--dataset-episodes", type=int, default=None,
                        help="episodes of the generated dataset (preset)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated dataset")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes used to generate the dataset if it is missing")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="default: runs/<agent>[-<metric>]-<env>-s<seed>")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in a run dir that holds a different config")
    group = parser.add_argument_group("recipe hyperparameters (override the recipe's values)")
    for name, default in _all_params().items():
        _add_param_flag(group, name, default)
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
    return Path("runs") / f"{args.agent}{metric}-{args.env}-s{args.seed}"


# ---- run directory -----------------------------------------------------------------------------


def _identity(recipe: recipes.Recipe, args: argparse.Namespace) -> dict[str, Any]:
    """What must match for a run dir to be resumed (everything that changes training)."""
    rec = recipe.to_dict()
    rec["params"] = {k: v for k, v in rec["params"].items() if k not in _RESUMABLE}
    return json.loads(json.dumps({"recipe": rec, "seed": args.seed, "data_seed": args.data_seed},
                                 default=list))


def prepare_run_dir(run_dir: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Refuses a run dir holding a different config (unless `overwrite`, which clears it)."""
    path = run_dir / "config.json"
    if path.exists():
        stored = json.loads(path.read_text()).get("identity")
        if stored != identity:
            if not overwrite:
                raise SystemExit(
                    f"error: {run_dir} holds a run with a different config. Use another "
                    "--run-dir, or --overwrite to discard it.\n"
                    f"  stored:    {json.dumps(stored)}\n  requested: {json.dumps(identity)}")
            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("jax", "equinox", "optax", "diffrax", "orbax-checkpoint", "ogbench", "mujoco")
    return {"fidec_zoo": __version__, "python": sys.version.split()[0],
            **{n: version(n) for n in names}}


# ---- the job -----------------------------------------------------------------------------------


def behaviour_flow(agent) -> FlowPolicy | None:
    """The BC flow inside an agent (the policy FQL/DeFlow/FiDec refine), if it has one."""
    flow = getattr(agent, "flow", None)
    return flow if isinstance(flow, FlowPolicy) and agent.policy is not flow else None


def _chunk(steps: int, eval_every: int) -> int:
    return math.gcd(1000, steps, eval_every) if steps else 1


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    try:
        recipe = resolve(args)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {e}") from None
    p = recipe.params
    run_dir = (args.run_dir or default_run_dir(args)).resolve()
    identity = _identity(recipe, args)
    prepare_run_dir(run_dir, identity, args.overwrite)
    print(f"fidec_zoo {__version__} | {args.agent} on {args.env} | preset {args.preset} | "
          f"{p['steps']} steps | run dir {run_dir}", flush=True)

    from fidec_zoo.data import dataset_provenance, load_ogbench
    from fidec_zoo.envs import evaluate
    from fidec_zoo.train import fit

    t0 = time.perf_counter()
    _, train, val = load_ogbench(args.env, episodes=p["dataset_episodes"], seed=args.data_seed,
                                 workers=args.workers)
    data_time = time.perf_counter() - t0
    config = {"identity": identity, "recipe": recipe.to_dict(), "seed": args.seed,
              "env": args.env, "obs_dim": train.obs_dim, "action_dim": train.action_dim,
              "dataset": dataset_provenance(args.env, episodes=p[
                  "dataset_episodes"], seed=args.data_seed),
              "versions": _versions(), "argv": sys.argv[1:] if argv is None else argv}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2, default=list))

    key = jr.key(args.seed)
    agent = recipes.build(recipe, obs_dim=train.obs_dim, action_dim=train.action_dim,
                          key=jr.fold_in(key, 0))
    chunk = _chunk(p["steps"], p["eval_every"])
    result = fit(agent, train, steps=p["steps"], run_dir=run_dir, key=jr.fold_in(key, 1),
                 batch_size=p["batch_size"], lr=p["lr"], grad_clip=p["grad_clip"], chunk=chunk,
                 log_every=chunk, eval_every=p["eval_every"], eval_episodes=p["eval_episodes"],
                 env_name=args.env, val=val)
    final = result.last_eval  # None when a finished run is resumed: evaluate it again
    if final is None:
        final = evaluate(result.agent.policy, args.env, episodes=p["eval_episodes"], seed=0)
    rows = [{"policy": f"{args.agent} (final)", "success": final.success,
             "return": final.return_mean, "steps": result.step}]
    flow = behaviour_flow(result.agent)
    flow_eval = None
    if flow is not None:  # same episodes (reset seeds) as the final evaluation
        flow_eval = evaluate(flow, args.env, episodes=p["eval_episodes"], seed=final.seed)
        rows.append({"policy": "behaviour flow (inside it)", "success": flow_eval.success,
                     "return": flow_eval.return_mean, "steps": result.step})
    summary = {
        "agent": args.agent, "env": args.env, "metric": args.metric, "steps": result.step,
        "success": final.success, "success_ci95": final.success_ci95,
        "return": final.return_mean, "eval_episodes": p["eval_episodes"], "eval_seed": final.seed,
        "behaviour_flow_success": None if flow_eval is None else flow_eval.success,
        "behaviour_flow_return": None if flow_eval is None else flow_eval.return_mean,
        "train_wall_time_s": result.wall_time, "steps_per_s": result.step / result.wall_time,
        "data_time_s": data_time, "total_time_s": time.perf_counter() - t0,
        "device": jax.devices()[0].device_kind,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    report.plot_learning_curve(run_dir, title=f"{args.agent} on {args.env}")
    for row in rows:
        row["wall time (s)"] = round(summary["total_time_s"])
    print("\n" + report.format_table(rows, ["policy", "success", "return", "steps",
                                            "wall time (s)"]))
    print(f"\nrun dir: {run_dir}")
    return summary


if __name__ == "__main__":
    main()
