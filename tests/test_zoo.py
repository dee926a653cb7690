"""The zoo: save/load round trips, integrity, bad input, search order, and the shipped entries."""

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from runs import fake_run

from fidec_zoo import checkpoint, configs, envs, recipes, zoo
from fidec_zoo._load_shortcut import load as shortcut_load
from fidec_zoo.configs import ResidualFlowQLConfig
from fidec_zoo.constraints import FixedPenalty
from fidec_zoo.metrics import AbstractMetric, FisherMetric, L2Metric
from fidec_zoo.zoo import _cli, _registry

ENV = "cube-single-play-singletask-task2-v0"
NAME = f"tiny-fidec/{ENV}"  # not a shipped name, so the real zoo never shadows it
OBS_DIM, ACTION_DIM = 28, 5
REPO_ZOO = Path(__file__).resolve().parent.parent / "checkpoints"
EVALUATION = {"success": 0.5, "success_std": 0.5, "success_ci95": 0.14, "episodes": 50, "seed": 0}


def _shipped() -> dict:
    return json.loads((REPO_ZOO / "registry.json").read_text())


@pytest.fixture(scope="module")
def tiny():
    """A tiny FiDec agent and its recipe (built once: building is the slow part)."""
    recipe = recipes.config("fidec", env_name=ENV, hidden=(32, 32), flow_steps=4)
    agent = recipe.build(OBS_DIM, ACTION_DIM, key=jr.key(0))
    return agent, recipe


@pytest.fixture(scope="module")
def zoo_root(tiny, tmp_path_factory):
    """A zoo root holding NAME (policy and agent)."""
    agent, recipe = tiny
    root = tmp_path_factory.mktemp("zoo")
    zoo.save_pretrained(
        agent,
        NAME,
        recipe=recipe,
        root=root,
        include_agent=True,
        evaluation=EVALUATION,
        training={"steps": 123, "seed": 0},
        dataset={"source": "generated", "episodes": 4, "seed": 0},
    )
    return root


@pytest.fixture
def copy_root(zoo_root, tmp_path):
    root = tmp_path / "zoo"
    shutil.copytree(zoo_root, root)
    return root


@eqx.filter_jit
def _act(policy, obs, noise):
    return jax.vmap(policy)(obs, noise)


@eqx.filter_jit
def _sample(policy, obs, key):
    return policy.sample(obs, key=key)


def _perturbed(model):
    """`model` with 1 added to every floating-point array."""
    return jax.tree.map(lambda x: x + 1 if eqx.is_inexact_array(x) else x, model)


def _same(a, b) -> bool:
    """Same structure and static fields, bit-identical arrays (compared on host)."""
    (xa, sa), (xb, sb) = eqx.partition(a, eqx.is_array), eqx.partition(b, eqx.is_array)
    return (
        jax.tree.structure(a) == jax.tree.structure(b)
        and eqx.tree_equal(sa, sb)
        and all(
            x.dtype == y.dtype and np.array_equal(x, y)
            for x, y in zip(jax.tree.leaves(xa), jax.tree.leaves(xb), strict=True)
        )
    )


def _inputs(n=3):
    obs = jr.normal(jr.key(1), (n, OBS_DIM))
    return obs, jr.normal(jr.key(2), (n, ACTION_DIM))


def _edit_registry(root: Path, edit) -> None:
    path = root / "registry.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# ---- round trip ---------------------------------------------------------------------------------


def test_load_acts_exactly_like_the_saved_policy(tiny, zoo_root):
    agent, _ = tiny
    policy = zoo.load(NAME, root=zoo_root)
    assert type(policy) is type(agent.policy)
    obs, noise = _inputs()
    np.testing.assert_array_equal(_act(policy, obs, noise), _act(agent.policy, obs, noise))
    key = jr.key(3)
    np.testing.assert_array_equal(_sample(policy, obs[0], key), _sample(agent.policy, obs[0], key))
    assert _same(shortcut_load(NAME, root=zoo_root), policy)


def test_load_agent_restores_the_critic(tiny, zoo_root):
    agent, _ = tiny
    loaded = zoo.load_agent(NAME, root=zoo_root)
    assert _same(loaded, agent)


