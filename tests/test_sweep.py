"""`recipes/sweep.py` (`fidec_zoo.sweep`): the grid, its order, the manifest, and resuming an
interrupted sweep, with a fake cell runner that writes finished run dirs instead of training
(and, marked slow, real tiny cells stopped with SIGTERM and resumed)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fidec_zoo import checkpoint, compare, offline, report, sweep
from fidec_zoo._durable import FileLock
from fidec_zoo.configs import to_dict

CUBE = "cube-single-play-singletask-task2-v0"
SCENE = "scene-play-singletask-task2-v0"
ROOT_DIR = Path(__file__).resolve().parents[1]


def _config(root, **kwargs):
    grid = dict(root=root, arms=("fidec", "deflow"), seeds=(0, 1),
                tasks=(f"{CUBE} --steps 20", f"{SCENE} --hidden 64 64 --steps 30"))
    return sweep.SweepConfig(**{**grid, **kwargs})


def _finish(cell: sweep.Cell) -> None:
    """What a finished `recipes/offline.py` run leaves for the sweep to see."""
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    config = {"format": offline.CONFIG_FORMAT, "job": to_dict(cell.job),
              "identity": offline.identity(cell.job)}
    (cell.run_dir / "config.json").write_text(json.dumps(config, default=list))
    steps = cell.job.train.steps
    (cell.run_dir / "summary.json").write_text(json.dumps({"steps": steps, "success": 0.5}))
    (cell.run_dir / "eval.csv").write_text(f"step,success\n{steps},0.5\n")


class FakeRunner:
    """Finishes each cell it is given (recording the order), except: `fail` cells exit 1 after
    a line of output, and at the `interrupt_at`-th call it half-trains and raises
    KeyboardInterrupt, as Ctrl-C does."""

    def __init__(self, fail=(), interrupt_at=None):
        self.calls, self.fail, self.interrupt_at = [], set(fail), interrupt_at

    def __call__(self, cell, log, stop):
        self.calls.append(cell.name)
        assert cell.name in log.read_text()  # the sweep wrote the cell's header first
        if len(self.calls) == self.interrupt_at:
            cell.run_dir.mkdir(parents=True)
            (cell.run_dir / "checkpoints").mkdir()
            raise KeyboardInterrupt
        if cell.name in self.fail:
            log.write_text(log.read_text() + "error: out of memory\n")
            return 1
        _finish(cell)
        return 0


def _manifest(root):
    return json.loads((root / sweep.MANIFEST).read_text())


def test_cells_run_arm_by_arm_with_the_commands_printed(tmp_path, capsys):
    config = _config(tmp_path)
    grid = sweep.cells(config)
    assert [c.name for c in grid] == [
        f"fidec/{CUBE}/s0", f"fidec/{CUBE}/s1", f"deflow/{CUBE}/s0", f"deflow/{CUBE}/s1",
        f"fidec/{SCENE}/s0", f"fidec/{SCENE}/s1", f"deflow/{SCENE}/s0", f"deflow/{SCENE}/s1"]
    cell = grid[5]
    assert cell.run_dir == tmp_path / "fidec" / SCENE / "s1"
    assert cell.command == ("python recipes/offline.py --agent fidec --env " + SCENE
                            + f" --hidden 64 64 --steps 30 --seed 1 --run-dir {cell.run_dir}")
    assert (cell.job.seed, cell.job.train.steps, cell.job.agent.hidden) == (1, 30, (64, 64))
    assert sweep.main(["--root", str(tmp_path), "--arms", "fidec-l2-paper", "--seeds", "3",
                       "--tasks", CUBE, "--flags=--eval.workers 1", "--print-commands"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line == (f"python recipes/offline.py --agent fidec --metric l2 --hparams paper --env "
                    f"{CUBE} --eval.workers 1 --seed 3 --run-dir {tmp_path}/fidec-l2-paper/"
                    f"{CUBE}/s3")
    assert not (tmp_path / sweep.MANIFEST).exists()  # printing runs nothing


def test_seeds_per_run_packs_consecutive_seeds_into_one_run_dir(tmp_path):
    grid = sweep.cells(_config(tmp_path, seeds=(0, 1, 2, 3, 4), seeds_per_run=3,
                               arms=("fidec",), tasks=(CUBE,)))
    assert [(c.name, c.job.seed, c.job.seeds) for c in grid] == [
        (f"fidec/{CUBE}/s0-2", 0, 3), (f"fidec/{CUBE}/s3-4", 3, 2)]
    assert grid[0].argv[-4:] == ("--seeds", "3", "--run-dir", str(tmp_path / f"fidec/{CUBE}/s0-2"))
    with pytest.raises(ValueError, match="not consecutive"):
        sweep.cells(_config(tmp_path, seeds=(0, 2), seeds_per_run=2))


@pytest.mark.parametrize(("change", "message"), [
    ({"arms": ("fidex",)}, "unknown recipe 'fidex'"),
    ({"arms": ("fidec-l3",)}, "AGENT\\[-METRIC\\]\\[-HPARAMS\\]"),
    ({"arms": ("fidec", "fidec")}, "arm \\['fidec'\\] given twice"),
    ({"tasks": (CUBE, f"{CUBE} --steps 5")}, "task env .* given twice"),
    ({"tasks": ("cube-single-play-task2",)}, "cell fidec/cube-single-play-task2/s0: .* not an"),
    ({"tasks": (f"{CUBE} --stepz 5",)}, f"cell fidec/{CUBE}/s0: .*refuses its flags.*--stepz"),
    ({"seeds": ()}, "not empty"),
])
def test_a_bad_grid_is_refused_before_anything_runs(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        sweep.cells(_config(tmp_path, **change))


def test_sweep_records_every_cell_and_a_rerun_skips_finished_ones(tmp_path):
    config = _config(tmp_path)
    runner = FakeRunner(fail={f"deflow/{CUBE}/s1"})
    counts = sweep.run_sweep(config, runner)
    assert counts == {"done": 7, "running": 0, "pending": 0, "failed": 1}
    assert runner.calls == [c.name for c in sweep.cells(config)]
    manifest = _manifest(tmp_path)
    assert manifest["counts"] == counts and manifest["sweep"]["seeds"] == [0, 1]
    failed = manifest["cells"][f"deflow/{CUBE}/s1"]
    assert failed["state"] == "failed" and failed["returncode"] == 1
    assert "out of memory" in failed["error"] and failed["attempts"] == 1
    done = manifest["cells"][f"fidec/{SCENE}/s0"]
    assert done["state"] == "done" and done["command"].startswith("python recipes/offline.py")
    assert Path(done["log"]).exists() and not (tmp_path / ".lock").exists()

    rerun = FakeRunner()  # the failed cell is tried again, nothing else runs
    assert sweep.run_sweep(config, rerun)["done"] == 8
    assert rerun.calls == [f"deflow/{CUBE}/s1"]
    assert _manifest(tmp_path)["cells"][f"deflow/{CUBE}/s1"]["attempts"] == 2
    assert sweep.run_sweep(config, FakeRunner(interrupt_at=1))["done"] == 8  # nothing to run
    # a narrower invocation on the same root keeps the other cells listed, outside its grid
    narrow = _config(tmp_path, arms=("fidec",), seeds=(0, 1, 2))
    assert sweep.run_sweep(narrow, FakeRunner())["done"] == 6
    manifest = _manifest(tmp_path)
    assert manifest["counts"]["done"] == 6 and manifest["counts_outside_grid"]["done"] == 4
    kept = manifest["cells"][f"deflow/{CUBE}/s1"]
    assert kept["in_grid"] is False and kept["state"] == "done" and kept["attempts"] == 2
    assert "in_grid" not in manifest["cells"][f"fidec/{CUBE}/s2"]


def test_records_outlive_the_run_dirs_and_are_compared(tmp_path):
    record = tmp_path / "record"
    first = FakeRunner()
    sweep.run_sweep(_config(tmp_path / "machine-1", record=record), first)
    assert len(first.calls) == 8
    cell = record / "fidec" / CUBE / "s0"
    assert sorted(p.name for p in cell.iterdir()) == [
        "config.json", "eval.csv", "record.json", "summary.json"]  # no checkpoints, no logs
    about = json.loads((cell / report.RECORD).read_text())
    assert about["cell"] == f"fidec/{CUBE}/s0" and about["attempts"] == 1
    assert about["command"].startswith("python recipes/offline.py --agent fidec")

    # a new machine: no run dirs, the records say every cell is done
    rerun = FakeRunner()
    config = _config(tmp_path / "machine-2", record=record)
    assert sweep.run_sweep(config, rerun)["done"] == 8 and rerun.calls == []
    assert _manifest(tmp_path / "machine-2")["cells"][f"deflow/{SCENE}/s1"]["record"] == \
        str(record / "deflow" / SCENE / "s1")
    seeds = compare.load_seeds([str(record)])
    assert sorted((s.arm, s.task, s.seed) for s in seeds) == sorted(
        (c.arm, c.task, c.seed) for c in sweep.cells(config))

    # a record of another configuration at a cell's place is refused before anything runs
    with pytest.raises(ValueError, match=f"fidec/{CUBE}/s0: its record .* another config"):
        sweep.cells(_config(tmp_path / "machine-3", record=record,
                            tasks=(f"{CUBE} --steps 21",)))


def test_cells_finished_before_recording_are_recorded_without_rerunning(tmp_path):
    sweep.run_sweep(_config(tmp_path, seeds=(0,)), FakeRunner())
    rerun = FakeRunner()
    sweep.run_sweep(_config(tmp_path, seeds=(0,), record=tmp_path / "record"), rerun)
    assert rerun.calls == []
    assert len(list((tmp_path / "record").glob(f"*/*/s0/{report.RECORD}"))) == 4


def test_an_interrupted_sweep_resumes_at_the_interrupted_cell(tmp_path, capsys):
    config = _config(tmp_path)
    with pytest.raises(SystemExit) as stop:
        sweep.run_sweep(config, FakeRunner(interrupt_at=3))
    assert stop.value.code == 130 and "rerun the same command" in capsys.readouterr().err
    manifest = _manifest(tmp_path)
    assert manifest["counts"] == {"done": 2, "running": 0, "pending": 6, "failed": 0}
    stopped = manifest["cells"][f"deflow/{CUBE}/s0"]
    assert stopped["state"] == "pending" and "interrupted" in stopped["error"]
    assert not (tmp_path / ".lock").exists()

    rerun = FakeRunner()
    assert sweep.run_sweep(config, rerun)["done"] == 8
    assert rerun.calls == [c.name for c in sweep.cells(config)][2:]


def test_a_killed_sweep_is_taken_over_and_a_running_one_is_not(tmp_path):
    config = _config(tmp_path, arms=("fidec",), tasks=(f"{CUBE} --steps 20",))
    grid = sweep.cells(config)
    # what `kill -9` leaves: the manifest says "running", the lock file stays (unheld)
    _finish(grid[0])
    manifest = sweep.Manifest(config, grid)
    manifest.set(grid[1], "running", attempts=1)
    (tmp_path / ".lock").write_text('{"pid": 1, "host": "h", "started": "s", "command": "c"}')
    assert "interrupted" in sweep.Manifest(config, grid).entries[grid[1].name]["error"]
    rerun = FakeRunner()
    assert sweep.run_sweep(config, rerun)["done"] == 2 and rerun.calls == [grid[1].name]
    assert _manifest(tmp_path)["cells"][grid[1].name]["attempts"] == 2

    with FileLock(tmp_path / ".lock"):  # another sweep holds the root
        with pytest.raises(SystemExit, match="another sweep runs in"):
            sweep.run_sweep(config, FakeRunner())


class ConcurrentRunner:
    """Finishes each cell after `seconds` unless the sweep's stop event comes first (then it
    stops, as `run_cell` does, with KeyboardInterrupt); the `interrupt_at`-th call raises
    KeyboardInterrupt at once, as Ctrl-C does. Counts the cells running at once."""

    def __init__(self, seconds=0.3, interrupt_at=None):
        self.seconds, self.interrupt_at = seconds, interrupt_at
        self.lock, self.calls, self.active, self.most, self.stopped = \
            threading.Lock(), [], 0, 0, []

    def __call__(self, cell, log, stop):
        with self.lock:
            self.calls.append(cell.name)
            self.active += 1
            self.most, n = max(self.most, self.active), len(self.calls)
        try:
            if n == self.interrupt_at:
                time.sleep(0.05)
                raise KeyboardInterrupt
            if stop.wait(self.seconds):
                self.stopped.append(cell.name)
                raise KeyboardInterrupt
            _finish(cell)
            return 0
        finally:
            with self.lock:
                self.active -= 1


def test_jobs_run_cells_side_by_side_in_the_grid_order(tmp_path, capsys):
    config = _config(tmp_path, jobs=2)
    runner = ConcurrentRunner()
    assert sweep.run_sweep(config, runner) == {"done": 8, "running": 0, "pending": 0,
                                               "failed": 0}
    assert runner.most == 2 and runner.calls == [c.name for c in sweep.cells(config)]
    assert "8 to run, 2 at a time" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--jobs must be >= 1"):
        sweep.cells(_config(tmp_path, jobs=0))


def test_an_interrupt_stops_every_running_cell_and_the_rerun_resumes_them(tmp_path, capsys):
    config = _config(tmp_path, jobs=2)
    runner = ConcurrentRunner(seconds=30, interrupt_at=1)
    with pytest.raises(SystemExit) as stop:
        sweep.run_sweep(config, runner)
    grid = [c.name for c in sweep.cells(config)]
    assert stop.value.code == 130 and runner.stopped == [grid[1]]  # the other one, by the event
    err = capsys.readouterr().err
    assert f"{grid[0]}, {grid[1]} stopped at the latest checkpoint" in err
    manifest = _manifest(tmp_path)
    assert manifest["counts"] == {"done": 0, "running": 0, "pending": 8, "failed": 0}
    assert all("interrupted" in manifest["cells"][n]["error"] for n in grid[:2])
    rerun = ConcurrentRunner(seconds=0.01)
    assert sweep.run_sweep(config, rerun)["done"] == 8 and rerun.calls == grid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("threaded", [False, True], ids=["main-thread", "worker-thread"])
def test_a_cell_gets_sigterm_when_its_sweep_is_killed(tmp_path, threaded):
    """`run_cell`'s child asks the kernel for SIGTERM when the sweep's process dies (it does so
    itself, after exec: no code runs between fork and exec in the JAX-threaded sweep), so a
    `kill -9`ed sweep leaves no cell training unowned."""
    out = tmp_path / "child"
    child = (f"import pathlib, signal, sys, time; out = pathlib.Path({str(out)!r}); "
             "signal.signal(signal.SIGTERM, lambda *a: (out.write_text('terminated'), "
             "sys.exit(0))); out.write_text('started'); time.sleep(120)")
    call = (f"sweep.run_cell(types.SimpleNamespace(argv=()), pathlib.Path({str(tmp_path)!r}) "
            "/ 'cell.log', threading.Event())")
    if threaded:  # as --jobs runs it: the kernel's signal follows the thread that forked
        call = f"t = threading.Thread(target=lambda: {call}); t.start(); t.join()"
    parent = ("import pathlib, threading, types; from fidec_zoo import sweep; "
              f"sweep._OFFLINE = {child!r}; {call}")
    sweeping = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT_DIR)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text() == "started"):
        assert time.monotonic() < deadline and sweeping.poll() is None, \
            (tmp_path / "cell.log").read_text()
        time.sleep(0.2)
    sweeping.kill()
    sweeping.wait()
    while out.read_text() != "terminated":
        assert time.monotonic() < deadline, "the cell outlived its killed sweep"
        time.sleep(0.2)


def test_a_cell_that_exits_0_unfinished_is_failed(tmp_path):
    config = _config(tmp_path, arms=("fidec",), seeds=(0,), tasks=(CUBE,))
    counts = sweep.run_sweep(config, lambda cell, log, stop: 0)
    assert counts["failed"] == 1
    (entry,) = _manifest(tmp_path)["cells"].values()
    assert "exited 0 without finishing" in entry["error"]
    with pytest.raises(SystemExit, match="error: arm 'fidex': unknown recipe"):
        sweep.main(["--root", str(tmp_path), "--arms", "fidex"])


@pytest.mark.slow
def test_real_cells_stop_on_sigterm_resume_and_compare(tmp_path):
    """Real cells through `recipes/offline.py`'s code on a tiny generated dataset (a few
    minutes on 2 cores): SIGTERM to the sweep stops the first cell at a checkpoint (exit 130),
    the same command resumes it from there and runs the rest, and again finds all done."""
    root = tmp_path / "sweep"
    tiny = (f"{CUBE} --steps 3000 --eval.every 1500 --checkpoint-every 100 --eval.episodes 2 "
            "--data.episodes 2 --hidden 32 32 --batch-size 64 --eval.workers 1 --data.workers 1")
    command = [sys.executable, "recipes/sweep.py", "--root", str(root), "--arms", "fidec",
               "deflow", "--seeds", "0", "--tasks", tiny]
    env = {**os.environ, "FIDEC_ZOO_DATA": str(tmp_path / "data"), "PYTHONPATH": str(ROOT_DIR)}
    first = root / "fidec" / CUBE / "s0"
    process = subprocess.Popen(command, cwd=ROOT_DIR, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while not list((first / "checkpoints").glob("[0-9]*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 130, out
    stopped = _manifest(root)["cells"][f"fidec/{CUBE}/s0"]
    assert stopped["state"] == "pending" and "interrupted" in stopped["error"]
    saved = checkpoint.checkpoint_steps(first / "checkpoints")
    assert saved and saved[-1] < 3000

    done = subprocess.run(command, cwd=ROOT_DIR, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _manifest(root)["counts"]["done"] == 2
    assert f"(resuming at step {saved[-1]})" in Path(stopped["log"]).read_text()
    again = subprocess.run(command, cwd=ROOT_DIR, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "2 done, 0 to run" in again.stdout
    seeds = compare.load_seeds([str(root)])
    assert sorted(s.arm for s in seeds) == ["deflow", "fidec"]
    assert all(s.steps == (1500, 3000) for s in seeds)
