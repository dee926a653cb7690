"""What a run does besides building the agent: the optimiser and its schedule, the update loop's
sizes, checkpoints, evaluation and the dataset. Plain frozen dataclasses, so they go to JSON and
to the command line as they are."""

import dataclasses
import functools
from typing import Literal

import optax

__all__ = ["DataConfig", "EvalConfig", "OnlineConfig", "OptimConfig", "TrainConfig"]


def _check_positive(owner: str, **values: int | float | None) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise ValueError(f"{owner}.{name} must be positive, got {value}.")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam (b1 0.9, b2 0.999, eps 1e-8, as the references) at step size `lr`, optionally after
    global-norm clipping at `grad_clip`, with a learning-rate schedule over the run's steps.

    `schedule`: `"constant"` (the references), `"cosine"` (decays to 0 at the last step) or
    the `"linear"` decay to 0; `warmup_steps` ramp the step size linearly from 0 first.
    """

    lr: float = 3e-4  # Adam's step size
    grad_clip: float | None = None  # clip gradients to this global norm first (None: no)
    schedule: Literal["constant", "cosine", "linear"] = "constant"  # the step size's schedule
    warmup_steps: int = 0  # ramp the step size from 0 over this many steps first

    def __post_init__(self):
        _check_positive("OptimConfig", lr=self.lr, grad_clip=self.grad_clip)
        if self.warmup_steps < 0:
            raise ValueError(f"OptimConfig.warmup_steps must be >= 0, got {self.warmup_steps}.")
        if self.schedule not in ("constant", "cosine", "linear"):
            raise ValueError(f"Unknown schedule {self.schedule!r}; valid: constant, cosine, "
                             "linear.")

    def learning_rate(self, steps: int) -> float | optax.Schedule:
        """The step size: a float for a constant schedule, else an optax schedule."""
        if self.schedule == "constant" and not self.warmup_steps:
            return self.lr
        decay = max(steps - self.warmup_steps, 1)
        main = {"constant": optax.constant_schedule(self.lr),
                "cosine": optax.cosine_decay_schedule(self.lr, decay),
                "linear": optax.linear_schedule(self.lr, 0.0, decay)}[self.schedule]
        if not self.warmup_steps:
            return main
        warmup = optax.linear_schedule(0.0, self.lr, self.warmup_steps)
        return optax.join_schedules([warmup, main], [self.warmup_steps])

    def make(self, steps: int) -> optax.GradientTransformation:
        """The optax transformation for a run of `steps` updates. Equal configs give the same
        object, so they share compiled updates."""
        return _optimiser(self, steps if self.schedule != "constant" or self.warmup_steps else 0)


@functools.cache
def _optimiser(config: OptimConfig, steps: int) -> optax.GradientTransformation:
    adam = optax.adam(config.learning_rate(steps))
    if config.grad_clip is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), adam)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The update loop: `steps` updates on minibatches of `batch_size`, at most `chunk` per
    compiled `lax.scan`, a `metrics.csv` row every `log_every`, a checkpoint every
    checkpoint_every updates (default: every evaluation, else `10 * chunk`) keeping the last
    keep_checkpoints of them (`None`: all)."""

    steps: int = 1_000_000  # gradient updates
    batch_size: int = 256  # minibatch rows per update
    optimiser: OptimConfig = OptimConfig()
    chunk: int = 1000  # updates per compiled lax.scan
    log_every: int = 1000  # updates between metrics.csv rows
    checkpoint_every: int | None = None  # updates between checkpoints (None: each eval/10 chunks)
    keep_checkpoints: int | None = 2  # newest checkpoints kept (None: all)

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"TrainConfig.steps must be >= 0, got {self.steps}.")
        _check_positive("TrainConfig", batch_size=self.batch_size, chunk=self.chunk,
                        log_every=self.log_every, checkpoint_every=self.checkpoint_every,
                        keep_checkpoints=self.keep_checkpoints)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation in the environment: `episodes` episodes every `every` updates and at the
    end (`every=None`: at the end only), their envs stepped in `workers` processes (the same
    results for any number)."""

    every: int | None = None  # updates between evaluations (None: at the end only)
    episodes: int = 50  # episodes per evaluation
    workers: int = 1  # processes stepping the envs (the results do not depend on it)

    def __post_init__(self):
        _check_positive("EvalConfig", every=self.every, episodes=self.episodes,
                        workers=self.workers)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The offline dataset: `episodes` generated episodes from data seed `seed` (generated when
    missing, in `workers` processes; the bytes do not depend on it). `verify`: check the files
    against the sha256 their provenance recorded when they were generated (about 0.3 s per 1M
    rows); `False` loads a changed file as it is."""

    episodes: int = 1000  # generated training episodes (plus a tenth for validation)
    seed: int = 0  # seed of the generated dataset
    workers: int = 1  # processes generating a missing dataset (same bytes for any)
    verify: bool = True  # check the files' sha256 against their provenance when loading

    def __post_init__(self):
        _check_positive("DataConfig", episodes=self.episodes, workers=self.workers)


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """Online fine-tuning after offline training: `steps` environment transitions collected
    by `envs` envs stepped together (in `workers` processes; 1: this process), each env step
    followed by `updates_per_step` updates per transition (the update-to-data ratio; the
    references' 1), on minibatches from a replay buffer of `capacity` rows (default: the offline
    dataset plus `steps`, so no row is overwritten) sampled uniformly, or with a share
    online_fraction of each minibatch from the online rows (FQL's balanced sampling: 0.5).

    `log_every`, `eval_every` (default: the offline evaluation period; `None` there: at the end
    only) and `checkpoint_every` (default: every evaluation) count environment transitions.

    `fql_alpha`: FQL's distillation weight online; `None` takes the references' offline-to-online
    value for the environment where they give one, else keeps the offline weight.
    """

    steps: int = 1_000_000  # environment transitions to collect
    envs: int = 1  # envs stepped together
    workers: int = 1  # processes stepping them (1: this process)
    updates_per_step: int = 1  # updates per collected transition
    online_fraction: float | None = None  # share of online rows per minibatch (None: uniform)
    capacity: int | None = None  # replay rows (None: the offline dataset plus steps)
    log_every: int = 1000  # transitions between metrics.csv rows
    eval_every: int | None = None  # transitions between evaluations (None: as offline)
    checkpoint_every: int | None = None  # transitions between checkpoints (None: each eval)
    fql_alpha: float | None = None  # FQL's online distillation weight (None: the references')

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"OnlineConfig.steps must be >= 0, got {self.steps}.")
        _check_positive("OnlineConfig", envs=self.envs, workers=self.workers,
                        updates_per_step=self.updates_per_step, capacity=self.capacity,
                        log_every=self.log_every, eval_every=self.eval_every,
                        checkpoint_every=self.checkpoint_every)
        if self.steps % self.envs:
            raise ValueError(f"OnlineConfig.steps ({self.steps}) must be a multiple of envs "
                             f"({self.envs}): every env step collects one transition per env.")
        if self.workers > self.envs:
            raise ValueError(f"OnlineConfig.workers ({self.workers}) must not exceed envs "
                             f"({self.envs}).")
        if self.online_fraction is not None and not 0.0 <= self.online_fraction <= 1.0:
            raise ValueError("OnlineConfig.online_fraction must be in [0, 1] (or None: "
                             f"uniform), got {self.online_fraction}.")
