"""Nothing lost, nothing silently wrong (issue 29): one test per fault, with real processes and
real files where the fault is about them.

- a run dir is held by one process at a time (the second is refused, naming the holder; a
  killed holder's lock is taken over), also for two jobs started together;
- a flipped byte in a training checkpoint is refused by `load_run`, `zoo eval RUN_DIR` and
  `register_run`, and resuming falls back to the previous good checkpoint;
- a truncated `config.json` is named; every file the library writes is replaced in one rename;
- dataset files are checked against their recorded sha256 (unless told not to) and for
  non-finite values, naming the file and row;
- generation workers exit when their parent is killed;
- `--steps 0`, a read-only run dir or data dir are clear errors before any data work;
- `zoo verify` reports every bad entry; rerunning a finished run keeps its summary; a resumed
  run's header says where it resumes; non-finite observations or actions stop an evaluation.
"""

import contextlib
import csv
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import gymnasium
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import psutil
import pytest
from runs import fake_run
from trees import arrays, read_csv

from fidec_zoo import checkpoint, offline, recipes, report, zoo
from fidec_zoo.agents import FlowBC
from fidec_zoo.configs import TrainConfig
from fidec_zoo.data import DatasetFileError, load_ogbench
from fidec_zoo.dataset import Dataset
from fidec_zoo.envs import evaluate, make_env
from fidec_zoo.envs._evaluate import rollouts
from fidec_zoo.envs._workers import LocalEnvs
from fidec_zoo.policies import ActionField, FlowPolicy
from fidec_zoo.train import fit
from fidec_zoo.train._runlog import CsvLog
from fidec_zoo.zoo import _cli, _registry
from fidec_zoo.zoo._entry import slug

ENV = "cube-single-play-singletask-task2-v0"
DATASET = "cube-single-play-v0"
REPO = Path(__file__).resolve().parents[1]
TINY = ["--hidden", "16", "16", "--batch-size", "32", "--data.episodes", "2",
        "--eval.episodes", "1", "--data.workers", "1", "--eval.workers", "1"]
EVALUATION = {"success": 0.5, "episodes": 50, "seed": 0}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """$FIDEC_ZOO_DATA holding the 2-episode dataset the jobs here train on."""
    root = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FIDEC_ZOO_DATA", str(root))
        load_ogbench(ENV, episodes=2, seed=0)
        yield root


