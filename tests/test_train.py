"""`fidec_zoo.train.fit` and `fidec_zoo.checkpoint`: learning, logging, exact resume (also after
a real SIGINT or SIGTERM), frozen targets, NaN handling, size checks, checkpoint round trips, and
the optimiser a run trains with (a recipe's, a custom optax one, schedules) and restores with."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from trees import arrays, assert_close_trees, read_csv

from fidec_zoo import checkpoint, recipes
from fidec_zoo.agents import FlowBC, trainable
from fidec_zoo.configs import OptimConfig, TrainConfig, from_dict
from fidec_zoo.dataset import Dataset
from fidec_zoo.envs import EvalResult
from fidec_zoo.nn import Frozen
from fidec_zoo.policies import ActionField, FlowPolicy
from fidec_zoo.train import Evaluator, build_agent, fit, restore_agent

OBS, ACT = 5, 2
CONFIG = TrainConfig(batch_size=64, chunk=25, log_every=25)
KW = dict(progress=False)


def config(**changes) -> TrainConfig:
    """`CONFIG` with some fields changed (`steps` is passed to `fit` itself)."""
    return dataclasses.replace(CONFIG, **changes)


def make_data(n: int = 512, obs_dim: int = OBS, action_dim: int = ACT, seed: int = 0) -> Dataset:
    """Actions are a smooth function of the state, so behaviour cloning can learn them."""
    k_obs, k_w = jr.split(jr.key(seed))
    obs = jr.normal(k_obs, (n, obs_dim))
    actions = 0.9 * jnp.tanh(obs @ jr.normal(k_w, (obs_dim, action_dim)))
    zeros = jnp.zeros(n)
    return Dataset(obs, actions, zeros, zeros + 1, obs, actions, zeros)


def make_agent(cls=FlowBC, seed: int = 1, **fields):
    return cls(FlowPolicy(ActionField(OBS, ACT, (32, 32), key=jr.key(seed))), **fields)


class SlowFlowBC(FlowBC):
    """FlowBC whose every update sleeps `delay` seconds on the host (to interrupt it mid-run)."""

    delay: float = eqx.field(static=True, default=0.0)

    def loss(self, batch, *, key, step):
        if self.delay:
            jax.debug.callback(lambda s: time.sleep(self.delay), step)
        return FlowBC.loss(self, batch, key=key, step=step)


class FrozenFlowBC(FlowBC):
    """FlowBC plus a frozen network used *without* stop_gradient: only the trainable filter can
    keep the optimiser away from it."""

    target: Frozen

    def loss(self, batch, *, key, step):
        bc, metrics = FlowBC.loss(self, batch, key=key, step=step)
        t = jnp.full(batch.actions.shape[0], 0.5)
        extra = jnp.mean(jax.vmap(self.target.module)(batch.observations, batch.actions, t) ** 2)
        return bc + extra, {**metrics, "extra": extra}


class NaNFlowBC(FlowBC):
    """FlowBC whose loss becomes NaN from step 37 on."""

    def loss(self, batch, *, key, step):
        bc, metrics = FlowBC.loss(self, batch, key=key, step=step)
        bad = jnp.where(step >= 37, jnp.nan, 0.0)
        return bc + bad, {**metrics, "bad_term": bad}


def test_loss_decreases_and_metrics_csv(tmp_path):
    agent, data = make_agent(), make_data()
    res = fit(agent, data, CONFIG, steps=300, run_dir=tmp_path, key=jr.key(2),
              val=make_data(seed=3), **KW)
    assert res.step == 300 and res.run_dir == tmp_path.resolve() and res.wall_time > 0
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(25, 301, 25))
    assert {"step", "wall_time", "loss", "bc_loss", "val_loss", "val_bc_loss"} <= set(rows[0])
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-3:]) < 0.7 * losses[0]
    assert checkpoint.checkpoint_steps(tmp_path / "checkpoints") == [250, 300]
    assert not any(x.is_deleted() for x in arrays(agent))  # the caller's agent was not donated
    # A finished run returns at once with the stored agent.
    again = fit(make_agent(), data, CONFIG, steps=300, run_dir=tmp_path, key=jr.key(2), **KW)
    assert again.step == 300
    assert_close_trees(again.agent, res.agent, rtol=0, atol=0)
    assert len(read_csv(tmp_path / "metrics.csv")) == len(rows)


def test_loggers_receive_every_csv_row_and_a_broken_one_is_dropped(tmp_path):
    received = []

    def broken(name, row):
        raise ConnectionError("no server")

    with pytest.warns(UserWarning, match="ConnectionError: no server. It gets no more rows"):
        fit(make_agent(), make_data(), CONFIG, steps=100, run_dir=tmp_path, key=jr.key(2),
            loggers=[broken, lambda name, row: received.append((name, row))], **KW)
    rows = read_csv(tmp_path / "metrics.csv")
    assert [name for name, _ in received] == ["metrics"] * len(rows) == ["metrics"] * 4
    assert [{k: float(v) for k, v in row.items()} for _, row in received] == \
        [{k: float(v) for k, v in row.items()} for row in rows]
    with pytest.raises(TypeError, match="(?i)callable"):  # also caught by the jaxtyping hook
        fit(make_agent(), make_data(), CONFIG, steps=10, run_dir=tmp_path / "x", key=jr.key(2),
            loggers=["wandb"], **KW)


def test_resume_matches_uninterrupted_run(tmp_path):
    data, kw = make_data(), dict(KW, key=jr.key(4))
    cfg = config(checkpoint_every=25)
    full = fit(make_agent(), data, cfg, steps=100, run_dir=tmp_path / "full", **kw)
    run = tmp_path / "resumed"
    fit(make_agent(), data, cfg, steps=50, run_dir=run, **kw)
    # A crash after step 50's rows were written but before its checkpoint: resume from 25.
    checkpoint_50 = run / "checkpoints" / "50"
    assert checkpoint_50.is_dir()
    for p in sorted(checkpoint_50.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    checkpoint_50.rmdir()
    resumed = fit(make_agent(), data, cfg, steps=100, run_dir=run, **kw)
    assert resumed.step == 100
    assert_close_trees(resumed.agent, full.agent, rtol=1e-6, atol=1e-7)
    rows, full_rows = read_csv(run / "metrics.csv"), read_csv(tmp_path / "full" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [25, 50, 75, 100]
    np.testing.assert_allclose(
        [float(r["loss"]) for r in rows], [float(r["loss"]) for r in full_rows], rtol=1e-6
    )


CHILD = """
import jax.random as jr
from test_train import KW, SlowFlowBC, config, make_agent, make_data
from fidec_zoo.train import fit
fit(make_agent(SlowFlowBC, delay=0.02), make_data(),
    config(chunk=10, log_every=10, checkpoint_every=10), steps=200, run_dir={run!r},
    key=jr.key(7), **KW)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_saves_checkpoint_and_resume_is_exact(tmp_path, sig):
    """Ctrl-C, or the SIGTERM of a cluster's time limit, ends the chunk, saves and stops."""
    run = tmp_path / "run"
    tests_dir, root = Path(__file__).parent, Path(__file__).parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(tests_dir)]))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(run=str(run))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not checkpoint.checkpoint_steps(run / "checkpoints"):
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    child.send_signal(sig)
    _, err = child.communicate(timeout=120)
    assert child.returncode != 0 and "KeyboardInterrupt" in err, err
    stopped = checkpoint.latest_step(run / "checkpoints")
    assert 10 <= stopped < 200 and stopped % 10 == 0
    assert int(read_csv(run / "metrics.csv")[-1]["step"]) == stopped

    kw = dict(KW, key=jr.key(7))
    cfg = config(chunk=10, log_every=10, checkpoint_every=10)
    resumed = fit(make_agent(SlowFlowBC), make_data(), cfg, steps=200, run_dir=run, **kw)
    full = fit(make_agent(SlowFlowBC), make_data(), cfg, steps=200, run_dir=tmp_path / "full",
               **kw)
    assert_close_trees(resumed.agent, full.agent, rtol=1e-6, atol=1e-7)
    assert [int(r["step"]) for r in read_csv(run / "metrics.csv")] == list(range(10, 201, 10))


