"""`python -m fidec_zoo.zoo list|info|eval|video|verify|table`: the zoo from the command line.

`eval` and `video` also take a `recipes/offline.py` run directory in place of an entry name, to
measure or watch any checkpoint the run kept (`--step`), finished or not. With `--refine natural`
they act with the closed-form natural-gradient refinement of the behaviour flow by the critic
(`fidec_zoo.refinement`) instead of the trained policy: a run directory, or an entry that ships
its agent."""

import dataclasses
import json
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

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


_ROOT_HELP = ("zoo root searched first (then $FIDEC_ZOO_HOME, the packaged zoo, the "
              "repository's checkpoints/)")
_NAME_HELP = "entry name, or a recipes/offline.py run directory"


def _positional(metavar: str, help: str) -> Any:
    return tyro.conf.arg(metavar=metavar, help=help)


@dataclasses.dataclass(frozen=True)
class _Command:
    """What every command takes: `--root` is also accepted after the command's name (`table
    --root checkpoints`), where it overrides one given before it."""

    root: Annotated[str | None, tyro.conf.arg(help=_ROOT_HELP)] = dataclasses.field(
        default=None, kw_only=True)


@dataclasses.dataclass(frozen=True)
class ListEntries(_Command):
    """List entries: recorded success, networks, training steps and time."""

    pattern: Annotated[str, tyro.conf.Positional,
                       _positional("PATTERN", "shell-style pattern, e.g. 'fidec/*'")] = "*"


@dataclasses.dataclass(frozen=True)
class Info(_Command):
    """An entry's registry record, summarised."""

    name: Annotated[str, tyro.conf.Positional, _positional("NAME", "entry name")]
    json: Annotated[bool, tyro.conf.arg(help="print the full record as JSON")] = False


@dataclasses.dataclass(frozen=True)
class _Acting(_Command):
    """What eval and video take: an entry or a run directory's checkpoint, acting with its
    policy or (`--refine natural`) with the critic's refinement of its behaviour flow."""

    name: Annotated[str, tyro.conf.Positional, _positional("NAME", _NAME_HELP)]
    seed: Annotated[int | None, tyro.conf.arg(
        help=f"evaluation seed (None: the recorded one, {DEFAULT_EVAL_SEED} for a run)")] = None
    step: Annotated[int | None, tyro.conf.arg(
        help="run directory only: its checkpoint to load (None: the latest)")] = None
    run_seed: Annotated[int | None, tyro.conf.arg(
        help="run directory only: which seed of a --seeds N run")] = None
    refine: Annotated[Literal["natural"] | None, tyro.conf.arg(
        help="act with the behaviour flow moved by the critic's closed-form natural-gradient "
        "step (the FiDec paper's eq. 54), not the trained policy; needs a run directory or an "
        "entry that ships its critic")] = None
    budget: Annotated[float | None, tyro.conf.arg(
        help=f"--refine: the step's d^T G d / action_dim (None: {DEFAULT_BUDGET}, FiDec's "
        "target divergence)")] = None
    refine_metric: Annotated[Literal[tuple(METRICS)] | None, tyro.conf.arg(
        help="--refine: the metric G (None: fisher, FisherMetric())")] = None
    refine_steps: Annotated[int | None, tyro.conf.arg(
        help="--refine: linearisations of the critic (None: 1)")] = None


@dataclasses.dataclass(frozen=True)
class Eval(_Acting):
    """Re-evaluate an entry (default: its recorded protocol) or a run's checkpoint."""

    episodes: Annotated[int | None, tyro.conf.arg(
        help=f"episodes to evaluate (None: the recorded protocol's, {DEFAULT_EVAL_EPISODES} for "
        "a run)")] = None
    workers: Annotated[int, tyro.conf.arg(
        help="processes that step the envs, by default min(CPUs, 4)")] = default_eval_workers()


@dataclasses.dataclass(frozen=True)
class Video(_Acting):
    """Render an entry's (or a run checkpoint's) first evaluation episodes to a GIF."""

    out: Annotated[Path | None, tyro.conf.arg(
        help="GIF to write (None: <name with / as __>.gif here; for a run, <run dir "
        "name>-<step>.gif)")] = None
    episodes: Annotated[int, tyro.conf.arg(
        help="how many of the evaluation's first episodes the GIF shows")] = 1
    frame_skip: Annotated[int, tyro.conf.arg(help="keep every N-th frame")] = 1


@dataclasses.dataclass(frozen=True)
class Verify(_Command):
    """Check the sha256 of entries (default: all), reporting every bad one."""

    names: Annotated[tuple[str, ...], tyro.conf.Positional,
                     _positional("[NAME ...]", "entries to check (default: all)")] = ()


@dataclasses.dataclass(frozen=True)
class Migrate:
    """Rewrite a format-1 registry (before typed configs) as format 2 in place, then verify
    every entry."""

    root_dir: Annotated[Path, tyro.conf.Positional,
                        _positional("ROOT", "the directory of registry.json")]


@dataclasses.dataclass(frozen=True)
class Table(_Command):
    """Print the markdown table of entries (docs/zoo.md); with --root, of that root's entries
    only."""

    update: Annotated[Path | None, tyro.conf.arg(
        metavar="FILE", help="rewrite the table between the zoo-table markers of FILE "
        "instead")] = None


