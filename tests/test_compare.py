"""`python -m fidec_zoo.report compare` (`fidec_zoo.compare`) on synthetic run directories
whose answer is known by construction."""

import dataclasses
import json

import numpy as np
import pytest
import scipy.special
import scipy.stats

from fidec_zoo import compare, report
from fidec_zoo.configs import OnlineConfig, to_dict
from fidec_zoo.offline import CONFIG_FORMAT, default_job, identity
from fidec_zoo.online import OnlineJob

CUBE = "cube-single-play-singletask-task2-v0"
SCENE = "scene-play-singletask-task2-v0"
REPS = 200  # enough for the intervals below, which are exact or far from 0.5


def _run(path, agent, env, seed, curves, *, metric=None, hparams=None, hidden=None, steps=30,
         summary=True):
    """A finished run dir as recipes/offline.py writes it: config.json (the real job), one
    eval.csv per seed with `curves[i]` at steps 10, 20, ..., and summary.json whose final
    success per seed is the curve's last value. Several curves make a `--seeds N` run."""
    job = default_job(agent, env, metric=metric, hparams=hparams)
    agent_config = job.agent if hidden is None else dataclasses.replace(job.agent, hidden=hidden)
    job = dataclasses.replace(job, agent=agent_config, seed=seed, seeds=len(curves),
                              train=dataclasses.replace(job.train, steps=steps))
    path.mkdir(parents=True)
    config = {"format": CONFIG_FORMAT, "job": to_dict(job), "identity": identity(job),
              "seed": seed, "seeds": len(curves), "env": env}
    (path / "config.json").write_text(json.dumps(config, default=list))
    many = len(curves) > 1
    for i, curve in enumerate(curves):
        csv_dir = path / f"seed_{i}" if many else path
        csv_dir.mkdir(exist_ok=True)
        rows = [f"{10 * (k + 1)},{v},50" for k, v in enumerate(curve)]
        (csv_dir / "eval.csv").write_text("\n".join(["step,success,episodes", *rows]) + "\n")
    finals = [{"seed": seed + i, "success": c[-1]} for i, c in enumerate(curves)]
    if summary:
        data = {"steps": steps, "success": float(np.mean([c[-1] for c in curves])),
                **({"seeds": finals} if many else {})}
        (path / "summary.json").write_text(json.dumps(data))
    return path


def _arm(root, agent, finals_by_task, **kwargs):
    """One run dir per seed (0, 1, ...) and task: curves rising to the given final values."""
    for env, finals in finals_by_task.items():
        for seed, final in enumerate(finals):
            _run(root / agent / env / f"s{seed}", agent, env, seed, [[0.0, final / 2, final]],
                 **kwargs)
    return root / agent


def _find(c, kind, task, arm=None):
    if arm is None:
        (found,) = [i for i in c.improvements if i.score == kind and i.task == task]
    else:
        (found,) = [s for s in c.scores if s.score == kind and s.task == task and s.arm == arm]
    return found


def test_an_arm_better_by_construction_is_resolved(tmp_path):
    good = {CUBE: [0.8, 0.85, 0.9, 0.95, 0.7], SCENE: [0.6, 0.65, 0.7, 0.75, 0.9]}
    bad = {CUBE: [0.1, 0.2, 0.3, 0.0, 0.4], SCENE: [0.5, 0.2, 0.3, 0.1, 0.4]}
    seeds = compare.load_seeds([str(_arm(tmp_path, "fidec", good)),
                                str(_arm(tmp_path, "deflow", bad))])
    c = compare.compare(seeds, reps=REPS)
    assert c.arms == ("fidec", "deflow") and c.tasks == (CUBE, SCENE) and c.run_dirs == 20
    assert c.notes == ()  # five seeds each, on both tasks
    for kind in ("final", "auc"):
        for task in (CUBE, SCENE, compare.AGGREGATE):
            improvement = _find(c, kind, task)
            assert (improvement.x, improvement.y) == ("fidec", "deflow")
            assert improvement.probability.low > 0.5 and improvement.probability.point == 1.0
            assert improvement.resolved and improvement.verdict == "resolved: fidec > deflow"
    score = _find(c, "final", CUBE, "fidec")
    assert score.seeds == 5
    assert score.iqm.point == pytest.approx(scipy.stats.trim_mean(good[CUBE], 0.25))
    assert score.mean.point == pytest.approx(np.mean(good[CUBE]))
    assert score.iqm.low <= score.iqm.point <= score.iqm.high
    both = _find(c, "final", compare.AGGREGATE, "deflow")
    assert both.seeds == 5 and both.mean.point == pytest.approx(np.mean([*bad[CUBE], *bad[SCENE]]))
    # the other way round: resolved for the second arm
    flipped = compare.compare(seeds, arms=["deflow", "fidec"], reps=REPS)
    assert _find(flipped, "final", CUBE).verdict == "resolved: fidec > deflow"
    assert _find(flipped, "final", CUBE).probability.high < 0.5
    with pytest.raises(compare.CompareError, match="no such arm.*'fidec', 'deflow'"):
        compare.compare(seeds, arms=["fql"], reps=REPS)


