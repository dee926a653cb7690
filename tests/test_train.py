"""`fidec_zoo.train.fit` and `fidec_zoo.checkpoint`: learning, logging, exact resume (also after
a real SIGINT or SIGTERM), frozen targets, NaN handling, size checks, and checkpoint round trips."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from trees import arrays, assert_close_trees, read_csv

from fidec_zoo import checkpoint
from fidec_zoo.agents import FlowBC, Frozen, trainable
from fidec_zoo.data import Dataset
from fidec_zoo.policies import ActionField, FlowPolicy
from fidec_zoo.train import fit

OBS, ACT = 5, 2
KW = dict(batch_size=64, chunk=25, log_every=25, progress=False)


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
    res = fit(agent, data, steps=300, run_dir=tmp_path, key=jr.key(2), val=make_data(seed=3), **KW)
    assert res.step == 300 and res.run_dir == tmp_path.resolve() and res.wall_time > 0
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(25, 301, 25))
    assert {"step", "wall_time", "loss", "bc_loss", "val_loss", "val_bc_loss"} <= set(rows[0])
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-3:]) < 0.7 * losses[0]
    assert checkpoint.checkpoint_steps(tmp_path / "checkpoints") == [250, 300]
    assert not any(x.is_deleted() for x in arrays(agent))  # the caller's agent was not donated
    # A finished run returns at once with the stored agent.
    again = fit(make_agent(), data, steps=300, run_dir=tmp_path, key=jr.key(2), **KW)
    assert again.step == 300
    assert_close_trees(again.agent, res.agent, rtol=0, atol=0)
    assert len(read_csv(tmp_path / "metrics.csv")) == len(rows)


def test_loggers_receive_every_csv_row_and_a_broken_one_is_dropped(tmp_path):
    received = []

    def broken(name, row):
        raise ConnectionError("no server")

    with pytest.warns(UserWarning, match="ConnectionError: no server. It gets no more rows"):
        fit(make_agent(), make_data(), steps=100, run_dir=tmp_path, key=jr.key(2),
            loggers=[broken, lambda name, row: received.append((name, row))], **KW)
    rows = read_csv(tmp_path / "metrics.csv")
    assert [name for name, _ in received] == ["metrics"] * len(rows) == ["metrics"] * 4
    assert [{k: float(v) for k, v in row.items()} for _, row in received] == \
        [{k: float(v) for k, v in row.items()} for row in rows]
    with pytest.raises(TypeError, match="(?i)callable"):  # also caught by the jaxtyping hook
        fit(make_agent(), make_data(), steps=10, run_dir=tmp_path / "x", key=jr.key(2),
            loggers=["wandb"], **KW)


def test_resume_matches_uninterrupted_run(tmp_path):
    data, kw = make_data(), dict(KW, key=jr.key(4), checkpoint_every=25)
    full = fit(make_agent(), data, steps=100, run_dir=tmp_path / "full", **kw)
    run = tmp_path / "resumed"
    fit(make_agent(), data, steps=50, run_dir=run, **kw)
    # A crash after step 50's rows were written but before its checkpoint: resume from 25.
    checkpoint_50 = run / "checkpoints" / "50"
    assert checkpoint_50.is_dir()
    for p in sorted(checkpoint_50.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    checkpoint_50.rmdir()
    resumed = fit(make_agent(), data, steps=100, run_dir=run, **kw)
    assert resumed.step == 100
    assert_close_trees(resumed.agent, full.agent, rtol=1e-6, atol=1e-7)
    rows, full_rows = read_csv(run / "metrics.csv"), read_csv(tmp_path / "full" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [25, 50, 75, 100]
    np.testing.assert_allclose(
        [float(r["loss"]) for r in rows], [float(r["loss"]) for r in full_rows], rtol=1e-6
    )


CHILD = """
import jax.random as jr
from test_train import KW, SlowFlowBC, make_agent, make_data
from fidec_zoo.train import fit
fit(make_agent(SlowFlowBC, delay=0.02), make_data(), steps=200, run_dir={run!r}, key=jr.key(7),
    **dict(KW, chunk=10, log_every=10, checkpoint_every=10))
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

    kw = dict(KW, chunk=10, log_every=10, checkpoint_every=10, key=jr.key(7))
    resumed = fit(make_agent(SlowFlowBC), make_data(), steps=200, run_dir=run, **kw)
    full = fit(make_agent(SlowFlowBC), make_data(), steps=200, run_dir=tmp_path / "full", **kw)
    assert_close_trees(resumed.agent, full.agent, rtol=1e-6, atol=1e-7)
    assert [int(r["step"]) for r in read_csv(run / "metrics.csv")] == list(range(10, 201, 10))


