"""`Checkpointer`: when and where a run's training state is saved, and restoring it."""

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
from jaxtyping import PyTree

from .. import checkpoint

__all__ = ["Checkpointer"]


class Checkpointer:
    """Orbax checkpoints of the training state in `directory`, one every `every` updates (and
    whenever `save` is called), keeping the latest `keep` (`None`: all)."""

    def __init__(self, directory: str | os.PathLike, *, every: int | None = None,
                 keep: int | None = 2):
        for name, value in (("every", every), ("keep", keep)):
            if value is not None and value < 1:
                raise ValueError(f"Checkpointer {name} must be >= 1 (or None), got {value}.")
        self.directory, self.every, self.keep = Path(directory), every, keep
        self.saved_step: int | None = checkpoint.latest_step(self.directory)

    def restore(self, skeleton: PyTree, step: int | None = None) -> tuple[PyTree, dict[str, Any]]:
        """The state of checkpoint `step` (default: the latest) and its metadata."""
        state, _, meta = checkpoint.restore_checkpoint(self.directory, skeleton, step=step)
        return state, meta

    def restore_latest(self, skeleton: PyTree, check: Callable[[dict[str, Any]], None]
                       ) -> tuple[PyTree, dict[str, Any]]:
        """The state and metadata of the latest checkpoint that reads back as it was saved,
        after `check(metadata)` (which raises to refuse the run).

        Newer checkpoints that do not (`CorruptCheckpointError`) are moved to
        `<directory>-corrupt/`, out of Orbax's sight, each named in a warning with the reason;
        if none reads back, `CorruptCheckpointError` names each and nothing is moved, so no
        rerun silently trains from scratch.
        """
        corrupt: list[checkpoint.CorruptCheckpointError] = []
        for step in reversed(checkpoint.checkpoint_steps(self.directory)):
            try:
                check(checkpoint.checkpoint_metadata(self.directory, step=step)[1])
                state, _, meta = checkpoint.restore_checkpoint(self.directory, skeleton,
                                                               step=step)
            except checkpoint.CorruptCheckpointError as e:
                corrupt.append(e)
                continue
            for error in corrupt:
                warnings.warn(f"{error}. Moved it to {self._set_aside(error.step)}; resuming "
                              f"from checkpoint {step}.", stacklevel=2)
            self.saved_step = step
            return state, meta
        earlier = "; ".join(f"checkpoint {e.step}: {e.problem}" for e in corrupt[1:])
        raise checkpoint.CorruptCheckpointError(
            self.directory, corrupt[0].step,
            f"{corrupt[0].problem}. So is every earlier one ({earlier or 'there is none'}). "
            "Restore them from a copy, or move the directory away to train from scratch.")

    def _set_aside(self, step: int) -> Path:
        """Moves checkpoint `step` to `<directory>-corrupt/<step>[.<n>]`; returns where."""
        aside = self.directory.with_name(f"{self.directory.name}-corrupt")
        aside.mkdir(exist_ok=True)
        target, n = aside / str(step), 0
        while target.exists():
            n += 1
            target = aside / f"{step}.{n}"
        os.replace(self.directory / str(step), target)
        return target

    def due(self, step: int, last: int) -> bool:
        """Whether step `step` of a run of `last` updates is checkpointed."""
        return step == last or bool(self.every and step % self.every == 0)

    def save(self, state: PyTree, step: int, metadata: dict[str, Any]) -> None:
        """Saves `state` at `step` unless already saved; skipped if its buffers were donated to
        a call that never returned (a second Ctrl-C)."""
        leaves = jax.tree.leaves(eqx.filter(state, eqx.is_array))
        if self.saved_step == step or any(x.is_deleted() for x in leaves):
            return
        checkpoint.save_checkpoint(self.directory, step, state, metadata=metadata,
                                   max_to_keep=self.keep)
        self.saved_step = step
