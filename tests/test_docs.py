"""The Python examples in README.md and docs/ run as written.

Each ```python block is either run here, given the inputs its text names but does not define
(`obs`, `key`, ...), or listed in SKIPPED with the reason. A new block fails
`test_every_block_is_run_or_skipped_with_a_reason` until it is one or the other, so the docs
cannot drift from the API unnoticed.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import pytest
from jaxtyping import Array, Float
from runs import fake_run

from fidec_zoo import recipes
from fidec_zoo.metrics import AbstractMatrixMetric

ROOT = Path(__file__).resolve().parent.parent
OBS_DIM, ACTION_DIM = 28, 5  # cube-single, what the examples' zoo policy expects

# (file, index of the block in it) -> why it is not run by the default suite.
SKIPPED = {
    ("docs/getting_started.md", 2): "trains a recipe for 20k steps on a dataset it does not define",
    ("docs/data.md", 0): "generates the full 1000-episode dataset",
    ("docs/scaling.md", 0): "trains 4 seeds for 20k steps on a dataset it does not define",
    ("docs/scaling.md", 1): "needs several devices, and a recipe and dataset it does not define",
    ("docs/scaling.md", 2): "multi-host: jax.distributed.initialize needs a cluster",
}
# (file, index) -> the recipes/offline.py run directory the block reads, faked (tests/runs.py).
RUN_DIRS = {
    ("docs/getting_started.md", 1): "runs/fidec-cube-single-play-singletask-task2-v0-s0",
    ("docs/refinement.md", 0): "runs/fidec-cube-single-play-singletask-task2-v0-s0",
}
SLOW = {
    ("README.md", 0): "generates 100 episodes, trains 5k steps, evaluates 50 episodes",
    ("docs/data.md", 1): "evaluates 50 episodes in the OGBench environment",
}


def _blocks(path: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (ROOT / path).read_text(), re.M | re.S)


def _inputs() -> dict:
    """What the examples take as given: an observation, keys, batches, a metric's weights."""
    key = jr.key(0)
    return {
        "jax": jax,
        "jnp": jnp,
        "recipes": recipes,
        "AbstractMatrixMetric": AbstractMatrixMetric,
        "Float": Float,
        "Array": Array,
        "key": key,
        "obs": jnp.zeros(OBS_DIM),
        "obs_batch": jnp.zeros((3, OBS_DIM)),
        "z_batch": jr.normal(key, (3, ACTION_DIM)),
        "w": jnp.ones(ACTION_DIM),
    }


def _run(path: str, index: int, **given) -> dict:
    """Runs block `index` of `path` with `_inputs()` and `given` defined; returns its names."""
    namespace = {**_inputs(), **given}
    exec(compile(_blocks(path)[index], f"{path}[{index}]", "exec"), namespace)
    return namespace


def _all_blocks() -> list[tuple[str, int]]:
    files = ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))]
    return [(f, i) for f in files for i in range(len(_blocks(f)))]


RUN = [b for b in _all_blocks() if b not in SKIPPED and b not in SLOW]


def test_every_block_is_run_or_skipped_with_a_reason():
    blocks = set(_all_blocks())
    assert set(SKIPPED) | set(SLOW) <= blocks, "SKIPPED/SLOW name a block that no longer exists"
    assert len(RUN) >= 4  # the zoo, getting-started and custom-metric examples


def _fake_run_dir(path: str) -> None:
    """A tiny untrained FiDec run of cube-single at `path` (relative to the working dir)."""
    recipe = recipes.config("fidec", env_name="cube-single-play-singletask-task2-v0",
                            hidden=(32, 32), flow_steps=4)
    agent = recipe.build(OBS_DIM, ACTION_DIM, key=jr.key(0))
    fake_run(recipe, Path(path), {None: agent})


@pytest.mark.parametrize("block", RUN, ids=lambda b: f"{b[0]}[{b[1]}]")
def test_example_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the run directories examples read are made
    if block in RUN_DIRS:
        _fake_run_dir(RUN_DIRS[block])
    namespace = _run(*block)
    for name in ("action", "actions", "agent"):  # what the examples produce, where they do
        if name in namespace:
            value = namespace[name]
            if name == "action":
                assert value.shape == (ACTION_DIM,) and bool(jnp.all(jnp.abs(value) <= 1))
            elif name == "actions":
                assert value.shape == (3, ACTION_DIM)
            else:
                assert value.policy is not None


@pytest.mark.slow
@pytest.mark.parametrize("block", sorted(SLOW), ids=lambda b: f"{b[0]}[{b[1]}]")
def test_slow_example_runs(block, tmp_path, monkeypatch):
    import fidec_zoo

    monkeypatch.chdir(tmp_path)  # runs/ of the README example goes here
    _run(*block, policy=fidec_zoo.load("fidec/cube-single-play-singletask-task2-v0"))
    assert os.getcwd() == str(tmp_path)


def test_promises_that_need_a_fresh_interpreter():
    """`import fidec_zoo` then `fidec_zoo.zoo...` works (getting_started, section 1),
    FIDEC_ZOO_TYPECHECK=1 checks modules imported after fidec_zoo itself (section 4), and with
    no display MuJoCo is set to render headless (record_video)."""
    code = """
import os, platform, jax.numpy as jnp, fidec_zoo
assert "fidec_zoo.zoo" not in __import__("sys").modules  # still light
assert platform.system() != "Linux" or os.environ["MUJOCO_GL"] == "egl"  # record_video renders
assert fidec_zoo.zoo.list_models() and "report" in dir(fidec_zoo)
from fidec_zoo.agents._base import normalized_q_loss  # not imported by fidec_zoo/__init__.py
try:
    normalized_q_loss(jnp.zeros((3, 2)), True)  # annotated Float[Array, " b"]
except Exception as e:
    print(type(e).__name__)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY")}
    env.update(FIDEC_ZOO_TYPECHECK="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "TypeCheckError"


def _machine_independent(help_text: str) -> str:
    """`--help` less what depends on the machine: the defaults of `--eval.workers` (min(CPUs, 4))
    and `--data.workers` (all CPUs) become N (the padding after them goes, as its width follows
    the number's), and ANSI colour codes, which tyro writes only to a terminal, go."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", help_text)
    return re.sub(r"(--(?:eval|data)\.workers INT +\(default: )\d+\) *", r"\1N) ", text)


def test_cli_reference_shows_the_current_help():
    """docs/cli.md's `--help` block is the script's output at 80 columns. The output goes to a
    pipe, so tyro writes no colour codes; PYTHONIOENCODING fixes its box characters, which it
    draws in ASCII when stdout's encoding is not UTF-8."""
    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    (shown,) = re.findall(r"^```text\n(usage: recipes/offline\.py.*?)^```", doc, re.M | re.S)
    env = dict(os.environ, COLUMNS="80", PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "offline.py"), "--help"],
                          env=env, capture_output=True, text=True, encoding="utf-8", cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _machine_independent(shown) == _machine_independent(proc.stdout), \
        "regenerate the block: COLUMNS=80 python recipes/offline.py --help"