def test_equal_arms_are_not_resolved(tmp_path):
    finals = {CUBE: [0.2, 0.5, 0.8, 0.4, 0.6]}
    runs = [str(_arm(tmp_path, "fidec", finals)), str(_arm(tmp_path, "deflow", finals))]
    c = compare.compare(compare.load_seeds(runs, "metric"), reps=REPS)
    assert c.arms == ("fisher", "l2") and c.tasks == (CUBE,)
    assert {i.task for i in c.improvements} == {CUBE}  # one task: no aggregate rows
    for kind in ("final", "auc"):
        improvement = _find(c, kind, CUBE)
        assert improvement.probability.point == 0.5
        assert improvement.probability.low < 0.5 < improvement.probability.high
        assert not improvement.resolved and improvement.verdict == "not resolved"
    text = compare.format_markdown(c)
    assert "| final | " + CUBE + " | fisher | l2 | 0.500 [" in text and "not resolved" in text


def test_area_under_the_curve_tells_apart_what_the_final_score_does_not(tmp_path):
    early, late = [0.5, 0.9, 0.9], [0.0, 0.1, 0.9]
    for seed in range(5):
        _run(tmp_path / "fast" / f"s{seed}", "fidec", CUBE, seed, [early])
        _run(tmp_path / "slow" / f"s{seed}", "deflow", CUBE, seed, [late])
    seeds = compare.load_seeds([str(tmp_path)])
    assert {s.arm: s.auc for s in seeds} == {"fidec": pytest.approx((7 + 9) / 20),
                                              "deflow": pytest.approx((0.5 + 5) / 20)}
    c = compare.compare(seeds, reps=REPS)
    assert _find(c, "final", CUBE).verdict == "not resolved"
    assert _find(c, "auc", CUBE).verdict == "resolved: fidec > deflow"


def test_a_multi_seed_run_dir_counts_as_its_seeds(tmp_path):
    _run(tmp_path / "fidec-5seeds", "fidec", CUBE, 10, [[0.0, v] for v in (0.9, 0.8, 0.7, 0.85,
                                                                           0.95)], steps=20)
    for seed in range(5):
        _run(tmp_path / "deflow" / f"s{seed}", "deflow", CUBE, seed, [[0.0, 0.1 * seed]],
             steps=20)
    seeds = compare.load_seeds([str(tmp_path)])
    assert sorted(s.seed for s in seeds if s.arm == "fidec") == [10, 11, 12, 13, 14]
    assert [s.final for s in seeds if s.arm == "fidec"] == [0.9, 0.8, 0.7, 0.85, 0.95]
    c = compare.compare(seeds, reps=REPS)
    assert _find(c, "final", CUBE, "fidec").seeds == 5
    assert _find(c, "final", CUBE).resolved


