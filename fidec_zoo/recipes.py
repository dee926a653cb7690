"""Named recipes: `make(name, ...)` composes policy + critic + metric + constraint into an agent.

`config(name, env_name=..., preset=...)` resolves every hyperparameter (recipe defaults, then the
per-environment tables of the reference code, then the preset, then your overrides) into a
`Recipe`; `make` builds the agent from it. Any hyperparameter can be overridden by keyword, and
the metric and constraint objects themselves can be replaced:

    make("fidec", obs_dim=28, action_dim=5, env_name="cube-single-play-singletask-task2-v0",
         key=key, metric=L2Metric())            # FiDec's machinery with DeFlow's metric
"""

import dataclasses
import difflib
import json
from collections.abc import Callable, Mapping
from typing import Any

import jax.random as jr
from jaxtyping import PRNGKeyArray

from . import agents
from .constraints import AbstractConstraint, FixedPenalty, Lagrangian
from .critics import QEnsemble, ValueNet
from .metrics import AbstractMetric, FisherMetric, L2Metric
from .policies import (
    ActionField,
    DiffusionPolicy,
    FlowPolicy,
    GaussianPolicy,
    OneStepPolicy,
    ResidualPolicy,
)
from .samplers import DiffraxSampler

__all__ = ["Recipe", "available", "config", "make", "PRESETS", "env_family"]

# ---- per-environment tables (reference/algorithms.md §11) -------------------------------------

#: FQL: (discount, q_agg, alpha) per OGBench family, from the FQL README's paper flags.
FQL_TABLE: dict[str, tuple[float, str, float]] = {
    "antmaze-large-navigate": (0.99, "min", 10.0),
    "antmaze-giant-navigate": (0.995, "min", 10.0),
    "humanoidmaze-medium-navigate": (0.995, "mean", 30.0),
    "humanoidmaze-large-navigate": (0.995, "mean", 30.0),
    "antsoccer-arena-navigate": (0.995, "mean", 10.0),
    "cube-single-play": (0.99, "mean", 300.0),
    "cube-double-play": (0.99, "mean", 300.0),
    "scene-play": (0.99, "mean", 300.0),
    "puzzle-3x3-play": (0.99, "mean", 1000.0),
    "puzzle-4x4-play": (0.99, "mean", 1000.0),
}

#: DeFlow / FiDec: (discount, q_agg, target divergence) per family; normalize_q_loss is True.
RESIDUAL_TABLE: dict[str, tuple[float, str, float]] = {
    "antmaze-large-navigate": (0.99, "min", 0.01),
    "antmaze-giant-navigate": (0.995, "min", 0.01),
    "humanoidmaze-medium-navigate": (0.995, "mean", 0.001),
    "humanoidmaze-large-navigate": (0.995, "mean", 0.001),
    "antsoccer-arena-navigate": (0.995, "mean", 0.01),
    "cube-single-play": (0.99, "mean", 0.001),
    "cube-double-play": (0.99, "mean", 0.001),
    "scene-play": (0.99, "mean", 0.001),
    "puzzle-3x3-play": (0.99, "mean", 0.005),
    "puzzle-4x4-play": (0.99, "mean", 0.005),
}

#: Presets: network size, batch and schedule. `paper` is the references' setting. `cpu` is
#: chosen by measurement on an idle 2-core CPU so that the default command (FiDec, cube-single
#: task2, dataset generation included) finishes in about 30 minutes: generating the 1000-episode
#: dataset takes about 15 of them, and FiDec's update costs 33 ms at 4x128 against 87 ms at
#: 4x256 (benchmarks/update_speed.py). At 4x128 FiDec reached 24/50 at 20k steps, more than
#: 4x256 at 15k (12/50), which already took longer (docs/results.md, "Choosing the cpu preset").
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"hidden": (512, 512, 512, 512), "batch_size": 256, "steps": 1_000_000,
              "eval_every": 100_000, "eval_episodes": 50, "dataset_episodes": 1000},
    "cpu": {"hidden": (128, 128, 128, 128), "batch_size": 256, "steps": 20_000,
            "eval_every": 5_000, "eval_episodes": 50, "dataset_episodes": 1000},
}