def test_frozen_targets_are_not_optimised(tmp_path):
    target = Frozen(ActionField(OBS, ACT, (32, 32), key=jr.key(9)))
    agent = make_agent(FrozenFlowBC, target=target)
    res = fit(agent, make_data(), CONFIG, steps=50, run_dir=tmp_path, key=jr.key(5), **KW)
    for before, after in zip(arrays(target), arrays(res.agent.target), strict=True):
        assert np.array_equal(np.asarray(before), np.asarray(after))
    assert not np.allclose(arrays(agent.flow)[0], arrays(res.agent.flow)[0])
    # The optimiser state holds moments for the trainable leaves only.
    n_trainable = len(jax.tree.leaves(eqx.filter(agent, trainable(agent))))
    opt_state = optax.adam(1e-3).init(eqx.filter(agent, trainable(agent)))
    assert len(jax.tree.leaves(opt_state[0].mu)) == n_trainable == len(arrays(agent.flow))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = config(chunk=10, log_every=10, checkpoint_every=20)
    with pytest.raises(FloatingPointError) as info:
        fit(make_agent(NaNFlowBC), make_data(), cfg, steps=100, run_dir=tmp_path, key=jr.key(6),
            **KW)
    message = str(info.value)
    assert "step 37" in message and "bad_term=nan" in message and "bc_loss=" in message
    assert "step 20" in message
    assert checkpoint.checkpoint_steps(tmp_path / "checkpoints") == [20]
    assert [int(r["step"]) for r in read_csv(tmp_path / "metrics.csv")] == [10, 20, 30]


