"""Reading what fidec_zoo wrote before typed configs: registry format 1 and old run dirs.

Both stored a recipe as its name, preset and flat hyperparameters (`params`), plus the reprs of
metric overrides. `legacy_recipe` turns that into today's `Recipe`; `migrate_entry` rewrites a
format-1 registry record as format 2 (its checkpoint files, and so their hashes, unchanged).
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import recipes
from ..configs import Recipe, to_dict
from ..constraints import FixedPenalty, Lagrangian
from ..metrics import FisherMetric, L2Metric
from . import _registry

__all__ = ["legacy_recipe", "migrate_entry", "migrate_registry"]

#: Flat names of format 1 that today live in an object of the agent config.
_FISHER = {"fisher_t": "t", "fisher_t_width": "t_width", "fisher_samples": "num_samples",
           "fisher_damping": "damping", "fisher_score": "score", "fisher_anchor": "anchor"}
_CONSTRAINT = ("alpha", "target_divergence", "init_alpha")
#: Flat names of format 1 that belong to the job (evaluation, dataset), not to the recipe.
_JOB = ("eval_every", "eval_episodes", "dataset_episodes")
#: The only overrides format 1 could store: default-constructed metrics, by repr.
_METRICS = {"L2Metric()": L2Metric, "FisherMetric()": FisherMetric}


def legacy_recipe(name: str, env_name: str | None, preset: str, params: Mapping[str, Any],
                  objects: Mapping[str, str] | None = None) -> Recipe:
    """The `Recipe` of a format-1 record: `recipes.config` with its flat `params`, the Fisher
    and constraint parameters moved into their objects. Raises `ValueError` for an override
    that format 1 could not have stored."""
    flat = {k: v for k, v in params.items() if k not in _JOB and k not in _FISHER
            and k not in _CONSTRAINT}
    flat = {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()}
    if name == "fql":
        flat["constraint"] = FixedPenalty(params["alpha"])
    elif name in ("deflow", "fidec"):
        flat["constraint"] = Lagrangian(params["target_divergence"],
                                        init_alpha=params["init_alpha"])
    if name == "fidec":
        flat["metric"] = FisherMetric(**{new: params[old] for old, new in _FISHER.items()})
    for key, text in (objects or {}).items():
        if key != "metric" or text not in _METRICS:
            raise ValueError(f"a {key} override {text!r} that cannot be rebuilt")
        flat["metric"] = _METRICS[text]()
    return recipes.config(name, env_name=env_name, preset=preset, **flat)


def migrate_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    """A format-1 registry record as format 2: `config` (the typed recipe) replaces `preset`,
    `params` and `recipe_objects`, which are kept in `training["format_1"]` for the record."""
    out = {k: v for k, v in record.items() if k not in ("params", "preset", "recipe_objects")}
    recipe = legacy_recipe(record["recipe"], record.get("env_name"), record["preset"],
                           record["params"], record.get("recipe_objects"))
    out["config"] = to_dict(recipe)
    out["training"] = dict(record.get("training") or {}, format_1={
        "preset": record["preset"], "params": record["params"],
        "recipe_objects": record.get("recipe_objects", {})})
    out["format_version"] = 2
    return out


def migrate_registry(root: Path) -> list[str]:
    """Rewrites `root/registry.json` from format 1 to format 2 in place (atomically, under the
    root's lock) and returns the migrated names; a format-2 registry is left as it is."""
    with _registry.locked(root):
        data = json.loads((root / _registry.REGISTRY).read_text())
        if data.get("format_version") != 1:
            return []
        entries = {name: migrate_entry(record) for name, record in data["entries"].items()}
        _registry.write(root, entries)
    return sorted(entries)
