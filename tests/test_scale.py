"""Speed and scale without changing results: FiDec's batched Fisher path computes the
straightforward estimator's numbers; multi-seed `fit` equals per-seed runs; a 2-device
data-parallel `fit` equals a 1-device one. (Speed itself: benchmarks/update_speed.py.)"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from trees import arrays, assert_close_trees, read_csv

from fidec_zoo import recipes
from fidec_zoo.agents.flow_ql import flow_rollouts
from fidec_zoo.configs import TrainConfig
from fidec_zoo.dataset import Dataset
from fidec_zoo.envs import EvalResult
from fidec_zoo.metrics import FisherMetric, L2Metric
from fidec_zoo.policies import ActionField, FlowPolicy
from fidec_zoo.samplers import DiffraxSampler
from fidec_zoo.train import Evaluator, fit, select_seed, stack_seeds

OBS, ACT, N = 6, 3, 512
ENV = "cube-single-play-singletask-task2-v0"
ROOT = Path(__file__).resolve().parents[1]


def make_data(n: int = N, seed: int = 0) -> Dataset:
    k = jr.split(jr.key(seed), 5)
    return Dataset(
        jr.normal(k[0], (n, OBS)), jnp.tanh(jr.normal(k[1], (n, ACT))),
        -(jr.uniform(k[2], (n,)) < 0.5).astype(jnp.float32), jnp.ones(n),
        jr.normal(k[3], (n, OBS)), jnp.tanh(jr.normal(k[4], (n, ACT))), jnp.zeros(n))


@eqx.filter_jit
def _build(name, key, kw):
    return recipes.make(name, obs_dim=OBS, action_dim=ACT, env_name=ENV, key=key,
                        hidden=(16, 16), **dict(kw))


def tiny(name: str = "fidec", key=None, **kw):
    """A tiny agent of recipe `name` (built in one compiled program: eager construction
    compiles every initialiser op separately, which dominates these tests' time)."""
    return _build(name, jr.key(1) if key is None else key, tuple(sorted(kw.items())))


# ---- FiDec's Fisher: the batched path is the straightforward estimator ----------------------


def fisher_penalty_reference(metric, flow, s, base, delta, key, data_action):
    """reference/algorithms.md §9 written out for ONE state, with a Python Euler loop (and the
    cheap anchors: the dataset or base action re-noised in place of fresh flow samples)."""
    t_key, x_key = jr.split(key)
    k, a = metric.num_samples, base.shape[0]
    if metric.t_width == 0:
        times = jnp.full((k,), metric.t)
    else:
        low, high = max(1e-3, metric.t - metric.t_width), min(0.999, metric.t)
        times = jr.uniform(t_key, (k,), minval=low, maxval=high)
    z_key, x0_key = jr.split(x_key)
    z, x0 = jr.normal(z_key, (k, a)), jr.normal(x0_key, (k, a))
    n = flow.sampler.num_steps

    def euler(x):  # x <- x + v(s, x, i/N) / N, then clip
        x = jax.lax.fori_loop(0, n, lambda i, x: x + flow.velocity(s, x, i / n) / n, x)
        return jnp.clip(x, -1, 1)

    fisher = metric.damping * jnp.eye(a)
    for i in range(k):
        clean = {"samples": lambda: euler(z[i]), "data": lambda: data_action,
                 "base": lambda: base}.get(metric.anchor)
        point = base if clean is None else (1 - times[i]) * x0[i] + times[i] * clean()
        v = flow.velocity(s, point, times[i])
        score = (v if metric.score == "velocity" else times[i] * v - point) / (1 - times[i])
        fisher = fisher + jnp.outer(score, score) / k
    return delta @ fisher @ delta / jnp.trace(fisher)


@pytest.mark.parametrize("options", [
    {}, {"anchor": "action"}, {"anchor": "data"}, {"anchor": "base", "t_width": 0.0},
    pytest.param({"score": "tweedie", "t_width": 0.0, "num_samples": 3}, marks=pytest.mark.slow)])
def test_batched_fisher_equals_straightforward_estimator(options, getkey):
    metric = FisherMetric(**options)
    flow = FlowPolicy(ActionField(OBS, ACT, (32, 32), key=getkey()))
    b = 12
    obs, base = jr.normal(getkey(), (b, OBS)), jnp.tanh(jr.normal(getkey(), (b, ACT)))
    data = jnp.tanh(jr.normal(getkey(), (b, ACT)))
    delta = 0.1 * jr.normal(getkey(), (b, ACT))
    key = getkey()
    keys = jr.split(key, b)
    reference = eqx.filter_jit(eqx.filter_vmap(
        lambda s, a, d, k, ad: fisher_penalty_reference(metric, flow, s, a, d, k, ad)))(
        obs, base, delta, keys, data)

    @eqx.filter_jit
    def ours(flow, delta):
        per_state = lambda d: jax.vmap(  # noqa: E731
            lambda s, a, dd, k, ad: metric.penalty(flow, s, a, dd, key=k, data_action=ad))(
            obs, base, d, keys, data)
        batched = lambda d: metric.batch_penalty(  # noqa: E731
            flow, obs, base, d, key=key, data_actions=data)
        out = dict(per_state=per_state(delta), batched=batched(delta),
                   grad=jax.grad(batched)(delta),
                   ref_grad=jax.grad(lambda d: per_state(d).mean())(delta))
        # Anchors integrated by the caller (in its own solve) from `anchor_noise`.
        noise = metric.anchor_noise(flow, obs, key=key)
        if noise is not None:
            obs_k = jnp.broadcast_to(obs[:, None], (*noise.shape[:2], OBS))
            (anchors,) = flow_rollouts(flow, [(obs_k, noise)])
            out["shared"] = metric.batch_penalty(flow, obs, base, delta, key=key,
                                                 anchors=anchors)
        return out

    out = ours(flow, delta)
    np.testing.assert_allclose(out["per_state"], reference, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out["batched"], reference.mean(), rtol=1e-5)
    np.testing.assert_allclose(out["grad"], out["ref_grad"], rtol=1e-4, atol=1e-8)
    assert ("shared" in out) == (metric.anchor == "samples")
    if "shared" in out:  # same numbers, one solve shared with the caller
        np.testing.assert_allclose(out["shared"], out["batched"], rtol=1e-6)


def test_fidec_loss_with_one_solve_equals_separate_rollouts(getkey):
    """The agent's loss (all rollouts in one solve) against separate rollouts and the
    per-state metric: the same numbers (every term)."""
    from fidec_zoo.agents.flow_ql import refinement_terms

    agent = tiny("fidec", metric=FisherMetric(num_samples=3))
    batch = make_data().sample(getkey(), 32)
    key = getkey()

    def separate(agent):  # the loss as it was computed before the rollouts were merged
        bc_key, next_key, z_key, penalty_key = jr.split(key, 4)
        from fidec_zoo.agents._base import batch_noise, flow_matching_loss

        obs = batch.observations
        bc = flow_matching_loss(agent.flow, obs, batch.actions, bc_key)
        next_obs = batch.next_observations
        next_noise = batch_noise(next_key, next_obs.shape[0], agent.actor)
        next_actions = jax.lax.stop_gradient(jax.vmap(agent.actor)(next_obs, next_noise))
        critic, _ = agent.critics.loss(batch, next_actions)
        z = jr.normal(z_key, (obs.shape[0], ACT))
        base = jax.lax.stop_gradient(jax.vmap(agent.flow)(obs, z))
        displacement = jax.vmap(agent.actor.displacement)(obs, base)
        generic = eqx.tree_at(lambda a: a.metric, agent, PerStateFisher(num_samples=3))
        refine, terms = refinement_terms(generic, batch, base, displacement, penalty_key)
        return critic + bc + refine, terms

    loss, terms = eqx.filter_jit(lambda a: a.loss(batch, key=key, step=0))(agent)
    ref_loss, ref_terms = eqx.filter_jit(separate)(agent)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for name in ("penalty", "q_loss", "displacement_mse"):
        np.testing.assert_allclose(terms[name], ref_terms[name], rtol=1e-5)


@pytest.mark.parametrize("agent_name", ["fidec", "fql"])
def test_data_anchor_reads_the_batch_actions(agent_name, getkey):
    """Both agent families hand the batch's dataset actions to the metric: with
    `anchor="data"` the penalty moves with them, with `anchor="base"` it does not."""
    batch = make_data().sample(getkey(), 16)
    other = eqx.tree_at(lambda b: b.actions, batch, -batch.actions)
    key = getkey()
    for anchor, moves in (("data", True), ("base", False)):
        agent = tiny(agent_name, metric=FisherMetric(anchor=anchor, num_samples=2))
        penalty = eqx.filter_jit(lambda a, b: a.loss(b, key=key, step=0)[1]["penalty"])
        assert bool(penalty(agent, batch) != penalty(agent, other)) == moves


class PerStateFisher(FisherMetric):
    """Overrides the per-state estimator (unchanged), which keeps the generic vmap path."""

    def matrix(self, flow, obs, action, *, key):
        return FisherMetric.matrix(self, flow, obs, action, key=key)


def test_subclass_overriding_the_estimator_keeps_the_per_state_path(getkey):
    flow = FlowPolicy(ActionField(OBS, ACT, (16,), key=getkey()))
    obs = jr.normal(getkey(), (4, OBS))
    assert PerStateFisher().anchor_noise(flow, obs, key=getkey()) is None
    assert FisherMetric().anchor_noise(flow, obs, key=getkey()).shape == (4, 8, ACT)
    assert L2Metric().anchor_noise(flow, obs, key=getkey()) is None


def gaussian_flow():
    from analytic import GaussianVelocity

    sigma = jnp.diag(jnp.array([0.09, 0.01, 0.04]))
    return FlowPolicy(GaussianVelocity(jnp.array([0.2, -0.1, 0.05]), sigma),
                      DiffraxSampler(num_steps=10), obs_dim=1, action_dim=3)


def test_anchor_steps_default_is_the_flow_sampler(getkey):
    flow, key = gaussian_flow(), getkey()
    assert FisherMetric().anchor_flow(flow) is flow
    assert FisherMetric(anchor_steps=10).anchor_flow(flow) is flow
    assert FisherMetric(anchor_steps=3).anchor_flow(flow).sampler.num_steps == 3
    assert FisherMetric(anchor_steps=3).anchor_noise(flow, jnp.zeros((2, 1)), key=key) is None
    with pytest.raises(ValueError, match="anchor_steps"):
        FisherMetric(anchor_steps=0)


@pytest.mark.slow
def test_anchor_steps_expected_matrix(getkey):
    """Fewer anchor steps is an approximation: its expected matrix, measured here on a Gaussian
    behaviour policy (exact velocity; benchmarks/fisher_anchor_steps.py: a trained flow)."""
    flow = gaussian_flow()
    obs, action, key = jnp.zeros(1), jnp.zeros(3), getkey()

    @eqx.filter_jit
    def expected(metric):  # mean trace-normalised matrix over 2048 states' worth of draws
        keys = jr.split(key, 2048)
        m = jax.vmap(lambda k: metric.matrix(flow, obs, action, key=k))(keys).mean(0)
        return m * 3 / jnp.trace(m)

    def rel(a, b):
        return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))

    default = expected(FisherMetric())
    assert rel(expected(FisherMetric(anchor_steps=5)), default) < 0.05
    assert rel(expected(FisherMetric(anchor_steps=1)), default) > 0.05  # collapses to the mean


