"""Agent configs: one frozen dataclass per agent family, holding every hyperparameter of its
networks, sampler, critic, metric and constraint, and building the agent with `build`.

The metric and constraint are the library's own objects (`L2Metric()`, `FisherMetric(t=0.8)`,
`Lagrangian(0.001)`, or your subclass): they are frozen dataclasses already, so a config holding
them still round-trips through JSON (`fidec_zoo.configs.to_json`). Each network of an agent is
built from its own key, in a fixed order, so equal configs and keys give equal agents.
"""

import abc
import dataclasses
from collections.abc import Iterator

import jax.random as jr
from jaxtyping import PRNGKeyArray

from .. import agents
from ..constraints import AbstractConstraint, FixedPenalty, Lagrangian
from ..critics import ExpectileCritic, QEnsemble, TwinCritic, ValueNet
from ..metrics import AbstractMetric, FisherMetric, L2Metric
from ..policies import (
    ActionField,
    DiffusionPolicy,
    FlowPolicy,
    GaussianPolicy,
    OneStepPolicy,
    ResidualPolicy,
)
from ..samplers import DiffraxSampler

__all__ = [
    "AbstractAgentConfig", "BCConfig", "FlowBCConfig", "IDQLConfig", "IFQLConfig", "IQLConfig",
    "OneStepFlowQLConfig", "ReBRACConfig", "ResidualFlowQLConfig",
]

Hidden = tuple[int, ...]
PAPER_HIDDEN: Hidden = (512, 512, 512, 512)


class _Keys:
    """Hands out one key per network, in build order (8 at most, as the references split)."""

    def __init__(self, key: PRNGKeyArray):
        self._keys: Iterator = iter(jr.split(key, 8))

    def __call__(self) -> PRNGKeyArray:
        return next(self._keys)


