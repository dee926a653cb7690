"""`python -m fidec_zoo.zoo eval|video NAME_OR_RUN_DIR --refine natural`: the closed-form
refinement of a run's (or an entry's) behaviour flow by its critic, from the command line."""

import json
from pathlib import Path
from types import SimpleNamespace

import jax.random as jr
import pytest
from runs import fake_run

from fidec_zoo import envs, recipes, zoo
from fidec_zoo.metrics import L2Metric
from fidec_zoo.policies import FlowPolicy, ResidualPolicy
from fidec_zoo.refinement import natural_gradient_policy
from fidec_zoo.zoo import _cli

ENV = "cube-single-play-singletask-task2-v0"
OBS_DIM, ACTION_DIM = 28, 5
WITH_AGENT, POLICY_ONLY = f"tiny-fidec-agent/{ENV}", f"tiny-fidec-policy/{ENV}"


@pytest.fixture(scope="module")
def tiny():
    recipe = recipes.config("fidec", env_name=ENV, hidden=(32, 32), flow_steps=4)
    return recipe.build(OBS_DIM, ACTION_DIM, key=jr.key(0)), recipe


@pytest.fixture(scope="module")
def root(tiny, tmp_path_factory):
    """A zoo root with the tiny agent as an entry that ships its critic and one that does not."""
    agent, recipe = tiny
    root = tmp_path_factory.mktemp("zoo")
    for name, include_agent in ((WITH_AGENT, True), (POLICY_ONLY, False)):
        zoo.save_pretrained(agent, name, recipe=recipe, root=root, include_agent=include_agent,
                            evaluation={"success": 0.5, "episodes": 50, "seed": 0})
    return root


def test_eval_refines_a_run_directory(tiny, tmp_path, capsys):
    agent, recipe = tiny
    fake_run(recipe, tmp_path / "run", {None: agent})
    argv = ["eval", str(tmp_path / "run"), "--refine", "natural", "--budget", "0.01",
            "--refine-metric", "l2", "--episodes", "1", "--seed", "5"]
    assert _cli.main(argv) == 0
    out = capsys.readouterr().out
    label = "natural-gradient refinement (l2 metric, budget 0.01, 1 step)"
    assert f"training seed 3), {label} on {ENV}: success " in out
    assert "trained policy's training eval at this step: 50%" in out
    expected = envs.evaluate(natural_gradient_policy(agent, L2Metric(), 0.01), ENV, episodes=1,
                             seed=5)
    assert f"success {_cli._pct(expected.success)} " in out


def test_video_films_the_refinement_of_a_run_directory(tiny, tmp_path, capsys):
    agent, recipe = tiny
    fake_run(recipe, tmp_path / "run", {None: agent})
    gif = tmp_path / "refined.gif"
    argv = ["video", str(tmp_path / "run"), "--refine", "natural", "--refine-metric", "l2",
            "--out", str(gif), "--frame-skip", "50"]
    assert _cli.main(argv) == 0
    assert gif.stat().st_size > 0
    assert "natural-gradient refinement (l2 metric, budget 0.001, 1 step)" in (
        capsys.readouterr().out)


def test_eval_refines_an_entry_that_ships_its_critic(root, capsys):
    argv = ["--root", str(root), "eval", WITH_AGENT, "--refine", "natural", "--episodes", "1",
            "--refine-steps", "2"]
    assert _cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{WITH_AGENT}, natural-gradient refinement (fisher metric, budget "
                          "0.001, 2 steps): success ")
    assert "over 1 episodes (seed 0); the entry's own policy: 50%" in out


def test_an_entry_without_a_critic_points_to_a_run_directory(root, capsys):
    argv = ["--root", str(root), "eval", POLICY_ONLY, "--refine", "natural"]
    assert _cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "ships its policy only (no critic)" in err and "eval RUN_DIR --refine natural" in err


def test_refinement_flags_without_refine_are_refused(root, capsys):
    assert _cli.main(["--root", str(root), "eval", WITH_AGENT, "--budget", "0.01"]) == 1
    assert "--budget only apply to a refinement: add --refine natural" in capsys.readouterr().err
    argv = ["--root", str(root), "eval", WITH_AGENT, "--refine", "natural", "--budget", "-1"]
    assert _cli.main(argv) == 1
    assert "budget must be > 0" in capsys.readouterr().err


@pytest.fixture
def refine_curve(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "recipes"))
    import refine_curve

    return refine_curve


@pytest.fixture
def curve_runs(tiny, tmp_path):
    """A FiDec run and a DeFlow run to compare it with (both the tiny untrained agent)."""
    agent, recipe = tiny
    fake_run(recipe, tmp_path / "run", {None: agent})
    fake_run(recipes.config("deflow", env_name=ENV, hidden=(32, 32), flow_steps=4),
             tmp_path / "deflow", {None: agent})
    return [str(tmp_path / "run"), "--compare", str(tmp_path / "deflow")]


def test_refine_curve_script_writes_table_figure_and_numbers(refine_curve, curve_runs, tmp_path,
                                                             monkeypatch):
    """`recipes/refine_curve.py RUN_DIR --compare OTHER`: one row per fixed policy and per
    (metric, budget), budgets in increasing order (evaluation stubbed: see the slow test)."""
    evaluated = []

    def evaluate(policy, env_name, *, episodes, seed, workers):
        evaluated.append(policy)
        return SimpleNamespace(success=len(evaluated) / 10, success_ci95=0.05,
                               episodes=[{}] * episodes)

    monkeypatch.setattr(refine_curve.envs, "evaluate", evaluate)
    out = tmp_path / "curve"
    argv = [*curve_runs, "--budgets", "0.01", "1e-3", "--episodes", "3", "--out", str(out)]
    assert refine_curve.main(argv) == 0
    numbers = json.loads((out / "refine_curve.json").read_text())
    labels = [p["policy"] for p in numbers["points"]]
    assert labels == ["behaviour flow", "trained fidec", "trained deflow (deflow)",
                      "natural (fisher), budget 0.001", "natural (fisher), budget 0.01",
                      "natural (l2), budget 0.001", "natural (l2), budget 0.01"]
    assert [p["success"] for p in numbers["points"]] == [i / 10 for i in range(1, 8)]
    assert isinstance(evaluated[0], FlowPolicy) and isinstance(evaluated[1], ResidualPolicy)
    last = evaluated[-1]
    assert isinstance(last.metric, L2Metric) and float(last.budget) == pytest.approx(0.01)
    table = (out / "refine_curve.md").read_text()
    assert "3 episodes per policy" in table
    assert "| natural (l2), budget 0.01 | l2 | 0.01 | 70.0% ± 5.0 |" in table
    assert f"Made by `python recipes/refine_curve.py {curve_runs[0]} --compare" in table
    assert (out / "refine_curve.png").stat().st_size > 0


@pytest.mark.slow
def test_refine_curve_script_evaluates_in_the_environment(tiny, refine_curve, curve_runs,
                                                          tmp_path):
    agent, _ = tiny
    argv = [*curve_runs, "--budgets", "0.01", "--metrics", "l2", "--episodes", "2",
            "--out", str(tmp_path / "curve")]
    assert refine_curve.main(argv) == 0
    numbers = json.loads((tmp_path / "curve" / "refine_curve.json").read_text())
    expected = envs.evaluate(natural_gradient_policy(agent, L2Metric(), 0.01), ENV, episodes=2)
    assert numbers["points"][-1]["success"] == expected.success