Command = (Annotated[ListEntries, tyro.conf.subcommand("list")]
           | Annotated[Info, tyro.conf.subcommand("info")]
           | Annotated[Eval, tyro.conf.subcommand("eval")]
           | Annotated[Video, tyro.conf.subcommand("video")]
           | Annotated[Verify, tyro.conf.subcommand("verify")]
           | Annotated[Migrate, tyro.conf.subcommand("migrate")]
           | Annotated[Table, tyro.conf.subcommand("table")])


@dataclasses.dataclass(frozen=True)
class _Cli:
    """Pretrained fidec_zoo policies."""

    command: Annotated[Command, tyro.conf.arg(name="")]
    root: Annotated[str | None, tyro.conf.arg(help=_ROOT_HELP)] = None


def main(argv: list[str] | None = None) -> int:
    cli = tyro.cli(_Cli, args=sys.argv[1:] if argv is None else list(argv),
                   prog="python -m fidec_zoo.zoo", config=(tyro.conf.OmitSubcommandPrefixes,))
    args = cli.command
    if isinstance(args, _Command) and args.root is None:
        args = dataclasses.replace(args, root=cli.root)
    try:
        return _run(args)
    except (ZooError, FileNotFoundError, ValueError, RenderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `list | head` stopped reading
        return reader_gone()


def _run(args: Any) -> int:
    root = getattr(args, "root", None)
    if isinstance(args, _Acting):
        _check_refine_flags(args)
    if isinstance(args, ListEntries):
        names = list_models(args.pattern, root=root)
        width = max([len(n) for n in names] + [5])
        for n in names:
            e = model_info(n, root=root)
            episodes = (e.evaluation or {}).get("episodes")
            measured = _success(e) + (f" ({episodes} ep)" if episodes else "")
            print(f"{n:<{width}}  {measured:<17} {_networks(e):<6} {_training(e.training)}")
        if not names:
            print(f"no entries match {args.pattern!r}", file=sys.stderr)
    elif isinstance(args, Info):
        entry = model_info(args.name, root=root)
        print(json.dumps(entry.to_dict(), indent=2) if args.json else entry_card(entry))
    elif isinstance(args, _Acting) and (run := _trained_run(args)) is not None:
        _run_dir_command(args, run)
    elif isinstance(args, _Acting) and args.refine is not None:
        _refined_entry_command(args)
    elif isinstance(args, Eval):
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
    elif isinstance(args, Video):
        out = args.out or Path(args.name.replace("/", "__") + ".gif")
        res = record_video(args.name, out, episodes=args.episodes, seed=args.seed, root=root,
                           frame_skip=args.frame_skip, progress=sys.stderr.isatty())
        _wrote(out, res, args.name)
    elif isinstance(args, Verify):
        return _verify_all(args.names or list_models(root=root), root)
    elif isinstance(args, Migrate):
        names = migrate_registry(args.root_dir.expanduser().resolve())
        for n in names:
            verify(n, root=args.root_dir)
            print(f"migrated and verified  {n}")
        if not names:
            print(f"{args.root_dir} is already in format 2; nothing to do")
    elif isinstance(args, Table):
        table = markdown_table(root=root)
        if args.update is None:
            print(table)
        else:
            update_doc(args.update, table)
            print(f"updated {args.update}")
    return 0


def _verify_all(names: Sequence[str], root: Any) -> int:
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


def _check_refine_flags(args: _Acting) -> None:
    """Refuses `--budget`, `--refine-metric` or `--refine-steps` without `--refine`."""
    given = [f for f in ("budget", "refine_metric", "refine_steps") if getattr(args, f) is not None]
    if given and args.refine is None:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise ValueError(f"{flags} only apply to a refinement: add --refine natural.")


def _refined(args: _Acting, agent: Any) -> tuple[AbstractPolicy, str]:
    """The natural-gradient refinement `--refine` asks for, of `agent`'s flow by its critic,
    and how to name it."""
    budget = DEFAULT_BUDGET if args.budget is None else args.budget
    metric = args.refine_metric or "fisher"
    steps = 1 if args.refine_steps is None else args.refine_steps
    policy = natural_gradient_policy(agent, refinement_metric(metric), budget, steps)
    label = (f"natural-gradient refinement ({metric} metric, budget {budget:g}, {steps} "
             f"step{'s' * (steps > 1)})")
    return policy, label


def _acting(args: _Acting, run: TrainedRun) -> tuple[AbstractPolicy, str]:
    """The run's policy, or its refinement with `--refine`; with what it is."""
    what = f"{run.run_dir.name} (step {run.step}, training seed {run.seed})"
    if args.refine is None:
        return run.policy, what
    try:
        policy, label = _refined(args, run.agent)
    except TypeError as e:  # an agent without a behaviour flow and a critic
        raise ValueError(str(e)) from None
    return policy, f"{what}, {label}"


def _refined_entry_command(args: Eval | Video) -> None:
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
    if isinstance(args, Video):
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


def _trained_run(args: _Acting) -> TrainedRun | None:
    """The run directory `args.name` names, loaded; `None` for an entry name."""
    if Path(args.name).expanduser().is_dir():
        return load_run(args.name, step=args.step, seed=args.run_seed)
    if args.step is not None or args.run_seed is not None:
        raise ValueError(
            f"--step and --run-seed choose a run directory's checkpoint; {args.name!r} is not a "
            "directory (zoo entries hold one policy)."
        )
    return None


def _run_dir_command(args: Eval | Video, run: TrainedRun) -> None:
    """`eval`/`video` of a run's checkpoint, by the protocol registering it would use."""
    policy, what = _acting(args, run)
    seed = DEFAULT_EVAL_SEED if args.seed is None else args.seed
    if isinstance(args, Video):
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
