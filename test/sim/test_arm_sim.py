"""ArmSim on inline MJCF models and the bundled scenes."""
import numpy as np
import pytest

import pvrnn_ros.sim  # noqa: F401  (first: picks a headless MUJOCO_GL before mujoco loads)

pytest.importorskip("mujoco")

from pvrnn_ros.sim import available_scenes, scene_path  # noqa: E402
from pvrnn_ros.sim.arm_sim import ArmSim, gl_backend  # noqa: E402
from pvrnn_ros.sim.primitives import DEFAULT_JOINT_NAMES, Demonstrator  # noqa: E402

# A user's 3-joint model: two position-controlled hinges + a slide, a passive joint, and a
# motor-driven hinge; names deliberately unrelated to arm7.
TWO_LINK = """
<mujoco model="user_arm">
  <compiler angle="radian"/>
  <option timestep="0.001"/>
  <worldbody>
    <body name="l1" pos="0 0 1">
      <joint name="hip" type="hinge" axis="0 1 0" limited="true" range="-1 1" damping="1" armature="0.01"
             solreflimit="0.002 1"/>
      <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.03" mass="1"/>
      <body name="l2" pos="0.3 0 0">
        <joint name="passive" type="hinge" axis="1 0 0" range="-0.1 0.1" limited="true"/>
        <joint name="knee" type="hinge" axis="0 1 0" limited="true" range="0 1.5" damping="1" armature="0.01"
               solreflimit="0.002 1"/>
        <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.03" mass="0.5"/>
        <body name="l3" pos="0.3 0 0">
          <joint name="slider" type="slide" axis="1 0 0" limited="true" range="0 0.1" damping="5"
                 solreflimit="0.002 1"/>
          <geom type="box" size="0.02 0.02 0.02" mass="0.1"/>
          <body name="l4">
            <joint name="spin" type="hinge" axis="1 0 0" damping="0.1"/>
            <geom type="sphere" size="0.02" mass="0.05"/>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator>
    <position joint="knee" kp="200" kv="5"/>
    <position joint="hip" kp="300" kv="10"/>
    <position joint="slider" kp="500" kv="20"/>
    <motor joint="spin" gear="1"/>
  </actuator>
</mujoco>
"""


def test_inline_model_joint_names_order_and_limits():
    sim = ArmSim(TWO_LINK, control_dt=0.01)
    # model order, only actuated hinge/slide joints (passive joint excluded)
    assert sim.joint_names == ["hip", "knee", "slider", "spin"]
    assert sim.physics_dt == 0.001 and sim.control_dt == pytest.approx(0.01) and sim.n_substeps == 10
    lo, hi = sim.joint_limits(["knee", "hip", "slider"])
    np.testing.assert_array_equal(lo, [0.0, -1.0, 0.0])
    np.testing.assert_array_equal(hi, [1.5, 1.0, 0.1])
    lo, hi = sim.joint_limits(["spin"])
    assert lo[0] == -np.inf and hi[0] == np.inf


def test_tracking_reaches_target_with_real_lag():
    sim = ArmSim(TWO_LINK, control_dt=0.01)
    sim.set_targets([0.5, 1.0], ["hip", "knee"])
    sim.step()
    knee = sim.positions(["knee"])[0]
    assert 0.02 < knee < 0.5  # moving towards 1.0 but not there yet: real dynamics
    for _ in range(200):
        sim.step()
    np.testing.assert_allclose(sim.positions(["hip", "knee"]), [0.5, 1.0], atol=0.03)
    assert sim.time == pytest.approx(2.01)
    np.testing.assert_allclose(sim.velocities(["hip", "knee"]), 0.0, atol=0.05)