# ---- multi-seed fit ---------------------------------------------------------------------------


CONFIG = TrainConfig(batch_size=32, chunk=5, log_every=5)
KW = dict(progress=False)


@pytest.mark.parametrize("name", ["flow_bc", pytest.param("fidec", marks=pytest.mark.slow)])
def test_multi_seed_fit_equals_single_seed_runs_and_resumes(tmp_path, monkeypatch, name):
    def fake_evaluate(policy, env_name, *, episodes, seed, workers):  # records the policy
        value = float(jnp.sum(arrays(policy)[0]))
        return EvalResult(env_name=env_name, success=value, success_std=0.0, success_ci95=0.0,
                          return_mean=float(seed), length_mean=1.0, episodes=({},) * episodes,
                          wall_time=0.0, num_envs=workers, seed=seed)

    # The Evaluator calls `fidec_zoo.envs.evaluate` through its own module's name for it.
    monkeypatch.setattr("fidec_zoo.train._evaluator.evaluate", fake_evaluate)
    data, val = make_data(), make_data(64, seed=1)
    build_keys, run_keys = jr.split(jr.key(3), 2), jr.split(jr.key(4), 2)
    kw = dict(metric=FisherMetric(num_samples=2)) if name == "fidec" else {}
    agents = [tiny(name, key=k, **kw) for k in build_keys]
    stacked = stack_seeds(agents)
    # stack_seeds == filter_vmap of the builder over keys
    assert_close_trees(
        eqx.filter_jit(eqx.filter_vmap(lambda k: tiny(name, key=k, **kw)))(build_keys), stacked,
        rtol=0, atol=0)
    fit_kw = dict(KW, val=val, evaluator=Evaluator("toy", every=10, episodes=1))
    run = tmp_path / "seeds"
    half = fit(stacked, data, CONFIG, steps=10, run_dir=run, key=run_keys, seeds=2, **fit_kw)
    assert half.step == 10 and half.seeds == 2 and len(half.last_eval) == 2
    full = fit(stacked, data, CONFIG, steps=20, run_dir=run, key=run_keys, seeds=2,
               **fit_kw)  # resumes
    assert full.step == 20
    for i in range(2):
        single = fit(agents[i], data, CONFIG, steps=20, run_dir=tmp_path / f"single{i}",
                     key=run_keys[i], **fit_kw)
        assert_close_trees(select_seed(full.agent, i), single.agent, rtol=2e-4, atol=2e-6)
        rows, ref = read_csv(run / f"seed_{i}" / "metrics.csv"), \
            read_csv(tmp_path / f"single{i}" / "metrics.csv")
        assert [r["step"] for r in rows] == [r["step"] for r in ref] == ["5", "10", "15", "20"]
        assert rows[0].keys() == ref[0].keys() and "val_loss" in rows[0]
        for key in rows[0].keys() - {"step", "wall_time"}:
            np.testing.assert_allclose([float(r[key]) for r in rows],
                                       [float(r[key]) for r in ref], rtol=2e-4, atol=1e-6)
        evals, ref_evals = read_csv(run / f"seed_{i}" / "eval.csv"), \
            read_csv(tmp_path / f"single{i}" / "eval.csv")
        assert [r["step"] for r in evals] == ["10", "20"]
        for a, b in zip(evals, ref_evals, strict=True):  # same policy, same eval seed
            np.testing.assert_allclose(float(a["success"]), float(b["success"]), rtol=1e-4)
            assert a["return"] == b["return"]
    assert not (run / "metrics.csv").exists()


