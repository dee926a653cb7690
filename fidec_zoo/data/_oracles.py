"""Episodes from OGBench's own scripted oracles: the collection recipe (dataset specs, plan
noise, seeding) and the collector each generating process reuses. `_generate` shards, saves and
resumes; this module makes the episodes.
"""

import dataclasses
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np

from .._env_notices import quiet_env_notices

# Recipe constants (OGBench commands.sh / generate_manipspace.py / generate_locomaze.py).
PLAN_NOISE = 0.1
PLAN_NOISE_SMOOTHING = 0.5
PLAN_SEGMENT_DT = 0.4
MAZE_ACTION_NOISE = 0.5


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How one dataset is generated."""

    env_id: str  # the gymnasium id of the goal-conditioned env used for collection
    family: str  # "cube", "scene", "puzzle" or "pointmaze"
    max_episode_steps: int  # rows per episode
    default_episodes: int  # size of the official train split
    p_stack: tuple[float, float] | float = 0.5  # U(lo, hi) per episode, or a constant


_MANIP = {
    "cube-single-play-v0": DatasetSpec("cube-single-v0", "cube", 1001, 1000, 0.0),
    "cube-double-play-v0": DatasetSpec("cube-double-v0", "cube", 1001, 1000, (0.0, 0.25)),
    "scene-play-v0": DatasetSpec("scene-v0", "scene", 1001, 1000, 0.5),
    "puzzle-3x3-play-v0": DatasetSpec("puzzle-3x3-v0", "puzzle", 1001, 1000, 0.5),
    "puzzle-4x4-play-v0": DatasetSpec("puzzle-4x4-v0", "puzzle", 1001, 1000, 0.5),
}
_MAZE = {  # navigate: 1000 x 1001 steps, giant 500 x 2001
    "pointmaze-medium-navigate-v0": DatasetSpec("pointmaze-medium-v0", "pointmaze", 1001, 1000),
    "pointmaze-large-navigate-v0": DatasetSpec("pointmaze-large-v0", "pointmaze", 1001, 1000),
    "pointmaze-giant-navigate-v0": DatasetSpec("pointmaze-giant-v0", "pointmaze", 2001, 500),
    "pointmaze-teleport-navigate-v0": DatasetSpec("pointmaze-teleport-v0", "pointmaze", 1001, 1000),
}
SPECS: dict[str, DatasetSpec] = {**_MANIP, **_MAZE}


def episode_seed(seed: int, episode: int, attempt: int = 0) -> int:
    """Seed of `np.random` and `env.reset` for one episode (attempt > 0: scene re-runs)."""
    return int(np.random.SeedSequence([seed, episode, attempt]).generate_state(1)[0])


class _Collector:
    """One data-collection env plus its oracles, reused across the episodes of a process."""

    def __init__(self, dataset_name: str):
        self.spec = spec = SPECS[dataset_name]
        kwargs: dict[str, Any] = dict(
            terminate_at_goal=False, max_episode_steps=spec.max_episode_steps
        )
        if spec.family != "pointmaze":
            kwargs["mode"] = "data_collection"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Heavy (MuJoCo and its environments): imported only once an env is built.
            import ogbench  # noqa: F401  (registers the envs)
        with quiet_env_notices():
            self.env = gymnasium.make(spec.env_id, **kwargs)
        if spec.family == "pointmaze":
            maze_map = np.asarray(self.env.unwrapped.maze_map)
            self.cells = [(int(i), int(j)) for i, j in zip(*np.nonzero(maze_map == 0))]
        else:
            self.oracles = self._make_oracles()

    def _make_oracles(self) -> dict[str, Any]:
        # OGBench's oracles: heavy like OGBench itself (see `__init__`), so imported here.
        from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
        from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
        from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

        kw = dict(
            env=self.env,
            segment_dt=PLAN_SEGMENT_DT,
            noise=PLAN_NOISE,
            noise_smoothing=PLAN_NOISE_SMOOTHING,
        )
        if self.spec.family == "cube":
            return {"cube": CubePlanOracle(**kw)}
        if self.spec.family == "puzzle":
            return {"button": ButtonPlanOracle(gripper_always_closed=True, **kw)}
        return {
            "cube": CubePlanOracle(**kw),
            "button": ButtonPlanOracle(**kw),
            "drawer": DrawerPlanOracle(**kw),
            "window": WindowPlanOracle(**kw),
        }

    def episode(self, seed: int, index: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Runs episode `index`; returns its rows and sanity statistics."""
        for attempt in range(100):
            s = episode_seed(seed, index, attempt)
            np.random.seed(s)
            with quiet_env_notices():  # OGBench builds a new action space on every access
                self.env.action_space.seed(s)
                if self.spec.family == "pointmaze":
                    rows, stats = self._maze_episode(s)
                else:
                    rows, stats = self._manip_episode(s)
            if self.spec.family != "scene" or _scene_healthy(rows["qpos"]):
                stats["retries"] = attempt
                break
        else:  # pragma: no cover - never observed
            raise RuntimeError(f"episode {index}: 100 unhealthy scene attempts")
        ends = np.flatnonzero(rows["terminals"])
        if (
            ends.tolist() != [self.spec.max_episode_steps - 1]
            or len(rows["terminals"]) != ends[0] + 1
        ):
            raise RuntimeError(
                f"episode {index} did not run exactly {self.spec.max_episode_steps} steps"
            )
        return rows, stats

    def _manip_episode(self, s: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        env = self.env
        ob, info = env.reset(seed=s)
        p = self.spec.p_stack
        p_stack = float(np.random.uniform(*p)) if isinstance(p, tuple) else p
        task = info["privileged/target_task"]
        agent = self.oracles[task]
        agent.reset(ob, info)
        keys = ["observations", "actions", "terminals", "qpos", "qvel"]
        if self.spec.family != "cube":
            keys.append("button_states")
        rows: dict[str, list] = {k: [] for k in keys}
        plans: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # task -> [reached, ended]
        done = False
        while not done:
            action = np.clip(np.asarray(agent.select_action(ob, info)), -1, 1)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if agent.done:
                plans[task][0] += int(bool(info["success"]))
                plans[task][1] += 1
                agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=p_stack)
                task = agent_info["privileged/target_task"]
                agent = self.oracles[task]
                agent.reset(agent_ob, agent_info)
            rows["observations"].append(ob)
            rows["actions"].append(action)
            rows["terminals"].append(done)
            rows["qpos"].append(info["prev_qpos"])
            rows["qvel"].append(info["prev_qvel"])
            if "button_states" in rows:
                rows["button_states"].append(info["prev_button_states"])
            ob = next_ob
        return _as_arrays(rows), {"plans": dict(plans)}

    def _maze_episode(self, s: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        env, u, cells = self.env, self.env.unwrapped, self.cells
        init_ij = cells[np.random.randint(len(cells))]
        goal_ij = cells[np.random.randint(len(cells))]
        ob, _ = env.reset(seed=s, options=dict(task_info=dict(init_ij=init_ij, goal_ij=goal_ij)))
        rows: dict[str, list] = {
            k: [] for k in ("observations", "actions", "terminals", "qpos", "qvel")
        }
        reached, done = 0, False
        while not done:
            xy = u.get_xy()
            subgoal_xy, _ = u.get_oracle_subgoal(xy, u.cur_goal_xy)
            direction = subgoal_xy - xy
            direction = direction / (np.linalg.norm(direction) + 1e-6)
            action = direction + np.random.normal(0.0, MAZE_ACTION_NOISE, direction.shape)
            action = np.clip(action, -1, 1)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if info["success"]:  # navigate: a new random goal once the current one is reached
                reached += 1
                goal_xy = u.ij_to_xy(cells[np.random.randint(len(cells))])
                if u._add_noise_to_goal:
                    goal_xy = u.add_noise(goal_xy)
                u.set_goal(goal_xy=goal_xy)
            rows["observations"].append(ob)
            rows["actions"].append(action)
            rows["terminals"].append(done)
            rows["qpos"].append(info["prev_qpos"])
            rows["qvel"].append(info["prev_qvel"])
            ob = next_ob
        return _as_arrays(rows), {"goals_reached": reached}


_DTYPES = dict(terminals=np.bool_, button_states=np.int64)


def _as_arrays(rows: dict[str, list]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=_DTYPES.get(k, np.float32)) for k, v in rows.items()}


