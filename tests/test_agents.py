"""Agent losses against independent restatements of the reference math (synthetic data)."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

from fidec_zoo import recipes
from fidec_zoo.agents import OneStepFlowQL, ResidualFlowQL, trainable
from fidec_zoo.configs import OneStepFlowQLConfig, OptimConfig, Recipe, ResidualFlowQLConfig
from fidec_zoo.constraints import FixedPenalty, Lagrangian
from fidec_zoo.dataset import Dataset
from fidec_zoo.metrics import AbstractMatrixMetric, FisherMetric, L2Metric

OBS, ACT, N = 6, 3, 512
ENV = "cube-single-play-singletask-task2-v0"


@pytest.fixture(scope="module")
def data():
    k = jr.split(jr.key(0), 5)
    return Dataset(
        jr.normal(k[0], (N, OBS)), jnp.tanh(jr.normal(k[1], (N, ACT))),
        -(jr.uniform(k[2], (N,)) < 0.5).astype(jnp.float32), jnp.ones(N),
        jr.normal(k[3], (N, OBS)), jnp.tanh(jr.normal(k[4], (N, ACT))), jnp.zeros(N))


def small(name, **kw):
    return recipes.make(name, obs_dim=OBS, action_dim=ACT, env_name=ENV, key=jr.key(1),
                        hidden=(32, 32), **kw)


def train(agent, data, steps, lr=3e-4):
    """A minimal reference training loop (the real one is fidec_zoo.train.fit)."""
    opt = optax.adam(lr)
    state = opt.init(eqx.filter(agent, trainable(agent)))

    @eqx.filter_jit
    def update(agent, state, key, step):
        params, static = eqx.partition(agent, trainable(agent))
        batch = data.sample(key, 64)
        grad_fn = eqx.filter_grad(lambda p: eqx.combine(p, static).loss(batch, key=key,
                                                                         step=step)[0])
        updates, state = opt.update(grad_fn(params), state, params)
        return eqx.apply_updates(agent, updates).update_targets(agent, step), state

    for i in range(steps):
        agent, state = update(agent, state, jr.key(100 + i), jnp.asarray(i))
    return agent


def reference_euler(flow):
    """The reference sampler (§1): 10 Euler steps from the noise, clipped once at the end."""

    def euler(s, z):
        x = z
        for i in range(10):
            x = x + flow.velocity(s, x, i / 10) / 10
        return jnp.clip(x, -1, 1)

    return euler


def reference_flow_matching_loss(flow, obs, act, key):
    """The reference BC flow-matching loss (§1), per-element mean."""
    t_key, x_key = jr.split(key)
    t = jr.uniform(t_key, (obs.shape[0], 1))
    x0 = jr.normal(x_key, act.shape)
    v = jax.vmap(flow.velocity)(obs, (1 - t) * x0 + t * act, t[:, 0])
    return jnp.mean((v - (act - x0)) ** 2)


def deflow_reference_loss(agent, batch, key):
    """DeFlow's loss (reference/algorithms.md §8) written out directly."""
    bc_key, next_key, z_key, _ = jr.split(key, 4)
    flow, residual = agent.actor.base, agent.actor.residual
    critic, target = agent.critics.critic, agent.critics.target_critic.module
    obs, act = batch.observations, batch.actions
    euler = reference_euler(flow)
    l_bc = reference_flow_matching_loss(flow, obs, act, bc_key)
    # critic on the full policy's next action
    zn = jr.normal(next_key, act.shape)
    base_next = jax.vmap(euler)(batch.next_observations, zn)
    a_next = jnp.clip(base_next + jax.vmap(residual)(batch.next_observations, base_next), -1, 1)
    y = batch.rewards + 0.99 * batch.masks * jax.vmap(target)(batch.next_observations,
                                                              a_next).mean(-1)
    l_critic = jnp.mean((jax.vmap(critic)(obs, act) - y[:, None]) ** 2)
    # refinement
    z = jr.normal(z_key, act.shape)
    base = jax.vmap(euler)(obs, z)
    delta = jax.vmap(residual)(obs, base)
    d = jnp.mean(delta**2)
    alpha = jnp.exp(agent.constraint.log_alpha)
    q = jax.vmap(critic)(obs, jnp.clip(base + delta, -1, 1)).mean(-1)
    l_q = -q.mean() / jnp.maximum(jnp.abs(q).mean(), 1e-6)
    l_dual = -agent.constraint.log_alpha * (d - agent.constraint.target)
    return l_critic + l_bc + alpha * d + l_q + l_dual


