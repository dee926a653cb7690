"""fidec_zoo: composable offline RL with flow policies (FiDec, DeFlow, FQL and baselines).

Every policy is a transport map `a = T(s, z)`; FQL, DeFlow and FiDec differ in the *metric*
that limits how far the learned map may move from the behaviour flow. Set
`FIDEC_ZOO_TYPECHECK=1` to check every jaxtyping annotation at run time (trace time under jit).
"""

import importlib
import os
import sys
from types import ModuleType

from ._mujoco_gl import headless_mujoco_gl  # imports nothing heavy
from ._version import __version__ as __version__

# Before anything imports mujoco, unless the user chose a backend (then libEGL is not probed).
if "mujoco" not in sys.modules and "MUJOCO_GL" not in os.environ and (_gl := headless_mujoco_gl()):
    os.environ["MUJOCO_GL"] = _gl

if os.environ.get("FIDEC_ZOO_TYPECHECK", "0") == "1":
    from jaxtyping import install_import_hook

    # Left installed for the life of the process: submodules imported later (agents, zoo, ...)
    # are instrumented too, not only those this file imports.
    install_import_hook("fidec_zoo", "beartype.beartype")

from . import constraints as constraints
from . import critics as critics
from . import metrics as metrics
from . import nn as nn
from . import policies as policies
from . import samplers as samplers
from . import types as types
from ._load_shortcut import load as load

# Heavier submodules (Orbax, OGBench, MuJoCo, matplotlib) are imported on first attribute access,
# so `import fidec_zoo` stays light and `fidec_zoo.zoo.list_models()` still works.
_LAZY = ("agents", "checkpoint", "configs", "data", "dataset", "distributed", "envs", "loggers",
         "offline", "provenance", "recipes", "report", "train", "updates", "zoo")


def __getattr__(name: str) -> ModuleType:
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