@pytest.mark.parametrize("evaluation", [EVALUATION, None])
def test_evaluate_defaults_to_the_recorded_protocol(tiny, tmp_path, monkeypatch, evaluation):
    """`zoo.evaluate` reruns the recorded episodes and seed, or the zoo's defaults if none."""
    agent, recipe = tiny
    zoo.save_pretrained(agent, NAME, recipe=recipe, root=tmp_path, evaluation=evaluation)
    calls = []
    monkeypatch.setattr(
        "fidec_zoo.zoo._load.run_episodes", lambda policy, env, **kw: calls.append((env, kw)) or kw
    )
    zoo.evaluate(NAME, root=tmp_path, num_envs=2)
    zoo.evaluate(NAME, root=tmp_path, episodes=7, seed=3)
    recorded = evaluation or {
        "episodes": zoo.DEFAULT_EVAL_EPISODES,
        "seed": zoo.DEFAULT_EVAL_SEED,
    }
    assert calls == [
        (ENV, {"episodes": recorded["episodes"], "seed": recorded["seed"], "num_envs": 2}),
        (ENV, {"episodes": 7, "seed": 3}),
    ]


def test_entry_records_provenance_and_hashes(tiny, zoo_root):
    agent, recipe = tiny
    entry = zoo.model_info(NAME, root=zoo_root)
    assert (entry.recipe, entry.env_name, entry.config["preset"]) == ("fidec", ENV, "cpu")
    assert configs.from_dict(entry.config) == recipe
    assert (entry.obs_dim, entry.action_dim, entry.policy_class) == (28, 5, "ResidualPolicy")
    assert entry.contents == ["policy", "agent"] and entry.has_agent
    assert entry.param_count == sum(
        x.size for x in jax.tree.leaves(eqx.filter(agent.policy, eqx.is_array))
    )
    files = _registry.file_hashes(zoo_root / entry.path)
    assert files == entry.files and _registry.files_digest(files) == entry.files_sha256
    assert entry.size_bytes == sum((zoo_root / entry.path / f).stat().st_size for f in files)
    assert entry.params_sha256 == _registry.params_digest(agent.policy)[0]
    assert entry.evaluation["success"] == 0.5 and "episode_seed" in entry.evaluation["protocol"]
    assert (entry.paper["value"], entry.paper["std"]) == (0.96, 0.01)  # the paper, this task
    assert zoo.model_info(NAME, root=zoo_root).paper["note"]
    assert set(entry.versions) >= {
        "fidec_zoo",
        "jax",
        "equinox",
        "orbax-checkpoint",
        "ogbench",
        "mujoco",
    }
    assert entry.dataset["source"] == "generated" and entry.training["steps"] == 123
    # the orbax directory describes itself (custom metadata, minus the file hashes)
    assert checkpoint.read_metadata(zoo_root / entry.path / "policy")["name"] == NAME
    data = json.loads((zoo_root / "registry.json").read_text())
    assert data["format_version"] == zoo.FORMAT_VERSION and list(data["entries"]) == [NAME]
    assert not [p for p in zoo_root.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_list_models_patterns(zoo_root):
    assert NAME in zoo.list_models(root=zoo_root)
    assert zoo.list_models("tiny-fidec/*", root=zoo_root) == [NAME]
    assert zoo.list_models("*no-such-env*", root=zoo_root) == []


# ---- bad input ----------------------------------------------------------------------------------


def test_changed_file_is_refused_naming_it(copy_root):
    entry = zoo.model_info(NAME, root=copy_root)
    data_files = [f for f in entry.files if f.startswith("policy/") and "/d/" in f]
    target = copy_root / entry.path / data_files[0]
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(zoo.IntegrityError, match="sha256 mismatch in " + data_files[0]):
        zoo.load(NAME, root=copy_root)
    (copy_root / entry.path / "stray.txt").write_text("x")
    (copy_root / entry.path / "policy" / "_CHECKPOINT_METADATA").unlink()
    with pytest.raises(zoo.IntegrityError) as info:
        zoo.load(NAME, root=copy_root)
    assert "missing file policy/_CHECKPOINT_METADATA" in str(info.value)
    assert "unexpected file stray.txt" in str(info.value)


def test_unknown_name_suggests_close_matches(zoo_root):
    with pytest.raises(zoo.UnknownModelError, match=f"Did you mean: '{NAME}'"):
        zoo.load("tiny-fidec/cube-single-play-singletask-task3-v0", root=zoo_root)
    with pytest.raises(zoo.UnknownModelError, match=NAME):
        zoo.model_info("tiny-fidek/" + ENV, root=zoo_root)
    with pytest.raises(FileNotFoundError, match="registry.json"):
        zoo.load(NAME, root=zoo_root / "nowhere")


def test_close_matches_rank_shorthands_by_shared_words():
    """Plain string similarity ranks 'fidec/scene-…-task2-v0' first for the shorthand
    'fidec/cube-single-task2'; counting shared words puts the cube-single entry first."""
    names = [
        "deflow/cube-single-play-singletask-task2-v0",
        "fidec/cube-single-play-singletask-task1-v0",
        "fidec/cube-single-play-singletask-task2-v0",
        "fidec/scene-play-singletask-task2-v0",
    ]
    shorthand = "fidec/cube-single-task2"
    assert _registry.close_matches(shorthand, names)[0] == names[2]
    assert _registry.close_matches("FiDec/Scene-play-singletask-task2-v0", names)[0] == names[3]
    assert _registry.close_matches("deflow/task2", names)[0] == names[0]
    assert _registry.close_matches(shorthand, names, n=2) == [names[2], names[1]]
    assert _registry.close_matches("bc/antmaze-large-navigate-v0", names) == []


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.update(format_version=3), "format_version 3"),
        (lambda d: d["entries"][NAME].update(format_version=3), "format_version 3"),
        (lambda d: d.update(format_version=1), "zoo migrate"),
        (lambda d: d["entries"][NAME].pop("params_sha256"), "lacks the fields"),
        (lambda d: d["entries"][NAME]["config"]["agent"].update(new_knob=1), "new_knob"),
        (lambda d: d["entries"][NAME]["config"]["agent"].update(type="fidec_zoo.configs:X"),
         "cannot be imported"),
        (lambda d: d["entries"][NAME]["config"]["agent"].update(hidden=[32, 64]),
         "stored shape"),
    ],
)
def test_incompatible_entries_are_refused_clearly(copy_root, edit, match):
    _edit_registry(copy_root, edit)
    with pytest.raises(zoo.IncompatibleVersionError, match=match):
        zoo.load(NAME, root=copy_root, verify=False)


