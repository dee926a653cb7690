"""Offline-to-online fine-tuning: the replay buffer's semantics, the online phase end to end for
FQL, DeFlow and FiDec on a tiny generated dataset, its bad inputs, and kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from runs import fake_run
from trees import assert_close_trees

from fidec_zoo import checkpoint, recipes, zoo
from fidec_zoo import online as online_job
from fidec_zoo.buffer import ReplayBuffer
from fidec_zoo.configs import OnlineConfig
from fidec_zoo.dataset import Dataset
from fidec_zoo.report import read_csv
from fidec_zoo.train import Evaluator, fit_online
from fidec_zoo.train._online import open_envs


def rows(n: int, start: int = 0, obs_dim: int = 3, action_dim: int = 2) -> Dataset:
    """`n` rows whose every value is the row's number (`start`, `start + 1`, ...), so a sampled
    row tells which one it is."""
    ids = jnp.arange(start, start + n, dtype=jnp.float32)
    obs = jnp.repeat(ids[:, None], obs_dim, axis=1)
    act = jnp.repeat(ids[:, None], action_dim, axis=1)
    return Dataset(obs, act, ids, ids, obs, act, ids)


def test_buffer_keeps_offline_rows_and_appends_online_rows_in_order():
    offline = rows(10)
    buffer = ReplayBuffer.create(offline, capacity=16)
    assert buffer.capacity == 16 and len(buffer) == 10
    add = jax.jit(ReplayBuffer.add)
    buffer = add(buffer, rows(2, 100))
    buffer = add(buffer, rows(3, 102))
    assert len(buffer) == 15 and int(buffer.added) == 5
    np.testing.assert_array_equal(buffer.online_rows().rewards, np.arange(100, 105))
    buffer = add(buffer, rows(4, 105))  # 9 online rows in 6 slots: the 3 oldest are replaced
    assert len(buffer) == 16 and int(buffer.added) == 9
    np.testing.assert_array_equal(buffer.online_rows().rewards, np.arange(103, 109))
    np.testing.assert_array_equal(buffer.offline.rewards, np.arange(10))


@pytest.mark.parametrize("capacity", [5, 10])
def test_buffer_capacity_must_exceed_the_dataset(capacity):
    with pytest.raises(ValueError, match="must exceed the offline dataset's 10 rows"):
        ReplayBuffer.create(rows(10), capacity=capacity)


def sampled_ids(buffer: ReplayBuffer, draws: int = 200, batch: int = 64) -> np.ndarray:
    keys = jr.split(jr.key(0), draws)
    batches = jax.jit(jax.vmap(lambda k: buffer.sample(k, batch).rewards))(keys)
    return np.asarray(batches)


def test_uniform_sampling_covers_every_row_held_equally():
    buffer = ReplayBuffer.create(rows(30), capacity=100).add(rows(10, 100))
    ids = sampled_ids(buffer).ravel()
    assert set(np.unique(ids)) == set(range(30)) | set(range(100, 110))
    online = np.mean(ids >= 100)
    assert abs(online - 10 / 40) < 0.02  # 12800 draws: the standard error is 0.004
    # rows are whole: every field of a sampled row is that row's
    batch = buffer.sample(jr.key(1), 32)
    np.testing.assert_array_equal(batch.observations[:, 0], batch.rewards)
    np.testing.assert_array_equal(batch.next_actions[:, 1], batch.terminals)


@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_balanced_sampling_draws_the_online_fraction(fraction):
    buffer = ReplayBuffer.create(rows(1000), capacity=2000, online_fraction=fraction)
    only_offline = sampled_ids(buffer, draws=5)
    assert (only_offline < 1000).all()  # no online row yet: every row offline
    buffer = buffer.add(rows(4, 5000))
    ids = sampled_ids(buffer)
    assert (np.mean(ids >= 5000, axis=1) == fraction).all()  # exactly that many per batch
    assert set(np.unique(ids[ids >= 5000])) == {5000, 5001, 5002, 5003}
    assert len(np.unique(ids[ids < 1000])) > 900


def test_online_fraction_is_checked():
    with pytest.raises(ValueError, match="online_fraction"):
        ReplayBuffer.create(rows(4), capacity=8, online_fraction=1.5)


# ---- the online phase on a tiny generated dataset ----------------------------------------------

ENV = "cube-single-play-singletask-task2-v0"
TINY = dict(hidden=(32, 32), batch_size=64, steps=10)


def tiny_agent(name: str, data: Dataset):
    recipe = recipes.config(name, env_name=ENV, **TINY)
    return recipe, recipe.build(data.obs_dim, data.action_dim, key=jr.key(0))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "workers"), [("fql", 1), ("deflow", 2), ("fidec", 1)])
def test_online_phase_end_to_end(name, workers, tiny_ogbench, tmp_path):
    train, val = tiny_ogbench
    recipe, agent = tiny_agent(name, train)
    config = OnlineConfig(steps=20, envs=2, workers=workers, log_every=10, eval_every=10)
    res = fit_online(agent, train, ENV, config, recipe.train, run_dir=tmp_path, key=jr.key(3),
                     evaluator=Evaluator(ENV, episodes=2), start_step=10, val=val,
                     progress=False)
    assert (res.env_step, res.step) == (20, 30)
    assert len(res.buffer) == len(train) + 20 and res.buffer.capacity == len(train) + 20
    online = res.buffer.online_rows()
    np.testing.assert_array_equal(online.observations[2:], online.next_observations[:-2])
    assert set(np.unique(online.rewards)) <= {-1.0, 0.0}  # cube-single: one subgoal
    assert (online.masks == 1.0).all() and (online.terminals == 0.0).all()  # 10 of 200 steps
    metrics = read_csv(tmp_path / "online" / "metrics.csv")
    assert [r["step"] for r in metrics] == [10, 20] and [r["update"] for r in metrics] == [20, 30]
    assert all(np.isfinite(r["loss"]) and r["env_steps_per_s"] > 0 for r in metrics)
    evals = read_csv(tmp_path / "online" / "eval.csv")
    assert [r["step"] for r in evals] == [0, 10, 20]  # before fine-tuning, then periodic
    assert res.last_eval is not None and len(res.last_eval.episodes) == 2


def test_bad_input_is_refused_before_training(tiny_ogbench, tmp_path):
    train, _ = tiny_ogbench
    recipe, agent = tiny_agent("fql", train)
    kw = dict(run_dir=tmp_path, key=jr.key(0), evaluator=Evaluator(ENV, episodes=1))
    with pytest.raises(ValueError, match="must exceed the offline dataset's"):
        fit_online(agent, train, ENV, OnlineConfig(steps=10, capacity=len(train)),
                   recipe.train, **kw)
    small = Dataset(*(x[:, :3] if x.ndim == 2 else x for x in jax.tree.leaves(train)))
    small_recipe = recipes.config("fql", env_name=ENV, **TINY)
    small_agent = small_recipe.build(3, 3, key=jr.key(0))
    with pytest.raises(ValueError, match="Dataset/env mismatch"):
        fit_online(small_agent, small, ENV, OnlineConfig(steps=10), recipe.train, **kw)
    with pytest.raises(RuntimeError, match="Cannot make the environment"):
        open_envs("cube-single-play-singletask-task9-v0", 1, 1)
    with pytest.raises(ValueError, match="multiple of envs"):
        OnlineConfig(steps=10, envs=3)


def test_a_zoo_entry_without_critic_is_refused_saying_how_to_get_one():
    with pytest.raises(ValueError, match="ships its policy only") as e:
        online_job.parse(["--from", "fidec/cube-single-play-singletask-task1-v0",
                          "--online.steps", "10"])  # an entry that ships its policy only
    assert "recipes/offline.py --agent fidec" in str(e.value) and "--from runs/" in str(e.value)
    with pytest.raises(ValueError, match="neither a run dir"):
        online_job.parse(["--from", "fidec/no-such-entry"])
    with pytest.raises(ValueError, match="only --run-dir and --online"):
        online_job.parse(["--from", "fidec/cube-single-play-singletask-task1-v0", "--steps", "5"])


def test_fql_takes_the_references_online_alpha():
    recipe = recipes.config("fql", env_name="scene-play-singletask-task2-v0", **TINY)
    agent = recipe.build(4, 2, key=jr.key(0))
    tuned = online_job.online_agent(agent, "antsoccer-arena-navigate-singletask-task4-v0",
                                    OnlineConfig())
    assert tuned.constraint.alpha == 30.0
    kept = online_job.online_agent(agent, ENV, OnlineConfig())
    assert kept.constraint.alpha == agent.constraint.alpha == 300.0
    assert online_job.online_agent(agent, ENV, OnlineConfig(fql_alpha=3.0)).constraint.alpha == 3


@pytest.mark.slow
def test_fine_tuning_a_zoo_entry_with_its_agent(tiny_ogbench, tmp_path, monkeypatch):
    train, _ = tiny_ogbench
    recipe, agent = tiny_agent("fql", train)
    monkeypatch.setenv("FIDEC_ZOO_HOME", str(tmp_path / "zoo"))
    name = "fql/tiny-online-test"
    zoo.save_pretrained(agent, name, recipe=recipe, include_agent=True,
                        dataset={"episodes": 2, "seed": 0}, training={"steps": 10})
    run_dir = tmp_path / "run"
    summary = online_job.main(["--from", name, "--run-dir", str(run_dir), "--online.steps", "4",
                               "--online.envs", "2", "--online.log-every", "2"])
    assert summary["env_steps"] == 4 and summary["updates"] == 14
    assert summary["success_before"] is not None and summary["buffer_rows"] == len(train) + 4
    for f in ("config.json", "metrics.csv", "eval.csv", "summary.json", "learning_curve.png"):
        assert (run_dir / "online" / f).exists(), f
    config = json.loads((run_dir / "online" / "config.json").read_text())
    assert config["versions"]["jax"] == jax.__version__
    assert [s["from_step"] for s in config["sessions"]] == [0] and config["start_step"] == 10


CHILD = """
import jax.random as jr
from test_online import ENV, kill_resume_run
from fidec_zoo.data import load_ogbench
_, train, _ = load_ogbench(ENV, episodes=2, seed=0)
kill_resume_run(train, {run!r}, steps=4000)
"""


def kill_resume_run(train: Dataset, run_dir, steps: int):
    """The online run the kill-and-resume test interrupts, resumes and repeats."""
    recipe, agent = tiny_agent("fql", train)
    config = OnlineConfig(steps=steps, envs=2, log_every=10, checkpoint_every=10,
                          capacity=len(train) + 4000)
    return fit_online(agent, train, ENV, config, recipe.train, run_dir=run_dir, key=jr.key(3),
                      evaluator=Evaluator(ENV, episodes=1), progress=False)


@pytest.mark.slow
def test_sigterm_saves_the_online_phase_and_a_rerun_resumes_it(tiny_ogbench, data_root, tmp_path):
    train, _ = tiny_ogbench
    run = tmp_path / "run"
    ckpts = run / "online" / "checkpoints"
    tests_dir, root = Path(__file__).parent, Path(__file__).parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(tests_dir)]),
               FIDEC_ZOO_DATA=str(data_root))
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(run=str(run))], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not checkpoint.checkpoint_steps(ckpts):
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=300)
    assert child.returncode != 0 and "KeyboardInterrupt" in err, err
    stopped = checkpoint.latest_step(ckpts)  # saved at the env step it was stopped at
    assert 10 <= stopped < 4000 and stopped % 2 == 0
    assert read_csv(run / "online" / "metrics.csv")[-1]["step"] == stopped // 10 * 10

    # an uninterrupted run to the same step collected the same rows and trained the same agent
    full = kill_resume_run(train, tmp_path / "full", steps=stopped)
    saved = kill_resume_run(train, run, steps=stopped)  # restores, nothing left to do
    assert saved.env_step == stopped and saved.step == full.step == stopped
    assert_close_trees(saved.agent, full.agent, rtol=1e-6, atol=1e-7)
    for field in ("observations", "actions", "rewards", "masks", "next_observations"):
        np.testing.assert_array_equal(np.asarray(getattr(saved.buffer.online_rows(), field)),
                                      np.asarray(getattr(full.buffer.online_rows(), field)))
    resumed = kill_resume_run(train, run, steps=stopped + 20)  # and goes on from there
    assert resumed.env_step == stopped + 20 and resumed.step == stopped + 20
    steps = [r["step"] for r in read_csv(run / "online" / "metrics.csv")]
    end = stopped + 20
    assert steps == list(range(10, end + 1, 10)) + ([end] if end % 10 else [])


@pytest.mark.slow
def test_fine_tuning_a_run_dir_continues_its_agent_optimiser_and_update_count(
        tiny_ogbench, tmp_path):
    train, _ = tiny_ogbench
    recipe, agent = tiny_agent("deflow", train)
    run = tmp_path / "run"
    steps = fake_run(recipe, run, {None: agent})
    config = json.loads((run / "config.json").read_text())
    config["job"]["data"]["episodes"] = 2  # the tiny dataset (fake_run records the preset's)
    (run / "config.json").write_text(json.dumps(config))
    summary = online_job.main(["--from", str(run), "--online.steps", "4", "--online.envs", "2",
                               "--online.log-every", "2"])
    assert summary["env_steps"] == 4 and summary["updates"] == steps + 4
    assert [r["update"] for r in read_csv(run / "online" / "metrics.csv")] == \
        [steps + 2, steps + 4]
    assert checkpoint.checkpoint_steps(run / "online" / "checkpoints") == [4]
    assert checkpoint.checkpoint_steps(run / "checkpoints") == [steps]  # the offline run's
    again = online_job.main(["--from", str(run), "--online.steps", "4", "--online.envs", "2",
                             "--online.log-every", "2"])  # finished: nothing left to run
    assert again["env_steps"] == 4 and again["updates"] == steps + 4
    config = json.loads((run / "online" / "config.json").read_text())
    assert [s["from_step"] for s in config["sessions"]] == [0, 4]
    assert config["start_step"] == steps  # the first session's, not the resumed one's 0
