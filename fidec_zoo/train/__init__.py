"""Training: `fit` (offline, from a recipe or an agent) and the parts it is built from.

- `Updater`: the device side: an optax optimiser, chunks of updates in one compiled
  `lax.scan`, `vmap` over seeds, data parallelism over a mesh.
- `Checkpointer`: Orbax checkpoints of the training state, restore and retention.
- `Evaluator`: periodic evaluation of the policy in its environment.
- `RunLog`: `metrics.csv`/`eval.csv` per seed, user loggers, the progress bar.

An online loop (or your own) composes the same parts; `fit` is one composition of them.
"""

from .._seeds import select_seed as select_seed
from .._seeds import stack_seeds as stack_seeds
from ..updates import update as update
from ._checkpointer import Checkpointer as Checkpointer
from ._evaluator import Evaluator as Evaluator
from ._fit import FitResult as FitResult
from ._fit import build_agent as build_agent
from ._fit import fit as fit
from ._fit import restore_agent as restore_agent
from ._runlog import Logger as Logger
from ._runlog import RunLog as RunLog
from ._runlog import deferred_interrupts as deferred_interrupts
from ._updater import Updater as Updater