def test_save_refusals(tiny, zoo_root, tmp_path):
    agent, recipe = tiny
    with pytest.raises(FileExistsError, match="overwrite=True"):
        zoo.save_pretrained(agent.policy, NAME, recipe=recipe, root=zoo_root)
    with pytest.raises(ValueError, match="needs the agent"):
        zoo.save_pretrained(agent.policy, NAME, recipe=recipe, root=tmp_path, include_agent=True)
    with pytest.raises(ValueError, match="Invalid zoo entry name"):
        zoo.save_pretrained(agent, "no-slash", recipe=recipe, root=tmp_path)
    # the agent's metric is Fisher: a recipe claiming L2 does not load back as this agent
    claimed = recipe.replace(agent=recipe.agent.replace(metric=L2Metric()))
    with pytest.raises(ValueError, match="loading it back fails"):
        zoo.save_pretrained(agent, NAME, recipe=claimed, root=tmp_path, include_agent=True)
    # a metric defined inside a function could not be found again by its import path
    local = recipe.replace(agent=recipe.agent.replace(metric=_local_metric()))
    with pytest.raises(configs.ConfigError, match="inside a function"):
        zoo.save_pretrained(agent, NAME, recipe=local, root=tmp_path)
    assert (
        not list(tmp_path.iterdir())
        or json.loads((tmp_path / "registry.json").read_text())["entries"] == {}
    )
    # a policy never holds the metric: it is shipped, and its recipe records the metric
    custom = recipe.replace(agent=recipe.agent.replace(metric=FisherMetric(t=0.5)))
    entry = zoo.save_pretrained(agent, NAME, recipe=custom, root=tmp_path)
    assert entry.config["agent"]["metric"]["t"] == 0.5
    assert not entry.has_agent
    assert _same(zoo.load(NAME, root=tmp_path), agent.policy)
    with pytest.raises(ValueError, match="ships its policy only"):
        zoo.load_agent(NAME, root=tmp_path)


def _local_metric():
    class Local(L2Metric):
        pass

    return Local()


class ScaledL2(AbstractMetric):
    """A user's own metric with an option, defined at module level (importable)."""

    scale: float = eqx.field(static=True, default=1.0)

    def penalty(self, flow, obs, action, displacement, *, key):
        return self.scale * jnp.mean(displacement**2)


