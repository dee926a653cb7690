"""Training: `fit` (offline, from a recipe or an agent), `fit_online` (fine-tuning in the
environment after it) and the parts they are built from.

- `Updater`: the device side: an optax optimiser, chunks of updates in one compiled
  `lax.scan`, `vmap` over seeds, data parallelism over a mesh.
- `Checkpointer`: Orbax checkpoints of the training state, restore and retention.
- `Evaluator`: periodic evaluation of the policy in its environment.
- `RunLog`: `metrics.csv`/`eval.csv` per seed, user loggers, the progress bar.

`fit_online` (online fine-tuning on a `ReplayBuffer`) composes the same parts; so can your own
loop. `fit` is one composition of them.
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
from ._online import OnlineResult as OnlineResult
from ._online import fit_online as fit_online
from ._runlog import Logger as Logger
from ._runlog import RunLog as RunLog
from ._runlog import deferred_interrupts as deferred_interrupts
from ._updater import Updater as Updater
