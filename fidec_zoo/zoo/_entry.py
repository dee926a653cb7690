"""`ZooEntry`: one pretrained policy's registry record, plus names, errors and reference numbers."""

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from .._version import __version__

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

#: The FiDec paper's per-task success (%, mean and std over seeds) of IQL, ReBRAC, IFQL, FQL,
#: DeFlow and FiDec on state OGBench manipulation (its Table 2's per-task appendix table; 1M
#: steps, 4x512 networks, official datasets; ../shared/reference/paper.md splits its digits).
PAPER_METHODS = ("iql", "rebrac", "ifql", "fql", "deflow", "fidec")
PAPER_RESULTS: dict[str, tuple[tuple[int, int], ...]] = {
    "cube-single-play-singletask-task1-v0": ((88, 3), (89, 5), (79, 4), (97, 2), (91, 2), (96, 1)),
    "cube-single-play-singletask-task2-v0": ((85, 8), (92, 4), (73, 3), (97, 2), (96, 1), (96, 1)),
    "cube-single-play-singletask-task3-v0": ((91, 5), (93, 3), (88, 4), (98, 2), (97, 1), (98, 1)),
    "cube-single-play-singletask-task4-v0": ((73, 6), (92, 3), (79, 6), (94, 3), (87, 2), (89, 2)),
    "cube-single-play-singletask-task5-v0": ((78, 9), (87, 8), (77, 7), (93, 3), (80, 6), (90, 1)),
    "cube-double-play-singletask-task1-v0":
        ((27, 5), (45, 6), (35, 9), (61, 9), (67, 10), (69, 10)),
    "cube-double-play-singletask-task2-v0": ((1, 1), (7, 3), (9, 5), (36, 6), (53, 3), (58, 9)),
    "cube-double-play-singletask-task3-v0": ((0, 0), (4, 1), (8, 5), (22, 5), (40, 8), (51, 13)),
    "cube-double-play-singletask-task4-v0": ((0, 0), (1, 1), (1, 1), (5, 2), (3, 2), (6, 1)),
    "cube-double-play-singletask-task5-v0": ((4, 3), (4, 2), (17, 6), (19, 10), (28, 3), (32, 7)),
    "scene-play-singletask-task1-v0": ((94, 3), (95, 2), (98, 3), (100, 0), (98, 1), (100, 0)),
    "scene-play-singletask-task2-v0": ((12, 3), (50, 13), (0, 0), (76, 9), (59, 5), (72, 5)),
    "scene-play-singletask-task3-v0": ((32, 7), (55, 16), (54, 19), (98, 1), (88, 4), (96, 1)),
    "scene-play-singletask-task4-v0": ((0, 1), (3, 3), (0, 0), (5, 1), (8, 3), (12, 3)),
    "scene-play-singletask-task5-v0": ((0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0)),
    "puzzle-3x3-play-singletask-task1-v0": ((33, 6), (97, 4), (94, 3), (90, 4), (99, 1), (96, 2)),
    "puzzle-3x3-play-singletask-task2-v0": ((4, 3), (1, 1), (1, 2), (16, 5), (0, 0), (37, 2)),
    "puzzle-3x3-play-singletask-task3-v0": ((3, 2), (3, 1), (0, 0), (10, 3), (0, 0), (28, 3)),
    "puzzle-3x3-play-singletask-task4-v0": ((2, 1), (2, 1), (0, 0), (16, 5), (3, 3), (24, 1)),
    "puzzle-3x3-play-singletask-task5-v0": ((3, 2), (5, 3), (0, 0), (16, 3), (20, 10), (30, 2)),
    "puzzle-4x4-play-singletask-task1-v0": ((12, 2), (26, 4), (49, 9), (34, 8), (7, 1), (38, 3)),
    "puzzle-4x4-play-singletask-task2-v0": ((7, 4), (12, 4), (4, 4), (16, 5), (3, 1), (15, 2)),
    "puzzle-4x4-play-singletask-task3-v0": ((9, 3), (15, 3), (50, 14), (18, 5), (4, 2), (8, 2)),
    "puzzle-4x4-play-singletask-task4-v0": ((5, 2), (10, 3), (21, 11), (11, 3), (4, 1), (6, 2)),
    "puzzle-4x4-play-singletask-task5-v0": ((4, 1), (7, 3), (2, 2), (7, 3), (2, 1), (9, 1)),
}
_PAPER_SOURCE = ("FiDec paper (arXiv 2604.17919), per-task table of Table 2: 1M steps, 4x512 "
                 "networks, official OGBench datasets, mean ± std over seeds")


def paper_reference(recipe: str, env_name: str | None) -> dict[str, Any]:
    """The published number to show next to an entry's success (`value` may be `None`): the
    paper's per-task mean and std for the recipe (a metric-swapped name like `fidec-l2` has
    none: the paper did not run it)."""
    row = PAPER_RESULTS.get(env_name or "")
    if row is None or recipe not in PAPER_METHODS:
        return {"value": None, "std": None, "source": None,
                "note": "The FiDec paper reports no number for this recipe and task."}
    mean, std = row[PAPER_METHODS.index(recipe)]
    note = ("This task's own number, not a family average. The paper's protocol (1M steps, "
            "4x512, official data, several seeds) is not the entry's.")
    return {"value": mean / 100, "std": std / 100, "source": _PAPER_SOURCE, "note": note}
