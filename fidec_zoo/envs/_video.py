"""GIFs of evaluation episodes: `record_video(policy, env_name, path)` renders the episodes that
`evaluate` scores with the same seed, stepped by the same protocol (`rollouts`).
"""

import os
import time
from collections.abc import Sequence
from pathlib import Path

import equinox as eqx
import gymnasium
import numpy as np
import PIL.Image

from ._evaluate import EvalResult, check_policy, rollouts
from ._names import env_dims, make_env, resolve_env_name
from ._workers import LocalEnvs


class RenderError(RuntimeError):
    """MuJoCo could not render (no usable OpenGL backend); the message says how to choose one."""


def record_video(
    policy: eqx.Module,
    env_name: str,
    path: str | os.PathLike,
    *,
    episodes: int = 1,
    seed: int = 0,
    width: int = 256,
    height: int = 256,
    fps: int = 25,
    frame_skip: int = 1,
    progress: bool = False,
) -> EvalResult:
    """Renders episodes 0..episodes-1 of `evaluate(policy, env_name, seed=seed)` to a GIF.

    The episodes are the very ones `evaluate` scores with the same `seed` (same reset seeds,
    same noise), so a video shows what a recorded success rate counts; the returned
    `EvalResult` says which of them succeeded. Every `frame_skip`-th frame is kept, and each
    episode's last frame is held for half a second. Writing uses Pillow (no video codec needed).

    MuJoCo needs an OpenGL backend to render, fixed when mujoco is first imported. On Linux
    with no display, `import fidec_zoo` sets `MUJOCO_GL=egl` (headless GPU or Mesa EGL) if
    libEGL loads, unless `MUJOCO_GL` is set or mujoco was imported first; otherwise choose it
    yourself before anything imports mujoco, e.g. `MUJOCO_GL=egl python ...` (or `osmesa`). A
    backend that cannot render raises `RenderError`.
    """
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"record_video writes GIFs; got {str(path)!r}. Use a .gif path.")
    sizes = dict(episodes=episodes, width=width, height=height, fps=fps, frame_skip=frame_skip)
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    resolve_env_name(env_name)
    start = time.perf_counter()
    env = make_env(env_name, render_mode="rgb_array", width=width, height=height)
    frames: list[PIL.Image.Image] = []

    def capture(_: int, t: int, done: bool) -> None:
        if done or t % frame_skip == 0:
            frames.extend([_gif_frame(_render(env))] * (max(1, fps // 2) if done else 1))

    try:
        check_policy(policy, env_dims(env), env_name)
        result = rollouts(policy, LocalEnvs([env]), 1, env_name, episodes, seed, start=start,
                          progress=progress, on_step=capture)
    finally:
        env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_gif(frames, path, fps)
    return result


def _render(env: gymnasium.Env) -> np.ndarray:
    try:
        return np.asarray(env.render())
    except Exception as e:  # mujoco.FatalError and friends: no usable OpenGL context
        raise RenderError(
            f"MuJoCo could not render ({type(e).__name__}: {e}). It needs an OpenGL backend "
            f"chosen before mujoco is imported (MUJOCO_GL is {os.environ.get('MUJOCO_GL')!r}). "
            "On a machine with no display run e.g. `MUJOCO_GL=egl python ...` (or osmesa), "
            "with EGL (libegl1) or OSMesa installed."
        ) from e


def _gif_frame(rgb: np.ndarray) -> PIL.Image.Image:
    """`rgb` with its own adaptive 256-colour palette: what Pillow's GIF writer makes of an RGB
    frame (the file is byte-identical), done at capture so that a kept frame takes 1 byte per
    pixel rather than 3: 64 KiB at 256x256 instead of 192 KiB."""
    return PIL.Image.fromarray(rgb).convert("P", palette=PIL.Image.Palette.ADAPTIVE)


def _write_gif(frames: Sequence[PIL.Image.Image], path: Path, fps: int) -> None:
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps),
                   loop=0)