def test_multi_seed_input_checks(tmp_path):
    data = make_data()
    with pytest.raises(ValueError, match="stacked over seeds"):
        fit(tiny("flow_bc"), data, CONFIG, steps=5, run_dir=tmp_path, key=jr.key(0), seeds=2,
            **KW)
    stacked = stack_seeds([tiny("flow_bc"), tiny("flow_bc", key=jr.key(2))])
    with pytest.raises(ValueError, match="takes one key or 2 keys"):
        fit(stacked, data, CONFIG, steps=5, run_dir=tmp_path, key=jr.split(jr.key(0), 3),
            seeds=2, **KW)


def test_multi_seed_unstacked_agent_with_a_scalar_leaf_gets_the_stacking_hint(tmp_path):
    with pytest.raises(ValueError, match="stacked over seeds"):
        fit(tiny("fidec"), make_data(), CONFIG, steps=5, run_dir=tmp_path, key=jr.key(0),
            seeds=2, **KW)


def test_multi_seed_fit_of_a_recipe_equals_single_seed_runs(tmp_path):
    """`fit(recipe, seeds=N, key=keys)`: seed `i` builds and trains what `fit(recipe,
    key=keys[i])` does; one key is split into the `N` keys."""
    data = make_data()
    recipe = recipes.config("flow_bc", env_name=ENV, hidden=(16, 16), batch_size=32, steps=10,
                            chunk=5, log_every=5)
    keys = jr.split(jr.key(6), 2)
    both = fit(recipe, data, run_dir=tmp_path / "both", key=keys, seeds=2, **KW)
    assert both.step == 10 and both.seeds == 2
    split = fit(recipe, data, run_dir=tmp_path / "split", key=jr.key(6), seeds=2, **KW)
    assert_close_trees(split.agent, both.agent, rtol=0, atol=0)
    for i in range(2):
        single = fit(recipe, data, run_dir=tmp_path / f"single{i}", key=keys[i], **KW)
        assert_close_trees(select_seed(both.agent, i), single.agent, rtol=2e-4, atol=2e-6)
        rows = read_csv(tmp_path / "both" / f"seed_{i}" / "metrics.csv")
        ref = read_csv(tmp_path / f"single{i}" / "metrics.csv")
        assert [r["step"] for r in rows] == [r["step"] for r in ref] == ["5", "10"]
        np.testing.assert_allclose([float(r["loss"]) for r in rows],
                                   [float(r["loss"]) for r in ref], rtol=2e-4)


