"""Writing the zoo: `save_pretrained` (a policy or agent plus its recipe) and `register_run`
(a finished `recipes/offline.py` run directory)."""

import csv
import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from .. import checkpoint
from ..agents import AbstractAgent
from ..configs import AbstractAgentConfig, Recipe, to_dict
from ..envs import evaluate
from ..policies import AbstractPolicy
from ..provenance import package_versions
from . import _registry
from ._entry import (
    DEFAULT_EVAL_EPISODES,
    DEFAULT_EVAL_SEED,
    ZooEntry,
    check_name,
    paper_reference,
    slug,
)
from ._load import _load_entry, _restore
from ._run import load_run

__all__ = ["register_run", "save_pretrained"]

Root = str | os.PathLike | None
#: Packages whose versions an entry records: those that shape a checkpoint or its evaluation.
_PACKAGES = ("jax", "jaxlib", "equinox", "orbax-checkpoint", "ogbench", "mujoco")


def protocol(
    episodes: int, seed: int, steps: int | None = None, run_steps: int | None = None,
    planned_steps: int | None = None,
) -> str:
    """The evaluation protocol, in words (stored with every measured success). `steps`: the
    checkpoint's step; `run_steps`: the run's length when the checkpoint is not its last;
    `planned_steps`: the length of a run stopped before its end."""
    if run_steps is not None and steps is not None and run_steps != steps:
        ckpt = (
            f"checkpoint after {steps} of the run's {run_steps} updates, chosen on the run's "
            "training evaluations (other episode seeds than these); "
        )
    elif planned_steps is not None and steps is not None and planned_steps != steps:
        ckpt = (f"checkpoint after {steps} updates, the last of a run planned for "
                f"{planned_steps} and stopped there; ")
    else:
        ckpt = f"final checkpoint after {steps} updates (no selection); " if steps else ""
    return (
        f"{ckpt}fidec_zoo.envs.evaluate(policy, env_name, episodes={episodes}, seed={seed}): "
        "episode k resets with seed episode_seed(seed, k); noise z ~ N(0, I) drawn at every step "
        "from fold_in(fold_in(key(seed), k), t); actions clipped to [-1, 1]; success = "
        "info['success'] at the episode's last step, averaged over episodes; CI = 1.96 std/sqrt(n)."
    )


def _evaluation(evaluation: Any, training: Mapping[str, Any]) -> dict[str, Any] | None:
    """An `EvalResult` or a mapping, as the entry's `evaluation` record."""
    if evaluation is None:
        return None
    if not isinstance(evaluation, Mapping):  # an EvalResult
        evaluation = {
            "success": evaluation.success, "success_std": evaluation.success_std,
            "success_ci95": evaluation.success_ci95, "return_mean": evaluation.return_mean,
            "length_mean": evaluation.length_mean, "episodes": len(evaluation.episodes),
            "seed": evaluation.seed,
        }  # fmt: skip
    out = {k: (float(v) if isinstance(v, float) else v) for k, v in dict(evaluation).items()}
    for key in ("success", "episodes", "seed"):
        if key not in out:
            raise ValueError(
                f"evaluation= needs at least success, episodes and seed; missing {key!r}."
            )
    steps, run_steps = training.get("steps"), training.get("run_steps")
    out.setdefault("protocol", protocol(int(out["episodes"]), int(out["seed"]), steps, run_steps,
                                        training.get("planned_steps")))
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, tuple):
        return list(x)
    if hasattr(x, "tolist"):  # numpy/jax scalars and small arrays
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON-serialisable")


def _to_json(data: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(data), default=_jsonable))
    except (TypeError, ValueError) as e:
        raise TypeError(f"Zoo metadata must be JSON-serialisable: {e}") from e


