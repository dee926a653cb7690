"""TensorBoard and Weights & Biases loggers for `fidec_zoo.train.fit(loggers=...)` and the CLI's
`--log tensorboard wandb`.

A logger is called as `logger(name, row)` with every row written to a CSV of the run dir (see
`fidec_zoo._runlog.Logger`): `name` is the CSV's path without `.csv` (`"metrics"`, `"eval"`,
`"seed_0/metrics"`) and `row` maps its columns, `step` included, to numbers. The CSVs stay the
complete record; these loggers are views of them in a dashboard. Their packages are optional
extras (`pip install -e ".[tensorboard]"`, `".[wandb]"`), imported only when a logger is built.
"""

import importlib
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, TypeVar

__all__ = ["TensorBoardLogger", "WandbLogger", "make_loggers", "LOGGER_KINDS"]

LOGGER_KINDS = ("tensorboard", "wandb")


def _import_extra(module: str, extra: str) -> ModuleType:
    """Imports an optional package, or says which extra of fidec_zoo installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ImportError(
            f"{module} is not installed; it is an optional dependency of fidec_zoo. Install it "
            f'with `pip install -e ".[{extra}]"` (from a checkout) or `pip install {module}`.'
        ) from e


def _scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The columns of `row` other than `step` that are finite numbers, as floats. Anything else
    (a string, an array, NaN or inf) is left to the CSV: dashboards plot one finite number per
    step, and an inf would flatten every plot it is drawn in."""
    out = {}
    for key, value in row.items():
        if key == "step" or isinstance(value, str | bytes):
            continue
        try:
            x = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            out[key] = x
    return out


_L = TypeVar("_L", bound="_ClosingLogger")


class _ClosingLogger(ABC):
    """`with logger: ...` closes the logger at the end of the block."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self: _L) -> _L:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()


class TensorBoardLogger(_ClosingLogger):
    """Writes each row's numbers as TensorBoard scalars `"{name}/{column}"` (for example
    `"metrics/loss"`, `"seed_0/eval/success"`) at `global_step=row["step"]`, to event files in
    `log_dir` (created if missing); view them with `tensorboard --logdir <log_dir>`.

    Uses `tensorboardX`, which needs neither TensorFlow nor PyTorch. Its writer thread puts
    rows on disk within `flush_secs` (tensorboardX's default is 120 s; a live TensorBoard
    polls every 5 s) and all of them on `close()`. `writer_kwargs` go to
    `tensorboardX.SummaryWriter` (e.g. `filename_suffix`).
    """

    def __init__(self, log_dir: str | os.PathLike, flush_secs: float = 10, **writer_kwargs: Any):
        # tensorboardX is an optional dependency (the `tensorboard` extra): imported here only.
        tensorboardX = _import_extra("tensorboardX", "tensorboard")
        self.log_dir = Path(log_dir)
        self.writer = tensorboardX.SummaryWriter(
            logdir=str(self.log_dir), flush_secs=flush_secs, **writer_kwargs
        )

    def __call__(self, name: str, row: Mapping[str, Any]) -> None:
        step = int(row["step"])
        for column, value in _scalars(row).items():
            self.writer.add_scalar(f"{name}/{column}", value, global_step=step)

    def close(self) -> None:
        """Flushes and closes the event file; calling it again does nothing."""
        self.writer.close()


class WandbLogger(_ClosingLogger):
    """Logs each row to a Weights & Biases run as `"{name}/{column}"`, plotted against its own
    step axis `"{name}/step"`: the rows of different CSVs (training metrics, evaluations, and
    those of other phases) need not share one increasing step, which `run.log(step=...)` would
    demand (it drops rows whose step goes back).

    The default `mode="offline"` needs no network and no account: the run is written under
    `run_dir/wandb/offline-run-*/`, to upload later with `wandb sync <that dir>`. Pass
    `mode="online"` to stream to wandb.ai (after `wandb login`). `init_kwargs` go to
    `wandb.init` (e.g. `name`, `entity`, `tags`, `id` and `resume`); `project=None` leaves the
    choice to wandb (`$WANDB_PROJECT`).
    """

    def __init__(
        self, project: str | None = None, run_dir: str | os.PathLike | None = None,
        config: Mapping[str, Any] | None = None, mode: str = "offline", **init_kwargs: Any,
    ):  # fmt: skip
        # wandb is an optional heavy dependency (the `wandb` extra): imported here only.
        wandb = _import_extra("wandb", "wandb")
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project, dir=run_dir, config=dict(config or {}), mode=mode, **init_kwargs
        )
        self.defined: set[str] = set()

    def __call__(self, name: str, row: Mapping[str, Any]) -> None:
        step_key = f"{name}/step"
        data = {f"{name}/{column}": value for column, value in _scalars(row).items()}
        for key in data.keys() - self.defined:
            self.run.define_metric(key, step_metric=step_key)
            self.defined.add(key)
        self.run.log({**data, step_key: int(row["step"])})

    def close(self) -> None:
        """Finishes the run; calling it again does nothing. wandb's service may write the last
        records of an offline run's `.wandb` file moments later, and does before the process
        exits (or when `wandb.teardown()` returns)."""
        self.run.finish()


def make_loggers(
    kinds: Sequence[str], run_dir: str | os.PathLike, config: Mapping[str, Any] | None = None
) -> list[TensorBoardLogger | WandbLogger]:
    """The loggers the CLI's `--log` names, one per distinct kind of `LOGGER_KINDS`:

    - `"tensorboard"`: event files in `run_dir/tensorboard`.
    - `"wandb"`: a run named after `run_dir`, with `config`, in project `$WANDB_PROJECT`
      (default `fidec_zoo`) and mode `$WANDB_MODE` (default `offline`: files in
      `run_dir/wandb`, nothing sent until `wandb sync`).

    Raises `ValueError` naming the valid kinds on an unknown one (before any logger starts) and
    `ImportError` naming the extra to install when a package is missing (closing the loggers
    already made). Close the loggers after `fit`.
    """
    unknown = [kind for kind in kinds if kind not in LOGGER_KINDS]
    if unknown:
        raise ValueError(
            f"unknown logger kind(s) {unknown}; valid kinds are {', '.join(LOGGER_KINDS)}."
        )
    run_dir = Path(run_dir)
    loggers: list[TensorBoardLogger | WandbLogger] = []
    try:
        for kind in dict.fromkeys(kinds):
            if kind == "tensorboard":
                loggers.append(TensorBoardLogger(run_dir / "tensorboard"))
            else:
                loggers.append(WandbLogger(
                    project=os.environ.get("WANDB_PROJECT", "fidec_zoo"), run_dir=run_dir,
                    config=config, mode=os.environ.get("WANDB_MODE", "offline"),
                    name=run_dir.name,
                ))  # fmt: skip
    except BaseException:  # e.g. wandb missing: the loggers already started are closed
        for logger in loggers:
            logger.close()
        raise
    return loggers
