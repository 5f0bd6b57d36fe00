"""Simulated robot pushing in the layout of BAIR, rendered on the CPU with pybullet.

A Franka Panda from `pybullet_data` stands at the back of a table and pushes 2-4 primitive
objects of random shape, size and colour. Its end effector follows smooth random moves at
table height, steered through the objects often enough that most sequences contain pushes.
A fixed camera looks at the table from above and in front, as BAIR's does.

Conventions (the same as BAIR, so real and simulated data share every later stage):
  frames[t]    the image at time t, uint8 (H, W, 3)
  positions[t] the end-effector position at time t (metres, world frame)
  actions[t]   the command executed between frame t and t+1: end-effector delta x, y, z and a
               gripper value (1 open, 0 closed)
"""
from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

TABLE_TOP = 0.626  # height of table/table.urdf's top surface, measured from its AABB
EE_LINK = 11  # panda_grasptarget: the point between the fingertips
ARM_JOINTS = range(7)
FINGER_JOINTS = (9, 10)
HOME = (0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785)  # a bent-over pose that IK starts from

# Where the gripper may go and the objects may lie (x away from the robot, y sideways).
WORKSPACE_LOW = np.array([0.35, -0.25])
WORKSPACE_HIGH = np.array([0.75, 0.25])
EE_HEIGHT = TABLE_TOP + 0.025  # fingertips just above the table, low enough to push
MAX_SPEED = 0.03  # metres per frame
SUBSTEPS = 12  # physics steps of 1/240 s per frame: 20 frames per second


def generate_sequence(seed: int, num_frames: int = 30, image_size: int = 64) -> dict:
    """One sequence: frames (T, H, W, 3) uint8, actions (T, 4) and positions (T, 3) float32."""
    rng = np.random.default_rng(seed)
    with _quiet_stdout():  # pybullet's C code prints its argv on connect
        sim = BulletClient(connection_mode=pybullet.DIRECT)
    try:
        scene = _Scene(sim, rng)
        view, projection = _camera(sim, rng)
        frames, actions, positions = [], [], []
        for _ in range(num_frames):
            frames.append(_render(sim, view, projection, image_size))
            positions.append(scene.ee_position())
            action = scene.next_action()
            scene.apply(action)
            actions.append(action)
        return {
            "frames": np.stack(frames),
            "actions": np.asarray(actions, np.float32),
            "positions": np.asarray(positions, np.float32),
        }
    finally:
        sim.disconnect()


@contextlib.contextmanager
def _quiet_stdout():
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


