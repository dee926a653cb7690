"""Arms compared over tasks and seeds with rliable (`python -m fidec_zoo.report compare`).

Run directories of `recipes/offline.py` are grouped into **arms** (by recipe, by metric, or by an
explicit label) and **tasks** (their environment). Each training seed gives two scores: its
**final** success (the final evaluation in `summary.json`) and its **AUC**, the area under its
learning curve in `eval.csv` divided by the span of steps, i.e. the step-weighted mean success
over training (so a run that learns earlier scores higher at equal final success).

For each score, per task and aggregated over tasks, the report gives the IQM and the mean of each
arm and the probability of improvement P(X > Y) of each pair of arms, with stratified bootstrap
confidence intervals over seeds: rliable (Agarwal et al., 2021), the standard for few-seed RL
evaluation. A difference is **resolved** by the data when the CI of P(X > Y) excludes 0.5;
otherwise the seeds cannot tell the arms apart, whatever the point estimates say. Seeds that
separate completely give a CI of [1, 1] however few they are, so a verdict also needs enough
seeds that equal arms would separate so by chance less often than the CI's miss rate
(`Improvement.chance_separation`: 4 seeds per arm at 95%).

With `phase="online"` (`--phase online`) the report compares the **online fine-tuning** phase
of `recipes/online.py` run directories (their `online/`): steps count environment transitions,
and two more scores come in, **before** (the evaluation at transition 0, i.e. the policy that
fine-tuning starts from) and **gain** (final minus before).

A run trained with `--seeds N` counts as N seeds. The comparison refuses, saying what to do:
unfinished runs named directly (found inside a given directory, they are left out with a
warning), arms without runs on every task, one arm mixing configurations on a task, the same
seed twice, and runs of one task trained for different steps, evaluated at different steps or
on different data.
"""

import dataclasses
import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import tyro

from ._durable import atomic_write
from .report import _expand, _save, _subplots, read_csv

__all__ = ["AGGREGATE", "ARM_BY", "PHASES", "SCORES", "Comparison", "CompareError",
           "Improvement", "Interval", "SeedRun", "compare", "format_markdown", "load_seeds",
           "main", "plot", "plot_curves"]

ArmBy = Literal["agent", "metric", "label"]
ARM_BY: tuple[ArmBy, ...] = ("agent", "metric", "label")
Phase = Literal["offline", "online"]
PHASES: tuple[Phase, ...] = ("offline", "online")
#: The task name of results aggregated over every task.
AGGREGATE = "all tasks"
#: The scores of each phase; an online phase also has its starting point and its gain.
SCORES: dict[Phase, tuple[str, ...]] = {"offline": ("final", "auc"),
                                        "online": ("before", "final", "gain", "auc")}
_SCORE_TITLES = {"final": "Final success", "auc": "Area under the learning curve",
                 "before": "Success before fine-tuning (transition 0)",
                 "gain": "Gain from fine-tuning (final − before)"}
#: The online phase's subdirectory of a run dir (`fidec_zoo.train._online.PHASE`).
ONLINE = "online"
#: Identity fields that only chose defaults (the configs themselves are compared) or vary by seed.
_NAMING = ("recipe", "metric", "hparams", "preset", "seed", "seeds", "env")


class CompareError(ValueError):
    """Run directories that cannot be compared as given; the message says what to do."""


class UnfinishedRunError(CompareError):
    """A run directory whose job has not finished (no summary.json of its last step)."""


@dataclasses.dataclass(frozen=True)
class SeedRun:
    """One training seed of a finished run: its arm and task, its final success, and its
    learning curve (success at each evaluation step)."""

    arm: str
    task: str
    seed: int
    final: float
    steps: tuple[int, ...]
    curve: tuple[float, ...]
    run_dir: Path
    config: str  # the run's configuration less its naming fields and seed (JSON), for checks
    data: str  # its dataset settings (JSON): one task's runs must share them
    before: float | None = None  # online phase: the evaluation at transition 0
    summary: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def auc(self) -> float:
        """Area under the learning curve over the span of its evaluation steps (its one
        evaluation if it has one)."""
        if len(self.steps) == 1:
            return self.curve[0]
        return float(np.trapezoid(self.curve, self.steps) / (self.steps[-1] - self.steps[0]))

    def score(self, kind: str) -> float:
        if kind in ("before", "gain") and self.before is None:
            raise CompareError(f"{self.run_dir}: no evaluation at transition 0, so no "
                               f"{kind!r} score.")
        return {"final": self.final, "auc": self.auc, "before": self.before,
                "gain": self.final - (self.before or 0.0)}[kind]