def test_arms_by_label_and_by_hyperparameter_set(tmp_path):
    _arm(tmp_path / "a", "fidec", {CUBE: [0.5, 0.6]})
    _arm(tmp_path / "b", "fidec", {CUBE: [0.5, 0.6]}, hparams="paper")
    by_agent = compare.load_seeds([str(tmp_path)])
    assert sorted({s.arm for s in by_agent}) == ["fidec", "fidec-paper"]
    by_metric = compare.load_seeds([str(tmp_path)], "metric")
    assert sorted({s.arm for s in by_metric}) == ["fisher", "fisher-paper"]
    labelled = compare.load_seeds([f"code={tmp_path / 'a'}", f"paper={tmp_path / 'b'}"], "label")
    assert [s.arm for s in labelled] == ["code", "code", "paper", "paper"]
    with pytest.raises(compare.CompareError, match="NAME=RUN_DIR"):
        compare.load_seeds([str(tmp_path / "a")], "label")


def test_runs_that_cannot_be_compared_say_what_to_do(tmp_path):
    done = _arm(tmp_path / "ok", "fidec", {CUBE: [0.5, 0.6]})
    unfinished = _run(tmp_path / "pending" / "later", "fidec", CUBE, 7, [[0.1]],
                      summary=False)
    with pytest.raises(compare.CompareError, match="unfinished.*no summary.json.*step 10.*"
                                                   "--config .*config.json.*leave it out"):
        compare.load_seeds([str(unfinished)])
    with pytest.warns(UserWarning, match="left out: .*later is unfinished"):
        assert len(compare.load_seeds([str(done), str(tmp_path / "pending")])) == 2
    with pytest.raises(compare.CompareError, match="no config.json"):
        compare.load_seeds([str(tmp_path / "nothing")])
    with pytest.raises(compare.CompareError, match="has no metric.*--arm-by agent"):
        compare.load_seeds([str(_run(tmp_path / "bc", "bc", CUBE, 0, [[0.0]]))], "metric")

    deflow_cube = _arm(tmp_path / "d", "deflow", {CUBE: [0.1, 0.2]})
    fidec_scene = _arm(tmp_path / "s", "fidec", {SCENE: [0.1, 0.2]})
    seeds = compare.load_seeds([str(done), str(fidec_scene), str(deflow_cube)])
    with pytest.raises(compare.CompareError, match=f"'deflow' has no finished run on "
                                                   f"\\['{SCENE}'\\].*every task"):
        compare.compare(seeds, reps=REPS)

    wide = _run(tmp_path / "wide", "fidec", CUBE, 5, [[0.0, 0.0, 0.3]], hidden=(256, 256))
    with pytest.raises(compare.CompareError, match="mixes configurations.*agent.hidden"):
        compare.compare(compare.load_seeds([str(done), str(wide)]), reps=REPS)
    twin = _run(tmp_path / "twin", "fidec", CUBE, 0, [[0.0, 0.0, 0.3]])
    with pytest.raises(compare.CompareError, match="seed 0 of arm 'fidec'.*counts once"):
        compare.compare(compare.load_seeds([str(done), str(twin)]), reps=REPS)
    longer = _run(tmp_path / "longer", "deflow", CUBE, 0, [[0.0, 0.1, 0.2, 0.3]], steps=40)
    with pytest.raises(compare.CompareError, match="not comparable.*evaluated at steps "
                                                   "\\[10, 20, 30\\].*--steps"):
        compare.compare(compare.load_seeds([str(done), str(longer)]), reps=REPS)


def test_uneven_seeds_across_tasks_skip_only_the_aggregate(tmp_path):
    runs = [str(_arm(tmp_path, "fidec", {CUBE: [0.9, 0.8, 0.7], SCENE: [0.9, 0.8]})),
            str(_arm(tmp_path, "deflow", {CUBE: [0.1, 0.2], SCENE: [0.1, 0.2]}))]
    c = compare.compare(compare.load_seeds(runs), reps=REPS)
    assert "arm fidec has 3 seeds on" in c.notes[0] and "as few as 2 seeds" in c.notes[1]
    assert {i.task for i in c.improvements} == {CUBE, SCENE}
    assert "Note: no aggregate over tasks" in compare.format_markdown(c)