def test_periodic_evaluation_writes_eval_csv(tmp_path, monkeypatch):
    calls = []

    def fake_evaluate(policy, env_name, *, episodes, seed, workers):
        calls.append((env_name, episodes, workers, seed))
        return EvalResult(env_name=env_name, success=0.5, success_std=0.1, success_ci95=0.0,
                          return_mean=-3.0, length_mean=42.0, episodes=({},) * episodes,
                          wall_time=0.0, num_envs=workers, seed=seed)

    # The Evaluator calls `fidec_zoo.envs.evaluate` through its own module's name for it.
    monkeypatch.setattr("fidec_zoo.train._evaluator.evaluate", fake_evaluate)
    evaluator = Evaluator("toy-env", every=50, episodes=3, workers=2)
    res = fit(make_agent(), make_data(), CONFIG, steps=120, run_dir=tmp_path, key=jr.key(8),
              evaluator=evaluator, **KW)
    rows = read_csv(tmp_path / "eval.csv")
    assert [int(r["step"]) for r in rows] == [50, 100, 120]
    assert {"step", "success", "return", "length", "wall_time"} <= set(rows[0])
    assert float(rows[0]["success"]) == 0.5 and res.last_eval.success == 0.5
    assert [c[:3] for c in calls] == [("toy-env", 3, 2)] * 3 and len({c[3] for c in calls}) == 3
    assert checkpoint.checkpoint_steps(tmp_path / "checkpoints") == [100, 120]
    with pytest.raises(TypeError, match="env_name"):  # no evaluation without an environment
        Evaluator(every=5)


@pytest.mark.parametrize("obs_dim, action_dim, name", [(6, ACT, "obs_dim"), (OBS, 3, "action_dim")])
def test_dimension_mismatch_is_reported_before_compiling(tmp_path, obs_dim, action_dim, name):
    data = make_data(obs_dim=obs_dim, action_dim=action_dim)
    with pytest.raises(ValueError, match=name) as info:
        fit(make_agent(), data, CONFIG, steps=10, run_dir=tmp_path / "run", key=jr.key(0), **KW)
    want = {"obs_dim": (obs_dim, OBS), "action_dim": (action_dim, ACT)}[name]
    assert f"data.{name}={want[0]}" in str(info.value)
    assert f"agent.policy.{name}={want[1]}" in str(info.value)
    assert not (tmp_path / "run").exists()


# ---- the optimiser a run trains with, and restores with --------------------------------------


def moved(before, after) -> float:
    """The largest change of any parameter."""
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(arrays(before), arrays(after), strict=True))


def test_fit_of_a_recipe_trains_with_its_clipping(tmp_path):
    """`fit(recipe, ...)` builds the recipe's agent from `fold_in(key, 0)` and trains it with
    `fold_in(key, 1)` and `recipe.train`'s optimiser, clipping included: the same numbers as the
    built agent trained with the optax chain written by hand. Adam does not see a gradient's
    scale except through its eps (1e-8), so a global-norm clip of 1e-10 bounds every update by
    lr * 1e-10 / 1e-8 = lr / 100, while an unclipped first update moves every weight by lr."""
    data, key, lr, steps = make_data(), jr.key(11), 1e-3, 20
    sizes = dict(hidden=(32, 32), batch_size=64, steps=steps, chunk=10, log_every=10, lr=lr)
    hand = {1e-10: optax.chain(optax.clip_by_global_norm(1e-10), optax.adam(lr)),
            None: optax.adam(lr)}
    trained = {}
    for clip, by_hand in hand.items():
        recipe = recipes.config("flow_bc", grad_clip=clip, **sizes)
        assert recipe.train.optimiser == OptimConfig(lr=lr, grad_clip=clip)
        run = tmp_path / f"recipe_{clip}"
        res = fit(recipe, data, run_dir=run, key=key, **KW)
        assert res.step == steps
        assert [int(r["step"]) for r in read_csv(run / "metrics.csv")] == [10, 20]
        agent, train_key = build_agent(recipe, data, key)
        assert_close_trees(agent, recipe.build(OBS, ACT, key=jr.fold_in(key, 0)), rtol=0, atol=0)
        assert np.array_equal(jr.key_data(train_key), jr.key_data(jr.fold_in(key, 1)))
        ref = fit(agent, data, recipe.train, run_dir=tmp_path / f"hand_{clip}", key=train_key,
                  optimiser=by_hand, **KW)
        assert_close_trees(res.agent, ref.agent, rtol=1e-6, atol=1e-9)
        trained[clip] = moved(agent, res.agent)
        # The checkpoint records the recipe's training config: restoring needs no settings.
        _, meta = checkpoint.checkpoint_metadata(run / "checkpoints")
        assert meta["custom_optimiser"] is False
        assert from_dict(meta["train"]) == recipe.train
        skeleton = eqx.filter_eval_shape(lambda: recipe.build(OBS, ACT, key=jr.key(0)))
        restored, step = restore_agent(run, skeleton)
        assert step == steps
        assert_close_trees(restored, res.agent, rtol=0, atol=0)
    assert trained[1e-10] <= steps * lr / 100 * 1.01
    assert trained[None] > 10 * steps * lr / 100