# ---- reading run directories -------------------------------------------------------------------


def _arm_name(job: dict[str, Any], arm_by: ArmBy, run_dir: Path) -> str:
    """The arm of a run: `agent` is the recipe with a swapped metric and a non-default
    hyperparameter set (`fidec`, `fidec-l2`, `fidec-paper`, as run dirs are named); `metric` is
    the metric the agent uses (`fisher`, `l2`), with a non-default hyperparameter set."""
    from .recipes import default_hparams  # here: fidec_zoo.recipes imports JAX

    hparams = job.get("hparams")
    suffix = f"-{hparams}" if hparams and hparams != default_hparams(job.get("preset", "cpu")) \
        else ""
    if arm_by == "agent":
        metric = f"-{job['metric']}" if job.get("metric") else ""
        return f"{job['recipe']}{metric}{suffix}"
    metric = job.get("agent", {}).get("metric")
    if not isinstance(metric, dict):
        raise CompareError(f"{run_dir}: agent {job['recipe']!r} has no metric, so --arm-by "
                           "metric cannot place it; use --arm-by agent or label.")
    name = metric["type"].rpartition(":")[2]
    return name.removesuffix("Metric").lower() + suffix


def _summary(folder: Path) -> dict[str, Any]:
    """The `summary.json` in `folder`, or `{}` when there is none (yet) or it is unreadable."""
    try:
        return json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _unfinished(run_dir: Path, summary: dict[str, Any], steps: int) -> str | None:
    """Why `run_dir` is not a finished run of `steps` steps, or None if it is one."""
    if summary.get("steps") == steps:
        return None
    evals = read_csv(run_dir / "eval.csv") or read_csv(run_dir / "seed_0" / "eval.csv")
    at = f", its last evaluation at step {int(evals[-1]['step'])}" if evals else ""
    done = f"summary.json is of step {summary['steps']}" if "steps" in summary else \
        "it has no summary.json"
    return (f"{run_dir} is unfinished: its job trains {steps} steps and {done}{at}. Finish it "
            f"with `python recipes/offline.py --config {run_dir / 'config.json'}` (it resumes), "
            "or leave it out")


def _seed_runs(run_dir: Path, arm_by: ArmBy, label: str | None) -> list[SeedRun]:
    """The seeds of one run directory; `CompareError` if it is unfinished or unreadable."""
    try:
        stored = json.loads((run_dir / "config.json").read_text())
        job = stored["job"]
    except (OSError, ValueError, KeyError) as e:
        raise CompareError(f"{run_dir}: cannot read the job in its config.json ({e}); it was "
                           "not written by this version of recipes/offline.py.") from None
    summary = _summary(run_dir)
    why = _unfinished(run_dir, summary, job["train"]["steps"])
    if why is not None:
        raise UnfinishedRunError(why)
    arm = label if label is not None else _arm_name(job, arm_by, run_dir)
    identity = stored.get("identity", {})
    config = json.dumps({k: v for k, v in identity.items() if k not in _NAMING}, sort_keys=True)
    seeds = job.get("seeds", 1)
    finals = [summary] if seeds == 1 else summary.get("seeds", [])
    if len(finals) != seeds:
        raise CompareError(f"{run_dir}: summary.json has {len(finals)} per-seed results for "
                           f"--seeds {seeds}; rerun its command to rewrite it.")
    out = []
    for i, final in enumerate(finals):
        csv_dir = run_dir if seeds == 1 else run_dir / f"seed_{i}"
        rows = read_csv(csv_dir / "eval.csv")
        if not rows:
            raise CompareError(f"{csv_dir / 'eval.csv'} is missing or empty: the run did not "
                               "evaluate (--eval.every 0?), so it has no learning curve.")
        out.append(SeedRun(
            arm=arm, task=job["env"], seed=job["seed"] + i, final=float(final["success"]),
            steps=tuple(int(r["step"]) for r in rows),
            curve=tuple(float(r["success"]) for r in rows), run_dir=run_dir, config=config,
            data=json.dumps(identity.get("data"), sort_keys=True)))
    return out


#: Online settings that do not change what is trained (how it is logged, saved or parallelised).
_ONLINE_NAMING = ("log_every", "checkpoint_every", "workers")