def fql_reference_loss(agent, batch, key, alpha):
    """FQL's loss (reference/algorithms.md §7) written out directly."""
    bc_key, next_key, z_key, _ = jr.split(key, 4)
    flow, actor = agent.flow, agent.actor.net
    critic, target = agent.critics.critic, agent.critics.target_critic.module
    obs, act = batch.observations, batch.actions
    euler = reference_euler(flow)
    l_bc = reference_flow_matching_loss(flow, obs, act, bc_key)
    # critic on the one-step policy's clipped next action
    a_next = jnp.clip(jax.vmap(actor)(batch.next_observations,
                                      jr.normal(next_key, act.shape)), -1, 1)
    y = batch.rewards + 0.99 * batch.masks * jax.vmap(target)(batch.next_observations,
                                                              a_next).mean(-1)
    l_critic = jnp.mean((jax.vmap(critic)(obs, act) - y[:, None]) ** 2)
    # distillation towards the flow's action from the SAME noise, and the Q term (unnormalised)
    z = jr.normal(z_key, act.shape)
    mu = jax.vmap(actor)(obs, z)
    l_distill = jnp.mean((mu - jax.vmap(euler)(obs, z)) ** 2)
    l_q = -jax.vmap(critic)(obs, jnp.clip(mu, -1, 1)).mean()
    return l_critic + l_bc + alpha * l_distill + l_q


def test_onestep_l2_reproduces_fql_loss(data):
    agent = train(small("fql"), data, 5)  # non-trivial weights and targets
    assert isinstance(agent.metric, L2Metric) and not agent.normalize_q_loss
    batch = data.sample(jr.key(7), 64)
    ours, _ = agent.loss(batch, key=jr.key(8), step=0)
    expected = fql_reference_loss(agent, batch, jr.key(8), alpha=agent.constraint.alpha)
    np.testing.assert_allclose(ours, expected, rtol=2e-5)


def test_residual_l2_reproduces_deflow_loss(data):
    agent = train(small("deflow"), data, 5)  # non-trivial weights and targets
    batch = data.sample(jr.key(7), 64)
    ours, _ = agent.loss(batch, key=jr.key(8), step=0)
    np.testing.assert_allclose(ours, deflow_reference_loss(agent, batch, jr.key(8)), rtol=2e-5)


def test_deflow_recipe_is_residual_l2_lagrangian():
    agent = small("deflow")
    assert isinstance(agent, ResidualFlowQL)
    assert isinstance(agent.metric, L2Metric) and isinstance(agent.constraint, Lagrangian)
    assert agent.constraint.target == 1e-3 and agent.normalize_q_loss
    fql = small("fql")
    assert isinstance(fql, OneStepFlowQL) and isinstance(fql.constraint, FixedPenalty)
    assert fql.constraint.alpha == 300.0  # cube-single, FQL README


class Isotropic(AbstractMatrixMetric):
    """A user metric: G proportional to I, so it must equal DeFlow's L2 penalty exactly."""

    def matrix(self, flow, obs, action, *, key):
        return 4.0 * jnp.eye(action.shape[0])


def test_custom_metric_plugs_into_both_families_and_matches_l2(data):
    batch = data.sample(jr.key(3), 64)
    for name in ("deflow", "fql"):
        l2 = small(name)
        custom = small(name, metric=Isotropic())
        np.testing.assert_allclose(custom.loss(batch, key=jr.key(4), step=0)[0],
                                   l2.loss(batch, key=jr.key(4), step=0)[0], rtol=1e-5)
        trained = train(custom, data, 20)
        assert jnp.isfinite(trained.loss(batch, key=jr.key(5), step=0)[0])


@pytest.mark.parametrize("target, rises", [(1e-9, True), (10.0, False)])
def test_lagrange_multiplier_follows_the_budget(data, target, rises):
    agent = small("fidec", constraint=Lagrangian(target, init_alpha=10.0),
                  metric=FisherMetric(num_samples=2))
    assert agent.metric.num_samples == 2 and agent.constraint.target == target
    trained = train(agent, data, 20, lr=1e-2)
    moved = trained.constraint.log_alpha - agent.constraint.log_alpha
    assert (moved > 0) == rises and abs(moved) > 0.05


