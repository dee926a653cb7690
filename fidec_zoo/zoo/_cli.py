"""`python -m fidec_zoo.zoo list|info|eval|video|verify|table`: the zoo from the command line.

`eval` and `video` also take a `recipes/offline.py` run directory in place of an entry name, to
measure or watch any checkpoint the run kept (`--step`), finished or not. With `--refine natural`
they act with the closed-form natural-gradient refinement of the behaviour flow by the critic
(`fidec_zoo.refinement`) instead of the trained policy: a run directory, or an entry that ships
its agent."""

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from .. import envs
from .._durable import atomic_write
from .._pipes import reader_gone
from ..envs import EvalResult, RenderError, default_eval_workers
from ..policies import AbstractPolicy
from ..refinement import METRICS, natural_gradient_policy, refinement_metric
from . import _registry
from ._entry import DEFAULT_EVAL_EPISODES, DEFAULT_EVAL_SEED, ZooEntry, ZooError
from ._legacy import migrate_registry
from ._load import _seed, evaluate, list_models, load_agent, model_info, record_video, verify
from ._run import TrainedRun, load_run
from ._save import _eval_rows

__all__ = ["entry_card", "main", "markdown_table"]

DEFAULT_BUDGET = 1e-3
TABLE_START = "<!-- zoo-table:start -->"
TABLE_END = "<!-- zoo-table:end -->"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _success(entry: ZooEntry) -> str:
    ev = entry.evaluation or {}
    if ev.get("success") is None:
        return "not evaluated"
    ci = ev.get("success_ci95")
    return _pct(ev["success"]) + ("" if ci is None else f" ± {100 * ci:.0f}")


def _dataset(entry: ZooEntry) -> str:
    d = entry.dataset
    if d.get("source") == "generated":
        return f"generated, {d.get('episodes', '?')} ep, seed {d.get('seed', '?')}"
    return d.get("source") or "–"


def _networks(entry: ZooEntry) -> str:
    """The MLP widths the entry was trained with: `4×128` when all layers match."""
    hidden = entry.config.get("agent", {}).get("hidden")
    if not hidden:
        return "–"
    if len(set(hidden)) == 1:
        return f"{len(hidden)}×{hidden[0]}"
    return "-".join(str(h) for h in hidden)


def _note(entry: ZooEntry) -> str:
    return f"{entry.paper.get('source')}: {entry.paper.get('note')}"


def _paper_value(entry: ZooEntry) -> str:
    """`72% ± 5`: the paper's mean (and std over seeds, when recorded), or `–`."""
    value, std = entry.paper.get("value"), entry.paper.get("std")
    spread = "" if std is None else f" ± {100 * std:.0f}"
    return "–" if value is None else f"{_pct(value)}{spread}"


def _paper(entry: ZooEntry, notes: list[str]) -> str:
    if entry.paper.get("value") is None:
        return "–"
    return f"{_paper_value(entry)} [{notes.index(_note(entry)) + 1}]"


