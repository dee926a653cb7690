"""`python -m fidec_zoo.zoo eval|video NAME_OR_RUN_DIR --refine natural`: the closed-form
refinement of a run's (or an entry's) behaviour flow by its critic, from the command line."""

import jax.random as jr
import pytest
from runs import fake_run

from fidec_zoo import envs, recipes, zoo
from fidec_zoo.metrics import L2Metric
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
