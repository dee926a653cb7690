"""Reading the zoo: `list_models`, `model_info`, `load`, `load_agent`, `verify`, `evaluate`."""

import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.random as jr

from .. import checkpoint
from ..agents import AbstractAgent
from ..configs import ConfigError, Recipe, from_dict
from ..envs import evaluate as run_episodes
from ..envs import record_video as render_episodes
from ..policies import AbstractPolicy
from . import _registry
from ._entry import (
    DEFAULT_EVAL_EPISODES,
    DEFAULT_EVAL_SEED,
    IncompatibleVersionError,
    IntegrityError,
    ZooEntry,
    _own_version,
)

__all__ = ["evaluate", "list_models", "load", "load_agent", "model_info", "verify"]

Root = str | os.PathLike | None


def list_models(pattern: str = "*", *, root: Root = None) -> list[str]:
    """Names of the zoo's entries matching the shell-style `pattern`, sorted.

    `list_models("fidec/*")`, `list_models("*cube-single*")`. Entries are read from an explicit
    `root`, `$FIDEC_ZOO_HOME`, the packaged zoo and the repository's `checkpoints/`.
    """
    return _registry.matching(pattern, root)


def model_info(name: str, *, root: Root = None) -> ZooEntry:
    """The registry record of `name`: recipe and hyperparameters, dataset, training, measured
    success, paper number, versions and hashes (nothing is loaded)."""
    return _registry.find(name, root)[1]


def _located(name: str, root: Root) -> tuple[ZooEntry, Path]:
    where, entry = _registry.find(name, root)
    return entry, where / entry.path


def verify_files(entry: ZooEntry, directory: Path) -> None:
    """Raises `IntegrityError` naming every file of `directory` whose sha256 differs from the
    registry's, is missing, or is not in the registry."""
    if not directory.is_dir():
        raise IntegrityError(f"Zoo entry {entry.name!r}: its directory {directory} is missing.")
    found = _registry.file_hashes(directory)
    changed = [p for p, h in entry.files.items() if p in found and found[p] != h]
    missing = [p for p in entry.files if p not in found]
    extra = [p for p in found if p not in entry.files]
    if changed or missing or extra:
        parts = [
            f"sha256 mismatch in {p} (expected {entry.files[p][:12]}..., found {found[p][:12]}...)"
            for p in changed
        ]
        parts += [f"missing file {p}" for p in missing]
        parts += [f"unexpected file {p}" for p in extra]
        raise IntegrityError(
            f"Refusing to load zoo entry {entry.name!r} from {directory}: "
            + "; ".join(parts[:10])
            + (" ..." if len(parts) > 10 else "")
            + ". The files changed after registration (corruption, a partial copy, or an "
            "edit); restore them (e.g. `git checkout -- checkpoints/`) or re-register the entry."
        )
    if _registry.files_digest(found) != entry.files_sha256:
        raise IntegrityError(
            f"Zoo entry {entry.name!r}: the per-file hashes match but files_sha256 does not; "
            "the registry record itself was edited. Re-register the entry."
        )


def verify(name: str, *, root: Root = None) -> ZooEntry:
    """Checks the sha256 of every file of entry `name` and of its restored parameters; returns
    the entry, or raises `IntegrityError` naming what differs."""
    load(name, root=root, verify=True)
    return model_info(name, root=root)


def recipe_of(entry: ZooEntry) -> Recipe:
    """The entry's typed recipe, rebuilt from its stored config (your own metric or constraint
    classes included, if their modules can be imported here)."""
    try:
        recipe = from_dict(entry.config)
    except ConfigError as e:
        raise IncompatibleVersionError(_incompatible(entry, e)) from e
    if not isinstance(recipe, Recipe):
        problem = ValueError(f"its config holds a {type(recipe).__name__}, not a Recipe.")
        raise IncompatibleVersionError(_incompatible(entry, problem))
    return recipe


def _incompatible(entry: ZooEntry, error: Exception) -> str:
    return (
        f"Zoo entry {entry.name!r} was saved by fidec_zoo "
        f"{entry.versions.get('fidec_zoo', '?')} and this fidec_zoo ({_own_version()}) cannot "
        f"rebuild it: {error} Install the fidec_zoo version that saved it, or re-register it."
    )