def test_metric_on_agent_without_displacement_is_rejected():
    # BC has no displacement to measure, so its config has no metric field at all
    with pytest.raises(ValueError, match=r"Unknown hyperparameter.*'metric'") as e:
        small("bc", metric=L2Metric())
    assert "'metric'" not in str(e.value).split("valid:")[1]
    with pytest.raises(TypeError, match="AbstractMetric"):
        small("fidec", metric="fisher")
    with pytest.raises(TypeError, match="AbstractConstraint"):
        small("fidec", constraint=1e-3)


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="available.*fidec"):
        recipes.make("fidek", obs_dim=OBS, action_dim=ACT, key=jr.key(0))
    with pytest.raises(ValueError, match=r"Unknown hyperparameter.*target_divergense.*valid:.*"
                                         r"constraint.*grad_clip.*metric"):
        recipes.config("fidec", target_divergense=1e-3)
    for removed in ("alpha", "target_divergence", "init_alpha", "fisher_t", "fisher_samples"):
        with pytest.raises(ValueError, match=f"Unknown hyperparameter.*{removed}"):
            recipes.config("fidec", **{removed: 1.0})
    with pytest.raises(ValueError, match="q_agg"):
        small("fql", q_agg="median")
    with pytest.raises(ValueError, match="Unknown preset.*paper.*cpu"):
        recipes.config("fidec", preset="gpu")


@pytest.mark.parametrize("env_name", [
    "cube-singel-play-singletask-task2-v0",  # misspelt environment
    "cube-single-singletask-task2-v0",  # dataset type missing
    "cube-single-expert-singletask-v0",  # not an OGBench dataset type
    "halfcheetah-medium-v2",  # not OGBench at all
])
def test_unknown_env_lists_supported_ones(env_name):
    with pytest.raises(ValueError, match="Unknown environment") as e:
        recipes.config("fidec", env_name=env_name)
    message = str(e.value)
    assert repr(env_name) in message
    for env in ("cube-single", "antmaze-large", "pointmaze-medium", "puzzle-4x4", "scene"):
        assert repr(env) in message  # the supported environments ...
    for kind in ("play", "navigate", "stitch"):
        assert repr(kind) in message  # ... their dataset types ...
    for family in recipes.families():
        assert repr(family) in message  # ... and the families with reference values
    with pytest.raises(ValueError, match="Unknown environment"):
        recipes.make("fql", obs_dim=OBS, action_dim=ACT, env_name=env_name, key=jr.key(0))


def test_env_without_reference_row_warns_and_uses_defaults():
    env = "pointmaze-medium-navigate-singletask-v0"
    for name in ("fidec", "fql", "iql"):
        with pytest.warns(UserWarning, match="no per-environment values.*pointmaze-medium"):
            r = recipes.config(name, env_name=env)
        assert r.env_name == env and r.agent.discount == 0.99
    with pytest.warns(UserWarning, match="pointmaze-medium-navigate"):
        r = recipes.config("fidec", env_name=env)
    assert r.agent.constraint.target == 1e-3 and r.agent.q_agg == "mean"
    with pytest.warns(UserWarning, match="pointmaze-medium-navigate"):
        assert recipes.config("fql", env_name=env).agent.constraint.alpha == 10.0
    with warnings.catch_warnings():  # a family with a reference row does not warn
        warnings.simplefilter("error")
        recipes.config("fidec", env_name=ENV)
        recipes.config("bc", env_name=env)  # nor does an agent with no table