def test_frozen_targets_are_not_optimised(tmp_path):
    target = Frozen(ActionField(OBS, ACT, (32, 32), key=jr.key(9)))
    agent = make_agent(FrozenFlowBC, target=target)
    res = fit(agent, make_data(), steps=50, run_dir=tmp_path, key=jr.key(5), **KW)
    for before, after in zip(arrays(target), arrays(res.agent.target), strict=True):
        assert np.array_equal(np.asarray(before), np.asarray(after))
    assert not np.allclose(arrays(agent.flow)[0], arrays(res.agent.flow)[0])
    # The optimiser state holds moments for the trainable leaves only.
    n_trainable = len(jax.tree.leaves(eqx.filter(agent, trainable(agent))))
    opt_state = optax.adam(1e-3).init(eqx.filter(agent, trainable(agent)))
    assert len(jax.tree.leaves(opt_state[0].mu)) == n_trainable == len(arrays(agent.flow))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    kw = dict(KW, chunk=10, log_every=10, checkpoint_every=20)
    with pytest.raises(FloatingPointError) as info:
        fit(make_agent(NaNFlowBC), make_data(), steps=100, run_dir=tmp_path, key=jr.key(6), **kw)
    message = str(info.value)
    assert "step 37" in message and "bad_term=nan" in message and "bc_loss=" in message
    assert "step 20" in message
    assert checkpoint.checkpoint_steps(tmp_path / "checkpoints") == [20]
    assert [int(r["step"]) for r in read_csv(tmp_path / "metrics.csv")] == [10, 20, 30]


def test_periodic_evaluation_writes_eval_csv(tmp_path, monkeypatch):
    import fidec_zoo.envs

    calls = []

    def fake_evaluate(policy, env_name, *, episodes, seed, workers):
        calls.append((env_name, episodes, workers, seed))
        result = dict(success=0.5, success_std=0.1, return_mean=-3.0, length_mean=42.0)
        return SimpleNamespace(episodes=({},) * episodes, **result)

    monkeypatch.setattr(fidec_zoo.envs, "evaluate", fake_evaluate)
    kw = dict(KW, key=jr.key(8), env_name="toy-env", eval_every=50, eval_episodes=3,
              eval_workers=2)
    res = fit(make_agent(), make_data(), steps=120, run_dir=tmp_path, **kw)
    rows = read_csv(tmp_path / "eval.csv")
    assert [int(r["step"]) for r in rows] == [50, 100, 120]
    assert {"step", "success", "return", "length", "wall_time"} <= set(rows[0])
    assert float(rows[0]["success"]) == 0.5 and res.last_eval.success == 0.5
    assert [c[:3] for c in calls] == [("toy-env", 3, 2)] * 3 and len({c[3] for c in calls}) == 3
    assert checkpoint.checkpoint_steps(tmp_path / "checkpoints") == [100, 120]
    with pytest.raises(ValueError, match="env_name"):
        fit(make_agent(), make_data(), steps=10, run_dir=tmp_path, key=jr.key(0), eval_every=5)


@pytest.mark.parametrize("obs_dim, action_dim, name", [(6, ACT, "obs_dim"), (OBS, 3, "action_dim")])
def test_dimension_mismatch_is_reported_before_compiling(tmp_path, obs_dim, action_dim, name):
    data = make_data(obs_dim=obs_dim, action_dim=action_dim)
    with pytest.raises(ValueError, match=name) as info:
        fit(make_agent(), data, steps=10, run_dir=tmp_path / "run", key=jr.key(0), **KW)
    want = {"obs_dim": (obs_dim, OBS), "action_dim": (action_dim, ACT)}[name]
    assert f"train.{name}={want[0]}" in str(info.value)
    assert f"agent.policy.{name}={want[1]}" in str(info.value)
    assert not (tmp_path / "run").exists()


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