def test_hand_composed_agent_with_a_user_metric_saves_and_loads(tmp_path):
    """An agent config composed by hand, with a metric class of the user's own and options,
    goes to the zoo whole (critic included) and loads back exactly, by its import path."""
    config = ResidualFlowQLConfig(hidden=(16, 16), flow_steps=3, q_agg="min",
                                  metric=ScaledL2(scale=2.5), constraint=FixedPenalty(3.0))
    agent = config.build(OBS_DIM, ACTION_DIM, key=jr.key(2))
    entry = zoo.save_pretrained(agent, "mine/" + ENV, recipe=config, root=tmp_path,
                                include_agent=True)
    assert entry.config["agent"]["metric"]["type"].endswith(":ScaledL2")
    loaded = zoo.load_agent("mine/" + ENV, root=tmp_path)
    assert _same(loaded, agent) and loaded.metric == ScaledL2(scale=2.5)
    assert configs.from_dict(entry.config).agent == config


def test_search_order(zoo_root, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(zoo_root, home)
    _edit_registry(home, lambda d: d["entries"][NAME].update(notes="from home"))
    monkeypatch.delenv("FIDEC_ZOO_HOME", raising=False)
    assert NAME not in zoo.list_models()  # only in explicit roots so far
    with pytest.raises(zoo.UnknownModelError):
        zoo.model_info(NAME)
    monkeypatch.setenv("FIDEC_ZOO_HOME", str(home))
    assert zoo.model_info(NAME).notes == "from home"  # $FIDEC_ZOO_HOME
    assert zoo.model_info(NAME, root=zoo_root).notes == ""  # an explicit root comes first
    roots = zoo.search_roots(zoo_root)
    assert roots[:2] == [zoo_root.resolve(), home.resolve()]
    assert roots[-1] == REPO_ZOO.resolve()
    assert _registry.write_root() == home.resolve()
    # an unreadable registry later on the path only matters for names not found before it
    _edit_registry(home, lambda d: d.update(format_version=99))
    assert zoo.model_info(NAME, root=zoo_root).notes == ""
    with pytest.raises(zoo.IncompatibleVersionError, match="format_version 99"):
        zoo.model_info("other/" + ENV, root=zoo_root)


def test_register_run(tiny, tmp_path):
    """A run directory in recipes/offline.py's layout becomes an entry (no env needed here:
    config.json carries the sizes and the evaluation is given)."""
    agent, recipe = tiny
    steps = fake_run(recipe, tmp_path / "run", {None: agent})
    entry = zoo.register_run(tmp_path / "run", root=tmp_path / "zoo", evaluation=EVALUATION)
    assert entry.name == f"fidec/{ENV}"
    assert entry.training["learning_curve"] == [
        {"step": 10, "success": 0.25},
        {"step": steps, "success": 0.5},
    ]
    assert entry.training["seed"] == 3 and entry.dataset["file"] == "d.npz"
    assert entry.training["steps"] == steps and "run_steps" not in entry.training
    assert [s["argv"] for s in entry.training["sessions"]] == [["--steps", "1"]]
    assert "no selection" in entry.evaluation["protocol"]
    assert "path" not in entry.dataset
    assert _same(zoo.load(entry.name, root=tmp_path / "zoo"), agent.policy)


def test_the_hyperparameter_set_is_recorded_in_the_run_and_the_entry(tmp_path):
    """`--hparams paper` reaches config.json and the zoo entry built from the run, and the entry's
    recipe rebuilds the paper's values (t = 0.8), not the code's."""
    recipe = recipes.config("fidec", env_name=ENV, hidden=(32, 32), flow_steps=4,
                            hparams="paper")
    fake_run(recipe, tmp_path / "run", {None: recipe.build(OBS_DIM, ACTION_DIM, key=jr.key(0))})
    assert json.loads((tmp_path / "run" / "config.json").read_text())["job"]["hparams"] == "paper"
    entry = zoo.register_run(tmp_path / "run", root=tmp_path / "zoo", evaluation=EVALUATION)
    assert entry.config["hparams"] == "paper"
    stored = configs.from_dict(zoo.model_info(entry.name, root=tmp_path / "zoo").config)
    assert stored.hparams == "paper" and stored.agent.metric == FisherMetric(t=0.8, t_width=0.0)


def test_register_run_chosen_checkpoint(tiny, tmp_path):
    """`step=` registers a kept earlier checkpoint: its own weights, step, training evaluation
    and wall time, the whole run's curve, and a protocol that says it was chosen."""
    agent, recipe = tiny
    early = eqx.tree_at(lambda a: a.policy, agent, _perturbed(agent.policy))
    steps = fake_run(recipe, tmp_path / "run", {10: early, None: agent})
    entry = zoo.register_run(
        tmp_path / "run", root=tmp_path / "zoo", evaluation=EVALUATION, step=10
    )
    assert entry.training["steps"] == 10 and entry.training["run_steps"] == steps
    assert entry.training["training_eval"] == {"success": 0.25, "episodes": 50}
    assert entry.training["wall_time_s"] == 3.5 and len(entry.training["learning_curve"]) == 2
    assert f"after 10 of the run's {steps} updates, chosen" in entry.evaluation["protocol"]
    loaded = zoo.load(entry.name, root=tmp_path / "zoo")
    assert _same(loaded, early.policy) and not _same(loaded, agent.policy)
    with pytest.raises(FileNotFoundError, match=r"checkpoint 5 .*found steps \[10, "):
        zoo.register_run(tmp_path / "run", root=tmp_path / "zoo", evaluation=EVALUATION, step=5)


def test_load_run_reads_any_kept_checkpoint_of_an_unfinished_run(tiny, tmp_path):
    """`load_run` restores the latest or a chosen checkpoint with its recipe and seed, before
    the run has a summary.json, and refuses a step it did not keep, naming those it did."""
    agent, recipe = tiny
    early = eqx.tree_at(lambda a: a.policy, agent, _perturbed(agent.policy))
    steps = fake_run(recipe, tmp_path / "run", {10: early, None: agent})
    (tmp_path / "run" / "summary.json").unlink()
    run = zoo.load_run(tmp_path / "run")
    assert (run.step, run.seed, run.env_name) == (steps, 3, ENV)
    assert run.log_dir == run.run_dir
    assert run.recipe == recipe and run.run_dir == (tmp_path / "run").resolve()
    assert _same(run.agent, agent) and _same(run.policy, agent.policy)
    assert _same(zoo.load_run(tmp_path / "run", step=10).policy, early.policy)
    with pytest.raises(FileNotFoundError, match=r"checkpoint 5 .*found steps \[10, "):
        zoo.load_run(tmp_path / "run", step=5)
    with pytest.raises(ValueError, match="trained seed 3, not seed 4"):
        zoo.load_run(tmp_path / "run", seed=4)
    with pytest.raises(FileNotFoundError, match="finished.*or register one of its kept"):
        zoo.register_run(tmp_path / "run", root=tmp_path / "zoo", evaluation=EVALUATION)


def test_register_run_takes_a_kept_checkpoint_of_a_stopped_run(tiny, tmp_path):
    """A run stopped before its end (no summary.json) registers one of its kept checkpoints with
    `step=`: its latest, whose protocol says the run was stopped there, or an earlier one,
    whose protocol says it was chosen."""
    agent, recipe = tiny
    early = eqx.tree_at(lambda a: a.policy, agent, _perturbed(agent.policy))
    longer = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, steps=80))
    fake_run(longer, tmp_path / "run", {10: early, 20: agent})
    (tmp_path / "run" / "summary.json").unlink()
    entry = zoo.register_run(tmp_path / "run", root=tmp_path / "zoo", evaluation=EVALUATION,
                             step=20)
    assert entry.training["steps"] == 20 and entry.training["planned_steps"] == 80
    assert "the last of a run planned for 80 and stopped there" in entry.evaluation["protocol"]
    assert entry.training["final_training_eval"]["success"] is None  # no summary to read
    assert _same(zoo.load(entry.name, root=tmp_path / "zoo"), agent.policy)
    chosen = zoo.register_run(tmp_path / "run", "mine/stopped-early", root=tmp_path / "zoo",
                              evaluation=EVALUATION, step=10)
    assert chosen.training["run_steps"] == 20
    assert "after 10 of the run's 20 updates, chosen" in chosen.evaluation["protocol"]
    with pytest.raises(FileNotFoundError, match="or register one of its kept checkpoints"):
        zoo.register_run(tmp_path / "run", root=tmp_path / "zoo", evaluation=EVALUATION)