def test_custom_optax_optimiser_trains_resumes_and_restores(tmp_path):
    data, cfg, key = make_data(), config(chunk=10, log_every=10), jr.key(12)
    # The optimiser given is the one that runs: a zero step size leaves every weight as it was.
    still = fit(make_agent(), data, cfg, steps=10, run_dir=tmp_path / "zero", key=key,
                optimiser=optax.sgd(0.0), **KW)
    assert_close_trees(still.agent, make_agent(), rtol=0, atol=0)

    opt = optax.sgd(1e-2, momentum=0.9)  # a state (the momentum) that resuming must restore
    run = tmp_path / "sgd"
    half = fit(make_agent(), data, cfg, steps=10, run_dir=run, key=key, optimiser=opt, **KW)
    res = fit(make_agent(), data, cfg, steps=20, run_dir=run, key=key, optimiser=opt, **KW)
    full = fit(make_agent(), data, cfg, steps=20, run_dir=tmp_path / "full", key=key,
               optimiser=opt, **KW)
    assert res.step == 20 and moved(make_agent(), res.agent) > 1e-3
    assert_close_trees(res.agent, full.agent, rtol=1e-6, atol=1e-7)
    assert checkpoint.checkpoint_steps(run / "checkpoints") == [10, 20]
    _, meta = checkpoint.checkpoint_metadata(run / "checkpoints")
    assert meta["custom_optimiser"] is True

    for step, want in ((None, res), (10, half)):
        restored, at = restore_agent(run, make_agent(), optimiser=opt, step=step)
        assert at == want.step
        assert_close_trees(restored, want.agent, rtol=0, atol=0)
    with pytest.raises(ValueError, match="custom optax optimiser; pass the same one as optimiser="):
        restore_agent(run, make_agent())


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_schedule_with_warmup_closed_form(schedule):
    """`warmup_steps` ramp the step size linearly from 0 to `lr`, then the schedule runs over
    the remaining steps (cosine and linear reach 0 at the last one); the optimiser that
    `make(steps)` returns steps with it."""
    lr, warmup, steps = 1e-3, 10, 110
    optim = OptimConfig(lr=lr, schedule=schedule, warmup_steps=warmup)

    def expected(t: int) -> float:
        if t < warmup:
            return lr * t / warmup
        frac = (t - warmup) / (steps - warmup)
        return lr * {"constant": 1.0, "cosine": 0.5 * (1 + math.cos(math.pi * frac)),
                     "linear": 1 - frac}[schedule]

    at = [0, 1, 5, 9, 10, 11, 35, 60, 85, 109, 110]
    want = [expected(t) for t in at]
    assert want[at.index(5)] == lr / 2 and want[at.index(10)] == lr
    if schedule != "constant":
        assert want[-1] == pytest.approx(0.0, abs=1e-20)
    if schedule == "cosine":
        assert want[at.index(60)] == pytest.approx(lr / 2)
    rate = optim.learning_rate(steps)
    tol = dict(rtol=1e-5, atol=1e-6 * lr)  # float32, relative to the peak step size
    np.testing.assert_allclose([float(rate(t)) for t in at], want, **tol)

    # Adam on a constant gradient has unit normalised moments: update t is -rate(t) / (1 + eps).
    tx = optim.make(steps)
    params = jnp.zeros(3)

    def one(state, _):
        updates, state = tx.update(jnp.ones(3), state, params)
        return state, updates[0]

    _, updates = jax.lax.scan(one, tx.init(params), None, length=steps + 1)
    np.testing.assert_allclose(-np.asarray(updates)[at], want, **tol)
    # Without a schedule or warmup the step size is the plain number.
    assert OptimConfig(lr=lr).learning_rate(steps) == lr