def _online_dir(run_dir: Path) -> Path:
    """The online phase of a run dir: its `online/`, or the run dir itself when it is one (a
    fine-tuning run given its own `--run-dir` holds nothing else)."""
    return run_dir if run_dir.name == ONLINE and not (run_dir / ONLINE).is_dir() \
        else run_dir / ONLINE


def _is_online_phase(run_dir: Path) -> bool:
    """Whether `run_dir` is itself the `online/` phase of a recipes/online.py run."""
    if run_dir.name != ONLINE:
        return False
    try:
        return "online" in json.loads((run_dir / "config.json").read_text()).get("job", {})
    except (OSError, ValueError, AttributeError):
        return False


def _online_seed_run(run_dir: Path, arm_by: ArmBy, label: str | None) -> SeedRun:
    """The fine-tuning phase of one run dir; `CompareError` if it is unfinished or unreadable."""
    from .offline import identity_of

    phase = _online_dir(run_dir)
    try:
        stored = json.loads((phase / "config.json").read_text())
        job, online = stored["job"]["offline"], stored["job"]["online"]
    except (OSError, ValueError, KeyError) as e:
        raise CompareError(f"{phase}: cannot read the online job in its config.json ({e}); "
                           "is it the run dir of a recipes/online.py run?") from None
    summary = _summary(phase)
    if summary.get("env_steps") != online["steps"]:
        done = f"summary.json is of {summary['env_steps']}" if "env_steps" in summary else \
            "it has no summary.json"
        raise UnfinishedRunError(
            f"{phase} is unfinished: its job collects {online['steps']} transitions and {done}. "
            f"Finish it with `python recipes/online.py {' '.join(stored.get('argv', []))}` (it "
            "resumes), or leave it out")
    rows = read_csv(phase / "eval.csv")
    if not rows:
        raise CompareError(f"{phase / 'eval.csv'} is missing or empty: the online phase did not "
                           "evaluate, so it has no learning curve.")
    identity = {k: v for k, v in identity_of(job).items() if k not in _NAMING}
    identity.update(start_step=stored.get("start_step"),
                    online={k: v for k, v in online.items() if k not in _ONLINE_NAMING})
    return SeedRun(
        arm=label if label is not None else _arm_name(job, arm_by, run_dir), task=job["env"],
        seed=job["seed"], final=float(summary["success"]),
        steps=tuple(int(r["step"]) for r in rows), curve=tuple(float(r["success"]) for r in rows),
        run_dir=run_dir, config=json.dumps(identity, sort_keys=True),
        data=json.dumps(identity["data"], sort_keys=True),
        before=float(rows[0]["success"]) if int(rows[0]["step"]) == 0 else None, summary=summary)


def _labelled(entries: Sequence[str], arm_by: ArmBy) -> list[tuple[str | None, str]]:
    """`(label, path)` per entry: `NAME=PATH` entries with `--arm-by label`, paths otherwise."""
    if arm_by != "label":
        return [(None, e) for e in entries]
    out = []
    for entry in entries:
        name, eq, path = entry.partition("=")
        if not eq or not name or not path:
            raise CompareError(f"{entry!r}: with --arm-by label every argument is "
                               "NAME=RUN_DIR (a run dir or a directory of them), e.g. "
                               "fisher=runs/sweep/fidec.")
        out.append((name, path))
    return out


