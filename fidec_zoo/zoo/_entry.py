"""`ZooEntry`: one pretrained policy's registry record, plus names, errors and reference numbers."""

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from .._version import __version__
from ..recipes import env_family

__all__ = [
    "DEFAULT_EVAL_EPISODES",
    "DEFAULT_EVAL_SEED",
    "FORMAT_VERSION",
    "IncompatibleVersionError",
    "IntegrityError",
    "UnknownModelError",
    "ZooEntry",
    "ZooError",
    "paper_reference",
    "slug",
]

#: Version of the registry/entry format this fidec_zoo reads and writes. Bump it when a field
#: changes meaning; readers refuse other versions with `IncompatibleVersionError`.
FORMAT_VERSION = 2

#: Evaluation seed of the zoo's recorded success (`register_run`, `recipes/build_zoo.py`).
DEFAULT_EVAL_SEED = 0
#: Episodes of the zoo's recorded success: 200 give a 95% CI of about ±7 points. With 50 (±14),
#: one fixed episode set can flatter every entry at once: seed 0's first 50 episodes scored 6 to
#: 20 points above seeds 1-3 for all four cube-single entries (docs/results.md, "Zoo evaluation").
DEFAULT_EVAL_EPISODES = 200

_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class ZooError(Exception):
    """Base class of the zoo's errors."""


class UnknownModelError(ZooError, LookupError):
    """No registry on the search path has an entry of that name."""


class IntegrityError(ZooError):
    """A checkpoint's files (or restored parameters) do not match the registry's sha256."""


class IncompatibleVersionError(ZooError):
    """A registry or entry written by a fidec_zoo whose format or recipes this one cannot read."""


def check_name(name: str) -> str:
    """Validates an entry name `<recipe>/<env_name>` (letters, digits, `_.-`, one slash)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"Invalid zoo entry name {name!r}: expected '<recipe>/<env_name>' made of letters, "
            "digits, '_', '.', '-' and one '/', e.g. 'fidec/cube-single-play-singletask-task2-v0'."
        )
    return name


def slug(name: str) -> str:
    """The directory name of an entry: `fidec/cube-...-v0` -> `fidec__cube-...-v0`."""
    return check_name(name).replace("/", "__")


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """The registry record of one pretrained policy (`checkpoints/registry.json`).

    Identity and rebuild: `name`, `recipe` (the recipe's name), `env_name`, `config` (the typed
    `Recipe` as `fidec_zoo.configs.to_dict` writes it: agent config, metric and constraint
    included, and its training config; `from_dict` rebuilds it and `.build` the skeleton),
    `obs_dim`, `action_dim`, `policy_class`.
    Files: `path` (relative to the registry's root), `contents` (`["policy"]` or
    `["policy", "agent"]`, one Orbax directory each), `files` (sha256 per file), `files_sha256`
    (over the sorted `(path, sha256)` pairs), `params_sha256` (over the sorted key paths, dtypes,
    shapes and bytes of the policy's arrays), `param_count`, `size_bytes`.
    Provenance: `dataset`, `training` (steps, wall time, seed, learning curve, device),
    `evaluation` (success, std, 95% CI, episodes, seed, protocol), `paper` (reference number),
    `versions`, `created`, `notes`, `format_version`.
    """

    name: str
    recipe: str
    env_name: str | None
    config: dict[str, Any]
    obs_dim: int
    action_dim: int
    policy_class: str
    path: str
    contents: list[str]
    files: dict[str, str]
    files_sha256: str
    params_sha256: str
    param_count: int
    size_bytes: int
    dataset: dict[str, Any] = dataclasses.field(default_factory=dict)
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    paper: dict[str, Any] = dataclasses.field(default_factory=dict)
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    created: str = ""
    notes: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def has_agent(self) -> bool:
        """Whether the whole agent (critic included) was shipped, for `load_agent`."""
        return "agent" in self.contents

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "registry") -> "ZooEntry":
        """Reads a registry record, refusing other format versions and missing fields."""
        name = data.get("name", "?")
        version = data.get("format_version")
        if version == 1:
            raise IncompatibleVersionError(
                f"Zoo entry {name!r} in {where} has format_version 1 (flat hyperparameters, "
                "before typed configs). Migrate that registry once, in place (files and hashes "
                "are unchanged): python -m fidec_zoo.zoo migrate ROOT")
        if version != FORMAT_VERSION:
            raise IncompatibleVersionError(
                f"Zoo entry {name!r} in {where} has format_version {version!r}, but this "
                f"fidec_zoo ({_own_version()}) reads format {FORMAT_VERSION} only (the entry was "
                f"written by fidec_zoo {data.get('versions', {}).get('fidec_zoo', '?')}). "
                "Install a matching fidec_zoo, or re-register the entry with this one."
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [
            k
            for k, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [k for k in required if k not in data]
        if missing:
            raise IncompatibleVersionError(
                f"Zoo entry {name!r} in {where} lacks the fields {missing} of format "
                f"{FORMAT_VERSION}; it was not written by a compatible fidec_zoo."
            )
        return cls(**{k: v for k, v in data.items() if k in fields})


def _own_version() -> str:
    return __version__


# ---- reference numbers --------------------------------------------------------------------------

#: Published numbers to compare an entry with, keyed by (recipe, OGBench family).
_PAPER: dict[tuple[str, str], dict[str, Any]] = {
    ("fidec", "cube-single-play"): {
        "value": 0.94,
        "source": "FiDec paper (arXiv 2604.17919), OGBench cube-single, 1M steps",
        "note": "Average over the five cube-single tasks, not this task alone. Taken from "
        "secondary sources: the paper's full text was not available to us, so the "
        "number is unverified.",
    },
    ("fql", "cube-single-play"): {
        "value": None,
        "source": "FQL paper (Park, Li, Levine 2025)",
        "note": "The FQL paper's per-task number is not in our references (its appendix "
        "table was not retrieved).",
    },
}


def paper_reference(recipe: str, env_name: str | None) -> dict[str, Any]:
    """The published number to show next to an entry's success (`value` may be `None`)."""
    family = env_family(env_name) if env_name else ""
    default = {"value": None, "source": None, "note": "No published number on record."}
    return dict(_PAPER.get((recipe, family), default))