@dataclasses.dataclass(frozen=True)
class AbstractAgentConfig(abc.ABC):
    """Everything needed to build one agent, for given observation and action sizes.

    `hidden`: the widths of every network of the agent (actor, fields and critics alike, as in
    the references).
    """

    hidden: Hidden = PAPER_HIDDEN  # hidden-layer widths of every network of the agent

    def __post_init__(self):
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden must be one or more positive widths, got {self.hidden}.")

    @abc.abstractmethod
    def build(self, obs_dim: int, action_dim: int, *, key: PRNGKeyArray) -> agents.AbstractAgent:
        """A freshly initialised agent."""

    def replace(self, **changes) -> "AbstractAgentConfig":
        """A copy with some fields changed (`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    # -- parts shared by several families --------------------------------------------------

    def _field(self, obs_dim: int, action_dim: int, keys: _Keys, time: bool = True):
        return ActionField(obs_dim, action_dim, tuple(self.hidden), time=time, key=keys())

    def _gaussian(self, obs_dim: int, action_dim: int, keys: _Keys, tanh_squash: bool = False):
        return GaussianPolicy(obs_dim, action_dim, tuple(self.hidden), tanh_squash=tanh_squash,
                              key=keys())

    def _q(self, obs_dim: int, action_dim: int, keys: _Keys) -> QEnsemble:
        return QEnsemble(obs_dim, action_dim, tuple(self.hidden), key=keys())


@dataclasses.dataclass(frozen=True)
class _Bootstrapped(AbstractAgentConfig):
    """Families with a TD-learned critic: `discount` and Polyak rate `tau` of its target."""

    discount: float = 0.99  # the TD target's discount
    tau: float = 0.005  # Polyak rate of the target critic


@dataclasses.dataclass(frozen=True)
class _Expectile(_Bootstrapped):
    """IQL-style value learning (IQL, IDQL, IFQL): the expectile of `V`."""

    expectile: float = 0.9  # the expectile of Q that V learns

    def _values(self, obs_dim: int, action_dim: int, keys: _Keys) -> ExpectileCritic:
        value = ValueNet(obs_dim, tuple(self.hidden), key=keys())
        return ExpectileCritic(self._q(obs_dim, action_dim, keys), value,
                                      expectile=self.expectile, discount=self.discount,
                                      tau=self.tau)


@dataclasses.dataclass(frozen=True)
class _Flow(AbstractAgentConfig):
    """Families with a behaviour flow, integrated in `flow_steps` Euler steps."""

    flow_steps: int = 10  # Euler steps integrating the behaviour flow

    def _flow(self, obs_dim: int, action_dim: int, keys: _Keys) -> FlowPolicy:
        return FlowPolicy(self._field(obs_dim, action_dim, keys),
                          DiffraxSampler(num_steps=self.flow_steps))


@dataclasses.dataclass(frozen=True)
class BCConfig(AbstractAgentConfig):
    """`agents.BC`: a Gaussian policy by maximum likelihood."""

    def build(self, obs_dim: int, action_dim: int, *, key: PRNGKeyArray) -> agents.BC:
        return agents.BC(self._gaussian(obs_dim, action_dim, _Keys(key)))


@dataclasses.dataclass(frozen=True)
class IQLConfig(_Expectile):
    """`agents.IQL`: expectile values and advantage-weighted regression."""

    awr_temperature: float = 10.0  # inverse temperature of the advantage weights

    def build(self, obs_dim: int, action_dim: int, *, key: PRNGKeyArray) -> agents.IQL:
        keys = _Keys(key)
        actor = self._gaussian(obs_dim, action_dim, keys)
        return agents.IQL(actor, self._values(obs_dim, action_dim, keys), self.awr_temperature)


@dataclasses.dataclass(frozen=True)
class ReBRACConfig(_Bootstrapped):
    """`agents.ReBRAC`: TD3+BC with behaviour penalties on actor and critic."""

    alpha_actor: float = 1.0  # weight of the actor's behaviour penalty
    alpha_critic: float = 0.0  # weight of the critic target's behaviour penalty
    actor_noise: float = 0.2  # std of the target policy's smoothing noise
    noise_clip: float = 0.5  # the smoothing noise is clipped to +-noise_clip
    actor_freq: int = 2  # critic updates per actor update

    def build(self, obs_dim: int, action_dim: int, *, key: PRNGKeyArray) -> agents.ReBRAC:
        keys = _Keys(key)
        actor = self._gaussian(obs_dim, action_dim, keys, tanh_squash=True)
        return agents.ReBRAC(
            actor, self._q(obs_dim, action_dim, keys), alpha_actor=self.alpha_actor,
            alpha_critic=self.alpha_critic, discount=self.discount, tau=self.tau,
            actor_noise=self.actor_noise, noise_clip=self.noise_clip, actor_freq=self.actor_freq)


@dataclasses.dataclass(frozen=True)
class IDQLConfig(_Expectile):
    """`agents.IDQL`: a DDIM diffusion policy of `diffusion_steps`, best of `num_samples`."""

    num_samples: int = 32  # candidate actions per state, the best by Q acted
    diffusion_steps: int = 10  # DDIM denoising steps

    def build(self, obs_dim: int, action_dim: int, *, key: PRNGKeyArray) -> agents.IDQL:
        keys = _Keys(key)
        diffusion = DiffusionPolicy(self._field(obs_dim, action_dim, keys),
                                    diffusion_steps=self.diffusion_steps)
        return agents.IDQL(diffusion, self._values(obs_dim, action_dim, keys), self.num_samples)


@dataclasses.dataclass(frozen=True)
class FlowBCConfig(_Flow):
    """`agents.FlowBC`: the behaviour flow alone, by flow matching."""

    def build(self, obs_dim: int, action_dim: int, *, key: PRNGKeyArray) -> agents.FlowBC:
        return agents.FlowBC(self._flow(obs_dim, action_dim, _Keys(key)))


@dataclasses.dataclass(frozen=True)
class IFQLConfig(_Flow, _Expectile):
    """`agents.IFQL`: the behaviour flow, best of `num_samples` under expectile values."""

    num_samples: int = 32  # candidate actions per state, the best by Q acted

    def build(self, obs_dim: int, action_dim: int, *, key: PRNGKeyArray) -> agents.IFQL:
        keys = _Keys(key)
        flow = self._flow(obs_dim, action_dim, keys)
        return agents.IFQL(flow, self._values(obs_dim, action_dim, keys), self.num_samples)


def _check_part(name: str, value: object, kind: type) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"{name}= must be a {kind.__name__}, got {type(value).__name__}.")


@dataclasses.dataclass(frozen=True)
class _FlowQL(_Flow, _Bootstrapped):
    """The flow Q-learning families: a twin critic aggregated with `q_agg` in its target, and a
    `metric` of the displacement from the behaviour flow kept in check by a `constraint`."""

    q_agg: str = "mean"  # how the target combines the twin critics: mean or min
    normalize_q_loss: bool = False  # divide the actor's Q term by the batch's mean |Q|
    metric: AbstractMetric = L2Metric()
    """The metric of the displacement from the behaviour flow. For FiDec's, the fields and
    anchors are explained by `help(fidec_zoo.metrics.FisherMetric)` and docs/concepts.md."""
    constraint: AbstractConstraint = FixedPenalty(10.0)

    def __post_init__(self):
        super().__post_init__()
        _check_part("metric", self.metric, AbstractMetric)
        _check_part("constraint", self.constraint, AbstractConstraint)
        if self.q_agg not in ("mean", "min"):
            raise ValueError(f"Unknown q_agg {self.q_agg!r}; valid options are ['mean', 'min'].")

    def _twin(self, obs_dim: int, action_dim: int, keys: _Keys) -> TwinCritic:
        return TwinCritic(self._q(obs_dim, action_dim, keys), discount=self.discount,
                                 q_agg=self.q_agg, tau=self.tau)


@dataclasses.dataclass(frozen=True)
class OneStepFlowQLConfig(_FlowQL):
    """`agents.OneStepFlowQL` (FQL): a one-step map distilled from the flow."""

    def build(self, obs_dim: int, action_dim: int, *,
              key: PRNGKeyArray) -> agents.OneStepFlowQL:
        keys = _Keys(key)
        flow = self._flow(obs_dim, action_dim, keys)
        actor = OneStepPolicy(self._field(obs_dim, action_dim, keys, time=False))
        return agents.OneStepFlowQL(flow, actor, self._twin(obs_dim, action_dim, keys),
                                    self.metric, self.constraint, self.normalize_q_loss)


@dataclasses.dataclass(frozen=True)
class ResidualFlowQLConfig(_FlowQL):
    """`agents.ResidualFlowQL` (DeFlow with `L2Metric`, FiDec with `FisherMetric`): a residual
    on the flow's action, under a Lagrangian budget by default."""

    normalize_q_loss: bool = True  # divide the actor's Q term by the batch's mean |Q|
    metric: AbstractMetric = FisherMetric()
    constraint: AbstractConstraint = dataclasses.field(default_factory=lambda: Lagrangian(0.001))

    def build(self, obs_dim: int, action_dim: int, *,
              key: PRNGKeyArray) -> agents.ResidualFlowQL:
        keys = _Keys(key)
        flow = self._flow(obs_dim, action_dim, keys)
        actor = ResidualPolicy(flow, self._field(obs_dim, action_dim, keys, time=False))
        return agents.ResidualFlowQL(actor, self._twin(obs_dim, action_dim, keys), self.metric,
                                     self.constraint, self.normalize_q_loss)