def test_recipe_tables_and_overrides():
    puzzle = "puzzle-4x4-play-singletask-task4-v0"
    # the reference code's values at the paper's sizes
    r = recipes.config("fidec", env_name=puzzle, preset="paper", hparams="code")
    assert isinstance(r, Recipe) and isinstance(r.agent, ResidualFlowQLConfig)
    assert r.name == "fidec" and r.preset == "paper" and r.hparams == "code"
    assert isinstance(r.agent.constraint, Lagrangian)
    assert r.agent.constraint.target == 0.005 and r.agent.constraint.init_alpha == 10.0
    assert r.agent.hidden == (512,) * 4 and r.agent.normalize_q_loss
    assert r.train.steps == 1_000_000 and r.train.batch_size == 256
    assert r.agent.metric == FisherMetric()
    assert r.agent.metric.t == 0.90 and r.agent.metric.num_samples == 8
    assert r.train.optimiser.grad_clip == 5.0 and r.train.optimiser.lr == 3e-4
    # the paper preset takes the paper's set unless told: its puzzle delta and fixed t differ
    p = recipes.config("fidec", env_name=puzzle, preset="paper")
    assert p.hparams == "paper" and p.agent.constraint.target == 0.0005
    assert p.agent.metric.t == 0.8 and p.agent.hidden == (512,) * 4
    cpu = recipes.config("fidec", env_name=ENV)
    assert cpu.agent.hidden == (128,) * 4 and cpu.train.steps == 20_000
    assert cpu.train.batch_size == 256 and cpu.agent.constraint.target == 0.001
    deflow = recipes.config("deflow", env_name="antmaze-giant-navigate-singletask-v0")
    assert isinstance(deflow.agent.metric, L2Metric) and deflow.train.optimiser.grad_clip == 5.0
    assert deflow.agent.discount == 0.995 and deflow.agent.q_agg == "min"
    assert deflow.agent.constraint.target == 0.01
    for env, alpha, q_agg, discount in [
            ("antmaze-giant-navigate-singletask-v0", 10.0, "min", 0.995),
            ("humanoidmaze-medium-navigate-singletask-v0", 30.0, "mean", 0.995),
            ("cube-single-play-singletask-task2-v0", 300.0, "mean", 0.99),
            ("puzzle-4x4-play-singletask-task4-v0", 1000.0, "mean", 0.99)]:
        fql = recipes.config("fql", env_name=env)
        assert isinstance(fql.agent, OneStepFlowQLConfig)
        assert isinstance(fql.agent.constraint, FixedPenalty)
        assert fql.agent.constraint.alpha == alpha and fql.agent.q_agg == q_agg
        assert fql.agent.discount == discount and not fql.agent.normalize_q_loss
        assert fql.train.optimiser.grad_clip is None
    assert recipes.config("iql", env_name="antmaze-giant-navigate-singletask-v0"
                          ).agent.discount == 0.995
    # overrides: agent fields, metric/constraint objects, TrainConfig and OptimConfig fields
    o = recipes.config("fidec", metric=FisherMetric(t=0.8), constraint=Lagrangian(0.01),
                       hidden=[64, 64], steps=10, batch_size=32, lr=1e-3, grad_clip=1.0)
    assert o.agent.metric.t == 0.8 and o.agent.metric.num_samples == 8
    assert o.agent.constraint.target == 0.01 and o.agent.hidden == (64, 64)
    assert o.train.steps == 10 and o.train.batch_size == 32
    assert o.train.optimiser == OptimConfig(lr=1e-3, grad_clip=1.0)
    assert recipes.config("fql", constraint=FixedPenalty(3.0)).agent.constraint.alpha == 3.0
    assert set(recipes.available()) == {"bc", "iql", "rebrac", "idql", "flow_bc", "ifql", "fql",
                                        "deflow", "fidec"}


def test_only_flow_matching_trains_the_flow(data):
    agent = small("fidec")
    batch = data.sample(jr.key(9), 32)
    params, static = eqx.partition(agent, trainable(agent))
    full = eqx.filter_grad(lambda p: eqx.combine(p, static).loss(batch, key=jr.key(1),
                                                                  step=0)[0])(params)

    def bc_only(p):
        return eqx.combine(p, static).loss(batch, key=jr.key(1), step=0)[1]["bc_loss"]

    bc = eqx.filter_grad(bc_only)(params)
    for g_full, g_bc in zip(jax.tree.leaves(full.actor.base), jax.tree.leaves(bc.actor.base)):
        np.testing.assert_allclose(g_full, g_bc, atol=1e-6)


def test_targets_are_not_trainable():
    agent = small("fql")
    spec = trainable(agent)
    assert not any(jax.tree.leaves(spec.critics.target_critic))
    assert all(jax.tree.leaves(spec.critics.critic))