_COMMON = {"lr": 3e-4, "grad_clip": None, "discount": 0.99, "tau": 0.005, "flow_steps": 10}
_RESIDUAL = {"q_agg": "mean", "target_divergence": 0.001, "init_alpha": 10.0,
             "normalize_q_loss": True, "grad_clip": 5.0}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "bc": {},
    "iql": {"expectile": 0.9, "awr_temperature": 10.0},
    "rebrac": {"alpha_actor": 1.0, "alpha_critic": 0.0, "actor_noise": 0.2, "noise_clip": 0.5,
               "actor_freq": 2},
    "idql": {"expectile": 0.9, "num_samples": 32, "diffusion_steps": 10},
    "flow_bc": {},
    "ifql": {"expectile": 0.9, "num_samples": 32},
    "fql": {"q_agg": "mean", "alpha": 10.0, "normalize_q_loss": False},
    "deflow": dict(_RESIDUAL),
    "fidec": {**_RESIDUAL, "fisher_t": 0.90, "fisher_t_width": 0.05, "fisher_samples": 8,
              "fisher_damping": 1e-3, "fisher_score": "velocity", "fisher_anchor": "samples"},
}
_WITH_METRIC = ("fql", "deflow", "fidec")
_OBJECT_KEYS = ("metric", "constraint")


def available() -> list[str]:
    """The recipe names `make` accepts."""
    return list(_DEFAULTS)


def env_family(env_name: str) -> str:
    """`cube-single-play-singletask-task2-v0` -> `cube-single-play` (the tables' key)."""
    base = env_name.split("-singletask")[0]
    return base[: -len("-v0")] if base.endswith("-v0") else base


def _check_name(name: str) -> None:
    if name not in _DEFAULTS:
        close = difflib.get_close_matches(name, available(), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"Unknown recipe {name!r}; available: {available()}.{hint}")