def load_seeds(entries: Sequence[str], arm_by: ArmBy = "agent",
               phase: Phase = "offline") -> list[SeedRun]:
    """The seeds of the run directories `entries` (run dirs, directories of them, or with
    `arm_by="label"` `NAME=PATH`), of their offline training or their online fine-tuning
    (`phase`). A run found inside a given directory that is unfinished is left out with a
    warning; a run dir named directly raises `CompareError`."""
    if arm_by not in ARM_BY:
        raise CompareError(f"--arm-by {arm_by!r}: choose one of {list(ARM_BY)}.")
    if phase not in PHASES:
        raise CompareError(f"--phase {phase!r}: choose one of {list(PHASES)}.")
    seeds: list[SeedRun] = []
    for label, path in _labelled(entries, arm_by):
        try:
            # a fine-tuning run with its own --run-dir holds only online/: it is named too
            named_online = phase == "online" and (Path(path) / ONLINE / "config.json").is_file()
            found = [(Path(path), True)] if named_online else _expand([path])
        except FileNotFoundError as e:
            raise CompareError(f"{e} Pass run directories of recipes/offline.py, or a "
                               "directory holding them (a sweep root).") from None
        for run_dir, named in found:
            if phase == "online" and not (_online_dir(run_dir) / "config.json").is_file():
                if named:
                    raise CompareError(f"{run_dir} has no online phase ({ONLINE}/config.json): "
                                       "it is not a recipes/online.py run.")
                continue  # an offline run beside the fine-tuned ones
            if phase == "offline" and _is_online_phase(run_dir):
                if named:
                    raise CompareError(f"{run_dir} is the online phase of a recipes/online.py "
                                       "run: compare it with --phase online.")
                continue  # a fine-tuning run without an offline phase of its own
            try:
                seeds += [_online_seed_run(run_dir, arm_by, label)] if phase == "online" \
                    else _seed_runs(run_dir, arm_by, label)
            except UnfinishedRunError as e:
                if named:
                    raise
                warnings.warn(f"left out: {e}.", stacklevel=2)
    if not seeds:
        raise CompareError("no finished run among the given directories; wait for them to "
                           "finish, or pass finished ones.")
    return seeds


# ---- the grid of arms x tasks ------------------------------------------------------------------


def _grid(seeds: Sequence[SeedRun]) -> dict[tuple[str, str], list[SeedRun]]:
    """Seeds by (arm, task), in the order of first appearance, checked for a fair comparison."""
    grid: dict[tuple[str, str], list[SeedRun]] = {}
    for s in seeds:
        cell = grid.setdefault((s.arm, s.task), [])
        twin = next((t for t in cell if t.seed == s.seed), None)
        if twin is not None:
            raise CompareError(f"seed {s.seed} of arm {s.arm!r} on {s.task} is in both "
                               f"{twin.run_dir} and {s.run_dir}; a seed counts once, so pass "
                               "only one of them.")
        if cell and cell[0].config != s.config:
            raise CompareError(
                f"arm {s.arm!r} on {s.task} mixes configurations: {cell[0].run_dir} and "
                f"{s.run_dir} differ in {_differences(cell[0].config, s.config)}. An arm is one "
                "configuration; pass one of them, or name arms with --arm-by label.")
        cell.append(s)
    arms = list(dict.fromkeys(a for a, _ in grid))
    tasks = list(dict.fromkeys(t for _, t in grid))
    for arm in arms:
        missing = [t for t in tasks if (arm, t) not in grid]
        if missing:
            raise CompareError(f"arm {arm!r} has no finished run on {missing}, which other arms "
                               "have: every arm needs runs on every task. Finish or add them, "
                               "or leave those tasks' runs out.")
    for task in tasks:
        runs = [s for a in arms for s in grid[a, task]]
        for what in (lambda s: f"evaluated at steps {list(s.steps)}",
                     lambda s: f"trained on data {s.data}"):
            other = next((s for s in runs if what(s) != what(runs[0])), None)
            if other is not None:
                raise CompareError(
                    f"on {task} the runs are not comparable: {runs[0].run_dir} was "
                    f"{what(runs[0])} and {other.run_dir} {what(other)}. Compare runs of equal "
                    "--steps, --eval.every and dataset settings (resume shorter ones with more "
                    "--steps).")
    return grid


def _differences(a: str, b: str) -> list[str]:
    """The top-level settings in which two configurations (JSON) differ, flattened one level."""
    x, y = json.loads(a), json.loads(b)
    out = []
    for key in sorted(x.keys() | y.keys()):
        u, v = x.get(key), y.get(key)
        if isinstance(u, dict) and isinstance(v, dict):
            out += [f"{key}.{k}" for k in sorted(u.keys() | v.keys()) if u.get(k) != v.get(k)]
        elif u != v:
            out.append(key)
    return out


# ---- statistics --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval."""

    point: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.point:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclasses.dataclass(frozen=True)
class ArmScore:
    """IQM and mean of one arm's seeds on one task (or all tasks), for one score."""

    arm: str
    task: str
    score: str
    seeds: int
    iqm: Interval
    mean: Interval