def test_restore_agent_of_a_clipped_run_needs_no_optimiser_settings(tmp_path):
    """The clip changes the optimiser state's structure (a chain); `restore_agent` rebuilds it
    from the checkpoint's record."""
    cfg = config(chunk=10, log_every=10, checkpoint_every=10,
                 optimiser=OptimConfig(lr=1e-3, grad_clip=5.0))
    res = fit(make_agent(), make_data(), cfg, steps=20, run_dir=tmp_path, key=jr.key(13), **KW)
    skeleton = eqx.filter_eval_shape(make_agent)  # allocates nothing
    restored, step = restore_agent(tmp_path, skeleton)
    assert step == 20
    assert type(restored) is FlowBC
    assert_close_trees(restored, res.agent, rtol=0, atol=0)
    earlier, step = restore_agent(tmp_path, skeleton, step=10)
    assert step == 10 and moved(earlier, res.agent) > 0
    with pytest.raises(FileNotFoundError, match=r"found steps \[10, 20\]"):
        restore_agent(tmp_path, skeleton, step=15)


def test_checkpoint_round_trip_with_typed_key_and_optax_state(tmp_path, monkeypatch):
    agent = make_agent()
    params = eqx.filter(agent, trainable(agent))
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    opt_state = opt.update(params, opt.init(params), params)[1]  # non-trivial moments
    tree = dict(agent=agent, opt_state=opt_state, key=jr.split(jr.key(3), 2), step=jnp.array(7))
    skeleton = eqx.filter_eval_shape(lambda: tree)

    monkeypatch.chdir(tmp_path)  # a relative path is made absolute
    path = checkpoint.save_pytree("policy", tree, {"recipe": "flow_bc", "success": 0.5})
    assert path == tmp_path / "policy"
    with pytest.raises(FileExistsError):
        checkpoint.save_pytree("policy", tree)
    restored = checkpoint.load_pytree(path, skeleton)
    assert checkpoint.read_metadata(path) == {"recipe": "flow_bc", "success": 0.5}
    assert type(restored["agent"]) is FlowBC and type(restored["opt_state"]) is type(opt_state)
    assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
    assert np.array_equal(jr.key_data(restored["key"]), jr.key_data(tree["key"]))
    for a, b in zip(arrays(restored), arrays(tree), strict=True):
        a, b = (jr.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
                for x in (a, b))  # fmt: skip
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))

    # Training checkpoints: latest N kept, a crashed (temporary) save is never "latest".
    for step in (1, 2, 3):
        checkpoint.save_checkpoint("ckpt", step, tree, metadata={"at": step}, max_to_keep=2)
    (tmp_path / "ckpt" / "4.orbax-checkpoint-tmp-1234").mkdir()
    assert checkpoint.checkpoint_steps("ckpt") == [2, 3] and checkpoint.latest_step("ckpt") == 3
    state, step, meta = checkpoint.restore_checkpoint("ckpt", skeleton)
    assert step == 3 and meta == {"at": 3} and int(state["step"]) == 7
    assert checkpoint.latest_step(tmp_path / "missing") is None
    with pytest.raises(FileNotFoundError):
        checkpoint.restore_checkpoint("ckpt", skeleton, step=1)
    bad = eqx.filter_eval_shape(lambda: dict(tree, step=jnp.zeros(3)))
    with pytest.raises(ValueError, match="Cannot restore"):
        checkpoint.load_pytree(path, bad)


def test_resuming_needs_the_kind_of_optimiser_the_run_was_trained_with(tmp_path):
    """A run trained with a custom optax optimiser resumes only with one (its state cannot be
    rebuilt from the config), and a config-trained run refuses a custom one."""
    import optax

    data = make_data()
    agent = make_agent()
    fit(agent, data, config(), steps=5, run_dir=tmp_path / "custom", key=jr.key(0),
        optimiser=optax.sgd(1e-3), progress=False)
    with pytest.raises(ValueError, match="custom optax optimiser"):
        fit(agent, data, config(), steps=10, run_dir=tmp_path / "custom", key=jr.key(0),
            progress=False)
    fit(agent, data, config(), steps=5, run_dir=tmp_path / "plain", key=jr.key(0),
        progress=False)
    with pytest.raises(ValueError, match="without optimiser="):
        fit(agent, data, config(), steps=10, run_dir=tmp_path / "plain", key=jr.key(0),
            optimiser=optax.sgd(1e-3), progress=False)
