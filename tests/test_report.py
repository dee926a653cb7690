"""Multi-seed summaries of run directories (`fidec_zoo.report.summarize`)."""

import json

import numpy as np
import pytest

from fidec_zoo import report

ENV = "cube-single-play-singletask-task2-v0"


def _run(path, seed, successes, *, hidden=(128, 128), every=10, seeds=None, name="fidec",
         objects=None):
    """A run directory as recipes/offline.py writes it: config.json and eval.csv per seed."""
    identity = {
        "recipe": {"name": name, "env_name": ENV, "preset": "cpu",
                   "params": {"hidden": list(hidden), "lr": 3e-4}, "objects": objects or {}},
        "seed": seed,
        "data_seed": 0,
    }
    config = {"identity": identity, "seed": seed, "env": ENV}
    if seeds is not None:
        identity["seeds"] = config["seeds"] = seeds
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    per_seed = successes if seeds is not None else [successes]
    dirs = [path] if seeds is None else [path / f"seed_{i}" for i in range(seeds)]
    for d, values in zip(dirs, per_seed):
        d.mkdir(exist_ok=True)
        lines = ["step,success,success_std,return,length,episodes,wall_time"]
        lines += [f"{every * (k + 1)},{v},0.0,-100,100,50,1.0" for k, v in enumerate(values)]
        (d / "eval.csv").write_text("\n".join(lines) + "\n")
    return path


def test_seeds_are_averaged_over_their_last_evaluations(tmp_path):
    a = _run(tmp_path / "a", 0, [0.0, 0.2, 0.4, 0.6])
    b = _run(tmp_path / "b", 1, [0.1, 0.8, 0.9, 1.0])
    (summary,) = report.summarize([b, a], last=3)
    assert [s.seed for s in summary.scores] == [0, 1]
    assert summary.steps == (20, 30, 40)
    np.testing.assert_allclose([s.success for s in summary.scores], [0.4, 0.9])
    np.testing.assert_allclose([summary.mean, summary.std], [0.65, 0.25])
    assert summary.label == f"fidec {ENV}"
    (one,) = report.summarize([a], last=1)
    assert one.mean == pytest.approx(0.6) and one.std == 0.0


def test_multi_seed_runs_and_directories_of_runs(tmp_path):
    _run(tmp_path / "runs" / "many", 3, [[0.5, 0.5], [0.7, 0.9]], seeds=2)
    _run(tmp_path / "runs" / "one", 5, [0.1, 0.3])
    (summary,) = report.summarize([tmp_path / "runs"], last=2)
    assert [s.seed for s in summary.scores] == [3, 4, 5]
    np.testing.assert_allclose([s.success for s in summary.scores], [0.5, 0.8, 0.2])
    table = report.format_summaries([summary])
    assert "0.500 ± 0.245" in table and "3, 4, 5" in table and "10, 20" in table


def test_configurations_and_run_lengths_are_never_mixed(tmp_path):
    runs = [
        _run(tmp_path / "small", 0, [0.1, 0.2, 0.3]),
        _run(tmp_path / "wide", 0, [0.4, 0.5, 0.6], hidden=(256, 256)),
        _run(tmp_path / "longer", 1, [0.1, 0.2, 0.3, 0.9]),
        _run(tmp_path / "fql", 0, [0.7, 0.8, 0.9], name="fql"),
        _run(tmp_path / "l2", 0, [0.7, 0.8, 0.9], objects={"metric": "L2Metric()"}),
    ]
    summaries = report.summarize(runs, last=2)
    labels = [(r.label, r.steps, [s.seed for s in r.scores]) for r in summaries]
    assert labels == [
        (f"fidec {ENV} hidden=[128, 128]", (20, 30), [0]),
        (f"fidec {ENV} hidden=[128, 128]", (30, 40), [1]),
        (f"fidec {ENV} hidden=[256, 256]", (20, 30), [0]),
        (f"fidec {ENV} metric=L2Metric()", (20, 30), [0]),
        (f"fql {ENV}", (20, 30), [0]),
    ]


def test_bad_input_says_what_to_do(tmp_path):
    short = _run(tmp_path / "runs" / "short", 0, [0.5])
    _run(tmp_path / "runs" / "done", 1, [0.5, 0.6, 0.7])
    with pytest.raises(ValueError, match="fewer than last=3.*--last"):
        report.summarize([short])
    with pytest.warns(UserWarning, match="left out: .*short"):  # found inside a directory
        (summary,) = report.summarize([tmp_path / "runs"])
    assert [s.seed for s in summary.scores] == [1]
    with pytest.raises(FileNotFoundError, match="no config.json"):
        report.summarize([tmp_path / "runs" / "done" / "nothing"])
    twin = _run(tmp_path / "twin", 0, [0.9])  # seed 0 again, same config and length
    with pytest.raises(ValueError, match="Seed 0 .* counts once"):
        report.summarize([short, twin], last=1)
    with pytest.raises(ValueError, match="last must be >= 1"):
        report.summarize([twin], last=0)


def test_cli_prints_the_table_and_reports_errors(tmp_path, capsys):
    _run(tmp_path / "a", 0, [0.2, 0.4, 0.6])
    assert report.main([str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "success (mean ± std over seeds)" in out and "0.400 ± 0.000" in out
    assert report.main([str(tmp_path / "a"), "--plot", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert report.main([str(tmp_path / "a"), "--last", "4"]) == 1
    assert report.main(["--last", "1"]) == 2  # no run dirs: usage error
    assert "error:" in capsys.readouterr().err


def test_a_record_keeps_the_results_and_reads_as_the_run(tmp_path, capsys):
    run = _run(tmp_path / "run", 0, [[0.2, 0.4], [0.6, 0.8]], seeds=2)
    (run / "summary.json").write_text(json.dumps({"steps": 20}))
    (run / "metrics.csv").write_text("step,loss\n10,1.0\n")
    (run / "online").mkdir()
    (run / "online" / "episodes.csv").write_text("step,success\n5,1\n")
    for other in ("checkpoints/10/state", ".lock", "learning_curve.png", "online/checkpoints/x"):
        (run / other).parent.mkdir(parents=True, exist_ok=True)
        (run / other).write_text("not recorded")
    assert report.main(["record", str(run), str(tmp_path / "rec")]) == 0
    assert "recorded" in capsys.readouterr().out
    kept = sorted(str(p.relative_to(tmp_path / "rec")) for p in (tmp_path / "rec").rglob("*")
                  if p.is_file())
    assert kept == ["config.json", "metrics.csv", "online/episodes.csv", report.RECORD,
                    "seed_0/eval.csv", "seed_1/eval.csv", "summary.json"]
    about = json.loads((tmp_path / "rec" / report.RECORD).read_text())
    assert about["run_dir"] == str(run) and about["recorded"]
    def scores(d):
        return [(s.seed, s.success, s.steps) for s in report.summarize([d], last=1)[0].scores]

    assert scores(tmp_path / "rec") == scores(run) == [(0, 0.4, (20,)), (1, 0.8, (20,))]

    (run / "summary.json").unlink()  # an unfinished run is refused; the old record stays
    assert report.main(["record", str(run), str(tmp_path / "rec")]) == 1
    assert "no summary.json" in capsys.readouterr().err
    assert (tmp_path / "rec" / "summary.json").exists()
    (run / "online" / "summary.json").write_text("{}")  # a fine-tuning run of another's source
    assert report.main(["record", str(run), str(tmp_path / "rec")]) == 0