def _env_params(name: str, env_name: str | None) -> dict[str, Any]:
    if env_name is None:
        return {}
    family = env_family(env_name)
    if name == "fql" and family in FQL_TABLE:
        discount, q_agg, alpha = FQL_TABLE[family]
        return {"discount": discount, "q_agg": q_agg, "alpha": alpha}
    if name in ("deflow", "fidec") and family in RESIDUAL_TABLE:
        discount, q_agg, target = RESIDUAL_TABLE[family]
        return {"discount": discount, "q_agg": q_agg, "target_divergence": target}
    if family in RESIDUAL_TABLE:  # other agents: the environment's discount
        return {"discount": RESIDUAL_TABLE[family][0]}
    return {}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A fully resolved recipe: every hyperparameter `make` and `fit` use.

    `params` holds plain values (JSON-able); `objects` holds replacement metric/constraint
    modules given as overrides.
    """

    name: str
    env_name: str | None
    preset: str
    params: Mapping[str, Any]
    objects: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (objects by their repr)."""
        return {"name": self.name, "env_name": self.env_name, "preset": self.preset,
                "params": dict(self.params),
                "objects": {k: repr(v) for k, v in self.objects.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=list)


def config(name: str, *, env_name: str | None = None, preset: str = "cpu",
           **overrides: Any) -> Recipe:
    """Resolves the hyperparameters of recipe `name` (see the module docstring)."""
    _check_name(name)
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; available: {list(PRESETS)}.")
    params = {**_COMMON, **PRESETS[preset], **_DEFAULTS[name], **_env_params(name, env_name)}
    objects = {k: overrides.pop(k) for k in _OBJECT_KEYS if k in overrides}
    if objects and name not in _WITH_METRIC:
        raise ValueError(
            f"Recipe {name!r} has no displacement from a behaviour flow to measure, so it takes "
            f"no {sorted(objects)}; metric/constraint overrides apply to {list(_WITH_METRIC)}.")
    _check_objects(objects)
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise ValueError(f"Unknown hyperparameter(s) {unknown} for recipe {name!r}; valid: "
                         f"{sorted(params) + list(_OBJECT_KEYS if name in _WITH_METRIC else ())}.")
    params.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    return Recipe(name, env_name, preset, params, objects)


def _check_objects(objects: Mapping[str, Any]) -> None:
    kinds = {"metric": AbstractMetric, "constraint": AbstractConstraint}
    for key, value in objects.items():
        if not isinstance(value, kinds[key]):
            raise TypeError(f"{key}= must be a {kinds[key].__name__}, got {type(value).__name__}.")


def make(name: str, *, obs_dim: int, action_dim: int, env_name: str | None = None,
         key: PRNGKeyArray, preset: str = "cpu", **overrides: Any) -> agents.AbstractAgent:
    """Builds the agent of recipe `name` for the given sizes (see `config` for overrides)."""
    return build(config(name, env_name=env_name, preset=preset, **overrides),
                 obs_dim=obs_dim, action_dim=action_dim, key=key)


def build(recipe: Recipe, *, obs_dim: int, action_dim: int,
          key: PRNGKeyArray) -> agents.AbstractAgent:
    """Builds the agent described by a resolved `Recipe`."""
    parts = _Parts(recipe.params, obs_dim, action_dim, key)
    return _BUILDERS[recipe.name](parts, recipe.params, recipe.objects)


class _Parts:
    """Builds networks of the recipe's sizes, each from its own key."""

    def __init__(self, params: Mapping[str, Any], obs_dim: int, action_dim: int, key):
        self.p, self.obs_dim, self.action_dim = params, obs_dim, action_dim
        self._keys = iter(jr.split(key, 8))

    def field(self, time: bool = True) -> ActionField:
        return ActionField(self.obs_dim, self.action_dim, tuple(self.p["hidden"]), time=time,
                           key=next(self._keys))

    def flow(self) -> FlowPolicy:
        return FlowPolicy(self.field(), DiffraxSampler(num_steps=self.p["flow_steps"]))

    def gaussian(self, tanh_squash: bool = False) -> GaussianPolicy:
        return GaussianPolicy(self.obs_dim, self.action_dim, tuple(self.p["hidden"]),
                              tanh_squash=tanh_squash, key=next(self._keys))

    def critic(self) -> QEnsemble:
        return QEnsemble(self.obs_dim, self.action_dim, tuple(self.p["hidden"]),
                         key=next(self._keys))

    def expectile(self) -> agents.ExpectileCritic:
        value = ValueNet(self.obs_dim, tuple(self.p["hidden"]), key=next(self._keys))
        return agents.ExpectileCritic(self.critic(), value, expectile=self.p["expectile"],
                                      discount=self.p["discount"], tau=self.p["tau"])

    def twin(self) -> agents.TwinCritic:
        return agents.TwinCritic(self.critic(), discount=self.p["discount"],
                                 q_agg=self.p["q_agg"], tau=self.p["tau"])


def _fisher(p: Mapping[str, Any]) -> FisherMetric:
    return FisherMetric(t=p["fisher_t"], t_width=p["fisher_t_width"],
                        num_samples=p["fisher_samples"], damping=p["fisher_damping"],
                        score=p["fisher_score"], anchor=p["fisher_anchor"])


def _residual(parts: _Parts, p, objects, default_metric: AbstractMetric):
    actor = ResidualPolicy(parts.flow(), parts.field(time=False))
    constraint = objects.get("constraint",
                             Lagrangian(p["target_divergence"], init_alpha=p["init_alpha"]))
    return agents.ResidualFlowQL(actor, parts.twin(), objects.get("metric", default_metric),
                                 constraint, p["normalize_q_loss"])


_BUILDERS: dict[str, Callable[[_Parts, Mapping[str, Any], Mapping[str, Any]],
                              agents.AbstractAgent]] = {
    "bc": lambda parts, p, o: agents.BC(parts.gaussian()),
    "iql": lambda parts, p, o: agents.IQL(parts.gaussian(), parts.expectile(),
                                          p["awr_temperature"]),
    "rebrac": lambda parts, p, o: agents.ReBRAC(
        parts.gaussian(tanh_squash=True), parts.critic(), alpha_actor=p["alpha_actor"],
        alpha_critic=p["alpha_critic"], discount=p["discount"], tau=p["tau"],
        actor_noise=p["actor_noise"], noise_clip=p["noise_clip"], actor_freq=p["actor_freq"]),
    "idql": lambda parts, p, o: agents.IDQL(
        DiffusionPolicy(parts.field(), diffusion_steps=p["diffusion_steps"]), parts.expectile(),
        p["num_samples"]),
    "flow_bc": lambda parts, p, o: agents.FlowBC(parts.flow()),
    "ifql": lambda parts, p, o: agents.IFQL(parts.flow(), parts.expectile(), p["num_samples"]),
    "fql": lambda parts, p, o: agents.OneStepFlowQL(
        parts.flow(), OneStepPolicy(parts.field(time=False)), parts.twin(),
        o.get("metric", L2Metric()), o.get("constraint", FixedPenalty(p["alpha"])),
        p["normalize_q_loss"]),
    "deflow": lambda parts, p, o: _residual(parts, p, o, L2Metric()),
    "fidec": lambda parts, p, o: _residual(parts, p, o, _fisher(p)),
}