@dataclasses.dataclass(frozen=True)
class Improvement:
    """P(X > Y): the probability that a seed of arm `x` outscores one of arm `y` on a task
    (averaged over tasks for `AGGREGATE`), with its CI; `counts`: the seeds of `x` and of `y`
    (per task); `confidence`: the CI's coverage."""

    x: str
    y: str
    task: str
    score: str
    probability: Interval
    counts: tuple[int, int]
    confidence: float = 0.95

    @property
    def seeds(self) -> int:
        """The fewer seeds of the two arms."""
        return min(self.counts)

    @property
    def chance_separation(self) -> float:
        """How often n and m seeds of two *equal* arms separate completely by chance (every
        seed of one arm above every seed of the other): 2 / C(n + m, n). Separated seeds give
        P = 1 [1, 1] (or 0 [0, 0]) in the bootstrap however few they are, so a CI that
        excludes 0.5 means nothing unless this is below 1 - confidence (2 vs 2 seeds: 1/3;
        3 vs 3: 1/10; 4 vs 4: 1/35)."""
        return 2 / math.comb(sum(self.counts), self.counts[0])

    @property
    def resolved(self) -> bool:
        """Whether the CI excludes 0.5 with enough seeds for that to mean something: the data
        tell the arms apart."""
        return self.verdict.startswith("resolved")

    @property
    def verdict(self) -> str:
        if self.seeds < 2:
            return "not resolved (one seed: no interval)"
        if self.probability.low > 0.5:
            better = f"{self.x} > {self.y}"
        elif self.probability.high < 0.5:
            better = f"{self.y} > {self.x}"
        else:
            return "not resolved"
        if self.chance_separation >= 1 - self.confidence:
            return (f"not resolved ({self.counts[0]} vs {self.counts[1]} seeds: equal arms "
                    f"separate this completely {self.chance_separation:.0%} of the time)")
        return f"resolved: {better}"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Everything the report shows; `notes` are caveats the data call for (no aggregate over
    tasks, too few seeds)."""

    arms: tuple[str, ...]
    tasks: tuple[str, ...]
    scores: tuple[ArmScore, ...]
    improvements: tuple[Improvement, ...]
    reps: int
    confidence: float
    seed: int
    notes: tuple[str, ...]
    run_dirs: int
    phase: Phase = "offline"
    seeds: tuple[SeedRun, ...] = ()  # the seeds compared, arm by arm

    @property
    def kinds(self) -> tuple[str, ...]:
        """The scores compared (`SCORES` of the phase)."""
        return SCORES[self.phase]


def _bootstrap(data: dict[Any, Any], func: Callable[..., Any], reps: int, confidence: float,
               seed: int) -> dict[Any, list[Interval]]:
    """rliable's stratified bootstrap of `func` over `data` (name -> matrix, or pair of
    matrices for independent samples), as Intervals per output of `func`. rliable draws from
    NumPy's global generator whatever `random_state` it is given, so that generator is seeded
    here (and restored after) for results that repeat exactly."""
    from rliable import library as rly

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        points, intervals = rly.get_interval_estimates(
            data, func, reps=reps, confidence_interval_size=confidence)
    finally:
        np.random.set_state(state)
    out = {}
    for key in data:
        point = np.atleast_1d(points[key]).ravel()
        ci = np.asarray(intervals[key]).reshape(2, -1)
        out[key] = [Interval(float(p), float(lo), float(hi))
                    for p, lo, hi in zip(point, ci[0], ci[1])]
    return out


def _select(seeds: Sequence[SeedRun], arms: Sequence[str]) -> list[SeedRun]:
    """The seeds of `arms`, arm by arm in that order."""
    found = list(dict.fromkeys(s.arm for s in seeds))
    unknown = [a for a in arms if a not in found]
    if unknown:
        raise CompareError(f"--arms {unknown}: no such arm among the runs; their arms are "
                           f"{found}.")
    return [s for arm in arms for s in seeds if s.arm == arm]


def compare(seeds: Sequence[SeedRun], *, arms: Sequence[str] | None = None, reps: int = 2000,
            confidence: float = 0.95, seed: int = 0, phase: Phase = "offline") -> Comparison:
    """IQM and mean per arm, and P(X > Y) per pair of arms X before Y (`arms`, which also
    selects them, else the order they first appear), per task and over all tasks, on the
    scores of `phase` (`SCORES`: final and AUC; online also before and gain), with stratified
    bootstrap CIs (`reps` resamples, `confidence` coverage, bootstrap seed `seed`). The
    aggregate needs the same number of seeds on every task within each arm; without it the
    per-task results stand alone, and a note says why."""
    from rliable import metrics

    if reps < 100:
        raise CompareError(f"--reps must be >= 100 for a percentile interval, got {reps}.")
    grid = _grid(seeds if arms is None else _select(seeds, arms))
    arms = tuple(dict.fromkeys(a for a, _ in grid))
    tasks = tuple(dict.fromkeys(t for _, t in grid))
    uneven, few = _uneven_seeds(grid, arms, tasks), _few_seeds(grid)
    groups = [(t, (t,)) for t in tasks] + ([(AGGREGATE, tasks)] if uneven is None and
                                           len(tasks) > 1 else [])
    iqm_mean = lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])  # noqa: E731
    pairs = [(x, y) for i, x in enumerate(arms) for y in arms[i + 1:]]
    scores, improvements = [], []
    for kind in SCORES[phase]:
        for name, group in groups:
            matrices = {a: np.array([[s.score(kind) for s in sorted(grid[a, t],
                                                                     key=lambda s: s.seed)]
                                     for t in group]).T for a in arms}
            for arm, (iqm, mean) in _bootstrap(matrices, iqm_mean, reps, confidence,
                                               seed).items():
                scores.append(ArmScore(arm, name, kind, matrices[arm].shape[0], iqm, mean))
            if pairs:
                pairwise = {(x, y): (matrices[x], matrices[y]) for x, y in pairs}
                found = _bootstrap(pairwise, metrics.probability_of_improvement, reps,
                                   confidence, seed)
                improvements += [Improvement(x, y, name, kind, found[x, y][0],
                                             (matrices[x].shape[0], matrices[y].shape[0]),
                                             confidence)
                                 for x, y in pairs]
    run_dirs = len({s.run_dir for cell in grid.values() for s in cell})
    return Comparison(arms, tasks, tuple(scores), tuple(improvements), reps, confidence, seed,
                      tuple(n for n in (uneven, few) if n), run_dirs, phase,
                      tuple(s for a in arms for t in tasks for s in grid[a, t]))


#: Below this many seeds per arm and task, bootstrap intervals are too narrow to trust.
FEW_SEEDS = 5


def _uneven_seeds(grid: dict[tuple[str, str], list[SeedRun]], arms: Sequence[str],
                  tasks: Sequence[str]) -> str | None:
    """Why there is no aggregate over tasks, if an arm has unequal seeds over tasks (rliable's
    stratified bootstrap needs a seeds x tasks matrix per arm)."""
    counts = {a: [len(grid[a, t]) for t in tasks] for a in arms}
    uneven = {a: n for a, n in counts.items() if len(set(n)) > 1}
    if not uneven:
        return None
    return "no aggregate over tasks: " + "; ".join(
        f"arm {a} has " + ", ".join(f"{n} seeds on {t}" for n, t in zip(c, tasks))
        for a, c in uneven.items()) + " (the stratified bootstrap needs the same number of " \
        "seeds on every task within an arm)"


def _few_seeds(grid: dict[tuple[str, str], list[SeedRun]]) -> str | None:
    """A caveat when some arm has fewer than `FEW_SEEDS` seeds on a task."""
    fewest = min(len(cell) for cell in grid.values())
    if fewest >= FEW_SEEDS:
        return None
    return (f"as few as {fewest} seed{'s' if fewest != 1 else ''} per arm and task: a "
            "bootstrap over so few seeds gives "
            "intervals too narrow to trust (arms whose seeds do not overlap get P = 1 [1, 1] "
            f"however few they are), so read 'resolved' as tentative below {FEW_SEEDS} seeds")


# ---- output ------------------------------------------------------------------------------------


def format_markdown(c: Comparison) -> str:
    """The report: what was compared, a table of IQM and mean per score, and a table of the
    probabilities of improvement with their verdicts."""
    pct = f"{c.confidence:.0%}"
    if c.phase == "online":
        scores = (" of the online fine-tuning phase (`online/` of each run dir; steps count "
                  "environment transitions): **before** = the evaluation at transition 0, the "
                  "policy fine-tuning starts from; **final** = the last evaluation "
                  "(online/summary.json); **gain** = final − before; **AUC** = area under the "
                  "online learning curve (online/eval.csv) divided by its span of transitions")
    else:
        scores = (": **final** = success of the final evaluation (summary.json); **AUC** = area "
                  "under the learning curve (eval.csv) divided by its span of steps, the "
                  "step-weighted mean success over training")
    lines = [
        f"# Comparison of {', '.join(c.arms)}",
        "",
        f"{c.run_dirs} run directories; tasks: {', '.join(c.tasks)}. Scores per training seed"
        f"{scores}. Intervals: {pct} stratified bootstrap CIs over seeds (rliable, {c.reps} "
        f"resamples, bootstrap seed {c.seed}). IQM = interquartile mean. A difference is "
        "*resolved* when the CI of P(X > Y) excludes 0.5, and equal arms would separate that "
        f"completely by chance less than {1 - c.confidence:.0%} of the time (2 / C(n + m, n) "
        "for n and m seeds).",
    ]
    lines += [line for note in c.notes for line in ("", f"Note: {note}.")]
    if c.phase == "online":
        lines += _online_runs(c.seeds)
    for kind in c.kinds:
        lines += ["", f"## {_SCORE_TITLES[kind]}", "",
                  f"| task | arm | seeds | IQM [{pct} CI] | mean [{pct} CI] |",
                  "|---|---|---|---|---|"]
        lines += [f"| {s.task} | {s.arm} | {s.seeds} | {s.iqm} | {s.mean} |"
                  for s in c.scores if s.score == kind]
    if c.improvements:
        lines += ["", "## Probability of improvement", "",
                  f"| score | task | X | Y | P(X > Y) [{pct} CI] | verdict |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {i.score} | {i.task} | {i.x} | {i.y} | {i.probability} | {i.verdict} |"
                  for i in c.improvements]
    return "\n".join(lines) + "\n"


def _online_runs(seeds: Sequence[SeedRun]) -> list[str]:
    """Markdown lines: one row per fine-tuned seed, with its online episodes and speed (the
    online loop's acting-and-stepping and update rates, and its evaluations' env-bound rate)."""
    def cell(summary: dict[str, Any], key: str, fmt: str, unit: int = 1) -> str:
        value = summary.get(key)
        return "-" if value is None else format(value if unit == 1 else value / unit, fmt)

    lines = ["", "## Runs", "",
             "| arm | task | seed | before | final | transitions | online episodes | their "
             "success | env steps/s | updates/s | evaluation's env steps/s | wall time (min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in seeds:
        m = s.summary
        lines.append(
            f"| {s.arm} | {s.task} | {s.seed} | {s.before if s.before is not None else '-'} | "
            f"{s.final} | {cell(m, 'env_steps', ',')} | {cell(m, 'episodes', ',')} | "
            f"{cell(m, 'online_success', '.3f')} | {cell(m, 'env_steps_per_s', '.1f')} | "
            f"{cell(m, 'updates_per_s', '.1f')} | {cell(m, 'eval_env_steps_per_s', '.1f')} | "
            f"{cell(m, 'wall_time_s', '.1f', 60)} |")
    return lines


def _intervals(ax: Any, labels: Sequence[str], values: Sequence[Interval], title: str,
               reference: float | None = None, low: float = 0.0) -> None:
    """One panel: a horizontal CI bar and a point per label, on [low, 1]."""
    for row, value in enumerate(values):
        ax.barh(row, value.high - value.low, left=value.low, height=0.6, color=f"C{row}",
                alpha=0.6)
        ax.vlines(value.point, row - 0.3, row + 0.3, color="k")
    if reference is not None:
        ax.axvline(reference, color="grey", linestyle="--", linewidth=1)
    ax.set(yticks=range(len(labels)), title=title, xlim=(low - 0.02, 1.02))
    ax.set_yticklabels(labels, fontsize="small")
    ax.invert_yaxis()


def plot(c: Comparison, path: str | Path) -> Path:
    """Writes the figure: per task (and over all tasks) a row of panels, IQM and mean of each
    arm on each score, then P(X > Y) of each pair on each score (0.5 dashed)."""
    rows = list(dict.fromkeys(s.task for s in c.scores))
    columns = [(kind, stat) for kind in c.kinds for stat in ("iqm", "mean")]
    columns += [(kind, "P(X > Y)") for kind in c.kinds] if c.improvements else []
    bars = max(len(c.arms), len(c.arms) * (len(c.arms) - 1) // 2)
    fig, axes = _subplots(len(rows), len(columns),
                          figsize=(2.8 * len(columns), 0.4 + len(rows) * (0.9 + 0.3 * bars)))
    for r, task in enumerate(rows):
        for col, (kind, stat) in enumerate(columns):
            ax, title = axes[r, col], f"{task}\n{kind}: {stat}" if col == 0 else f"{kind}: {stat}"
            if stat == "P(X > Y)":
                found = [i for i in c.improvements if i.task == task and i.score == kind]
                _intervals(ax, [f"{i.x} > {i.y}" for i in found],
                           [i.probability for i in found], title, reference=0.5)
            else:
                found_s = [s for s in c.scores if s.task == task and s.score == kind]
                _intervals(ax, [s.arm for s in found_s],
                           [getattr(s, stat) for s in found_s], title,
                           low=-1.0 if kind == "gain" else 0.0)
    return _save(fig, path)


def plot_curves(c: Comparison, path: str | Path) -> Path:
    """Writes the learning curves: a panel per task, each arm's mean over its seeds as a line
    and each seed as a thin line of the same colour."""
    fig, axes = _subplots(1, len(c.tasks), figsize=(5.0 * len(c.tasks), 3.6))
    for ax, task in zip(axes[0], c.tasks):
        for i, arm in enumerate(c.arms):
            runs = [s for s in c.seeds if s.arm == arm and s.task == task]
            for s in runs:
                ax.plot(s.steps, s.curve, color=f"C{i}", alpha=0.3, linewidth=0.8)
            mean = np.mean([s.curve for s in runs], axis=0)  # one task's runs share their steps
            ax.plot(runs[0].steps, mean, color=f"C{i}", marker="o", markersize=3,
                    label=f"{arm} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        xlabel = "online transitions" if c.phase == "online" else "step"
        ax.set(title=task, xlabel=xlabel, ylabel="success", ylim=(-0.02, 1.02))
        ax.legend(fontsize="small")
    return _save(fig, path)


@dataclasses.dataclass(frozen=True)
class CompareArgs:
    """Compare arms of recipes/offline.py run directories over tasks and seeds with rliable: IQM
    and mean with stratified bootstrap CIs, and the probability of improvement of each pair of
    arms, on the final evaluation and on the area under the learning curve (and, with --phase
    online, on the success before fine-tuning and its gain). Writes DIR/compare.md,
    DIR/compare.png (the intervals) and DIR/curves.png (the learning curves) and prints the
    table."""

    run_dirs: Annotated[tuple[str, ...], tyro.conf.Positional,
                        tyro.conf.arg(metavar="RUN_DIR ...")]
    """Run directories or directories of them (a sweep root); with --arm-by label, NAME=PATH."""
    arm_by: ArmBy = "agent"
    """agent: recipe[-metric][-hparams] (fidec, deflow, fidec-paper); metric: fisher, l2; label."""
    arms: tuple[str, ...] | None = None
    """The arms to compare, in order: P(X > Y) for X before Y (None: every arm, as found)."""
    phase: Phase = "offline"
    """offline: the runs' training; online: their fine-tuning (online/ of each run dir)."""
    out: Annotated[Path, tyro.conf.arg(metavar="DIR")] = Path(".")
    """Where compare.md, compare.png and curves.png go."""
    reps: int = 2000
    """Bootstrap resamples."""
    confidence: float = 0.95
    """CI coverage."""
    seed: int = 0
    """Bootstrap seed."""


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m fidec_zoo.report compare RUN_DIRS... [--out DIR] [--arm-by ...]`."""
    args = tyro.cli(CompareArgs, args=sys.argv[1:] if argv is None else list(argv),
                    prog="python -m fidec_zoo.report compare")
    if not args.run_dirs:
        print("error: give the run directories to compare (RUN_DIR ...).", file=sys.stderr)
        return 2
    try:
        import rliable  # noqa: F401
    except ImportError:
        print("error: report compare needs rliable: pip install 'fidec_zoo[stats]'",
              file=sys.stderr)
        return 1
    try:
        with warnings.catch_warnings(record=True) as left_out:  # printed as plain lines below
            warnings.simplefilter("always", UserWarning)
            seeds = load_seeds(args.run_dirs, args.arm_by, args.phase)
        result = compare(seeds, arms=args.arms, reps=args.reps, confidence=args.confidence,
                         seed=args.seed, phase=args.phase)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for w in left_out:
        print(w.message, file=sys.stderr)
    text = format_markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "compare.md", text)
    print(text)
    print(f"wrote {args.out / 'compare.md'}, {plot(result, args.out / 'compare.png')} and "
          f"{plot_curves(result, args.out / 'curves.png')}")
    return 0
