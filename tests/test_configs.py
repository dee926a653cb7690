"""Typed configs: exact JSON round trips (a user's own metric included), recipes and their
per-environment values, the command line generated from the types, and the README example
training with its recipe's own settings."""

import dataclasses
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import pytest

from fidec_zoo import configs, offline, recipes
from fidec_zoo.configs import (
    ConfigError,
    OptimConfig,
    Recipe,
    ResidualFlowQLConfig,
    TrainConfig,
    from_json,
    to_json,
)
from fidec_zoo.constraints import FixedPenalty, Lagrangian
from fidec_zoo.metrics import ANCHORS, AbstractMatrixMetric, FisherMetric, L2Metric

ROOT = Path(__file__).resolve().parent.parent
ENVS = ("cube-single-play-singletask-task2-v0", "puzzle-3x3-play-singletask-task4-v0",
        "scene-play-singletask-task2-v0")


class Anisotropic(AbstractMatrixMetric):
    """A user's metric with options: `diag(weights) ** power`."""

    weights: tuple[float, ...] = eqx.field(static=True)
    power: float = eqx.field(static=True, default=1.0)
    label: str = eqx.field(static=True, default="mine")

    def matrix(self, flow, obs, action, *, key):
        return jnp.diag(jnp.asarray(self.weights, action.dtype) ** self.power)


@pytest.mark.parametrize("name", recipes.available())
@pytest.mark.parametrize("env", (None, *ENVS))
def test_every_recipe_round_trips_through_json(name, env):
    recipe = recipes.config(name, env_name=env)
    text = to_json(recipe, indent=2)
    assert from_json(text) == recipe
    assert to_json(from_json(text), indent=2) == text  # and the text is a fixed point


def test_user_metric_with_options_round_trips_and_builds():
    metric = Anisotropic((1.0, 2.0, 0.5, 3.0, 1.5), power=2.0, label="x")
    recipe = recipes.config("deflow", env_name=ENVS[0], metric=metric, hidden=(8, 8),
                            lr=1e-4, schedule="cosine", warmup_steps=10)
    data = json.loads(to_json(recipe))
    assert data["agent"]["metric"] == {"type": "test_configs:Anisotropic",
                                       "weights": [1.0, 2.0, 0.5, 3.0, 1.5], "power": 2.0,
                                       "label": "x"}
    again = from_json(json.dumps(data))
    assert again == recipe and again.agent.metric.weights == metric.weights
    agent = again.build(28, 5, key=jr.key(0))
    assert agent.metric == metric and agent.constraint.target == 0.001


@pytest.mark.parametrize("anchor", ANCHORS)
def test_fisher_anchor_is_a_command_line_flag_and_round_trips(anchor, tmp_path):
    """`recipes/offline.py --agent fidec --anchor data` (the FisherMetric field, as tyro makes
    it) chooses the estimator; the job stores it and `--config` rebuilds it."""
    job = offline.parse(["--agent", "fidec", "--anchor", anchor, "--num-samples", "2",
                         "--seeds", "3", "--run-dir", str(tmp_path / "run")])
    assert job.agent.metric == FisherMetric(anchor=anchor, num_samples=2)
    assert job.seeds == 3 and from_json(to_json(job)) == job
    path = tmp_path / "job.json"
    path.write_text(to_json(job))
    assert offline.parse(["--config", str(path)]) == job


def test_run_configs_round_trip():
    for cfg in (TrainConfig(steps=7, optimiser=OptimConfig(grad_clip=None, schedule="linear")),
                configs.EvalConfig(every=None, episodes=3), configs.DataConfig(seed=4),
                offline.default_job("fql", ENVS[1], "paper", None)):
        assert from_json(to_json(cfg)) == cfg


def test_unstorable_configs_are_refused_clearly():
    class Local(L2Metric):
        pass

    with pytest.raises(ConfigError, match="inside a function"):
        to_json(ResidualFlowQLConfig(metric=Local()))
    with pytest.raises(ConfigError, match="cannot be imported"):
        from_json('{"type": "no_such_module:Thing"}')
    with pytest.raises(ConfigError, match="has no argument"):
        from_json('{"type": "fidec_zoo.metrics:FisherMetric", "tt": 1}')
    with pytest.raises(ConfigError, match="Cannot build FisherMetric"):
        from_json('{"type": "fidec_zoo.metrics:FisherMetric", "t": 2.0}')


def test_lagrangian_is_stored_by_its_arguments_not_its_array():
    lagrangian = Lagrangian(0.02, init_alpha=3.0)
    data = configs.to_dict(lagrangian)
    assert data == {"type": "fidec_zoo.constraints:Lagrangian", "target": 0.02,
                    "init_alpha": 3.0}
    again = configs.from_dict(data)
    assert float(again.alpha) == pytest.approx(3.0) and again.target == 0.02