def test_cli_writes_the_table_and_the_figure(tmp_path, capsys):
    _arm(tmp_path / "runs", "fidec", {CUBE: [0.8, 0.9, 0.7, 0.75]})
    _arm(tmp_path / "runs", "deflow", {CUBE: [0.1, 0.2, 0.3, 0.25]})
    out = tmp_path / "report"
    assert report.main(["compare", str(tmp_path / "runs"), "--out", str(out), "--reps",
                        str(REPS)]) == 0
    printed = capsys.readouterr().out
    assert "resolved: fidec > deflow" in printed and "## Area under the learning curve" in printed
    assert "Note: as few as 4 seeds" in printed
    assert (out / "compare.md").read_text() in printed
    assert (out / "compare.png").stat().st_size > 0 and (out / "curves.png").stat().st_size > 0
    assert report.main(["compare", str(tmp_path / "missing")]) == 1
    assert report.main(["compare", "--out", str(out)]) == 2  # no run dirs: usage error
    assert "error:" in capsys.readouterr().err
    assert report.main([str(tmp_path / "runs"), "--last", "1"]) == 0  # the summary still works


# ---- the online phase (recipes/online.py run dirs) ---------------------------------------------


def _online(path, agent, seed, curve, *, steps=300, finished=True, nested=False):
    """A fine-tuning run as recipes/online.py writes it from a source run dir (`--run-dir
    path`: the run dir holds only online/), or from scratch (`nested`: the offline run's files
    beside online/): online/config.json of the real job, online/eval.csv with `curve` at
    transitions 0, 100, ..., and online/summary.json of its last evaluation."""
    job = dataclasses.replace(default_job(agent, CUBE), seed=seed, run_dir=str(path))
    online = OnlineJob(job, OnlineConfig(steps=steps, log_every=100, eval_every=100))
    if nested:
        _run(path, agent, CUBE, seed, [[0.0, curve[0]]])
    phase = path / "online"
    phase.mkdir(parents=True)
    (phase / "config.json").write_text(json.dumps(
        {"job": to_dict(online), "argv": ["--from", f"src/{agent}-s{seed}"], "start_step": 30},
        default=list))
    rows = [f"{100 * k},{v},50" for k, v in enumerate(curve)]
    (phase / "eval.csv").write_text("\n".join(["step,success,episodes", *rows]) + "\n")
    if finished:
        (phase / "summary.json").write_text(json.dumps(
            {"env_steps": steps, "success": curve[-1], "success_before": curve[0],
             "episodes": 7, "online_success": 0.5, "env_steps_per_s": 40.0,
             "updates_per_s": 38.5, "eval_env_steps_per_s": 300.0, "wall_time_s": 600.0}))
    return path


def test_online_phase_scores_fine_tuning_and_its_starting_point(tmp_path):
    # fidec starts where deflow starts (before: equal) and gains by construction
    for seed in range(5):
        start = 0.1 * seed
        _online(tmp_path / "runs" / f"fidec-s{seed}", "fidec", seed,
                [start, start + 0.3, start + 0.5, start + 0.5], nested=seed % 2 == 0)
        _online(tmp_path / "runs" / f"deflow-s{seed}", "deflow", seed,
                [start, start, start, start])
    seeds = compare.load_seeds([str(tmp_path / "runs")], phase="online")
    assert len(seeds) == 10
    assert [s.before for s in seeds if s.seed == 3] == pytest.approx([0.3, 0.3])
    c = compare.compare(seeds, arms=["fidec", "deflow"], reps=REPS, phase="online")
    assert c.kinds == ("before", "final", "gain", "auc") and c.notes == ()
    assert _find(c, "gain", CUBE, "fidec").mean.point == pytest.approx(0.5)
    assert _find(c, "gain", CUBE, "deflow").mean.point == pytest.approx(0.0)
    assert _find(c, "gain", CUBE).verdict == "resolved: fidec > deflow"
    assert _find(c, "before", CUBE).verdict == "not resolved"  # the same starting points
    auc = _find(c, "auc", CUBE, "fidec").mean.point  # (0.15 + 0.4 + 0.5) / 3 above the start
    assert auc == pytest.approx(0.2 + 0.35)
    text = compare.format_markdown(c)
    assert "## Gain from fine-tuning (final − before)" in text and "environment transitions" in text
    assert "| fidec | cube-single-play-singletask-task2-v0 | 0 | 0.0 | 0.5 | 300 | 7 | 0.500 | " \
           "40.0 | 38.5 | 300.0 | 10.0 |" in text
    # the offline phase of the same dirs: only the from-scratch runs have one
    offline = compare.load_seeds([str(tmp_path / "runs")])
    assert {(s.arm, s.seed) for s in offline} == {("fidec", 0), ("fidec", 2), ("fidec", 4)}