# ---- data-parallel fit over a mesh ------------------------------------------------------------


CHILD = textwrap.dedent("""
    import dataclasses, json, sys
    import equinox as eqx, jax, jax.random as jr, numpy as np
    sys.path.insert(0, {tests!r})
    from test_scale import make_data, tiny, CONFIG, KW, arrays
    from fidec_zoo import distributed
    from fidec_zoo.metrics import FisherMetric
    from fidec_zoo.train import fit, stack_seeds

    assert jax.device_count() == 2, jax.devices()
    data = make_data()
    out = {{}}
    for name, seeds in {configs!r}:
        kw = dict(metric=FisherMetric(num_samples=2)) if name == "fidec" else {{}}
        if seeds is None:
            agent, key = tiny(name, **kw), jr.key(5)
        else:
            agent = stack_seeds([tiny(name, key=k, **kw) for k in jr.split(jr.key(1), seeds)])
            key = jr.split(jr.key(5), seeds)
        one = fit(agent, data, CONFIG, steps=10, run_dir={tmp!r} + f"/{{name}}1", key=key,
                  seeds=seeds, **KW)
        mesh = distributed.make_data_mesh(2)
        two = fit(agent, data, CONFIG, steps=10, run_dir={tmp!r} + f"/{{name}}2", key=key,
                  seeds=seeds, mesh=mesh, **KW)
        leaf = arrays(two.agent)[0]
        diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / (1e-6 + np.abs(b))))
                 for a, b in zip(arrays(two.agent), arrays(one.agent))]
        out[name] = dict(max_rel_diff=max(diffs), devices=len(leaf.sharding.device_set),
                         replicated=bool(leaf.sharding.is_fully_replicated),
                         moved=float(np.max(np.abs(np.asarray(arrays(one.agent)[0])
                                                   - np.asarray(arrays(agent)[0])))))
    try:  # the batch must split evenly over the devices
        fit(tiny("flow_bc"), data, dataclasses.replace(CONFIG, batch_size=31), steps=5,
            run_dir={tmp!r} + "/odd", key=jr.key(0), mesh=distributed.make_data_mesh(2), **KW)
        out["odd_batch_error"] = ""
    except ValueError as e:
        out["odd_batch_error"] = str(e)
    print("RESULT " + json.dumps(out))
""")