def test_recipes_fill_in_the_reference_tables():
    fidec = recipes.config("fidec", env_name=ENVS[1], preset="paper", hparams="code")
    assert fidec.agent.constraint == Lagrangian(0.005, init_alpha=10.0)
    assert fidec.agent.metric == FisherMetric() and fidec.agent.hidden == (512,) * 4
    assert fidec.train.optimiser.grad_clip == 5.0 and fidec.train.steps == 1_000_000
    fql = recipes.config("fql", env_name=ENVS[1])
    assert fql.agent.constraint == FixedPenalty(1000.0) and fql.agent.metric == L2Metric()
    assert fql.train.optimiser.grad_clip is None and fql.agent.hidden == (128,) * 4
    assert recipes.config("iql", env_name="antmaze-giant-navigate-singletask-v0").agent.discount \
        == 0.995


def test_unknown_names_are_refused_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"(?s)cube-singel.*Did you mean.*cube-single-play"
                                         r".*cube-double.*scene"):
        recipes.config("fidec", env_name="cube-singel-play-singletask-task2-v0")
    with pytest.raises(ValueError, match="Unknown recipe 'fidek'.*fidec"):
        recipes.config("fidek")
    with pytest.raises(ValueError, match=r"Unknown hyperparameter\(s\) \['fisher_t'\].*valid"):
        recipes.config("fidec", fisher_t=0.8)
    with pytest.raises(TypeError, match="metric"):  # ours, or the test-suite's type check
        recipes.config("fidec", metric="l2")


def _help(*flags: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "offline.py"), *flags,
                           "--help"], capture_output=True, text=True, timeout=300,
                          env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_python_m_runs_the_main_jobs():
    """`python -m fidec_zoo.offline` / `.online` are recipes/offline.py / online.py (they were
    silent no-ops)."""
    for name in ("offline", "online"):
        outputs = [subprocess.run([sys.executable, *command, "--help"], capture_output=True,
                                  text=True, timeout=300, env={"COLUMNS": "80",
                                                               "PATH": "/usr/bin:/bin"}).stdout
                   for command in (["-m", f"fidec_zoo.{name}"], [str(ROOT / "recipes" /
                                                                     f"{name}.py")])]
        assert outputs[0] == outputs[1] and "usage: recipes/" in outputs[0]


def _flag_help(text: str) -> dict[str, str]:
    """Each flag of a tyro `--help` text (80 columns: one column, in boxes or plain) and the
    words shown after it: its help and default, joined over wrapped lines."""
    entries: dict[str, list[str]] = {}
    flag = None
    for line in text.splitlines():
        body = line.strip().strip("│").strip()
        if not body or line.startswith(("╰", "╭")) or re.fullmatch(r"[─-]+", body):
            flag = None
        elif match := re.match(r"│? {0,2}(--[\w.-]+)", line):  # continuations indent more
            flag = match.group(1)
            entries[flag] = re.split(r"\s{2,}", body, maxsplit=1)[1:]
        elif flag is not None:
            entries[flag].append(body)
    return {f: " ".join(words) for f, words in entries.items()}


def _undocumented_flags(text: str) -> list[str]:
    """The flags that show nothing but their type and default."""
    return [f for f, words in _flag_help(text).items()
            if f != "--help" and not re.sub(r"\(default:[^)]*\)", "", words).strip()]


def test_flag_help_parser_finds_a_flag_without_help():
    assert _undocumented_flags("│ --seed INT  (default: 0) │\n│ --x INT  what x is │") == \
        ["--seed"]