def save_pretrained(
    model: AbstractAgent | AbstractPolicy,
    name: str | None = None,
    *,
    recipe: Recipe | AbstractAgentConfig,
    root: Root = None,
    evaluation: Any = None,
    dataset: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    paper: Mapping[str, Any] | None = None,
    notes: str = "",
    include_agent: bool = False,
    overwrite: bool = False,
) -> ZooEntry:
    """Adds `model` (an agent, or its policy) to the zoo in `root` as entry `name`.

    **Arguments:**

    - `model`: the trained agent or its `policy`; only the policy's arrays are stored unless
      `include_agent` (then the whole agent too, critic included, for `load_agent`).
    - `name`: default `<recipe.name>/<recipe.env_name>`.
    - `recipe`: the `Recipe` (from `fidec_zoo.recipes.config`) or the agent config you composed
      yourself that the model was built from; `load` rebuilds the skeleton from it. It is stored
      as JSON (`fidec_zoo.configs.to_dict`), your own metric or constraint classes included:
      they must be importable by their module path where the entry is loaded.
    - `root`: default `$FIDEC_ZOO_HOME`, else the repository's `checkpoints/`.
    - `evaluation`: an `EvalResult` or a mapping with at least success, episodes and seed.
    - `dataset`, `training`, `paper`, `notes`: provenance records (free-form JSON mappings);
      `paper` defaults to the known reference number for the recipe and environment family.
    - `overwrite`: replace an existing entry of that name.

    Writes `root/<slug>/policy` (and `agent`) as Orbax directories of host numpy arrays with the
    entry as custom metadata, checks that loading them back gives `model` exactly, then records
    the entry (hashes included) in `root/registry.json`. Returns the entry.
    """
    if isinstance(recipe, AbstractAgentConfig):
        recipe = Recipe("custom", recipe)
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe= must be a Recipe or an agent config, got "
                        f"{type(recipe).__name__}.")
    is_agent = isinstance(model, AbstractAgent)
    policy = model.policy if is_agent else model
    if not isinstance(policy, AbstractPolicy):
        raise TypeError(f"save_pretrained takes an agent or a policy, got {type(model).__name__}.")
    if include_agent and not is_agent:
        raise ValueError("include_agent=True needs the agent, not its policy.")
    if name is None and recipe.env_name is None:
        raise ValueError("Pass name=... (the recipe has no env_name to name the entry after).")
    name = check_name(name if name is not None else f"{recipe.name}/{recipe.env_name}")
    params_sha, count = _registry.params_digest(policy)
    fields: dict[str, Any] = dict(
        name=name, recipe=recipe.name, env_name=recipe.env_name, config=to_dict(recipe),
        obs_dim=int(policy.obs_dim),
        action_dim=int(policy.action_dim), policy_class=type(policy).__name__, path=slug(name),
        contents=["policy", "agent"] if include_agent else ["policy"],
        params_sha256=params_sha, param_count=count,
        dataset=dict(dataset or {}), training=dict(training or {}),
        evaluation=_evaluation(evaluation, training or {}),
        paper=dict(paper) if paper is not None else paper_reference(recipe.name, recipe.env_name),
        versions=package_versions(_PACKAGES), notes=notes,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    fields = _to_json(fields)  # fails early, naming the problem, on non-JSON provenance
    root = _registry.write_root(root)
    with _registry.locked(root):
        entries = _registry.read(root)
        if name in entries and not overwrite:
            raise FileExistsError(f"The zoo in {root} already has {name!r}; pass overwrite=True.")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{slug(name)}-", dir=root))
        tmp.chmod(0o755)  # mkdtemp makes it private; a shared zoo must be readable
        try:
            checkpoint.save_pytree(tmp / "policy", policy, metadata=fields)
            if include_agent:
                checkpoint.save_pytree(tmp / "agent", model, metadata={"name": name})
            files = _registry.file_hashes(tmp)
            entry = ZooEntry(
                **fields,
                files=files,
                files_sha256=_registry.files_digest(files),
                size_bytes=sum((tmp / p).stat().st_size for p in files),
            )
            _check_round_trip(entry, tmp, policy, model if include_agent else None)
            entries[name] = entry.to_dict()
            _publish(tmp, root / entry.path, lambda: _registry.write(root, entries))
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return entry


def _publish(new: Path, final: Path, commit: Callable[[], Any]) -> None:
    """Renames the directory `new` to `final`, then runs `commit` (writing the registry). An
    entry being replaced is renamed aside first and deleted only once `commit` succeeds; if it
    fails, the old directory is put back, so the registry and the files on disk agree."""
    old = new.with_name(f"{new.name}-replaced")
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(new, final)
        commit()
    except BaseException:
        if final.exists() and not new.exists():
            os.replace(final, new)  # the caller removes it
        if old.exists():
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _identical(a: Any, b: Any) -> bool:
    """Same structure, equal non-array leaves and bit-identical arrays (compared on host, so
    nothing is compiled)."""
    arrays_a, static_a = eqx.partition(a, eqx.is_array)
    arrays_b, static_b = eqx.partition(b, eqx.is_array)
    if jax.tree.structure(a) != jax.tree.structure(b) or not eqx.tree_equal(static_a, static_b):
        return False
    pairs = zip(jax.tree.leaves(arrays_a), jax.tree.leaves(arrays_b), strict=True)
    return all(
        x.dtype == y.dtype and np.array_equal(jax.device_get(x), jax.device_get(y))
        for x, y in pairs
    )


def _check_round_trip(entry: ZooEntry, directory: Path, policy, agent) -> None:
    """Loading the written entry must give back exactly what was saved."""
    problems = []
    try:
        restored = _load_entry(entry, directory, verify=True)
        if not _identical(restored, policy):
            problems.append("the policy rebuilt from the recipe differs from the one saved")
        if agent is not None:
            if not _identical(_restore(entry, directory, "agent"), agent):
                problems.append("the agent rebuilt from the recipe differs from the one saved")
    except Exception as e:  # noqa: BLE001 - reported below with the entry's name
        problems.append(f"{type(e).__name__}: {e}")
    if problems:
        raise ValueError(
            f"Not saving {entry.name!r}: loading it back fails ({'; '.join(problems)}). Was the "
            f"model built from this config ({entry.config}), with float32 arrays?"
        )


# ---- run directories ----------------------------------------------------------------------------


def _eval_rows(path: Path) -> dict[int, dict[str, str]]:
    """The rows of a run's `eval.csv` that hold a success, by step."""
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("success") not in (None, "")]
    return {int(float(r["step"])): r for r in rows}