def run_two_devices(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("configs", [
    [("fidec", None)], pytest.param([("flow_bc", 2), ("fidec", 2)], marks=pytest.mark.slow)],
    ids=["fidec", "seeds"])
def test_two_device_fit_equals_one_device(tmp_path, configs):
    """FiDec data-parallel over 2 simulated CPU devices (XLA_FLAGS must be set before jax
    starts, hence a subprocess); `seeds`: multi-seed and data-parallel together."""
    proc = run_two_devices(CHILD.format(tests=str(ROOT / "tests"), tmp=str(tmp_path),
                                        configs=configs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ")[-1])
    assert "divisible" in out.pop("odd_batch_error")
    for name, res in out.items():
        assert res["devices"] == 2 and res["replicated"], (name, res)
        assert res["moved"] > 1e-4, (name, res)  # training did something
        assert res["max_rel_diff"] < 1e-3, (name, res)


def test_mesh_input_checks(tmp_path):
    from jax.sharding import Mesh

    from fidec_zoo import distributed

    flat = np.asarray(jax.devices()).reshape(1, -1)
    with pytest.raises(ValueError, match="1-D"):
        fit(tiny("flow_bc"), make_data(), CONFIG, steps=5, run_dir=tmp_path, key=jr.key(0),
            mesh=Mesh(flat, ("a", "b")), **KW)
    with pytest.raises(ValueError, match="available"):
        distributed.make_data_mesh(jax.device_count() + 1)
    assert distributed.make_data_mesh().axis_names == ("data",)
    assert distributed.is_main_process()


# ---- the main job's --seeds and --devices -----------------------------------------------------


@pytest.mark.slow
def test_main_job_seeds_and_devices(tmp_path):
    """`recipes/offline.py --seeds 2 --devices 2` (a fresh process, so it simulates 2 CPU
    devices itself): seed 1 of it logs what `--seed 1` alone logs."""
    env = dict(os.environ, FIDEC_ZOO_DATA=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    common = ["--agent", "fidec", "--steps", "20", "--eval-every", "10", "--eval-episodes", "2",
              "--dataset-episodes", "2", "--hidden", "32", "32", "--batch-size", "64"]
    runs = {"both": ["--seeds", "2", "--devices", "2"], "single": ["--seed", "1"]}
    for name, extra in runs.items():
        proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "offline.py"), *common,
                               *extra, "--run-dir", str(tmp_path / name)], env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "both" / "summary.json").read_text())
    assert summary["num_seeds"] == 2 and summary["devices"] == 2
    assert [s["seed"] for s in summary["seeds"]] == [0, 1]
    rows = read_csv(tmp_path / "both" / "seed_1" / "metrics.csv")
    ref = read_csv(tmp_path / "single" / "metrics.csv")
    assert len(rows) == len(ref) == 2
    for key in ("loss", "critic_loss", "penalty", "bc_loss", "val_loss"):
        np.testing.assert_allclose([float(r[key]) for r in rows], [float(r[key]) for r in ref],
                                   rtol=1e-4)
    assert (tmp_path / "both" / "seed_0" / "learning_curve.png").exists()
