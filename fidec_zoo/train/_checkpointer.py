"""`Checkpointer`: when and where a run's training state is saved, and restoring it."""

import os
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
