"""Every recipe trains on a real (tiny, locally generated) OGBench dataset and acts in the env;
the main job runs end to end."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from fidec_zoo import checkpoint, recipes, report, zoo
from fidec_zoo.train import Evaluator, fit

ENV = "cube-single-play-singletask-task2-v0"
TINY = ["--hidden", "32", "32", "--batch-size", "64"]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))


@pytest.mark.parametrize("name", recipes.available())
def test_every_recipe_trains_and_acts(name, tiny_ogbench, tmp_path):
    train, val = tiny_ogbench
    recipe = recipes.config(name, env_name=ENV, hidden=(32, 32), batch_size=64, chunk=10,
                            log_every=10, steps=20)
    logged = []
    result = fit(recipe, train, run_dir=tmp_path, key=jr.key(1), val=val, progress=False,
                 evaluator=Evaluator(ENV, episodes=2),
                 loggers=[lambda name, row: logged.append((name, row["step"]))])
    assert result.step == 20
    assert logged == [("metrics", 10), ("metrics", 20), ("eval", 20)]
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 logging intervals
    header, last = rows[0].split(","), rows[-1].split(",")
    assert all(jnp.isfinite(float(v)) for k, v in zip(header, last) if v)
    ev = result.last_eval
    assert len(ev.episodes) == 2 and 0.0 <= ev.success <= 1.0 and jnp.isfinite(ev.return_mean)


def run_main(args):
    import offline

    return offline.main(args)


@pytest.mark.parametrize(
    ("metric", "keep", "kept"), [("l2", 0, [10, 20, 30]), ("fisher", 2, [20, 30])]
)
def test_main_job_end_to_end(metric, keep, kept, data_root, tmp_path):
    run_dir = tmp_path / "run"
    args = ["--agent", "fidec", "--metric", metric, "--steps", "30", "--eval-every", "10",
            "--eval-episodes", "2", "--dataset-episodes", "2", "--run-dir", str(run_dir),
            "--keep-checkpoints", str(keep), *TINY]
    if metric == "fisher":  # TensorBoard logging beside the CSVs (tensorboardX: the test extra)
        args += ["--log", "tensorboard"]
    summary = run_main(args)
    if metric == "fisher":
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    for name in ("config.json", "metrics.csv", "eval.csv", "summary.json", "learning_curve.png"):
        assert (run_dir / name).exists(), name
    assert summary["steps"] == 30 and 0 <= summary["success"] <= 1
    assert checkpoint.checkpoint_steps(run_dir / "checkpoints") == kept
    assert summary["behaviour_flow_success"] is not None
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"]["source"] == "generated" and config["dataset"]["episodes"] == 2
    (seeds,) = report.summarize([run_dir], last=3)  # reads what the job wrote
    evals = [r["success"] for r in report.read_csv(run_dir / "eval.csv")]
    assert seeds.steps == (10, 20, 30) and seeds.mean == pytest.approx(np.mean(evals[-3:]))
    expected = "L2Metric" if metric == "l2" else "FisherMetric"
    assert config["job"]["agent"]["metric"]["type"] == f"fidec_zoo.metrics:{expected}"
    run = zoo.load_run(run_dir, step=kept[0])  # what the job wrote reads back, metric included
    assert (run.step, run.seed, run.env_name) == (kept[0], 0, config["env"])
    assert type(run.agent.metric).__name__ == expected
    # same command resumes (nothing left to do); a different config is refused
    assert run_main(args)["steps"] == 30
    sessions = json.loads((run_dir / "config.json").read_text())["sessions"]
    assert [s["from_step"] for s in sessions] == [0, 30] and sessions[1]["argv"] == args
    assert sessions[0]["versions"]["jax"] == jax.__version__
    with pytest.raises(SystemExit, match="different config"):
        run_main([*args, "--discount", "0.95"])
    # the saved job runs again as it is: nothing left to do, same run dir
    assert run_main(["--config", str(run_dir / "config.json")])["steps"] == 30
    sessions = json.loads((run_dir / "config.json").read_text())["sessions"]
    assert [s["from_step"] for s in sessions] == [0, 30, 30]
    # a corrupt latest checkpoint: the session records the step it really resumed from
    (run_dir / "checkpoints" / "30" / "_CHECKPOINT_METADATA").write_text("{not json")
    with pytest.warns(UserWarning, match="checkpoint 30 is corrupt"):
        assert run_main(args)["steps"] == 30
    sessions = json.loads((run_dir / "config.json").read_text())["sessions"]
    assert [s["from_step"] for s in sessions] == [0, 30, 30, 20]


def test_main_job_interrupt_exits_130_and_says_how_to_resume(data_root, tmp_path, monkeypatch,
                                                             capsys):
    def interrupted_fit(*args, **kwargs):
        raise KeyboardInterrupt  # what `fit` re-raises after saving its checkpoint

    monkeypatch.setattr("fidec_zoo.offline.fit", interrupted_fit)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        run_main(["--steps", "10", "--dataset-episodes", "2", "--run-dir", str(run_dir), *TINY])
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert str(run_dir / "checkpoints") in err and "rerun the same command" in err


def test_main_job_rejects_bad_input_before_data_work(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no displacement"):
        run_main(["--agent", "bc", "--metric", "fisher", "--run-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        run_main(["--agent", "fidek"])
    for flags, message in ((["--keep-checkpoints", "-1"], "keep_checkpoints must be positive"),
                           (["--eval-workers", "0"], "workers must be positive, got 0")):
        with pytest.raises(SystemExit) as exc:  # tyro's usage error: exit 2, the message
            run_main([*flags, "--run-dir", str(tmp_path)])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit, match="cube-single-play-singletask-task2-v0"):
        run_main(["--env", "cube-singel-play-singletask-task2-v0", "--run-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="single-task"):
        run_main(["--env", "cube-single-play-v0", "--run-dir", str(tmp_path)])
    # A real OGBench task whose dataset can be neither found nor generated: a one-line error
    # that says where official files go, and no empty run dir left behind.
    with pytest.raises(SystemExit, match=r"(?s)^error: .*no offline generator.*~/.ogbench/data"):
        run_main(["--env", "puzzle-4x5-play-singletask-task1-v0", "--run-dir", str(tmp_path / "r")])
    assert not any(tmp_path.iterdir())


def test_custom_metric_recipe_trains(data_root, tmp_path):
    import custom_metric

    success = custom_metric.main(["--dataset-episodes", "2", "--steps", "20", "--eval-episodes",
                                  "2", "--hidden", "32", "32", "--run-dir", str(tmp_path)])
    assert 0.0 <= success <= 1.0
    assert (tmp_path / "metrics.csv").exists()