@pytest.mark.parametrize("module, argv, shows", [
    *(("fidec_zoo.offline", argv, "--eval.every") for argv in (
        [], ["--agent", "deflow", "--metric", "fisher"], ["--preset", "paper"],
        *(["--agent", name] for name in recipes.available()))),
    ("fidec_zoo.online", [], "--online.steps"),
    ("fidec_zoo.report", [], "--last"), ("fidec_zoo.report", ["compare"], "--arms"),
    ("fidec_zoo.report", ["record"], "DEST"), ("fidec_zoo.sweep", [], "--record"),
    *(("fidec_zoo.data.__main__", [c], "-h") for c in ("generate", "info", "list")),
    *(("fidec_zoo.zoo._cli", [c], "-h") for c in ("list", "info", "eval", "video", "verify",
                                                   "migrate", "table")),
])
def test_every_flag_has_help(module, argv, shows, monkeypatch, capsys):
    """Each flag of recipes/offline.py (every agent, both metrics and presets),
    recipes/online.py and the package's other commands says what it does, not only its type
    and default."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        importlib.import_module(module).main([*argv, "--help"])
    text = capsys.readouterr().out
    assert "usage:" in text and shows in text, text[-2000:]
    assert _undocumented_flags(text) == []


def _default(text: str, flag: str) -> str:
    """The default tyro shows for `flag` (which may wrap onto the next line)."""
    (value,) = re.findall(r"\(default: ([^)]*)\)", _flag_help(text)[flag])
    return value


@pytest.mark.parametrize("agent, env, preset", [
    ("fidec", "puzzle-3x3-play-singletask-task4-v0", "cpu"),
    ("fql", "scene-play-singletask-task2-v0", "paper"),
    ("iql", "antmaze-giant-navigate-singletask-v0", "cpu"),
])
def test_help_shows_the_recipes_true_defaults(agent, env, preset):
    text = _help("--agent", agent, "--env", env, "--preset", preset)
    recipe = recipes.config(agent, env_name=env, preset=preset)
    expected = {
        "--hidden": " ".join(map(str, recipe.agent.hidden)),
        "--discount": str(recipe.agent.discount),
        "--steps": str(recipe.train.steps),
        "--batch-size": str(recipe.train.batch_size),
        "--grad-clip": str(recipe.train.optimiser.grad_clip),
        "--eval.every": str(recipes.PRESETS[preset].eval_every),
    }
    if agent == "fidec":
        expected.update({"--target": str(recipe.agent.constraint.target),
                         "--t": str(recipe.agent.metric.t),
                         "--normalize-q-loss": "True"})
    if agent == "fql":
        expected["--alpha"] = str(recipe.agent.constraint.alpha)
    for flag, value in expected.items():
        assert _default(text, flag) == value, flag


def test_legacy_flags_become_their_replacements(capsys):
    job = offline.parse(["--agent", "fidec", "--fisher-t", "0.8", "--eval-every", "100",
                         "--dataset-episodes", "5", "--keep-checkpoints", "0",
                         "--normalize-q-loss", "false", "--grad-clip", "none",
                         "--target-divergence", "0.01"])
    assert job.agent.metric.t == 0.8 and job.eval.every == 100 and job.data.episodes == 5
    assert job.train.keep_checkpoints is None and job.agent.normalize_q_loss is False
    assert job.train.optimiser.grad_clip is None and job.agent.constraint.target == 0.01
    err = capsys.readouterr().err
    assert "--fisher-t is now --t" in err and "--eval-every is now --eval.every" in err


def test_metric_swap_and_config_file(tmp_path):
    job = offline.parse(["--agent", "fidec", "--metric", "l2", "--steps", "7"])
    assert job.agent.metric == L2Metric() and job.metric == "l2" and job.train.steps == 7
    path = tmp_path / "job.json"
    path.write_text(to_json(job))
    assert offline.parse(["--config", str(path)]) == job
    assert offline.parse(["--config", str(path), "--steps", "9"]).train.steps == 9
    with pytest.raises(ValueError, match="drop"):
        offline.parse(["--config", str(path), "--agent", "fql"])
    path.write_text('{"identity": {}, "recipe": {}}')
    with pytest.raises(ValueError, match="before typed configs"):
        offline.parse(["--config", str(path)])


def test_readme_example_trains_with_the_recipes_own_settings(monkeypatch, tmp_path):
    """The README's Python example passes no hyperparameter by hand; what trains is the
    recipe's optimiser (FiDec clips gradients at 5) and batch size."""
    import fidec_zoo.data
    import fidec_zoo.envs
    import fidec_zoo.train._fit as fit_module

    (block,) = [b for b in re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(),
                                      re.M | re.S) if "fit(" in b]
    assert not re.search(r"grad_clip|lr=|batch_size", block)
    used = {}
    real_updater = fit_module.Updater

    def recording_updater(optimiser, batch_size, **kwargs):
        used.update(optimiser=optimiser, batch_size=batch_size)
        return real_updater(optimiser, batch_size, **kwargs)

    tiny = _tiny_dataset(28, 5)
    monkeypatch.setattr(fit_module, "Updater", recording_updater)
    monkeypatch.setattr(fidec_zoo.data, "load_ogbench", lambda *a, **k: (None, tiny, tiny))
    monkeypatch.setattr(fidec_zoo.envs, "evaluate", lambda *a, **k: dataclasses.make_dataclass(
        "R", ["success"])(0.0))
    monkeypatch.chdir(tmp_path)
    block = block.replace("steps=5_000", "steps=2")
    exec(compile(block, "README.md", "exec"), {})
    recipe = recipes.config("fidec", env_name="cube-single-play-singletask-task2-v0",
                            metric=L2Metric())
    assert used["optimiser"] is OptimConfig(grad_clip=5.0).make(2)
    assert used["batch_size"] == recipe.train.batch_size == 256


