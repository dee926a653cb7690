"""The zoo: pretrained policies that load offline and act at once.

    import fidec_zoo.zoo as zoo

    zoo.list_models("fidec/*")
    policy = zoo.load("fidec/cube-single-play-singletask-task2-v0")
    action = policy.sample(obs, key=key)                # or policy(obs, z), z ~ N(0, I)
    zoo.model_info(name).evaluation                     # measured success, episodes, protocol
    zoo.evaluate(name)                                  # re-measure (needs the environment)
    zoo.record_video(name, "policy.gif")                # watch its first evaluation episode
    run = zoo.load_run("runs/my-run", step=300_000)     # your own run: run.policy, run.env_name

Entries live in a *root*: `registry.json` (`{"format_version": 2, "entries": {name: entry}}`)
plus one directory per entry holding Orbax checkpoints of host numpy arrays (`policy/`, and
`agent/` when the critic was shipped). Loading rebuilds a skeleton from the entry's stored
recipe and restores the arrays into it; nothing is pickled. Names are looked up in an explicit
`root`, then `$FIDEC_ZOO_HOME`, then the zoo packaged in the wheel, then the repository's
`checkpoints/`. Every file's sha256 is checked before loading.

Entries are added with `save_pretrained` (a model and its recipe) or `register_run` (a finished
`recipes/offline.py` run); `recipes/build_zoo.py` trains, evaluates and registers them.
`load_run` reads a run directory's checkpoints directly, finished or not.
"""

from ._entry import DEFAULT_EVAL_EPISODES as DEFAULT_EVAL_EPISODES
from ._entry import DEFAULT_EVAL_SEED as DEFAULT_EVAL_SEED
from ._entry import FORMAT_VERSION as FORMAT_VERSION
from ._entry import IncompatibleVersionError as IncompatibleVersionError
from ._entry import IntegrityError as IntegrityError
from ._entry import UnknownModelError as UnknownModelError
from ._entry import ZooEntry as ZooEntry
from ._entry import ZooError as ZooError
from ._load import evaluate as evaluate
from ._load import list_models as list_models
from ._load import load as load
from ._load import load_agent as load_agent
from ._load import model_info as model_info
from ._load import record_video as record_video
from ._load import verify as verify
from ._registry import search_roots as search_roots
from ._run import TrainedRun as TrainedRun
from ._run import load_run as load_run
from ._save import register_run as register_run
from ._save import save_pretrained as save_pretrained