def job(*args, data_root: Path, **kwargs) -> subprocess.Popen:
    """`recipes/offline.py ARGS` in its own process."""
    env = dict(os.environ, FIDEC_ZOO_DATA=str(data_root))
    return subprocess.Popen([sys.executable, str(REPO / "recipes" / "offline.py"), *map(str, args)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run_main(args) -> dict:
    return offline.main([str(a) for a in args])


def flip(directory: Path, pattern: str = "*") -> Path:
    """Inverts 16 bytes in the middle of the largest file under `directory` matching `pattern`;
    returns that file."""
    path = max((p for p in directory.rglob(pattern) if p.is_file()),
               key=lambda p: p.stat().st_size)
    flip_file(path)
    return path


def flip_file(path: Path) -> None:
    """Inverts 16 bytes in the middle of `path`."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def tiny():
    recipe = recipes.config("fidec", env_name=ENV, hidden=(16, 16), flow_steps=2)
    return recipe.build(28, 5, key=jr.key(0)), recipe


# ---- 1. one process per run dir -----------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from fidec_zoo._durable import FileLock
FileLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_held_run_dir_is_refused_naming_the_holder_and_taken_over_once_it_is_killed(
        data_root, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir / ".lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        code, _, err = finish(job("--steps", 10, "--run-dir", run_dir, *TINY,
                                  data_root=data_root))
        assert code == 1 and "in use" in err, err
        assert f"pid {holder.pid} on {socket.gethostname()}" in err and "started" in err
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing else written
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert (run_dir / ".lock").exists()  # the killed holder's file stays, its lock does not
        # Another run's config.json: the job takes the lock over, then refuses (no data work).
        (run_dir / "config.json").write_text(json.dumps({"format": 2, "identity": {}}))
        code, _, err = finish(job("--steps", 10, "--run-dir", run_dir, *TINY,
                                  data_root=data_root))
        assert code == 1 and "different config" in err, err
        assert f"took over the lock of pid {holder.pid}" in err
        assert not (run_dir / ".lock").exists()  # released on exit
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_two_jobs_started_together_on_one_run_dir(data_root, tmp_path):
    run_dir = tmp_path / "run"
    procs = [job("--seed", seed, "--steps", 20, "--eval.every", 10, "--run-dir", run_dir, *TINY,
                 data_root=data_root) for seed in (0, 1)]
    results = [finish(p, timeout=900) for p in procs]
    codes = [code for code, _, _ in results]
    assert sorted(codes) == [0, 1], results
    winner = codes.index(0)
    assert f"pid {procs[winner].pid}" in results[1 - winner][2]
    assert json.loads((run_dir / "config.json").read_text())["seed"] == winner
    assert [r["step"] for r in read_csv(run_dir / "metrics.csv")] == ["10", "20"]
    assert [r["step"] for r in read_csv(run_dir / "eval.csv")] == ["10", "20"]


# ---- 2. verified checkpoints --------------------------------------------------------------------

ARRAY_DATA = "ocdbt.process_0/d/*"  # where Orbax keeps a checkpoint's array bytes
# Orbax writes its array bytes compressed, in files whose layout differs from one save to the
# next: a flipped byte mostly decodes to other values (caught by the sha256 check), and
# sometimes (about 1 save in 30) breaks the decoding itself (Orbax cannot read it). Either is a
# refusal naming the checkpoint; the sha256 check alone is tested by the test after this one.
EITHER_CHECK = "(the sha256|Orbax cannot read it)"


def test_a_flipped_byte_in_a_checkpoint_is_refused_by_load_run_zoo_eval_and_register_run(
        tiny, tmp_path, capsys):
    agent, recipe = tiny
    run = tmp_path / "run"
    steps = fake_run(recipe, run, {10: agent, None: agent})
    assert zoo.load_run(run).step == steps  # verified and whole
    flip(run / "checkpoints" / str(steps), ARRAY_DATA)
    with pytest.raises(checkpoint.CorruptCheckpointError,
                       match=rf"checkpoint {steps} .*{EITHER_CHECK}"):
        zoo.load_run(run)
    assert zoo.load_run(run, step=10).step == 10  # the other checkpoint is fine
    assert _cli.main(["eval", str(run), "--episodes", "1"]) == 1
    err = capsys.readouterr().err
    assert f"checkpoint {steps}" in err and "--step 10" in err, err
    with pytest.raises(checkpoint.CorruptCheckpointError):
        zoo.register_run(run, root=tmp_path / "zoo", evaluation=EVALUATION)
    assert not (tmp_path / "zoo" / "registry.json").exists()


def test_arrays_orbax_reads_but_that_differ_from_the_saved_ones_fail_the_sha256_check(
        tiny, tmp_path):
    """The damage Orbax cannot see: the last checkpoint's array files replaced by those of
    checkpoint 10 (a valid checkpoint of the same tree, as a copy error could leave them)."""
    agent, recipe = tiny
    run = tmp_path / "run"
    steps = fake_run(recipe, run, {10: agent, None: agent})
    state = run / "checkpoints" / str(steps) / "state"
    shutil.rmtree(state)
    shutil.copytree(run / "checkpoints" / "10" / "state", state)
    with pytest.raises(checkpoint.CorruptCheckpointError,
                       match=rf"checkpoint {steps} .*the sha256 of .*step.* differs"):
        zoo.load_run(run)
    assert zoo.load_run(run, step=10).step == 10


def _toy() -> tuple[FlowBC, Dataset, TrainConfig]:
    k_obs, k_w = jr.split(jr.key(0))
    obs = jr.normal(k_obs, (256, 5))
    actions = 0.9 * jnp.tanh(obs @ jr.normal(k_w, (5, 2)))
    zeros = jnp.zeros(256)
    data = Dataset(obs, actions, zeros, zeros + 1, obs, actions, zeros)
    agent = FlowBC(FlowPolicy(ActionField(5, 2, (16, 16), key=jr.key(1))))
    config = TrainConfig(batch_size=32, chunk=10, log_every=10, checkpoint_every=10,
                         keep_checkpoints=None)
    return agent, data, config


def flip_all(directory: Path, pattern: str) -> None:
    """Flips bytes in every file under `directory` matching `pattern`."""
    for path in directory.rglob(pattern):
        if path.is_file():
            flip_file(path)


@pytest.mark.parametrize(("damaged", "why"), [
    ("d/*", "(the sha256|Orbax cannot read it|Orbax's record of its arrays)"),  # all data
    ("state/_METADATA", "Orbax's record of its arrays is damaged"),  # its tree of the arrays
    ("_CHECKPOINT_METADATA", "its _CHECKPOINT_METADATA is not valid JSON"),  # ours and Orbax's
])
def test_resuming_falls_back_to_the_previous_good_checkpoint(tmp_path, damaged, why):
    agent, data, config = _toy()
    kw = dict(key=jr.key(2), progress=False)
    reference = fit(agent, data, config, steps=30, run_dir=tmp_path / "ref", **kw)
    run = tmp_path / "run"
    fit(agent, data, config, steps=20, run_dir=run, **kw)
    flip_all(run / "checkpoints" / "20", damaged)
    with pytest.warns(UserWarning, match=rf"(?s)checkpoint 20 is corrupt: {why}.*resuming from "
                                         "checkpoint 10"):
        resumed = fit(agent, data, config, steps=30, run_dir=run, **kw)
    assert resumed.step == 30 and resumed.start_step == 10
    for a, b in zip(arrays(resumed.agent), arrays(reference.agent), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))  # as if never interrupted
    assert (run / "checkpoints-corrupt" / "20").is_dir()  # kept aside, not deleted
    assert checkpoint.checkpoint_steps(run / "checkpoints") == [10, 20, 30]
    assert [r["step"] for r in read_csv(run / "metrics.csv")] == ["10", "20", "30"]
    # No good checkpoint at all: an error naming each, not a silent restart from scratch.
    for step in (10, 20, 30):
        flip_all(run / "checkpoints" / str(step), "d/*")
    with pytest.raises(checkpoint.CorruptCheckpointError, match=r"(?s)30.*20.*10"):
        fit(agent, data, config, steps=40, run_dir=run, **kw)
    assert checkpoint.checkpoint_steps(run / "checkpoints") == [10, 20, 30]  # none moved


# ---- 3. whole files -----------------------------------------------------------------------------


def test_a_truncated_config_json_is_named(tiny, tmp_path, capsys):
    agent, recipe = tiny
    run = tmp_path / "run"
    fake_run(recipe, run, {None: agent})
    path = run / "config.json"
    path.write_text(path.read_text()[:200])  # what a full disk left before writes were atomic
    with pytest.raises(ValueError, match=str(path)):
        zoo.load_run(run)
    assert _cli.main(["eval", str(run)]) == 1
    assert str(path) in capsys.readouterr().err
    job = offline.default_job()
    with pytest.raises(SystemExit, match=rf"(?s){path}.*not valid JSON.*move it away"):
        offline.prepare_run_dir(run, job)


def _writers(tmp_path: Path) -> dict:
    """Each file the library rewrites: `name -> (path, rewrite)`."""
    run = tmp_path / "run"
    run.mkdir()
    log = CsvLog(run / "metrics.csv", keep_until=0)
    log.write({"step": 1, "loss": 0.5})
    (run / "eval.csv").write_text("step,success\n1,0.5\n")
    report.plot_learning_curve(run)
    _registry.write(tmp_path, {})
    doc = tmp_path / "zoo.md"
    doc.write_text(f"# zoo\n{_cli.TABLE_START}\nold\n{_cli.TABLE_END}\n")
    (run / "summary.json").write_text("{}")
    return {
        "config.json/summary.json": (run / "summary.json",
                                     lambda: offline._write_json(run / "summary.json", {"a": 1})),
        "a csv with a new column": (run / "metrics.csv",
                                    lambda: log.write({"step": 2, "loss": 0.4, "new": 1.0})),
        "learning_curve.png": (run / "learning_curve.png",
                               lambda: report.plot_learning_curve(run, title="new")),
        "registry.json": (tmp_path / "registry.json",
                          lambda: _registry.write(tmp_path, {"a": {"name": "a"}})),
        "a doc's zoo table": (doc, lambda: _cli.update_doc(doc, "new")),
    }


@pytest.mark.parametrize("name", ["config.json/summary.json", "a csv with a new column",
                                  "learning_curve.png", "registry.json", "a doc's zoo table"])
def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(name, tmp_path, monkeypatch):
    path, rewrite = _writers(tmp_path)[name]
    before, names = path.read_bytes(), sorted(os.listdir(path.parent))

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)  # the one rename that publishes a new file
    with pytest.raises(OSError, match="No space"):
        rewrite()
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == names


def test_a_zoo_entry_whose_replacement_fails_stays_whole(tiny, tmp_path, monkeypatch):
    agent, recipe = tiny
    name = f"t/{ENV}"
    zoo.save_pretrained(agent.policy, name, recipe=recipe, root=tmp_path)
    other = jax.tree.map(lambda x: x + 1 if eqx.is_inexact_array(x) else x, agent.policy)

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_registry, "write", full_disk)  # the registry.json of the new entry
    with pytest.raises(OSError, match="No space"):
        zoo.save_pretrained(other, name, recipe=recipe, root=tmp_path, overwrite=True)
    monkeypatch.undo()
    zoo.verify(name, root=tmp_path)  # the registry and the files still agree
    assert sorted(p.name for p in tmp_path.iterdir()) == [_registry.REGISTRY, slug(name)]


# ---- 4. checked datasets ------------------------------------------------------------------------


@pytest.fixture
def dataset_dir(data_root, tmp_path):
    """A copy of the generated 2-episode dataset, to damage."""
    return Path(shutil.copytree(data_root / f"{DATASET}-e2-s0", tmp_path / "data"))


def _rewrite(path: Path, change) -> None:
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    change(data)
    with open(path, "wb") as f:
        np.savez_compressed(f, **data)


def test_a_changed_dataset_file_is_refused_unless_verification_is_off(dataset_dir):
    path = dataset_dir / f"{DATASET}.npz"
    _rewrite(path, lambda d: d.update(observations=-d["observations"]))
    with pytest.raises(DatasetFileError, match=rf"(?s){path}.*sha256.*--overwrite"):
        load_ogbench(ENV, dataset_dir=dataset_dir, generate=False)
    _, train, _ = load_ogbench(ENV, dataset_dir=dataset_dir, generate=False, verify=False)
    with np.load(path) as f:
        assert np.array_equal(np.asarray(train.observations[0]), f["observations"][0])
    job = offline.parse(["--data.verify", "False"])
    assert job.data.verify is False
    assert offline.identity(job) == offline.identity(offline.default_job())  # not what is trained


@pytest.mark.parametrize(("file", "key", "row"), [(f"{DATASET}.npz", "observations", 1500),
                                                   (f"{DATASET}.npz", "observations", 1000),
                                                   (f"{DATASET}-val.npz", "actions", 7)])
def test_a_non_finite_value_is_rejected_naming_the_file_and_row(dataset_dir, file, key, row):
    path = dataset_dir / file
    _rewrite(path, lambda d: d[key].__setitem__((row, 1), np.inf if key == "actions" else np.nan))
    with pytest.raises(DatasetFileError, match=rf"{path}: {key} row {row} .*(nan|inf)"):
        load_ogbench(ENV, dataset_dir=dataset_dir, generate=False, verify=False)


# ---- 5. generation workers ----------------------------------------------------------------------

GENERATE = """
import sys
from fidec_zoo.data import _generate
_generate.BLOCK_EPISODES = 1  # three tasks for the two workers
_generate.generate_ogbench("cube-single-play-v0", episodes=2, out_dir=sys.argv[1], workers=2)
"""


def test_generation_workers_exit_when_their_parent_is_killed(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", GENERATE, str(tmp_path)])
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            children = psutil.Process(parent.pid).children()
            workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
            if len(workers) >= 2:
                break
            time.sleep(0.2)
        assert len(workers) >= 2, "\n".join(" ".join(c.cmdline()) for c in children)
        time.sleep(3)  # they are importing OGBench or generating
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [c.cmdline() for c in alive]
    finally:
        parent.kill()
        for c in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                c.kill()


# ---- 6. flags and directories -------------------------------------------------------------------


def test_steps_zero_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_main(["--steps", 0, "--run-dir", tmp_path / "run", *TINY])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())  # tyro's box, unwrapped
    assert "--steps must be >= 1, got 0" in err and "zoo eval" in err, err
    assert not (tmp_path / "run").exists()


@contextlib.contextmanager
def read_only(path: Path):
    """`path` made a directory nobody can write into, root included (`chattr +i`)."""
    path.mkdir()
    path.chmod(0o555)
    immutable = False
    try:
        if os.access(path, os.W_OK):  # root ignores the mode
            immutable = subprocess.run(["chattr", "+i", str(path)],
                                       capture_output=True).returncode == 0
            if not immutable:
                pytest.skip("cannot make a read-only directory here")
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755)


def test_a_read_only_run_dir_or_data_dir_is_a_clear_error_before_data_work(tmp_path,
                                                                           monkeypatch):
    with read_only(tmp_path / "run") as run_dir:
        with pytest.raises(SystemExit, match=rf"^error: cannot write the run dir {run_dir}"):
            run_main(["--steps", 10, "--run-dir", run_dir, *TINY])
    with read_only(tmp_path / "data") as data:
        monkeypatch.setenv("FIDEC_ZOO_DATA", str(data))
        with pytest.raises(SystemExit, match=rf"^error: cannot write .*{data}.*FIDEC_ZOO_DATA"):
            run_main(["--steps", 10, "--run-dir", tmp_path / "other", *TINY])
    assert not (tmp_path / "other").exists()


# ---- 7. smaller ---------------------------------------------------------------------------------


def test_zoo_verify_reports_every_bad_entry(tiny, tmp_path, capsys):
    agent, recipe = tiny
    names = [f"t{i}/{ENV}" for i in range(3)]
    for name in names:
        zoo.save_pretrained(agent.policy, name, recipe=recipe, root=tmp_path)
    for name in (names[0], names[2]):
        flip(tmp_path / slug(name))
    assert _cli.main(["--root", str(tmp_path), "verify", *names]) == 1
    out, err = capsys.readouterr()
    assert f"ok  {names[1]}" in out
    assert names[0] in err and names[2] in err and "2 of 3 entries failed" in err


@pytest.fixture(scope="module")
def finished_run(data_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    args = ["--steps", 20, "--eval.every", 10, "--run-dir", run_dir, *TINY]
    run_main(args)
    return run_dir, args


def test_rerunning_a_finished_run_keeps_its_summary(finished_run, capsys):
    run_dir, args = finished_run
    before = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "eval.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert before["eval_seed"] == int(last["eval_seed"])  # the training's own final evaluation
    capsys.readouterr()
    run_main(args)
    after = json.loads((run_dir / "summary.json").read_text())
    for key in ("steps", "success", "return", "eval_seed", "behaviour_flow_success",
                "behaviour_flow_return"):
        assert after[key] == before[key], key
    header = capsys.readouterr().out.splitlines()[0]
    assert "20 steps (resuming at step 20)" in header, header


def test_fewer_steps_than_a_run_has_done_is_refused(finished_run, capsys):
    run_dir, args = finished_run
    with pytest.raises(SystemExit, match=r"(?s)at step 20.*--steps 10.*zoo eval.*--step"):
        run_main([*args, "--steps", 10])
    assert json.loads((run_dir / "config.json").read_text())["job"]["train"]["steps"] == 20


class ConstantPolicy(eqx.Module):
    """Acts `value` whatever it sees."""

    value: float
    obs_dim: int = 28
    action_dim: int = 5
    noise_shape: tuple[int, ...] = (5,)

    def __call__(self, obs, noise):
        return jnp.full(self.action_dim, self.value) + 0 * obs[:1]


class NaNAfter(gymnasium.ObservationWrapper):
    """Observations turn NaN from the `after`-th step on (a simulation blowing up)."""

    def __init__(self, env, after):
        super().__init__(env)
        self.after, self.t = after, 0

    def reset(self, **kwargs):
        self.t = 0
        return super().reset(**kwargs)

    def step(self, action):
        self.t += 1
        return super().step(action)

    def observation(self, obs):
        return obs * np.nan if self.t >= self.after else obs


def test_non_finite_observations_or_actions_stop_an_evaluation():
    with pytest.raises(FloatingPointError,
                       match=rf"(?s)non-finite action.*{ENV}.*episode 0, step 0"):
        evaluate(ConstantPolicy(float("nan")), ENV, episodes=1)
    envs = LocalEnvs([NaNAfter(make_env(ENV), after=3)])
    with pytest.raises(FloatingPointError, match=r"(?s)non-finite observation.*episode 0, step 3"):
        rollouts(ConstantPolicy(0.0), envs, 1, ENV, 1, 0, start=0.0, progress=False)