def test_load_run_takes_one_seed_of_a_multi_seed_run(tiny, tmp_path):
    """A `--seeds 2` run holds agents stacked over seeds; `load_run(seed=s)` takes seed s and
    asks for a seed when none is given."""
    from fidec_zoo.train import stack_seeds

    agent, recipe = tiny
    other = _perturbed(agent)
    fake_run(recipe, tmp_path / "run", {None: stack_seeds([agent, other])}, seeds=2)
    run = zoo.load_run(tmp_path / "run", seed=4)
    assert run.seed == 4 and _same(run.agent, other)
    assert run.log_dir == (tmp_path / "run" / "seed_1").resolve()  # where fit wrote its CSVs
    assert _same(zoo.load_run(tmp_path / "run", seed=3).agent, agent)
    with pytest.raises(ValueError, match=r"trained seeds 3\.\.4 together; pass seed="):
        zoo.load_run(tmp_path / "run")
    with pytest.raises(ValueError, match="not seed 5"):
        zoo.load_run(tmp_path / "run", seed=5)
    with pytest.raises(FileNotFoundError, match=r"one seed's logs .*load_run\('.*run', seed="):
        zoo.load_run(tmp_path / "run" / "seed_1")


def test_build_zoo_registers_one_seed_of_a_multi_seed_run(tiny, tmp_path, capsys, monkeypatch):
    """`recipes/build_zoo.py --register-only RUN_DIR --run-seed S` evaluates and registers seed
    S; `--run-seed` without `--register-only` is refused."""
    from fidec_zoo.train import stack_seeds

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "recipes"))
    import build_zoo

    agent, recipe = tiny
    other = _perturbed(agent)
    fake_run(recipe, tmp_path / "run", {None: stack_seeds([agent, other])}, seeds=2)
    build_zoo.main(["--register-only", str(tmp_path / "run"), "--run-seed", "4",
                    "--root", str(tmp_path / "zoo"), "--episodes", "2"])
    assert f"registered fidec/{ENV} in {tmp_path / 'zoo'}" in capsys.readouterr().out
    entry = zoo.model_info(f"fidec/{ENV}", root=tmp_path / "zoo")
    assert entry.training["seed"] == 4 and entry.evaluation["episodes"] == 2
    # seed 4's own curve (seed_1/eval.csv) and final result, not the mean over seeds
    assert entry.training["learning_curve"][-1]["success"] == 0.51
    assert entry.training["final_training_eval"]["success"] == 0.51
    assert _same(zoo.load(entry.name, root=tmp_path / "zoo"), other.policy)
    with pytest.raises(SystemExit):
        build_zoo.main([NAME, "--run-seed", "4"])
    assert "--run-seed goes with --register-only RUN_DIR alone" in capsys.readouterr().err