def test_extreme_targets_are_clipped_and_limits_respected():
    sim = ArmSim(TWO_LINK, control_dt=0.01)
    applied = sim.set_targets([100.0, -100.0, 5.0], ["hip", "knee", "slider"])
    np.testing.assert_array_equal(applied, [1.0, 0.0, 0.1])
    np.testing.assert_array_equal(sim.targets(["hip", "knee", "slider"]), [1.0, 0.0, 0.1])
    worst = -np.inf
    for k in range(300):
        sign = 1 if (k // 50) % 2 == 0 else -1
        sim.set_targets([sign * 1e6, -sign * 1e6, sign * 1e3], ["hip", "knee", "slider"])
        sim.step()
        q = sim.positions(["hip", "knee", "slider"])
        lo, hi = sim.joint_limits(["hip", "knee", "slider"])
        worst = max(worst, np.max(np.maximum(lo - q, q - hi)))
    assert worst < 0.02  # soft-constraint penetration only, never beyond the limits


def test_bundled_arm_respects_limits_under_extreme_targets():
    sim = ArmSim(scene_path("arm7"))
    lo, hi = sim.joint_limits()
    for k in range(150):
        sim.set_targets(np.where((k // 30) % 2 == 0, 1e3, -1e3) * np.ones(7))
        sim.step()
        q = sim.positions()
        assert np.all(q >= lo - 0.02) and np.all(q <= hi + 0.02)


def test_control_dt_must_be_a_multiple_of_the_timestep():
    with pytest.raises(ValueError, match=r"control_dt=0\.0155 .*physics timestep 0\.001"):
        ArmSim(TWO_LINK, control_dt=0.0155)
    with pytest.raises(ValueError, match="control_dt"):
        ArmSim(TWO_LINK, control_dt=0.0)
    with pytest.raises(ValueError, match=r"0\.002"):
        ArmSim(scene_path("arm7"), control_dt=0.025)
    assert ArmSim(scene_path("arm7"), control_dt=0.004).n_substeps == 2


def test_malformed_mjcf_gives_clear_error(tmp_path):
    bad = tmp_path / "broken_arm.xml"
    bad.write_text("<mujoco><worldbody><body><joint name='j' type='hingee'/></body></worldbody></mujoco>")
    with pytest.raises(ValueError, match=r"broken_arm\.xml.*hingee|broken_arm\.xml[\s\S]*type"):
        ArmSim(bad)
    with pytest.raises(ValueError, match="XML string"):
        ArmSim("<mujoco><worldbody><body></mujoco>")
    with pytest.raises(FileNotFoundError, match="no_such.xml"):
        ArmSim(tmp_path / "no_such.xml")
    with pytest.raises(ValueError, match="no hinge/slide joint is driven"):
        ArmSim("<mujoco><worldbody><body><joint type='hinge'/><geom size='.1'/></body></worldbody></mujoco>")


def test_unknown_joint_and_wrong_length_errors():
    sim = ArmSim(TWO_LINK, control_dt=0.01)
    with pytest.raises(ValueError, match=r"unknown joint name\(s\) \['elbow'\].*known joints: \['hip', 'knee'"):
        sim.set_targets([0.1], ["elbow"])
    with pytest.raises(ValueError, match="elbow"):
        sim.positions(["hip", "elbow"])
    with pytest.raises(ValueError, match="got 2 target values for 3 joints"):
        sim.set_targets([0.1, 0.2], ["hip", "knee", "slider"])
    with pytest.raises(ValueError, match="got 3 target values for 4 joints"):
        sim.set_targets([0.1, 0.2, 0.0])
    with pytest.raises(ValueError, match="not driven by a position actuator"):
        sim.set_targets([1.0], ["spin"])
    with pytest.raises(ValueError, match="finite"):
        sim.set_targets([np.nan], ["hip"])


def test_reset_positions_dict_and_array_and_mapping_targets():
    sim = ArmSim(TWO_LINK, control_dt=0.01)
    sim.set_targets({"hip": 0.4})
    sim.step(5)
    assert sim.time == pytest.approx(0.05)
    sim.reset(positions={"knee": 0.7, "hip": -0.2})
    assert sim.time == 0.0
    np.testing.assert_allclose(sim.positions(["hip", "knee"]), [-0.2, 0.7])
    # targets follow the reset positions: the arm holds still
    np.testing.assert_allclose(sim.targets(["hip", "knee"]), [-0.2, 0.7])
    sim.reset(positions=[0.3, 0.2, 0.05, 0.0])
    np.testing.assert_allclose(sim.positions(), [0.3, 0.2, 0.05, 0.0])
    with pytest.raises(ValueError, match="positions has 2 values for 4 joints"):
        sim.reset(positions=[0.1, 0.2])


def test_reset_seed_noise_is_reproducible():
    a = ArmSim(TWO_LINK, control_dt=0.01, init_noise=0.05)
    a.reset(seed=4)
    qa = a.positions()
    a.reset(seed=4)
    np.testing.assert_array_equal(a.positions(), qa)
    a.reset(seed=5)
    assert not np.array_equal(a.positions(), qa)
    assert a.seed == 5


def test_same_targets_give_bit_identical_physics():
    def run():
        sim = ArmSim(scene_path("arm7"))
        demo = Demonstrator(sim.joint_names, *sim.joint_limits(), seed=2)
        out = []
        for _ in range(100):
            sim.set_targets(demo.sample(sim.time))
            sim.step()
            out.append(sim.positions())
        return np.stack(out)

    np.testing.assert_array_equal(run(), run())


def test_bundled_scenes_and_prefix_helpers():
    assert available_scenes() == ["arm7", "teacher_learner"]
    arm = ArmSim(scene_path("arm7"))
    assert arm.joint_names == list(DEFAULT_JOINT_NAMES)
    np.testing.assert_allclose(arm.positions(), Demonstrator().home)  # "home" keyframe
    assert arm.physics_dt == 0.002 and arm.control_dt == pytest.approx(0.02)
    two = ArmSim(scene_path("teacher_learner"))
    teacher = two.robot_joints("teacher_")
    learner = two.robot_joints("learner_")
    assert teacher == ["teacher_" + n for n in DEFAULT_JOINT_NAMES]
    assert learner == ["learner_" + n for n in DEFAULT_JOINT_NAMES]
    assert [ArmSim.strip_prefix(n, "teacher_") for n in teacher] == list(DEFAULT_JOINT_NAMES)
    assert ArmSim.strip_prefix("elbow", "teacher_") == "elbow"
    with pytest.raises(ValueError, match="no actuated joint starts with 'robot2_'"):
        two.robot_joints("robot2_")
    # arms ~1 m apart
    import mujoco

    y = [two.data.body(f"{p}base").xpos[1] for p in ("teacher_", "learner_")]
    assert abs(y[0] - y[1]) == pytest.approx(1.0)
    # driving the teacher leaves the learner still
    two.set_targets(two.positions(teacher) + 0.3, teacher)
    q_l = two.positions(learner)
    two.step(20)
    assert np.max(np.abs(two.positions(teacher) - two.positions(learner))) > 0.2
    np.testing.assert_allclose(two.positions(learner), q_l, atol=1e-6)
    assert mujoco.mj_name2id(two.model, mujoco.mjtObj.mjOBJ_ACTUATOR, "teacher_elbow") >= 0


def test_scene_path_unknown_lists_available():
    with pytest.raises(ValueError, match="unknown scene 'arm9'.*arm7, teacher_learner"):
        scene_path("arm9")


def test_render_or_clear_error():
    sim = ArmSim(scene_path("teacher_learner"))
    try:
        frame = sim.render(64, 48)
    except RuntimeError as exc:
        assert "OpenGL" in str(exc) and "MUJOCO_GL" in str(exc)
        print("rendering unavailable:", exc)
    else:
        print("rendered with", gl_backend())
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.std() > 0
    finally:
        sim.close()


def test_training_after_rendering_in_one_process():
    """Software GL brings its own LLVM; triton loaded after it (torch does so when an optimiser is
    first built) used to kill the process with a segmentation fault."""
    import subprocess
    import sys

    code = ("from pvrnn_ros.sim import scene_path\n"
            "from pvrnn_ros.sim.arm_sim import ArmSim\n"
            "sim = ArmSim(scene_path('arm7'))\n"
            "try:\n    sim.render(32, 24)\nexcept RuntimeError as exc:\n    print('no GL:', exc)\n"
            "import torch\n"
            "torch.optim.Adam([torch.zeros(2, requires_grad=True)])\n"
            "print('trained after rendering')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "trained after rendering" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


def test_bench_script_reports_rtf(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(repo / "bench" / "sim_rtf.py"), "--steps", "100"],
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    lines = [ln for ln in out.splitlines() if "RTF" in ln]
    assert [ln.split(":")[0] for ln in lines] == ["arm7", "teacher_learner"]
    for ln in lines:
        assert float(ln.rsplit("RTF", 1)[1].strip().rstrip("x")) > 1.0  # faster than real time
