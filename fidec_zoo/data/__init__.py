"""OGBench datasets: official files when present, otherwise regenerated offline with OGBench's
own scripted oracles; loaded as a `Dataset` pytree of device arrays.

- `load_ogbench(env_name, ...) -> (env, train, val)`
- `generate_ogbench(dataset_name, *, episodes, ...) -> Path` (also `python -m fidec_zoo.data`)
- `SUPPORTED_DATASETS`: the datasets that can be generated offline;
  `EXPERT_ONLY_FAMILIES`: families whose data needs OGBench's pretrained experts (official
  files only).
- `available_cpus()`: the CLIs' default number of generation workers.
"""

from .._cpus import available_cpus as available_cpus
from ..dataset import Dataset as Dataset
from ._generate import EXPERT_ONLY_FAMILIES as EXPERT_ONLY_FAMILIES
from ._generate import SUPPORTED_DATASETS as SUPPORTED_DATASETS
from ._generate import default_cache_dir as default_cache_dir
from ._generate import generate_ogbench as generate_ogbench
from ._load import DatasetFileError as DatasetFileError
from ._load import check_finite as check_finite
from ._load import check_npz as check_npz
from ._load import check_sha256 as check_sha256
from ._load import dataset_provenance as dataset_provenance
from ._load import load_ogbench as load_ogbench
