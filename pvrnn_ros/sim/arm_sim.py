"""ArmSim: a thin, name-based wrapper around a MuJoCo model of position-controlled arms.

Works with any MJCF whose hinge/slide joints are driven by actuators (the bundled scenes or a
user's model). Everything is addressed by joint *name*; position targets go to the position
actuator driving that joint and are clipped to the joint's limits.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

# Headless default: without a display, GLFW cannot work; EGL is the usual offscreen backend.
# Has an effect only if mujoco has not been imported yet and the user did not choose one.
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"

import mujoco  # noqa: E402

__all__ = ["ArmSim", "gl_backend", "load_model"]

_NAME = mujoco.mjtObj
_HINGE_SLIDE = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))


def load_model(mjcf) -> tuple[mujoco.MjModel, str]:
    """Compile an MJCF given as a file path, an XML string or an `mujoco.MjSpec`; returns (model, label).

    A malformed model raises ValueError with MuJoCo's message and the file name.
    """
    if isinstance(mjcf, mujoco.MjSpec):
        label = f"<MjSpec {mjcf.modelname}>"
        try:
            return mjcf.compile(), label
        except ValueError as exc:
            raise ValueError(f"failed to compile {label}: {exc}") from None
    if isinstance(mjcf, os.PathLike) or (isinstance(mjcf, str) and not mjcf.lstrip().startswith("<")):
        path = Path(mjcf)
        if not path.is_file():
            raise FileNotFoundError(f"MJCF file not found: {path}")
        label = str(path)
        try:
            return mujoco.MjModel.from_xml_path(str(path)), label
        except ValueError as exc:
            raise ValueError(f"failed to load MJCF {label}: {exc}") from None
    if not isinstance(mjcf, str):
        raise TypeError(f"mjcf must be a path or an XML string, got {type(mjcf).__name__}")
    label = "<XML string>"
    try:
        return mujoco.MjModel.from_xml_string(mjcf), label
    except ValueError as exc:
        raise ValueError(f"failed to load MJCF {label}: {exc}") from None


_GL_STATE: dict[str, str | None] = {"error": None}


def _load_triton_before_gl() -> None:
    """Mesa's software GL (EGL/OSMesa llvmpipe) loads its own LLVM; triton's, loaded after it,
    crashes the process with a segmentation fault, and torch imports triton the first time an
    optimiser is built (training after rendering in one process). Loaded in this order they coexist."""
    import importlib.util
    import sys

    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


def gl_backend() -> str:
    """The OpenGL backend mujoco was imported with: "egl", "osmesa", "glfw", ..."""
    module = getattr(getattr(mujoco, "GLContext", None), "__module__", "") or ""
    return module.rsplit(".", 1)[-1] if module else "none"


def _check_gl_backend() -> None:
    """Raise a clear RuntimeError if offscreen rendering cannot work in this process."""
    backend = gl_backend()
    reason = _GL_STATE["error"]
    if reason is None and backend == "glfw" and os.name == "posix" and not os.environ.get("DISPLAY") \
            and not os.environ.get("WAYLAND_DISPLAY") and os.uname().sysname == "Linux":
        reason = "GLFW needs a display and none is set"
    if backend == "none":
        reason = "mujoco has no OpenGL context support"
    if reason is not None:
        raise RuntimeError(
            f"offscreen rendering unavailable: no working OpenGL backend (mujoco uses "
            f"'{backend}', MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')}): {reason}. "
            "Install EGL or OSMesa and set MUJOCO_GL=egl or MUJOCO_GL=osmesa before mujoco is imported.")


class ArmSim:
    """Position-controlled MuJoCo arm(s), addressed by joint name.

    Args:
        mjcf: MJCF file path or XML string.
        control_dt: seconds per `step()`; must be a whole multiple of the model timestep.
        seed: seed for the reset noise generator (see `init_noise`).
        init_noise: half-width (rad or m) of uniform noise added to the initial positions
            on `reset` (0 = deterministic start).
        keyframe: keyframe used by `reset`. The default "home" falls back to the model's first
            keyframe when none is named "home" (unnamed keyframes are common), and to qpos0 when
            the model has none; any other name must exist. None: always qpos0.
    """

    def __init__(self, mjcf, control_dt: float = 0.02, seed: int | None = None,
                 init_noise: float = 0.0, keyframe: str | None = "home"):
        self.model, self.source = load_model(mjcf)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.physics_dt = float(m.opt.timestep)
        control_dt = float(control_dt)
        ratio = control_dt / self.physics_dt
        n_sub = int(round(ratio))
        if not (control_dt > 0 and n_sub >= 1 and abs(ratio - n_sub) < 1e-6 * max(1.0, ratio)):
            raise ValueError(f"control_dt={control_dt:g} s must be a positive whole multiple of the "
                             f"physics timestep {self.physics_dt:g} s (of {self.source})")
        self.n_substeps = n_sub
        self.control_dt = n_sub * self.physics_dt
        if not (init_noise >= 0 and np.isfinite(init_noise)):
            raise ValueError(f"init_noise must be >= 0, got {init_noise}")
        self.init_noise = float(init_noise)

        # joints driven by a joint-transmission actuator, in model order
        drives: dict[int, list[int]] = {}
        for a in range(m.nu):
            if int(m.actuator_trntype[a]) == int(mujoco.mjtTrn.mjTRN_JOINT):
                drives.setdefault(int(m.actuator_trnid[a, 0]), []).append(a)
        self._jids = [j for j in range(m.njnt) if int(m.jnt_type[j]) in _HINGE_SLIDE and j in drives]
        if not self._jids:
            raise ValueError(f"{self.source}: no hinge/slide joint is driven by an actuator")
        self.joint_names: list[str] = []
        for j in self._jids:
            name = mujoco.mj_id2name(m, _NAME.mjOBJ_JOINT, j)
            self.joint_names.append(name if name else f"joint{j}")
        self._index = {n: i for i, n in enumerate(self.joint_names)}
        self._qadr = np.array([m.jnt_qposadr[j] for j in self._jids])
        self._dadr = np.array([m.jnt_dofadr[j] for j in self._jids])
        limited = np.array([bool(m.jnt_limited[j]) for j in self._jids])
        rng = np.array([m.jnt_range[j] for j in self._jids], dtype=float)
        self._lower = np.where(limited, rng[:, 0], -np.inf)
        self._upper = np.where(limited, rng[:, 1], np.inf)
        # position actuator per joint: gain fixed, bias affine with bias1 = -kp
        self._act = np.full(len(self._jids), -1)
        for i, j in enumerate(self._jids):
            for a in drives[j]:
                kp = m.actuator_gainprm[a, 0]
                if (int(m.actuator_gaintype[a]) == int(mujoco.mjtGain.mjGAIN_FIXED)
                        and int(m.actuator_biastype[a]) == int(mujoco.mjtBias.mjBIAS_AFFINE)
                        and kp > 0 and np.isclose(m.actuator_biasprm[a, 1], -kp)):
                    self._act[i] = a
                    break
        self._gear = np.where(self._act >= 0, m.actuator_gear[np.maximum(self._act, 0), 0], 1.0)
        self._idx_cache: dict[tuple[str, ...], np.ndarray] = {}
        self._key = self._find_keyframe(keyframe)
        self._renderer = None
        self.seed = seed
        self.reset(seed)

    def _find_keyframe(self, keyframe: str | None) -> int:
        m = self.model
        if keyframe is None or m.nkey == 0 and keyframe == "home":
            return -1
        key = mujoco.mj_name2id(m, _NAME.mjOBJ_KEY, keyframe)
        if key >= 0:
            return key
        if keyframe == "home":
            return 0  # no "home": the model's first keyframe is its start pose
        names = [mujoco.mj_id2name(m, _NAME.mjOBJ_KEY, k) or f"<unnamed #{k}>" for k in range(m.nkey)]
        raise ValueError(f"{self.source}: no keyframe named {keyframe!r}; the model's keyframes: "
                         f"{names or 'none'}")

    @property
    def keyframe(self) -> str | None:
        """Name of the keyframe `reset` uses ("<unnamed #k>" when it has none), or None for qpos0."""
        if self._key < 0:
            return None
        return mujoco.mj_id2name(self.model, _NAME.mjOBJ_KEY, self._key) or f"<unnamed #{self._key}>"

    # ------------------------------------------------------------------ names
    def _indices(self, names: Sequence[str] | None) -> np.ndarray:
        if names is None:
            return np.arange(len(self.joint_names))
        if isinstance(names, str):
            names = [names]
        key = tuple(names)
        idx = self._idx_cache.get(key)
        if idx is None:
            unknown = [n for n in key if n not in self._index]
            if unknown:
                raise ValueError(f"unknown joint name(s) {unknown}; known joints: {self.joint_names}")
            idx = np.array([self._index[n] for n in key], dtype=int)
            self._idx_cache[key] = idx
        return idx

    def robot_joints(self, prefix: str) -> list[str]:
        """Full names of the actuated joints starting with `prefix` (e.g. "teacher_"), model order."""
        names = [n for n in self.joint_names if n.startswith(prefix)]
        if not names:
            raise ValueError(f"no actuated joint starts with {prefix!r}; known joints: {self.joint_names}")
        return names

    @staticmethod
    def strip_prefix(name: str, prefix: str) -> str:
        """`name` without a leading `prefix` ("teacher_elbow" -> "elbow"); unchanged if absent."""
        return name[len(prefix):] if prefix and name.startswith(prefix) else name

    def joint_types(self, names: Sequence[str] | None = None) -> list[str]:
        """URDF-style joint type per joint: "revolute" (limited hinge), "continuous" (unlimited
        hinge) or "prismatic" (slide)."""
        out = []
        for i in self._indices(names):
            j = self._jids[i]
            if int(self.model.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_SLIDE):
                out.append("prismatic")
            else:
                out.append("revolute" if np.isfinite(self._lower[i]) else "continuous")
        return out

    def start_positions(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Joint positions `reset` starts from (the keyframe, else qpos0), clipped to the limits."""
        m = self.model
        qpos = m.key_qpos[self._key] if self._key >= 0 else m.qpos0
        idx = self._indices(names)
        return np.clip(np.asarray(qpos)[self._qadr[idx]], self._lower[idx], self._upper[idx])

    def site_names(self, prefix: str = "") -> list[str]:
        """Names of the model's sites that start with `prefix`."""
        names = [mujoco.mj_id2name(self.model, _NAME.mjOBJ_SITE, k) or "" for k in range(self.model.nsite)]
        return [n for n in names if n and n.startswith(prefix)]

    def site_position(self, site: str) -> np.ndarray:
        """World position (x, y, z in metres) of a named site, as of the last step/reset."""
        sid = mujoco.mj_name2id(self.model, _NAME.mjOBJ_SITE, site)
        if sid < 0:
            raise ValueError(f"{self.source}: no site named {site!r}; sites: {self.site_names()}")
        if self._kinematics_stale:
            mujoco.mj_kinematics(self.model, self.data)  # positions only; the next mj_step redoes all
            self._kinematics_stale = False
        return self.data.site_xpos[sid].copy()

    # ------------------------------------------------------------------ state
    @property
    def time(self) -> float:
        return float(self.data.time)

    def positions(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Measured joint positions (copy)."""
        return self.data.qpos[self._qadr[self._indices(names)]].copy()

    def velocities(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Measured joint velocities (copy)."""
        return self.data.qvel[self._dadr[self._indices(names)]].copy()

    def joint_limits(self, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) joint limits; +-inf for unlimited joints."""
        idx = self._indices(names)
        return self._lower[idx].copy(), self._upper[idx].copy()

    def targets(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Current position targets (NaN for joints without a position actuator)."""
        idx = self._indices(names)
        act = self._act[idx]
        out = np.full(len(idx), np.nan)
        ok = act >= 0
        out[ok] = self.data.ctrl[act[ok]] / self._gear[idx][ok]
        return out

    def set_targets(self, values, names: Sequence[str] | None = None) -> np.ndarray:
        """Set position targets (joint units) for `names` (default: all `joint_names`).

        Targets are clipped to the joint limits (and the actuator's ctrlrange); returns the
        targets actually applied.
        """
        idx = self._indices(names)
        if isinstance(values, Mapping):
            if names is not None:
                raise ValueError("pass either a {name: value} mapping or values with names, not both")
            idx = self._indices(list(values))
            values = list(values.values())
        v = np.asarray(values, dtype=float).reshape(-1)
        if v.shape[0] != idx.shape[0]:
            raise ValueError(f"got {v.shape[0]} target values for {idx.shape[0]} joints")
        if not np.all(np.isfinite(v)):
            raise ValueError("targets must be finite")
        act = self._act[idx]
        if np.any(act < 0):
            bad = [self.joint_names[i] for i in idx[act < 0]]
            raise ValueError(f"joint(s) {bad} are not driven by a position actuator")
        v = np.clip(v, self._lower[idx], self._upper[idx])
        ctrl = v * self._gear[idx]
        m = self.model
        lim = m.actuator_ctrllimited[act].astype(bool)
        if np.any(lim):
            ctrl[lim] = np.clip(ctrl[lim], m.actuator_ctrlrange[act[lim], 0], m.actuator_ctrlrange[act[lim], 1])
        self.data.ctrl[act] = ctrl
        return ctrl / self._gear[idx]

    def step(self, n: int = 1) -> None:
        """Advance `n` control steps (n * control_dt seconds of physics)."""
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps * int(n))
        self._kinematics_stale = True  # mj_step leaves site_xpos at the pre-integration qpos

    def reset(self, seed: int | None = None, positions=None) -> None:
        """Reset time to 0 and the arm to the keyframe (if any) or the model's qpos0.

        positions: optional {name: value} dict, or an array over all `joint_names`.
        seed: reseeds the initial-position noise generator (used when init_noise > 0).
        Position targets are set to the resulting positions, so the arm holds still.
        """
        if seed is not None or not hasattr(self, "_rng"):
            if seed is not None:
                self.seed = seed
            self._rng = np.random.default_rng(self.seed)
        m, d = self.model, self.data
        if self._key >= 0:
            mujoco.mj_resetDataKeyframe(m, d, self._key)
        else:
            mujoco.mj_resetData(m, d)
        if positions is not None:
            if isinstance(positions, Mapping):
                idx = self._indices(list(positions))
                vals = np.asarray(list(positions.values()), dtype=float)
            else:
                idx = np.arange(len(self.joint_names))
                vals = np.asarray(positions, dtype=float).reshape(-1)
                if vals.shape[0] != idx.shape[0]:
                    raise ValueError(f"positions has {vals.shape[0]} values for {idx.shape[0]} joints "
                                     f"{self.joint_names}")
            d.qpos[self._qadr[idx]] = vals
        if self.init_noise > 0:
            d.qpos[self._qadr] += self._rng.uniform(-self.init_noise, self.init_noise, len(self._qadr))
        d.qpos[self._qadr] = np.clip(d.qpos[self._qadr], self._lower, self._upper)
        ok = self._act >= 0
        if np.any(ok):
            d.ctrl[self._act[ok]] = d.qpos[self._qadr[ok]] * self._gear[ok]
        mujoco.mj_forward(m, d)
        self._kinematics_stale = False

    # ------------------------------------------------------------------ rendering
    def render(self, width: int = 640, height: int = 480, camera: str | int | None = None) -> np.ndarray:
        """RGB frame (height, width, 3) uint8, rendered offscreen.

        Raises RuntimeError if no OpenGL backend works (set MUJOCO_GL=egl or osmesa before
        importing mujoco).
        """
        if self._renderer is None or (self._renderer.width, self._renderer.height) != (width, height):
            self.close()
            _check_gl_backend()
            _load_triton_before_gl()
            try:
                self._renderer = mujoco.Renderer(self.model, height=height, width=width)
            except Exception as exc:  # noqa: BLE001 - GL failures surface as many types
                # context creation failed: remember it (retrying can abort the process)
                _GL_STATE["error"] = f"{type(exc).__name__}: {exc}"
                _check_gl_backend()
                raise
        cam = -1 if camera is None else camera
        if camera is None and self.model.ncam > 0:
            cam = 0
        self._renderer.update_scene(self.data, camera=cam)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            try:
                self._renderer.close()
            except Exception:  # noqa: BLE001
                pass
            self._renderer = None

    def __repr__(self) -> str:
        return (f"ArmSim({self.source}, joints={len(self.joint_names)}, control_dt={self.control_dt:g}, "
                f"physics_dt={self.physics_dt:g})")