def _scene_healthy(qpos: np.ndarray) -> bool:
    """OGBench's scene check: the cube stays visible unless it is inside the drawer."""
    xyz = qpos[:, 14:17]
    too_right = (xyz[:, 1] >= 0.29).any()
    lost_left = ((xyz[:, 1] <= -0.3) & ((xyz[:, 2] < 0.06) | (xyz[:, 2] > 0.08))).any()
    return not (too_right or lost_left)


_COLLECTORS: dict[str, _Collector] = {}


def collect_episodes(
    dataset_name: str,
    seed: int,
    indices: list[int],
    on_episode: Callable[[int], None] | None = None,
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Generates the episodes `indices` (in order) in this process."""
    if dataset_name not in _COLLECTORS:
        _COLLECTORS[dataset_name] = _Collector(dataset_name)
    collector = _COLLECTORS[dataset_name]
    chunks, stats = [], []
    for i in indices:
        rows, st = collector.episode(seed, i)
        chunks.append(rows)
        stats.append(st)
        if on_episode is not None:
            on_episode(len(rows["terminals"]))
    merged = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    return merged, stats


def summarise(stats: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"scene_retries": int(sum(s["retries"] for s in stats))}
    if "goals_reached" in stats[0]:
        reached = [s["goals_reached"] for s in stats]
        out["goals_reached_per_episode"] = float(np.mean(reached))
        return out
    plans: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in stats:
        for task, (ok, n) in s["plans"].items():
            plans[task][0] += ok
            plans[task][1] += n
    out["oracle_plans"] = {
        t: {"reached": ok, "ended": n, "rate": ok / max(n, 1)}
        for t, (ok, n) in sorted(plans.items())
    }
    total_ok = sum(ok for ok, _ in plans.values())
    total = sum(n for _, n in plans.values())
    out["oracle_success_rate"] = total_ok / max(total, 1)
    return out


def oracle_recipe(spec: DatasetSpec) -> dict[str, Any]:
    env_kwargs = {"terminate_at_goal": False, "max_episode_steps": spec.max_episode_steps}
    seeding = "np.random.seed(s); env.reset(seed=s); s from SeedSequence([seed, ep, attempt])"
    if spec.family == "pointmaze":
        oracle = f"BFS subgoal direction + N(0, {MAZE_ACTION_NOISE}) action noise (navigate)"
        return {"oracle": oracle, "env_kwargs": env_kwargs, "seeding": seeding}
    p = spec.p_stack
    return {
        "oracle": "PlanOracle",
        "noise": PLAN_NOISE,
        "noise_smoothing": PLAN_NOISE_SMOOTHING,
        "segment_dt": PLAN_SEGMENT_DT,
        "p_stack": f"U{p}" if isinstance(p, tuple) else p,
        "env_kwargs": {**env_kwargs, "mode": "data_collection"},
        "seeding": seeding,
    }
