"""fidec_zoo.loggers: the TensorBoard event files and the offline W&B run hold what was logged
(read back from their files), unknown kinds and missing packages fail with a clear message."""

import importlib
import json
import math
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from fidec_zoo import loggers

ROWS = [
    ("metrics", {"step": 100, "loss": 0.5, "bc_loss": np.float32(0.25), "wall_time": 3.0}),
    ("eval", {"step": 100, "success": 0.75, "success_std": math.nan, "return": -math.inf}),
    ("seed_1/metrics", {"step": 200, "loss": 0.125, "note": "text", "vec": np.ones(2)}),
    ("metrics", {"step": 50, "loss": 1.0}),  # a step going back (another phase, a resume)
]
# What the dashboards get: finite numbers only, under "{name}/{column}".
EXPECTED = {
    ("metrics/loss", 100): 0.5, ("metrics/bc_loss", 100): 0.25, ("metrics/wall_time", 100): 3.0,
    ("eval/success", 100): 0.75, ("seed_1/metrics/loss", 200): 0.125, ("metrics/loss", 50): 1.0,
}  # fmt: skip


def _tfrecords(path: Path):
    """The payloads of a TFRecord file (TensorBoard's event files): each record is a uint64
    length, a 4-byte CRC of it, the payload and a 4-byte CRC of the payload."""
    data, pos = path.read_bytes(), 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        yield data[pos + 12 : pos + 12 + length]
        pos += 12 + length + 4


def _tensorboard_scalars(log_dir: Path, event_pb2) -> dict[tuple[str, int], float]:
    out = {}
    for path in log_dir.glob("events.out.tfevents.*"):
        for payload in _tfrecords(path):
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                out[value.tag, event.step] = value.simple_value
    return out


def test_tensorboard_logger_writes_scalars_at_steps(tmp_path):
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    with loggers.TensorBoardLogger(tmp_path / "tb") as tb:
        for name, row in ROWS:
            tb(name, row)
    assert _tensorboard_scalars(tmp_path / "tb", event_pb2) == EXPECTED


def _wandb_records(path: Path, wandb_internal_pb2):
    """The protobuf `Record`s of a `.wandb` file: a 7-byte header (`:W&B`, magic, version),
    then LevelDB-log records in 32 KiB blocks (4-byte CRC, uint16 length, type; FULL = 1,
    FIRST = 2, MIDDLE = 3, LAST = 4; a block's last < 7 bytes are padding)."""
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, payload = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        payload += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(payload)
            payload = b""


@pytest.mark.slow
def test_wandb_logger_offline_run_holds_history(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    wandb_internal_pb2 = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "my_run"
    (logger,) = loggers.make_loggers(["wandb"], run_dir, {"lr": 3e-4, "agent": "fidec"})
    with logger:
        assert logger.run.settings.mode == "offline"
        for name, row in ROWS:
            logger(name, row)
    # wandb-core writes the .wandb file in the background, possibly after run.finish()
    # returns; teardown (also run at exit) waits for it.
    wandb.teardown()
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = list(_wandb_records(path, wandb_internal_pb2))
    (run,) = [r.run for r in records if r.HasField("run")]
    assert (run.display_name, run.project) == ("my_run", "fidec_zoo")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["lr"] == 3e-4 and config["agent"] == "fidec"
    logged = {}
    for record in records:
        if record.HasField("history"):
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for item in record.history.item}  # fmt: skip
            for key, value in row.items():
                name, column = key.rpartition("/")[::2]
                if name and column != "step":
                    logged[key, row[f"{name}/step"]] = value
    assert logged == EXPECTED


def test_unknown_kind_fails_before_any_logger_starts(tmp_path):
    with pytest.raises(ValueError, match=r"\['mlflow'\].*valid kinds are tensorboard, wandb"):
        loggers.make_loggers(["tensorboard", "mlflow"], tmp_path / "run", None)
    assert not (tmp_path / "run").exists()


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` now fails
    monkeypatch.setitem(sys.modules, "wandb", None)
    importlib.reload(loggers)  # the module itself imports neither
    with pytest.raises(ImportError, match=re.escape('pip install -e ".[tensorboard]"')):
        loggers.TensorBoardLogger(tmp_path / "tb")
    with pytest.raises(ImportError, match=re.escape('pip install -e ".[wandb]"')):
        loggers.make_loggers(["wandb"], tmp_path / "run", None)


def test_loggers_made_before_a_missing_package_are_closed(tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX")
    monkeypatch.setitem(sys.modules, "wandb", None)
    closed = []
    close = loggers.TensorBoardLogger.close
    monkeypatch.setattr(
        loggers.TensorBoardLogger, "close", lambda self: closed.append(self) or close(self)
    )
    with pytest.raises(ImportError, match="wandb"):
        loggers.make_loggers(["tensorboard", "wandb"], tmp_path, None)
    assert [type(logger) for logger in closed] == [loggers.TensorBoardLogger]
