import os

# Headless offscreen rendering: choose EGL unless the user picked a backend or has a display.
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"
