"""Named recipes: the reference code's agents and hyperparameters as typed configs.

`config(name, env_name=..., preset=...)` resolves a `Recipe` (an agent config and its
`TrainConfig`): the recipe's defaults, then the per-environment tables of the reference code,
then the preset's sizes, then your keyword overrides (any field of the agent config, of
`TrainConfig` or of `OptimConfig`, by name, and `metric=`/`constraint=` objects). `make` builds
the agent from it:

    recipe = config("fidec", env_name="cube-single-play-singletask-task2-v0", metric=L2Metric())
    agent = recipe.build(obs_dim=28, action_dim=5, key=key)   # FiDec with DeFlow's metric
    fit(agent, data, recipe.train, ...)                       # trains with the recipe's settings
"""

import dataclasses
import difflib
import warnings
from collections.abc import Callable
from typing import Any

from jaxtyping import PRNGKeyArray

from . import agents
from .configs import (
    AbstractAgentConfig,
    BCConfig,
    FlowBCConfig,
    IDQLConfig,
    IFQLConfig,
    IQLConfig,
    OneStepFlowQLConfig,
    OptimConfig,
    ReBRACConfig,
    Recipe,
    ResidualFlowQLConfig,
    TrainConfig,
)
from .constraints import FixedPenalty, Lagrangian
from .metrics import FisherMetric, L2Metric

__all__ = ["FQL_ONLINE_ALPHA", "HPARAMS", "PAPER_TABLE", "PRESETS", "Preset", "Recipe",
           "available", "config", "default_hparams", "env_family", "families", "make",
           "online_alpha"]

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