def _restore(entry: ZooEntry, directory: Path, part: str) -> Any:
    """Restores `directory/part` (`policy` or `agent`) into a skeleton built from the recipe."""
    recipe = recipe_of(entry)

    def build():
        agent = recipe.build(entry.obs_dim, entry.action_dim, key=jr.key(0))
        return agent.policy if part == "policy" else agent

    try:
        skeleton = eqx.filter_eval_shape(build)
    except Exception as e:  # a recipe whose builder changed incompatibly
        raise IncompatibleVersionError(_incompatible(entry, e)) from e
    built = type(skeleton).__name__
    if part == "policy" and built != entry.policy_class:
        problem = ValueError(f"its recipe now builds a {built}, not a {entry.policy_class}.")
        raise IncompatibleVersionError(_incompatible(entry, problem))
    try:
        return checkpoint.load_pytree(directory / part, skeleton)
    except ValueError as e:
        raise IncompatibleVersionError(_incompatible(entry, e)) from e


def _load_entry(entry: ZooEntry, directory: Path, *, verify: bool) -> AbstractPolicy:
    if verify:
        verify_files(entry, directory)
    policy = _restore(entry, directory, "policy")
    if verify and _registry.params_digest(policy)[0] != entry.params_sha256:
        raise IntegrityError(
            f"Zoo entry {entry.name!r}: the restored parameters do not match params_sha256 "
            "although the files do; the checkpoint was read differently than it was written "
            f"(orbax/jax versions: saved with {entry.versions}). Re-register the entry."
        )
    return policy


def load(name: str, *, root: Root = None, verify: bool = True) -> AbstractPolicy:
    """The pretrained policy `name`, ready to act: `policy(obs, z)` or
    `policy.sample(obs, key=key)` on unbatched inputs (`jax.vmap` for batches).

    Works offline: no dataset, environment or network. With `verify` (default) the sha256 of
    every file is checked first, and of the restored parameters after.

    Raises `UnknownModelError` (with close matches), `IntegrityError` (naming the file) or
    `IncompatibleVersionError`.
    """
    entry, directory = _located(name, root)
    return _load_entry(entry, directory, verify=verify)


def load_agent(name: str, *, root: Root = None, verify: bool = True) -> AbstractAgent:
    """The whole pretrained agent (critic included), for entries saved with
    `include_agent=True`; `agent.policy` equals `load(name)`."""
    entry, directory = _located(name, root)
    if not entry.has_agent:
        raise ValueError(
            f"Zoo entry {name!r} ships its policy only (no critic); use "
            f"fidec_zoo.zoo.load({name!r}). Entries with an agent: "
            f"{[n for n in list_models(root=root) if model_info(n, root=root).has_agent]}."
        )
    _load_entry(entry, directory, verify=verify)
    return _restore(entry, directory, "agent")


def evaluate(
    name: str,
    *,
    episodes: int | None = None,
    seed: int | None = None,
    root: Root = None,
    verify: bool = True,
    **kwargs: Any,
):
    """Evaluates entry `name` in its environment with `fidec_zoo.envs.evaluate`.

    `episodes` and `seed` default to the entry's recorded protocol, so the result reproduces
    the recorded success (or to `DEFAULT_EVAL_EPISODES` and `DEFAULT_EVAL_SEED` for an entry
    saved without an evaluation). Other keywords go to `envs.evaluate` (`num_envs`, `progress`).
    Returns an `EvalResult`.
    """
    entry, policy = _acting(name, root, verify)
    recorded = entry.evaluation or {}
    if episodes is None:
        episodes = int(recorded.get("episodes", DEFAULT_EVAL_EPISODES))
    return run_episodes(policy, entry.env_name, episodes=episodes, seed=_seed(entry, seed),
                        **kwargs)


def record_video(
    name: str,
    path: str | os.PathLike,
    *,
    episodes: int = 1,
    seed: int | None = None,
    root: Root = None,
    verify: bool = True,
    **kwargs: Any,
):
    """Renders the first `episodes` episodes of entry `name`'s evaluation to the GIF `path`,
    with `fidec_zoo.envs.record_video`. `seed` defaults to the recorded evaluation seed, so the
    video shows episodes that the recorded success counts. Other keywords go to
    `envs.record_video` (`width`, `height`, `fps`, `frame_skip`, `progress`). Returns the
    `EvalResult` of the rendered episodes.
    """
    entry, policy = _acting(name, root, verify)
    return render_episodes(policy, entry.env_name, path, episodes=episodes,
                           seed=_seed(entry, seed), **kwargs)


def _acting(name: str, root: Root, verify: bool) -> tuple[ZooEntry, AbstractPolicy]:
    """The entry and its loaded policy, for running it in its environment."""
    entry, directory = _located(name, root)
    if entry.env_name is None:
        raise ValueError(f"Zoo entry {name!r} has no environment to run in.")
    return entry, _load_entry(entry, directory, verify=verify)


def _seed(entry: ZooEntry, seed: int | None) -> int:
    """`seed`, else the recorded evaluation seed, else `DEFAULT_EVAL_SEED`."""
    return int((entry.evaluation or {}).get("seed", DEFAULT_EVAL_SEED)) if seed is None else seed