def test_cli_stops_quietly_when_the_reader_goes(zoo_root):
    """`python -m fidec_zoo.zoo list | head -1`: no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "fidec_zoo.zoo", "--root", str(zoo_root),
                             "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child has printed anything
    err = proc.stderr.read().decode()
    assert proc.wait() == 1 and "Traceback" not in err, err


def test_load_run_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="No run directory"):
        zoo.load_run(tmp_path / "nowhere")
    (tmp_path / "fit-run").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json.*restore_agent"):
        zoo.load_run(tmp_path / "fit-run")


def test_a_run_dir_from_before_typed_configs_loads_but_does_not_resume(tiny, tmp_path):
    """A run dir whose config.json has format 1 (flat hyperparameters, metric overrides by
    repr): `load_run` rebuilds its recipe; the main job refuses to resume it, saying why."""
    from fidec_zoo.offline import main as offline_main

    agent, recipe = tiny
    run = tmp_path / "old"
    fake_run(recipe, run, {None: agent})
    config = json.loads((run / "config.json").read_text())
    flat = {"lr": 3e-4, "grad_clip": 5.0, "discount": 0.99, "tau": 0.005, "flow_steps": 4,
            "hidden": [32, 32], "batch_size": 256, "steps": recipe.train.steps,
            "eval_every": 5000, "eval_episodes": 50, "dataset_episodes": 1000, "q_agg": "mean",
            "target_divergence": 0.001, "init_alpha": 10.0, "normalize_q_loss": True,
            "fisher_t": 0.9, "fisher_t_width": 0.05, "fisher_samples": 8,
            "fisher_damping": 0.001, "fisher_score": "velocity", "fisher_anchor": "samples"}
    old = {k: v for k, v in config.items() if k not in ("format", "job", "identity")}
    old["recipe"] = {"name": "fidec", "env_name": ENV, "preset": "cpu", "params": flat,
                     "objects": {}}
    old["identity"] = {"recipe": old["recipe"], "seed": 3, "data_seed": 0}
    (run / "config.json").write_text(json.dumps(old))
    loaded = zoo.load_run(run)
    assert loaded.recipe == recipe and _same(loaded.agent, agent) and loaded.data_seed == 0
    with pytest.raises(SystemExit, match="before typed configs.*load_run still reads"):
        offline_main(["--run-dir", str(run)])


def test_cli(zoo_root, tmp_path, capsys):
    assert _cli.main(["--root", str(zoo_root), "list"]) == 0
    assert NAME in capsys.readouterr().out
    _cli.main(["--root", str(zoo_root), "info", NAME, "--json"])
    assert json.loads(capsys.readouterr().out)["name"] == NAME
    _cli.main(["--root", str(zoo_root), "info", NAME])
    card = capsys.readouterr().out
    assert card.startswith(NAME) and "success         50% ± 14 (50 episodes" in card
    _cli.main(["--root", str(zoo_root), "verify", NAME])
    assert capsys.readouterr().out.startswith("ok")
    assert _cli.main(["--root", str(zoo_root), "info", "tiny-fidec/nope-v0"]) == 1
    assert "Unknown zoo entry" in capsys.readouterr().err
    _cli.main(["--root", str(zoo_root), "table"])
    assert f"| `{NAME}` | ResidualPolicy" in (out := capsys.readouterr().out) and "| 2×32 |" in out
    doc = tmp_path / "zoo.md"
    doc.write_text(f"intro\n{_cli.TABLE_START}\nold\n{_cli.TABLE_END}\nend\n")
    # --root is accepted after the command too, as docs/zoo.md writes it.
    _cli.main(["table", "--root", str(zoo_root), "--update", str(doc)])
    text = doc.read_text()
    assert "old" not in text and "50% ± 14" in text and text.endswith("end\n")


def test_video_renders_the_recorded_protocol_episodes(zoo_root, tmp_path, capsys):
    out = tmp_path / "tiny.gif"
    argv = ["--root", str(zoo_root), "video", NAME, "--out", str(out), "--frame-skip", "50"]
    assert _cli.main(argv) == 0
    assert out.stat().st_size > 0 and f"wrote {out}: 1 episode(s)" in capsys.readouterr().out
    video = zoo.record_video(NAME, tmp_path / "again.gif", root=zoo_root, frame_skip=50,
                             width=32, height=32)
    assert video.seed == EVALUATION["seed"]  # the recorded protocol's first episode
    assert video.episodes == zoo.evaluate(NAME, root=zoo_root, episodes=1).episodes


def test_cli_evaluates_and_films_a_run_directory(tiny, tmp_path, capsys):
    """`eval`/`video` take a run directory and its `--step`; the eval line quotes the run's own
    evaluation at that step. `--step` with an entry name is refused."""
    agent, recipe = tiny
    early = eqx.tree_at(lambda a: a.policy, agent, _perturbed(agent.policy))
    fake_run(recipe, tmp_path / "run", {10: early, None: agent})
    run = str(tmp_path / "run")
    assert _cli.main(["eval", run, "--step", "10", "--episodes", "2", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run (step 10, training seed 3) on {ENV}: success ")
    assert "2 episodes (evaluation seed 5); training eval at this step: 25% (50 episodes)" in out
    expected = envs.evaluate(early.policy, ENV, episodes=2, seed=5)
    assert f"success {_cli._pct(expected.success)} " in out
    gif = tmp_path / "run.gif"
    assert _cli.main(["video", run, "--out", str(gif), "--frame-skip", "50"]) == 0
    assert gif.stat().st_size > 0
    steps = recipe.train.steps
    out = capsys.readouterr().out
    assert f"episode(s) of run (step {steps}, training seed 3) (evaluation seed 0)" in out
    assert _cli.main(["eval", NAME, "--step", "10"]) == 1
    assert "is not a directory" in capsys.readouterr().err


def test_video_without_an_opengl_backend_is_a_one_line_error(zoo_root, tmp_path, capsys,
                                                              monkeypatch):
    import gymnasium

    def no_gl(self):
        raise RuntimeError("gladLoadGL error")

    monkeypatch.setattr(gymnasium.Env, "render", no_gl)
    monkeypatch.setattr(gymnasium.Wrapper, "render", no_gl)
    argv = ["--root", str(zoo_root), "video", NAME, "--out", str(tmp_path / "x.gif")]
    assert _cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: MuJoCo could not render (RuntimeError: gladLoadGL error)")
    assert "MUJOCO_GL=egl" in err and not (tmp_path / "x.gif").exists()


def test_docs_table_is_up_to_date():
    """docs/zoo.md shows exactly the shipped entries (`python -m fidec_zoo.zoo table --root
    checkpoints --update docs/zoo.md` regenerates it)."""
    doc = (REPO_ZOO.parent / "docs" / "zoo.md").read_text()
    table = _cli.markdown_table(root=REPO_ZOO)
    assert f"{_cli.TABLE_START}\n{table}\n{_cli.TABLE_END}" in doc, (
        "docs/zoo.md is stale: python -m fidec_zoo.zoo table --root checkpoints --update "
        "docs/zoo.md"
    )


# ---- the shipped zoo ---------------------------------------------------------------------------


def test_every_shipped_entry_loads():
    """Every entry of checkpoints/registry.json loads offline, its hashes verify, and it acts
    with the right shapes. Passes with zero entries; no directory is left unregistered."""
    data = _shipped()
    assert data["format_version"] == zoo.FORMAT_VERSION
    assert list(data["entries"]) == sorted(data["entries"])
    dirs = {p.name for p in REPO_ZOO.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert dirs == {zoo.ZooEntry.from_dict(e).path for e in data["entries"].values()}, (
        "directories in checkpoints/ must match the registry (all of them go into the wheel)"
    )
    for name in data["entries"]:
        entry = zoo.model_info(name, root=REPO_ZOO)
        policy = zoo.load(name, root=REPO_ZOO)  # verifies files and params sha256
        assert (policy.obs_dim, policy.action_dim) == (entry.obs_dim, entry.action_dim)
        assert type(policy).__name__ == entry.policy_class
        obs = jr.normal(jr.key(0), (4, entry.obs_dim))
        noise = jr.normal(jr.key(1), (4, *policy.noise_shape))
        actions = _act(policy, obs, noise)
        assert actions.shape == (4, entry.action_dim)
        assert bool(jnp.all(jnp.isfinite(actions)) & jnp.all(jnp.abs(actions) <= 1))
        assert _sample(policy, obs[0], jr.key(2)).shape == (entry.action_dim,)
        assert entry.evaluation is not None and entry.evaluation["episodes"] >= 50


def _tolerance(evaluation: dict) -> float:
    """How far a re-evaluation may land from the recorded success.

    The recorded protocol fixes the seed, so on the same platform the result is identical; across
    platforms (XLA, MuJoCo builds) a few episodes may flip. Allowed: the CI of a difference of
    two estimates of the recorded size (sqrt 2 x the recorded 95% CI half-width), and never less
    than 3 episodes' worth, since the CI is 0 when every episode succeeds or fails.
    """
    return max(math.sqrt(2) * evaluation["success_ci95"], 3 / evaluation["episodes"])


@pytest.mark.slow
def test_shipped_entries_reproduce_their_success():
    for name, raw in _shipped()["entries"].items():
        recorded = raw["evaluation"]
        result = zoo.evaluate(name, root=REPO_ZOO)  # the recorded episodes and seed
        assert len(result.episodes) == recorded["episodes"] and result.seed == recorded["seed"]
        assert abs(result.success - recorded["success"]) <= _tolerance(recorded), (
            f"{name}: success {result.success:.3f}, recorded {recorded['success']:.3f} "
            f"± {recorded['success_ci95']:.3f}"
        )


def test_paper_reference_is_the_papers_number_for_this_task():
    from fidec_zoo.zoo._entry import paper_reference

    scene = paper_reference("fidec", "scene-play-singletask-task2-v0")
    assert (scene["value"], scene["std"]) == (0.72, 0.05) and "1M steps" in scene["source"]
    assert paper_reference("fql", "puzzle-3x3-play-singletask-task4-v0")["value"] == 0.16
    assert paper_reference("fidec-l2", "scene-play-singletask-task2-v0")["value"] is None
    assert paper_reference("fidec", "pointmaze-medium-navigate-singletask-v0")["value"] is None
    for name in zoo.list_models():  # the shipped entries carry it
        entry = zoo.model_info(name)
        assert entry.paper == paper_reference(entry.recipe, entry.env_name)