#: FQL's alpha for offline-to-online runs where the FQL README gives one apart from the offline
#: table (reference/algorithms.md §11a); the other families keep their offline alpha.
FQL_ONLINE_ALPHA: dict[str, float] = {
    "humanoidmaze-medium-navigate": 100.0,
    "antsoccer-arena-navigate": 30.0,
    "cube-double-play": 300.0,
    "scene-play": 300.0,
    "puzzle-4x4-play": 1000.0,
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

#: OGBench's state-based environments with single-task versions (`<env>-<dataset type>-...`).
OGBENCH_ENVS = (
    "antmaze-giant", "antmaze-large", "antmaze-medium", "antmaze-teleport", "antsoccer-arena",
    "antsoccer-medium", "cube-double", "cube-octuple", "cube-quadruple", "cube-single",
    "cube-triple", "humanoidmaze-giant", "humanoidmaze-large", "humanoidmaze-medium",
    "humanoidmaze-teleport", "pointmaze-giant", "pointmaze-large", "pointmaze-medium",
    "pointmaze-teleport", "puzzle-3x3", "puzzle-4x4", "puzzle-4x5", "puzzle-4x6", "scene",
)
_DATASET_TYPES = ("play", "noisy", "navigate", "stitch", "explore")


@dataclasses.dataclass(frozen=True)
class Preset:
    """Network size, batch and schedule of a run: the recipe takes `hidden`, `batch_size` and
    `steps`; a job (recipes/offline.py) also takes the evaluation and dataset sizes."""

    hidden: tuple[int, ...]
    batch_size: int
    steps: int
    eval_every: int
    eval_episodes: int
    dataset_episodes: int


#: Presets. `paper` is the references' setting. `cpu` is chosen by measurement on an idle 2-core
#: CPU so that the default command (FiDec, cube-single task2, dataset generation included)
#: finishes in about 30 minutes (docs/results.md, "Choosing the cpu preset").
PRESETS: dict[str, Preset] = {
    "paper": Preset(hidden=(512, 512, 512, 512), batch_size=256, steps=1_000_000,
                    eval_every=100_000, eval_episodes=50, dataset_episodes=1000),
    "cpu": Preset(hidden=(128, 128, 128, 128), batch_size=256, steps=20_000, eval_every=5_000,
                  eval_episodes=50, dataset_episodes=1000),
}

#: The FiDec paper's per-environment values (its hyperparameter table, state OGBench): IQL's
#: AWR inverse temperature, ReBRAC's (alpha_actor, alpha_critic), IFQL's number of samples,
#: FQL's alpha and DeFlow/FiDec's budget delta. They differ from the reference code's flags in
#: the puzzle delta (0.0005 here, 0.005 in the code) and in giving the baselines per-environment
#: values, which the code's flags leave at their defaults.
PAPER_TABLE: dict[str, tuple[float, tuple[float, float], int, float, float]] = {
    "antmaze-large-navigate": (10.0, (0.003, 0.01), 32, 10.0, 0.01),
    "antmaze-giant-navigate": (10.0, (0.003, 0.01), 32, 10.0, 0.01),
    "humanoidmaze-medium-navigate": (10.0, (0.01, 0.01), 32, 30.0, 0.001),
    "humanoidmaze-large-navigate": (10.0, (0.01, 0.01), 32, 30.0, 0.001),
    "antsoccer-arena-navigate": (1.0, (0.01, 0.01), 64, 10.0, 0.01),
    "cube-single-play": (1.0, (1.0, 0.0), 32, 300.0, 0.001),
    "cube-double-play": (0.3, (0.1, 0.0), 32, 300.0, 0.001),
    "scene-play": (10.0, (0.1, 0.01), 32, 300.0, 0.001),
    "puzzle-3x3-play": (10.0, (0.3, 0.01), 32, 1000.0, 0.0005),
    "puzzle-4x4-play": (3.0, (0.3, 0.01), 32, 1000.0, 0.0005),
}
#: The paper's perturbed time: "fixed to 0.8 across all offline tasks" (its Table 6), where the
#: reference scripts draw t ~ U[0.85, 0.90].
PAPER_FISHER_T = 0.8
#: The hyperparameter sets `config` can fill a recipe from.
HPARAMS = ("code", "paper")

_RESIDUAL_CLIP = 5.0  # DeFlow/FiDec clip gradients at global norm 5; the others do not


def _fql(env: tuple[float, str, float] | None) -> dict[str, Any]:
    discount, q_agg, alpha = env or (0.99, "mean", 10.0)
    return dict(discount=discount, q_agg=q_agg, constraint=FixedPenalty(alpha))


def _residual(env: tuple[float, str, float] | None) -> dict[str, Any]:
    discount, q_agg, target = env or (0.99, "mean", 0.001)
    return dict(discount=discount, q_agg=q_agg, constraint=Lagrangian(target, init_alpha=10.0))


#: Per recipe: the agent config class, the table it reads (if any) and how a row fills it in,
#: and whether it clips gradients.
_RECIPES: dict[str, tuple[type[AbstractAgentConfig], Callable[[str | None], dict[str, Any]],
                          float | None]] = {
    "bc": (BCConfig, lambda f: {}, None),
    "iql": (IQLConfig, lambda f: _discount(f), None),
    "rebrac": (ReBRACConfig, lambda f: _discount(f), None),
    "idql": (IDQLConfig, lambda f: _discount(f), None),
    "flow_bc": (FlowBCConfig, lambda f: {}, None),
    "ifql": (IFQLConfig, lambda f: _discount(f), None),
    "fql": (OneStepFlowQLConfig,
            lambda f: dict(_fql(FQL_TABLE.get(f)), metric=L2Metric()), None),
    "deflow": (ResidualFlowQLConfig,
               lambda f: dict(_residual(RESIDUAL_TABLE.get(f)), metric=L2Metric()),
               _RESIDUAL_CLIP),
    "fidec": (ResidualFlowQLConfig,
              lambda f: dict(_residual(RESIDUAL_TABLE.get(f)), metric=FisherMetric()),
              _RESIDUAL_CLIP),
}


def _paper(name: str, family: str | None) -> dict[str, Any]:
    """What the paper's set changes in recipe `name` for `family`, over the code's set."""
    out: dict[str, Any] = {}
    if name == "fidec":
        out["metric"] = FisherMetric(t=PAPER_FISHER_T, t_width=0.0)
    if family not in PAPER_TABLE:
        return out
    awr, (alpha_actor, alpha_critic), samples, alpha, delta = PAPER_TABLE[family]
    if name in ("deflow", "fidec"):
        out["constraint"] = Lagrangian(delta, init_alpha=10.0)
    return {**out, **{
        "iql": {"awr_temperature": awr},
        "rebrac": {"alpha_actor": alpha_actor, "alpha_critic": alpha_critic},
        "ifql": {"num_samples": samples},
        "fql": {"constraint": FixedPenalty(alpha)},
    }.get(name, {})}


def _discount(family: str | None) -> dict[str, Any]:
    """Agents without a per-recipe table take the environment's discount."""
    return {"discount": RESIDUAL_TABLE[family][0]} if family in RESIDUAL_TABLE else {}


def available() -> list[str]:
    """The recipe names `config` and `make` accept."""
    return list(_RECIPES)


def families() -> list[str]:
    """The families with per-environment values from the reference code (the tables' keys);
    other OGBench families get the recipes' defaults."""
    return sorted({*RESIDUAL_TABLE, *FQL_TABLE})


def env_family(env_name: str) -> str:
    """`cube-single-play-singletask-task2-v0` -> `cube-single-play` (the tables' key). Raises
    `ValueError`, listing the supported environments and the families with reference values,
    for a name that is not `<OGBench env>-<dataset type>-singletask[-taskN]-v0`."""
    base = env_name.split("-singletask")[0]
    family = base[: -len("-v0")] if base.endswith("-v0") else base
    env, _, kind = family.rpartition("-")
    if env not in OGBENCH_ENVS or kind not in _DATASET_TYPES:
        close = difflib.get_close_matches(family, families(), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"Unknown environment {env_name!r} (family {family!r}).{hint} Names are "
            f"<env>-<dataset type>-singletask[-taskN]-v0 with env one of {list(OGBENCH_ENVS)} "
            f"and dataset type one of {list(_DATASET_TYPES)}; the reference code has "
            f"per-environment values for the families {families()}.")
    return family


def _check_name(name: str) -> None:
    if name not in _RECIPES:
        close = difflib.get_close_matches(name, available(), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"Unknown recipe {name!r}; available: {available()}.{hint}")


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def default_hparams(preset: str) -> str:
    """The hyperparameter set a preset uses unless told: the paper's for the `paper` preset
    (its networks, steps and settings together), the reference code's otherwise (what the
    zoo's entries were trained with; docs/concepts.md says why)."""
    return "paper" if preset == "paper" else "code"


def config(name: str, *, env_name: str | None = None, preset: str = "cpu",
           hparams: str | None = None, **overrides: Any) -> Recipe:
    """The `Recipe` of `name` for `env_name` at `preset` (see the module docstring), from the
    hyperparameter set `hparams`: `"code"` (the public reference code's flags) or `"paper"`
    (the FiDec paper's table: t = 0.8, puzzle delta 0.0005, the baselines' per-environment
    values); default `default_hparams(preset)`.

    Raises `ValueError` for an unknown recipe, preset, set, environment or hyperparameter
    (listing the valid ones) and `TypeError` for a metric/constraint of the wrong kind.
    """
    _check_name(name)
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; available: {list(PRESETS)}.")
    hparams = default_hparams(preset) if hparams is None else hparams
    if hparams not in HPARAMS:
        raise ValueError(f"Unknown hyperparameter set {hparams!r}; available: {list(HPARAMS)}.")
    cls, from_table, grad_clip = _RECIPES[name]
    family = None if env_name is None else env_family(env_name)
    if family is not None and family not in families() and name not in ("bc", "flow_bc"):
        warnings.warn(f"The reference code has no per-environment values for {family!r}; "
                      f"recipe {name!r} uses its defaults there.", stacklevel=2)
    size = PRESETS[preset]
    agent_fields, train_fields = _field_names(cls), _field_names(TrainConfig) - {"optimiser"}
    optim_fields = _field_names(OptimConfig)
    unknown = sorted(set(overrides) - agent_fields - train_fields - optim_fields)
    if unknown:
        valid = sorted(agent_fields | train_fields | optim_fields)
        raise ValueError(f"Unknown hyperparameter(s) {unknown} for recipe {name!r}; valid: "
                         f"{valid}.")
    pick = lambda names: {k: v for k, v in overrides.items() if k in names}  # noqa: E731
    tuples = {k: tuple(v) for k, v in overrides.items() if isinstance(v, list)}
    overrides = {**overrides, **tuples}
    table = from_table(family)
    if hparams == "paper":
        table.update(_paper(name, family))
    agent = cls(**{"hidden": size.hidden, **table, **pick(agent_fields)})
    optimiser = OptimConfig(**{"grad_clip": grad_clip, **pick(optim_fields)})
    train = TrainConfig(**{"steps": size.steps, "batch_size": size.batch_size,
                           **pick(train_fields)}, optimiser=optimiser)
    return Recipe(name, agent, train, env_name=env_name, preset=preset, hparams=hparams)


def online_alpha(env_name: str) -> float | None:
    """FQL's distillation weight for fine-tuning online on `env_name` (`FQL_ONLINE_ALPHA`), or
    `None` where the references keep the offline one."""
    return FQL_ONLINE_ALPHA.get(env_family(env_name))


def make(name: str, *, obs_dim: int, action_dim: int, env_name: str | None = None,
         key: PRNGKeyArray, preset: str = "cpu", **overrides: Any) -> agents.AbstractAgent:
    """Builds the agent of recipe `name` for the given sizes (see `config` for overrides; train
    it with `config(...).train`, or pass the `Recipe` itself to `fidec_zoo.train.fit`)."""
    return config(name, env_name=env_name, preset=preset, **overrides).build(
        obs_dim, action_dim, key=key)