def _optional_float(row: Mapping[str, str], key: str) -> float | None:
    return float(row[key]) if row.get(key) not in (None, "") else None


def register_run(
    run_dir: str | os.PathLike,
    name: str | None = None,
    *,
    root: Root = None,
    episodes: int = DEFAULT_EVAL_EPISODES,
    eval_seed: int = DEFAULT_EVAL_SEED,
    evaluation: Any = None,
    include_agent: bool = True,
    paper: Mapping[str, Any] | None = None,
    notes: str = "",
    overwrite: bool = True,
    step: int | None = None,
    seed: int | None = None,
    workers: int = 1,
) -> ZooEntry:
    """Registers the policy of a finished `recipes/offline.py` run directory, or with `step`
    one kept checkpoint of any run, finished or stopped.

    Reads `config.json` (recipe, seed, dataset provenance, versions), `summary.json`,
    `eval.csv` (learning curve) and a checkpoint with `load_run`: the run's last by default,
    else checkpoint `step` (kept by `offline.py --keep-checkpoints 0`; the entry then records
    the whole run's length and curve, and its protocol says the checkpoint was chosen), and
    of a `--seeds N` run the given `seed`. Unless `evaluation` is given, evaluates the policy
    for `episodes` episodes with seed `eval_seed` (envs stepped in `workers` processes). `name`
    defaults to `<agent>[-<metric>]/<env>`. Needs the environment (for the evaluation, and for
    the sizes if `config.json` lacks `obs_dim`/`action_dim`) but not the dataset. The whole
    agent (critic included) is shipped beside the policy unless `include_agent=False`, so that
    the entry can be fine-tuned online (`recipes/online.py --from NAME`). Returns the entry (see
    `save_pretrained`).
    """
    run_dir = Path(run_dir).expanduser().resolve()
    summary_path = run_dir / "summary.json"
    if run_dir.is_dir() and not summary_path.is_file() and step is None:
        raise FileNotFoundError(
            f"{run_dir} has no summary.json: not a finished recipes/offline.py run. Finish it "
            f"(rerun offline.py with --run-dir {run_dir}) before registering, or register one "
            "of its kept checkpoints with step=N."
        )
    run = load_run(run_dir, step=step, seed=seed)
    config, recipe, agent = run.config, run.recipe, run.agent
    chosen, step = step, run.step
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    # A --seeds run's summary holds the mean over seeds; this seed's own results are in "seeds".
    final = next((s for s in summary.get("seeds", []) if s["seed"] == run.seed), summary)
    last = checkpoint.latest_step(run_dir / "checkpoints")
    finished = last == recipe.train.steps and last == summary.get("steps")
    if not finished and chosen is None:
        raise ValueError(
            f"{run_dir}: latest checkpoint is step {last}, but the run is "
            f"{recipe.train.steps} steps (summary: {summary.get('steps')}); "
            "finish it before registering, or register one of its kept checkpoints with step=N."
        )
    if evaluation is None:
        evaluation = evaluate(agent.policy, run.env_name, episodes=episodes, seed=eval_seed,
                              workers=workers)
    if name is None:
        metric = summary.get("metric", (config.get("job") or {}).get("metric"))
        suffix = f"-{metric}" if metric else ""
        name = f"{recipe.name}{suffix}/{run.env_name}"
    dataset = dict(config.get("dataset") or {})
    if "path" in dataset:  # machine-specific; keep the file name
        dataset["file"] = Path(dataset.pop("path")).name
    dataset["data_seed"] = run.data_seed
    rows = _eval_rows(run.log_dir / "eval.csv")
    training = {
        "steps": step, "wall_time_s": summary.get("train_wall_time_s"),
        "seed": run.seed, "device": summary.get("device"),
        "steps_per_s": summary.get("steps_per_s"),
        "learning_curve": [{"step": s, "success": float(r["success"])} for s, r in rows.items()],
        "final_training_eval": {"success": final.get("success"),
                                "success_ci95": final.get("success_ci95"),
                                "episodes": summary.get("eval_episodes")},
        "behaviour_flow_success": final.get("behaviour_flow_success"),
        "run_dir": run_dir.name, "argv": config.get("argv"),
        "versions": config.get("versions"),
    }  # fmt: skip
    if "sessions" in config:  # each invocation of a resumed run: first step, argv, versions
        training["sessions"] = config["sessions"]
    if step != last or not finished:  # a chosen checkpoint: its own evaluation and time
        row = rows.get(step, {})
        training.update(
            run_steps=last, wall_time_s=_optional_float(row, "wall_time"),
            training_eval={"success": _optional_float(row, "success"),
                           "episodes": int(row["episodes"]) if row.get("episodes") else None},
        )  # fmt: skip
    if not finished:  # stopped before its last step (its summary is not of this length)
        training["planned_steps"] = recipe.train.steps
    return save_pretrained(
        agent if include_agent else agent.policy, name, recipe=recipe, root=root,
        evaluation=evaluation, dataset=dataset, training=training, paper=paper, notes=notes,
        include_agent=include_agent, overwrite=overwrite,
    )  # fmt: skip