class _Scene:
    def __init__(self, sim: BulletClient, rng: np.random.Generator):
        self.sim, self.rng = sim, rng
        sim.setAdditionalSearchPath(pybullet_data.getDataPath())
        sim.setGravity(0, 0, -9.81)
        sim.loadURDF("plane.urdf")
        table = sim.loadURDF("table/table.urdf", [0.5, 0, 0])
        sim.changeVisualShape(table, -1, rgbaColor=[*rng.uniform(0.45, 0.8, 3), 1])
        self.robot = sim.loadURDF("franka_panda/panda.urdf", [0, 0, TABLE_TOP], useFixedBase=True)
        self.objects = [self._add_object() for _ in range(rng.integers(2, 5))]

        self.target = np.array([*rng.uniform(WORKSPACE_LOW, WORKSPACE_HIGH), EE_HEIGHT])
        self.velocity = np.zeros(3)
        self.gripper = float(rng.integers(0, 2))
        self.waypoint = self._pick_waypoint()
        # IK is iterative and local: start from a bent pose, not the singular straight-up one,
        # and refine a few times, placing the arm exactly where the first action starts.
        for joint, angle in zip(ARM_JOINTS, HOME):
            sim.resetJointState(self.robot, joint, angle)
        for _ in range(3):
            for joint, angle in zip(ARM_JOINTS, self._inverse_kinematics(self.target)):
                sim.resetJointState(self.robot, joint, angle)
        self.apply(np.array([0, 0, 0, self.gripper]), substeps=48)  # objects settle, arm holds

    def _add_object(self) -> int:
        sim, rng = self.sim, self.rng
        colour = [*rng.uniform(0.05, 1.0, 3), 1]
        shape = rng.choice(["box", "cylinder", "sphere"], p=[0.5, 0.35, 0.15])
        size = rng.uniform(0.03, 0.05)
        if shape == "box":
            half = [size, rng.uniform(0.02, 0.045), rng.uniform(0.02, 0.04)]
            kwargs, height = {"halfExtents": half}, half[2]
        elif shape == "cylinder":
            length = rng.uniform(0.04, 0.08)
            kwargs, height = {"radius": size, "height": length}, length / 2
        else:
            kwargs, height = {"radius": size}, size
        collision = sim.createCollisionShape(getattr(pybullet, f"GEOM_{shape.upper()}"), **kwargs)
        if shape == "cylinder":  # the collision and visual APIs name the length differently
            kwargs = {"radius": size, "length": kwargs["height"]}
        visual = sim.createVisualShape(
            getattr(pybullet, f"GEOM_{shape.upper()}"), rgbaColor=colour, **kwargs
        )
        xy = rng.uniform(WORKSPACE_LOW + 0.03, WORKSPACE_HIGH - 0.03)
        yaw = rng.uniform(0, math.pi)
        body = sim.createMultiBody(
            baseMass=rng.uniform(0.1, 0.4),
            baseCollisionShapeIndex=collision,
            baseVisualShapeIndex=visual,
            basePosition=[*xy, TABLE_TOP + height + 0.002],
            baseOrientation=sim.getQuaternionFromEuler([0, 0, yaw]),
        )
        sim.changeDynamics(body, -1, lateralFriction=0.6)
        return body

    def _pick_waypoint(self) -> np.ndarray:
        """Half the time through an object (and past it, to push it), else anywhere."""
        if self.rng.random() < 0.6:
            body = self.objects[self.rng.integers(len(self.objects))]
            xy = np.array(self.sim.getBasePositionAndOrientation(body)[0][:2])
            direction = xy - self.target[:2]
            xy = xy + 0.08 * direction / (np.linalg.norm(direction) + 1e-6)
        else:
            xy = self.rng.uniform(WORKSPACE_LOW, WORKSPACE_HIGH)
        return np.clip(xy, WORKSPACE_LOW, WORKSPACE_HIGH)

    def next_action(self) -> np.ndarray:
        """A smooth move toward the current waypoint, with noise; (dx, dy, dz, gripper)."""
        to_waypoint = self.waypoint - self.target[:2]
        if np.linalg.norm(to_waypoint) < 0.02:
            self.waypoint = self._pick_waypoint()
            to_waypoint = self.waypoint - self.target[:2]
        desired = np.zeros(3)
        desired[:2] = to_waypoint / max(np.linalg.norm(to_waypoint), 1e-6) * MAX_SPEED
        desired[:2] += self.rng.normal(0, 0.008, 2)
        desired[2] = self.rng.normal(0, 0.004)
        self.velocity = 0.6 * self.velocity + 0.4 * desired  # low-pass: smooth, like a hand
        step = self.velocity.copy()
        new_xy = np.clip(self.target[:2] + step[:2], WORKSPACE_LOW, WORKSPACE_HIGH)
        new_z = np.clip(self.target[2] + step[2], EE_HEIGHT, EE_HEIGHT + 0.06)
        step = np.array([*(new_xy - self.target[:2]), new_z - self.target[2]])
        if self.rng.random() < 0.08:
            self.gripper = 1.0 - self.gripper
        return np.array([*step, self.gripper], np.float32)

    def apply(self, action: np.ndarray, substeps: int = SUBSTEPS) -> None:
        self.target = self.target + action[:3]
        angles = self._inverse_kinematics(self.target)
        self.sim.setJointMotorControlArray(
            self.robot, list(ARM_JOINTS), pybullet.POSITION_CONTROL,
            targetPositions=angles, forces=[200.0] * 7,
        )
        self._set_fingers(float(action[3]))
        for _ in range(substeps):
            self.sim.stepSimulation()

    def _inverse_kinematics(self, position: np.ndarray) -> list[float]:
        pointing_down = self.sim.getQuaternionFromEuler([math.pi, 0, 0])
        angles = self.sim.calculateInverseKinematics(
            self.robot, EE_LINK, position.tolist(), pointing_down, maxNumIterations=50,
        )
        return list(angles[:7])

    def _set_fingers(self, opening: float) -> None:
        for joint in FINGER_JOINTS:
            self.sim.setJointMotorControl2(
                self.robot, joint, pybullet.POSITION_CONTROL, targetPosition=0.04 * opening, force=20
            )

    def ee_position(self) -> np.ndarray:
        state = self.sim.getLinkState(self.robot, EE_LINK, computeForwardKinematics=True)
        return np.asarray(state[4], np.float32)


def _camera(sim: BulletClient, rng: np.random.Generator):
    """BAIR's view: in front of the table, above it, looking back at the robot. A small jitter
    per sequence keeps the model from memorising one exact viewpoint."""
    view = sim.computeViewMatrixFromYawPitchRoll(
        cameraTargetPosition=[0.45, 0, TABLE_TOP],
        distance=1.05 + rng.uniform(-0.03, 0.03),
        yaw=90 + rng.uniform(-4, 4),
        pitch=-42 + rng.uniform(-3, 3),
        roll=0,
        upAxisIndex=2,
    )
    projection = sim.computeProjectionMatrixFOV(fov=50, aspect=1.0, nearVal=0.1, farVal=3.0)
    return view, projection


def _render(sim: BulletClient, view, projection, size: int) -> np.ndarray:
    """TinyRenderer at twice the size, then a 2x2 box filter: cheap anti-aliasing."""
    _, _, rgba, _, _ = sim.getCameraImage(
        2 * size, 2 * size, view, projection, renderer=pybullet.ER_TINY_RENDERER
    )
    rgb = np.asarray(rgba, np.uint8).reshape(2 * size, 2 * size, 4)[..., :3].astype(np.float32)
    rgb = rgb.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))  # (H, W, 3)
    return np.rint(rgb).astype(np.uint8)