def test_online_runs_that_cannot_be_compared_say_what_to_do(tmp_path):
    _online(tmp_path / "done", "fidec", 0, [0.1, 0.5])
    unfinished = _online(tmp_path / "half", "fidec", 1, [0.1, 0.5], finished=False)
    with pytest.raises(compare.UnfinishedRunError, match=r"python recipes/online.py --from"):
        compare.load_seeds([str(unfinished)], phase="online")
    with pytest.warns(UserWarning, match="left out"):  # found inside a given directory
        assert len(compare.load_seeds([str(tmp_path)], phase="online")) == 1
    offline = _run(tmp_path / "offline", "fidec", CUBE, 2, [[0.1, 0.2]])
    with pytest.raises(compare.CompareError, match="no online phase"):
        compare.load_seeds([str(offline)], phase="online")
    longer = _online(tmp_path / "longer", "fidec", 3, [0.1, 0.2, 0.3, 0.4, 0.5], steps=500)
    seeds = compare.load_seeds([str(tmp_path / "done"), str(longer)], phase="online")
    with pytest.raises(compare.CompareError, match="mixes configurations.*online.steps"):
        compare.compare(seeds, reps=REPS, phase="online")


def test_one_seed_per_arm_is_never_resolved(tmp_path):
    seeds = compare.load_seeds([str(_arm(tmp_path, "fidec", {CUBE: [0.9]})),
                                str(_arm(tmp_path, "deflow", {CUBE: [0.1]}))])
    improvement = _find(compare.compare(seeds, reps=REPS), "final", CUBE)
    assert improvement.probability.point == 1.0 and improvement.seeds == 1
    assert not improvement.resolved and "one seed" in improvement.verdict


@pytest.mark.parametrize(("n", "resolved"), [(2, False), (3, False), (4, True), (5, True)])
def test_complete_separation_resolves_only_with_enough_seeds(tmp_path, n, resolved):
    """Every seed of one arm above every seed of the other: the bootstrap says P = 1 [1, 1]
    for any n, but equal arms separate so by chance with probability 2 / C(2n, n) (1/3, 1/10,
    1/35, 1/126), so only n >= 4 resolves at 95%."""
    seeds = compare.load_seeds([str(_arm(tmp_path, "fidec", {CUBE: [0.8 + 0.01 * i
                                                                    for i in range(n)]})),
                                str(_arm(tmp_path, "deflow", {CUBE: [0.1 + 0.01 * i
                                                                     for i in range(n)]}))])
    improvement = _find(compare.compare(seeds, reps=REPS), "final", CUBE)
    assert improvement.probability.low == 1.0 and improvement.counts == (n, n)
    assert improvement.chance_separation == pytest.approx(2 / scipy.special.comb(2 * n, n))
    assert improvement.resolved == resolved
    assert improvement.verdict == ("resolved: fidec > deflow" if resolved else
                                   f"not resolved ({n} vs {n} seeds: equal arms separate this "
                                   f"completely {improvement.chance_separation:.0%} of the time)")


def test_cli_compares_the_online_phase(tmp_path, capsys):
    for seed in range(2):
        _online(tmp_path / "runs" / f"fql-s{seed}", "fql", seed, [0.0, 0.2, 0.4])
        _online(tmp_path / "runs" / f"fidec-s{seed}", "fidec", seed, [0.2, 0.6, 0.9])
    out = tmp_path / "report"
    assert report.main(["compare", str(tmp_path / "runs"), "--phase", "online", "--out",
                        str(out), "--reps", str(REPS)]) == 0
    printed = capsys.readouterr().out
    assert "## Runs" in printed and "## Success before fine-tuning (transition 0)" in printed
    assert (out / "curves.png").stat().st_size > 0 and (out / "compare.png").stat().st_size > 0