def _step(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _curve(training: dict[str, Any]) -> str:
    """`10k:0% · 20k:2% · ...`: the success of the training evaluations, by step."""
    points = training.get("learning_curve") or []
    if not points:
        return "–"
    episodes = (training.get("final_training_eval") or {}).get("episodes", "?")
    curve = " · ".join(f"{_step(p['step'])}:{_pct(p['success'])}" for p in points)
    return f"{curve} (training evaluations, {episodes} episodes each)"


def _training(training: dict[str, Any]) -> str:
    """`160,000 steps, seed 0, 1 h 45 min on cpu`, leaving out what was not recorded."""
    parts = [f"{training['steps']:,} steps" if isinstance(training.get("steps"), int) else "?"]
    if training.get("seed") is not None:
        parts.append(f"seed {training['seed']}")
    if (seconds := training.get("wall_time_s")) is not None:
        minutes = round(seconds / 60)
        took = f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
        parts.append(took + (f" on {training['device']}" if training.get("device") else ""))
    return ", ".join(parts)


def entry_card(entry: ZooEntry) -> str:
    """A readable summary of a registry record, what `python -m fidec_zoo.zoo info` prints
    (`--json` prints the full record, `entry.to_dict()`). Unrecorded fields show as `?` or `–`."""
    t, ev, d = entry.training, entry.evaluation or {}, entry.dataset
    rows = [
        ("recipe", f"{entry.recipe}, preset {entry.config.get('preset')}, "
                   f"networks {_networks(entry)}"),
        ("policy", f"{entry.policy_class}, {entry.param_count:,} parameters, "
                   f"{entry.size_bytes / 1e6:.1f} MB ({', '.join(entry.contents)})"),
        ("environment", f"{entry.env_name or 'none recorded'} (obs {entry.obs_dim}, action "
                        f"{entry.action_dim})"),
        ("dataset", (f"{d['dataset']}: " if d.get("dataset") else "") + _dataset(entry)
                    + (" (not the official bytes)" if d.get("source") == "generated" else "")),
        ("training", _training(t)),
        ("success", f"{_success(entry)} ({ev.get('episodes', '?')} episodes, evaluation seed "
                    f"{ev.get('seed', '?')})" if ev else "not evaluated"),
        ("learning curve", _curve(t)),
        ("behaviour flow", _pct(t.get("behaviour_flow_success"))),
        ("paper", "–" if entry.paper.get("value") is None else
                  f"{_paper_value(entry)}: {_note(entry)}"),
        ("notes", entry.notes or "–"),
        ("versions", ", ".join(f"{k} {v}" for k, v in entry.versions.items()) or "?"),
    ]
    width = max(len(k) for k, _ in rows)
    indent = " " * (width + 4)
    lines = [textwrap.fill(v, 100, initial_indent=f"  {k:<{width}}  ", subsequent_indent=indent)
             for k, v in rows]
    return "\n".join([entry.name, *lines, f"{indent}(the full record: info --json)"])


def markdown_table(*, root: Any = None) -> str:
    """The markdown table of the entries of `root` alone, or of the whole search path if `root`
    is None (docs/zoo.md shows the repository's `checkpoints/`)."""
    if root is not None:
        root = Path(root).expanduser().resolve()
        entries = [ZooEntry.from_dict(d) for _, d in sorted(_registry.read(root).items())]
    else:
        entries = [model_info(n) for n in list_models()]
    notes = sorted({_note(e) for e in entries if e.paper.get("value") is not None})
    lines = [
        "| entry | policy | networks | success (± 95% CI) | episodes | steps | dataset | paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        name = e.name
        ev, steps = e.evaluation or {}, e.training.get("steps")
        lines.append(
            f"| `{name}` | {e.policy_class} ({e.param_count:,} params) | {_networks(e)} | "
            f"{_success(e)} | {ev.get('episodes', '–')} | "
            f"{f'{steps:,}' if isinstance(steps, int) else '–'} | "
            f"{_dataset(e)} | {_paper(e, notes)} |"
        )
    if len(lines) == 2:
        lines.append("| *(no entries yet)* | | | | | | | |")
    if notes:
        lines += ["", *[f"[{i}] {n}" for i, n in enumerate(notes, 1)]]
    return "\n".join(lines)


def update_doc(path: Path, table: str) -> None:
    """Replaces the text between the table markers of `path` with `table`."""
    text = path.read_text()
    pattern = re.compile(re.escape(TABLE_START) + r".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: {path} has no {TABLE_START} ... {TABLE_END} markers.")
    atomic_write(path, pattern.sub(lambda m: f"{TABLE_START}\n{table}\n{TABLE_END}", text))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fidec_zoo.zoo", description="Pretrained fidec_zoo policies."
    )
    root_help = (
        "zoo root searched first (then $FIDEC_ZOO_HOME, the packaged zoo, "
        "the repository's checkpoints/)"
    )
    parser.add_argument("--root", default=None, help=root_help)
    # `--root` is also accepted after the command (`table --root checkpoints`); SUPPRESS keeps a
    # subcommand that was not given it from overwriting the value given before the command.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--root", default=argparse.SUPPRESS, help=root_help)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", parents=[after],
                       help="list entries: recorded success, networks, training steps and time")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'fidec/*'")
    p = sub.add_parser("info", parents=[after], help="an entry's registry record, summarised")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print the full record as JSON")
    run = argparse.ArgumentParser(add_help=False)  # what eval and video take for a run dir
    run.add_argument("--step", type=int, default=None,
                     help="run directory only: its checkpoint to load (default: the latest)")
    run.add_argument("--run-seed", type=int, default=None,
                     help="run directory only: which seed of a --seeds N run")
    refine = argparse.ArgumentParser(add_help=False)  # acting refined by the critic
    refine.add_argument(
        "--refine", choices=["natural"], default=None,
        help="act with the behaviour flow moved by the critic's closed-form natural-gradient "
        "step (the FiDec paper's eq. 54), not the trained policy; needs a run directory or an "
        "entry that ships its critic")
    refine.add_argument("--budget", type=float, default=None,
                        help=f"--refine: the step's d^T G d / action_dim (default: "
                        f"{DEFAULT_BUDGET}, FiDec's target divergence)")
    refine.add_argument("--refine-metric", choices=list(METRICS), default=None,
                        help="--refine: the metric G (default: fisher, FisherMetric())")
    refine.add_argument("--refine-steps", type=int, default=None,
                        help="--refine: linearisations of the critic (default: 1)")
    name_help = "entry name, or a recipes/offline.py run directory"
    p = sub.add_parser(
        "eval", parents=[after, run, refine],
        help="re-evaluate an entry (default: its recorded protocol) or a run's checkpoint",
    )
    p.add_argument("name", help=name_help)
    p.add_argument("--episodes", type=int, default=None,
                   help=f"default: the recorded protocol's, {DEFAULT_EVAL_EPISODES} for a run")
    p.add_argument("--seed", type=int, default=None,
                   help=f"evaluation seed (default: the recorded one, {DEFAULT_EVAL_SEED} for a "
                   "run)")
    p.add_argument("--workers", type=int, default=default_eval_workers(),
                   help="processes that step the envs (default: min(CPUs, 4) = %(default)s)")
    p = sub.add_parser(
        "video", parents=[after, run, refine],
        help="render an entry's (or a run checkpoint's) first evaluation episodes to a GIF",
    )
    p.add_argument("name", help=name_help)
    p.add_argument("--out", type=Path, default=None,
                   help="GIF to write (default: <name with / as __>.gif here; for a run, "
                   "<run dir name>-<step>.gif)")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--seed", type=int, default=None,
                   help=f"default: the recorded eval seed ({DEFAULT_EVAL_SEED} for a run)")
    p.add_argument("--frame-skip", type=int, default=1, help="keep every N-th frame")
    p = sub.add_parser("verify", parents=[after],
                       help="check the sha256 of entries (default: all), reporting every bad one")
    p.add_argument("names", nargs="*")
    p = sub.add_parser("migrate", help="rewrite a format-1 registry (before typed configs) as "
                       "format 2 in place, then verify every entry")
    p.add_argument("root_dir", type=Path, metavar="ROOT", help="the directory of registry.json")
    p = sub.add_parser(
        "table",
        parents=[after],
        help="print the markdown table of entries (docs/zoo.md); "
        "with --root, of that root's entries only",
    )
    p.add_argument(
        "--update",
        type=Path,
        default=None,
        metavar="FILE",
        help="rewrite the table between the zoo-table markers of FILE instead",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ZooError, FileNotFoundError, ValueError, RenderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `list | head` stopped reading
        return reader_gone()


def _run(args: argparse.Namespace) -> int:
    root = args.root
    if args.command in ("eval", "video"):
        _check_refine_flags(args)
    if args.command == "list":
        names = list_models(args.pattern, root=root)
        width = max([len(n) for n in names] + [5])
        for n in names:
            e = model_info(n, root=root)
            episodes = (e.evaluation or {}).get("episodes")
            measured = _success(e) + (f" ({episodes} ep)" if episodes else "")
            print(f"{n:<{width}}  {measured:<17} {_networks(e):<6} {_training(e.training)}")
        if not names:
            print(f"no entries match {args.pattern!r}", file=sys.stderr)
    elif args.command == "info":
        entry = model_info(args.name, root=root)
        print(json.dumps(entry.to_dict(), indent=2) if args.json else entry_card(entry))
    elif args.command in ("eval", "video") and (run := _trained_run(args)) is not None:
        _run_dir_command(args, run)
    elif args.command in ("eval", "video") and args.refine is not None:
        _refined_entry_command(args)
    elif args.command == "eval":
        e = model_info(args.name, root=root)
        res = evaluate(
            args.name,
            episodes=args.episodes,
            seed=args.seed,
            root=root,
            workers=args.workers,
            progress=sys.stderr.isatty(),
        )
        print(
            f"{args.name}: success {_pct(res.success)} ± {100 * res.success_ci95:.0f} over "
            f"{len(res.episodes)} episodes (seed {res.seed}); recorded: {_success(e)} "
            f"({(e.evaluation or {}).get('episodes', '?')} episodes, seed "
            f"{(e.evaluation or {}).get('seed', '?')})"
        )
    elif args.command == "video":
        out = args.out or Path(args.name.replace("/", "__") + ".gif")
        res = record_video(args.name, out, episodes=args.episodes, seed=args.seed, root=root,
                           frame_skip=args.frame_skip, progress=sys.stderr.isatty())
        _wrote(out, res, args.name)
    elif args.command == "verify":
        return _verify_all(args.names or list_models(root=root), root)
    elif args.command == "migrate":
        names = migrate_registry(args.root_dir.expanduser().resolve())
        for n in names:
            verify(n, root=args.root_dir)
            print(f"migrated and verified  {n}")
        if not names:
            print(f"{args.root_dir} is already in format 2; nothing to do")
    elif args.command == "table":
        table = markdown_table(root=root)
        if args.update is None:
            print(table)
        else:
            update_doc(args.update, table)
            print(f"updated {args.update}")
    return 0


def _verify_all(names: list[str], root: Any) -> int:
    """Verifies every entry of `names`, printing `ok` or the reason for each; 1 if any failed.
    Every entry is checked, so one bad entry never hides another."""
    failed = 0
    for name in names:
        try:
            verify(name, root=root)
        except (ZooError, ValueError, OSError) as e:
            failed += 1
            print(f"FAILED  {name}: {e}", file=sys.stderr)
        else:
            print(f"ok  {name}")
    if failed:
        print(f"error: {failed} of {len(names)} entries failed verification.", file=sys.stderr)
    return int(failed > 0)


def _check_refine_flags(args: argparse.Namespace) -> None:
    """Refuses `--budget`, `--refine-metric` or `--refine-steps` without `--refine`."""
    given = [f for f in ("budget", "refine_metric", "refine_steps") if getattr(args, f) is not None]
    if given and args.refine is None:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise ValueError(f"{flags} only apply to a refinement: add --refine natural.")


def _refined(args: argparse.Namespace, agent: Any) -> tuple[AbstractPolicy, str]:
    """The natural-gradient refinement `--refine` asks for, of `agent`'s flow by its critic,
    and how to name it."""
    budget = DEFAULT_BUDGET if args.budget is None else args.budget
    metric = args.refine_metric or "fisher"
    steps = 1 if args.refine_steps is None else args.refine_steps
    policy = natural_gradient_policy(agent, refinement_metric(metric), budget, steps)
    label = (f"natural-gradient refinement ({metric} metric, budget {budget:g}, {steps} "
             f"step{'s' * (steps > 1)})")
    return policy, label


def _acting(args: argparse.Namespace, run: TrainedRun) -> tuple[AbstractPolicy, str]:
    """The run's policy, or its refinement with `--refine`; with what it is."""
    what = f"{run.run_dir.name} (step {run.step}, training seed {run.seed})"
    if args.refine is None:
        return run.policy, what
    try:
        policy, label = _refined(args, run.agent)
    except TypeError as e:  # an agent without a behaviour flow and a critic
        raise ValueError(str(e)) from None
    return policy, f"{what}, {label}"


def _refined_entry_command(args: argparse.Namespace) -> None:
    """`eval`/`video --refine` of a zoo entry: only an entry that ships its critic has one."""
    entry = model_info(args.name, root=args.root)
    if not entry.has_agent:
        raise ValueError(
            f"--refine needs a critic, and zoo entry {args.name!r} ships its policy only (no "
            "critic). Refine a run directory that has one instead, e.g. the recipes/offline.py "
            "run the entry was trained in: python -m fidec_zoo.zoo eval RUN_DIR --refine "
            "natural --budget 0.001.")
    policy, label = _refined(args, load_agent(args.name, root=args.root))
    what, seed = f"{args.name}, {label}", _seed(entry, args.seed)
    if args.command == "video":
        out = args.out or Path(args.name.replace("/", "__") + "-natural.gif")
        res = envs.record_video(policy, entry.env_name, out, episodes=args.episodes, seed=seed,
                                frame_skip=args.frame_skip, progress=sys.stderr.isatty())
        _wrote(out, res, what)
        return
    recorded = int((entry.evaluation or {}).get("episodes", DEFAULT_EVAL_EPISODES))
    episodes = recorded if args.episodes is None else args.episodes
    res = envs.evaluate(policy, entry.env_name, episodes=episodes, seed=seed,
                        workers=args.workers, progress=sys.stderr.isatty())
    print(f"{what}: success {_pct(res.success)} ± {100 * res.success_ci95:.0f} over "
          f"{len(res.episodes)} episodes (seed {res.seed}); the entry's own policy: "
          f"{_success(entry)}")


def _trained_run(args: argparse.Namespace) -> TrainedRun | None:
    """The run directory `args.name` names, loaded; `None` for an entry name."""
    if Path(args.name).expanduser().is_dir():
        return load_run(args.name, step=args.step, seed=args.run_seed)
    if args.step is not None or args.run_seed is not None:
        raise ValueError(
            f"--step and --run-seed choose a run directory's checkpoint; {args.name!r} is not a "
            "directory (zoo entries hold one policy)."
        )
    return None


def _run_dir_command(args: argparse.Namespace, run: TrainedRun) -> None:
    """`eval`/`video` of a run's checkpoint, by the protocol registering it would use."""
    policy, what = _acting(args, run)
    seed = DEFAULT_EVAL_SEED if args.seed is None else args.seed
    if args.command == "video":
        tag = "" if args.refine is None else "-natural"
        out = args.out or Path(f"{run.run_dir.name}-{run.step}{tag}.gif")
        res = envs.record_video(policy, run.env_name, out, episodes=args.episodes, seed=seed,
                                frame_skip=args.frame_skip, progress=sys.stderr.isatty())
        _wrote(out, res, what)
        return
    episodes = DEFAULT_EVAL_EPISODES if args.episodes is None else args.episodes
    res = envs.evaluate(policy, run.env_name, episodes=episodes, seed=seed,
                        workers=args.workers, progress=sys.stderr.isatty())
    row = _eval_rows(run.log_dir / "eval.csv").get(run.step)
    trained = "trained policy's " if args.refine is not None else ""
    during = "" if row is None else (
        f"; {trained}training eval at this step: {_pct(float(row['success']))} "
        f"({row.get('episodes', '?')} episodes)")
    print(f"{what} on {run.env_name}: success {_pct(res.success)} ± "
          f"{100 * res.success_ci95:.0f} over {len(res.episodes)} episodes (evaluation seed "
          f"{res.seed}){during}")


def _wrote(out: Path, res: EvalResult, what: str) -> None:
    solved = sum(int(ep["success"]) for ep in res.episodes)
    print(f"wrote {out}: {len(res.episodes)} episode(s) of {what} (evaluation seed {res.seed}), "
          f"{solved} solved")