def _tiny_dataset(obs_dim, action_dim):
    from fidec_zoo.dataset import Dataset

    n, key = 300, jr.key(5)
    obs = jr.normal(key, (n, obs_dim))
    actions = jnp.tanh(jr.normal(jr.fold_in(key, 1), (n, action_dim)))
    zeros = jnp.zeros(n)
    return Dataset(observations=obs, actions=actions, rewards=zeros, masks=zeros + 1,
                   next_observations=obs, next_actions=actions, terminals=zeros)


def test_a_recipe_is_agent_plus_training():
    recipe = recipes.config("fidec", env_name=ENVS[0], hidden=(8,), steps=3)
    assert isinstance(recipe, Recipe) and recipe.train.steps == 3
    with pytest.raises(TypeError, match="agent"):  # ours, or the test-suite's type check
        Recipe("x", agent=TrainConfig())


def _differing(name: str, env: str) -> set[str]:
    code = recipes.config(name, env_name=env, hparams="code").agent
    paper = recipes.config(name, env_name=env, hparams="paper").agent
    return {f.name for f in dataclasses.fields(code)
            if getattr(code, f.name) != getattr(paper, f.name)}


@pytest.mark.parametrize("env, expected", [
    ("cube-single-play-singletask-task2-v0",
     {"fidec": {"metric"}, "iql": {"awr_temperature"}}),
    ("puzzle-3x3-play-singletask-task4-v0",
     {"fidec": {"metric", "constraint"}, "deflow": {"constraint"},
      "rebrac": {"alpha_actor", "alpha_critic"}}),
    ("antsoccer-arena-navigate-singletask-task4-v0",
     {"fidec": {"metric"}, "iql": {"awr_temperature"}, "ifql": {"num_samples"},
      "rebrac": {"alpha_actor", "alpha_critic"}}),
])
def test_paper_and_code_sets_differ_exactly_where_paper_and_code_do(env, expected):
    """t = 0.8 (fixed) for FiDec everywhere, the puzzle delta 0.0005, and the baselines'
    per-environment values; nothing else (FQL's alpha is the same in both)."""
    for name in recipes.available():
        assert _differing(name, env) == expected.get(name, set()), name
    paper = recipes.config("fidec", env_name=env, hparams="paper")
    assert paper.agent.metric == FisherMetric(t=0.8, t_width=0.0) and paper.hparams == "paper"
    if env.startswith("puzzle"):
        assert paper.agent.constraint.target == 0.0005
        assert recipes.config("fidec", env_name=env).agent.constraint.target == 0.005


def test_the_paper_preset_uses_the_paper_set_and_the_set_is_stored():
    assert recipes.config("fidec", preset="paper").hparams == "paper"
    assert recipes.config("fidec").hparams == "code"
    recipe = recipes.config("fidec", preset="paper", hparams="code")
    assert from_json(to_json(recipe)).hparams == "code"
    with pytest.raises(ValueError, match="Unknown hyperparameter set 'papr'"):
        recipes.config("fidec", hparams="papr")


def test_the_job_chooses_and_records_the_set():
    job = offline.parse(["--agent", "fidec", "--hparams", "paper",
                         "--env", "puzzle-3x3-play-singletask-task4-v0"])
    assert job.hparams == "paper" and job.agent.metric.t == 0.8
    assert job.agent.constraint.target == 0.0005 and job.the_recipe.hparams == "paper"
    assert configs.to_dict(job)["hparams"] == "paper"
    assert offline.identity(job) != offline.identity(offline.parse(
        ["--agent", "fidec", "--env", "puzzle-3x3-play-singletask-task4-v0"]))
    assert str(job.default_run_dir()).startswith("runs/fidec-paper-puzzle-3x3")
    assert offline.parse(["--preset", "paper"]).hparams == "paper"
    assert offline.parse(["--preset", "paper", "--hparams", "code"]).agent.metric.t == 0.9


def test_a_class_from_the_running_script_is_stored_with_a_warning():
    """`__main__:Class` loads again only from the same script: say so when storing it."""
    main_metric = type("ScriptMetric", (L2Metric,), {"__module__": "__main__"})
    with pytest.warns(UserWarning, match="loads again only from that same script"):
        assert configs.to_dict(main_metric())["type"] == "__main__:ScriptMetric"
