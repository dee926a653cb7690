"""MuJoCo's OpenGL backend, chosen by `import fidec_zoo` before anything imports mujoco."""

import ctypes
import os
import platform


def headless_mujoco_gl() -> str | None:
    """The OpenGL backend MuJoCo should use here, or None to keep MuJoCo's own default (GLFW).

    MuJoCo fixes its backend when first imported. On Linux with no display GLFW cannot render,
    so `envs.record_video` needs EGL. EGL is chosen only where libEGL loads: OGBench imports
    MuJoCo's renderer even to step an env, so an EGL backend without libEGL (a bare GPU image,
    say) would break evaluation and data generation, which never render.
    """
    if platform.system() != "Linux" or os.environ.get("DISPLAY") or os.environ.get(
            "WAYLAND_DISPLAY"):
        return None
    try:
        ctypes.CDLL("libEGL.so.1")
    except OSError:
        return None
    return "egl"
