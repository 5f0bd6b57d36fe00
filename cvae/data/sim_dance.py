"""sim-dance: a dancer rendered with pybullet from the motion-capture clips in `pybullet_data`.

Every frame is a 32 (H) x 64 (W) RGB image and a pose *label image* of the same size: the
skeleton projected with the same camera and drawn in fixed colours on black, one colour per bone,
as a pose estimator's output would be drawn (the course's labels look like this).

What varies per sequence (all drawn from the sequence's seed): the chain of clips (mostly the two
dances, with the other motions for variety), where each clip starts, its playback speed, the
camera (yaw, pitch, distance, aim) and the dancer's colours. Consecutive clips are cross-faded
over a few frames so the motion never jumps. Poses between keyframes are interpolated: spherical
interpolation for the ball joints, linear for knees, elbows and the root position.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

HEIGHT, WIDTH = 32, 64
FPS = 30  # rendered frames per second of motion, before the per-clip speed factor
CROSSFADE = 8  # frames over which one clip blends into the next

# Clips and how often a chain picks them: the two dances carry the set.
MOTIONS = {"dance_a": 4, "dance_b": 4, "walk": 1, "run": 1, "jump": 1, "punch": 1, "kick": 1,
           "spin": 1}

# The humanoid's joints (pybullet_data/humanoid/humanoid.urdf, loaded with its link order), in
# the order the clips list them after the root: (name, joint index, degrees of freedom).
JOINTS = [("chest", 1, 4), ("neck", 2, 4), ("right_hip", 3, 4), ("right_knee", 4, 1),
          ("right_ankle", 5, 4), ("right_shoulder", 6, 4), ("right_elbow", 7, 1),
          ("left_hip", 9, 4), ("left_knee", 10, 1), ("left_ankle", 11, 4),
          ("left_shoulder", 12, 4), ("left_elbow", 13, 1)]
ROOT = -1  # pybullet's index of the base link

# Keypoints of the label: (name, link, where). "joint" is the link's joint position (its frame
# origin), "centre" its centre of mass (the head and the feet have no joint at their tip).
KEYPOINTS = {"pelvis": (ROOT, "joint"), "chest": (1, "joint"), "neck": (2, "joint"),
             "head": (2, "centre"),
             "right_hip": (3, "joint"), "right_knee": (4, "joint"), "right_ankle": (5, "joint"),
             "right_foot": (5, "centre"),
             "right_shoulder": (6, "joint"), "right_elbow": (7, "joint"), "right_wrist": (8, "joint"),
             "left_hip": (9, "joint"), "left_knee": (10, "joint"), "left_ankle": (11, "joint"),
             "left_foot": (11, "centre"),
             "left_shoulder": (12, "joint"), "left_elbow": (13, "joint"), "left_wrist": (14, "joint")}

# Bones of the label and their fixed colours: warm on the right side, cool on the left, as pose
# estimators draw them, so the label tells left from right.
BONES = [("pelvis", "chest", (255, 255, 255)), ("chest", "neck", (200, 200, 200)),
         ("neck", "head", (255, 0, 255)),
         ("neck", "right_shoulder", (255, 128, 0)), ("right_shoulder", "right_elbow", (255, 200, 0)),
         ("right_elbow", "right_wrist", (255, 255, 0)),
         ("neck", "left_shoulder", (0, 128, 255)), ("left_shoulder", "left_elbow", (0, 200, 255)),
         ("left_elbow", "left_wrist", (0, 255, 255)),
         ("pelvis", "right_hip", (255, 0, 0)), ("right_hip", "right_knee", (200, 0, 0)),
         ("right_knee", "right_ankle", (150, 0, 0)), ("right_ankle", "right_foot", (255, 100, 100)),
         ("pelvis", "left_hip", (0, 255, 0)), ("left_hip", "left_knee", (0, 200, 0)),
         ("left_knee", "left_ankle", (0, 150, 0)), ("left_ankle", "left_foot", (100, 255, 100))]


# --- the clips ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pose:
    root_position: tuple  # (x, y, z), y up, as the clips store it
    root_orientation: tuple  # quaternion (x, y, z, w), pybullet's order
    joints: tuple  # one entry per JOINTS: a quaternion (x, y, z, w) or a 1-tuple angle


class Clip:
    """One motion-capture clip: keyframes with durations, looping (`wrap`) or not."""

    def __init__(self, name: str):
        import pybullet_data

        path = Path(pybullet_data.getDataPath()) / "data" / "motions" / f"humanoid3d_{name}.txt"
        data = json.loads(path.read_text())
        self.name, self.loops = name, data.get("Loop") == "wrap"
        self.keyframes = [_pose_of(frame) for frame in data["Frames"]]
        durations = np.array([frame[0] for frame in data["Frames"]][:-1])
        self.times = np.concatenate([[0.0], np.cumsum(durations)])  # of each keyframe
        self.duration = float(self.times[-1])

    def pose_at(self, seconds: float) -> Pose:
        """The pose at `seconds` into the clip, wrapped for looping clips, held at the end of
        the others."""
        if self.loops:
            seconds = seconds % self.duration
        seconds = min(max(seconds, 0.0), self.duration)
        k = min(int(np.searchsorted(self.times, seconds, side="right")) - 1, len(self.times) - 2)
        span = self.times[k + 1] - self.times[k]
        fraction = (seconds - self.times[k]) / span if span > 0 else 0.0
        return blend(self.keyframes[k], self.keyframes[k + 1], fraction)


def _pose_of(frame: list) -> Pose:
    """A clip's keyframe: duration, root position, root quaternion (w, x, y, z), then each joint
    (quaternions in w, x, y, z order) -> a Pose in pybullet's (x, y, z, w) order."""
    values, at = frame[1:], 0

    def take(n):
        nonlocal at
        chunk, at = values[at : at + n], at + n
        return tuple(chunk)

    position = take(3)
    orientation = _xyzw(take(4))
    joints = tuple(_xyzw(take(4)) if dof == 4 else take(1) for _, _, dof in JOINTS)
    return Pose(position, orientation, joints)


def _xyzw(wxyz: tuple) -> tuple:
    w, x, y, z = wxyz
    return (x, y, z, w)


def slerp(q0, q1, fraction: float) -> tuple:
    """Spherical interpolation between unit quaternions (the short way round)."""
    q0, q1 = np.asarray(q0, dtype=np.float64), np.asarray(q1, dtype=np.float64)
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear, then normalise
        q = q0 + fraction * (q1 - q0)
    else:
        angle = math.acos(dot)
        q = (math.sin((1 - fraction) * angle) * q0 + math.sin(fraction * angle) * q1) / math.sin(angle)
    return tuple(q / np.linalg.norm(q))


def blend(a: Pose, b: Pose, fraction: float) -> Pose:
    """The pose `fraction` of the way from `a` to `b`."""
    lerp = lambda x, y: tuple(u + fraction * (v - u) for u, v in zip(x, y))  # noqa: E731
    joints = tuple(slerp(p, q, fraction) if len(p) == 4 else lerp(p, q)
                   for p, q in zip(a.joints, b.joints))
    return Pose(lerp(a.root_position, b.root_position),
                slerp(a.root_orientation, b.root_orientation, fraction), joints)


@lru_cache(maxsize=None)
def load_clip(name: str) -> Clip:
    return Clip(name)


# --- choreography: which pose at which frame ----------------------------------------------------

def choreography(rng: np.random.Generator, length: int) -> list[Pose]:
    """`length` poses: a chain of clips, each from a random start at a random speed, the root
    kept above the origin (the camera follows the dancer), cross-faded from one clip to the next."""
    names, weights = list(MOTIONS), np.array(list(MOTIONS.values()), dtype=float)
    poses: list[Pose] = []
    while len(poses) < length:
        clip = load_clip(str(rng.choice(names, p=weights / weights.sum())))
        speed = rng.uniform(0.7, 1.3)
        start = rng.uniform(0, clip.duration)
        frames = int(rng.integers(45, 150))  # 1.5 to 5 seconds of this clip
        if not clip.loops:
            start = rng.uniform(0, 0.3 * clip.duration)
            frames = max(CROSSFADE + 1, int((clip.duration - start) * FPS / speed))
        segment = [clip.pose_at(start + i * speed / FPS) for i in range(frames)]
        anchor = segment[0].root_position
        segment = [_centred(p, anchor) for p in segment]
        if poses:  # blend the end of the chain into this clip
            overlap = min(CROSSFADE, len(poses), len(segment))
            for i in range(overlap):
                w = (i + 1) / (overlap + 1)
                poses[len(poses) - overlap + i] = blend(poses[len(poses) - overlap + i], segment[i], w)
            segment = segment[overlap:]
        poses.extend(segment)
    return poses[:length]


def _centred(pose: Pose, anchor: tuple) -> Pose:
    """The pose moved so the clip's first root position is above the origin (height kept)."""
    x, y, z = pose.root_position
    return Pose((x - anchor[0], y, z - anchor[2]), pose.root_orientation, pose.joints)


# --- rendering ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Look:
    """What the camera and the costume look like, fixed for one sequence."""
    yaw: float  # degrees about the vertical axis
    pitch: float
    distance: float
    target: tuple  # (x, y, z) the camera aims at
    colours: tuple  # RGBA per body part: torso and head, arms, legs
    background: tuple  # RGB behind the dancer
    light: tuple  # light direction


def random_look(rng: np.random.Generator) -> Look:
    colours = tuple(tuple(rng.uniform(0.15, 1.0, 3)) + (1.0,) for _ in range(3))
    background = tuple(int(c) for c in rng.integers(20, 120, 3))
    return Look(yaw=rng.uniform(-35, 35), pitch=rng.uniform(-12, 4), distance=rng.uniform(2.0, 2.4),
                target=(rng.uniform(-0.2, 0.2), rng.uniform(0.75, 0.9), 0.0), colours=colours,
                background=background, light=(rng.uniform(-1, 1), 2.0, rng.uniform(0.5, 1.5)))


ARMS = {6, 7, 8, 12, 13, 14}
LEGS = {3, 4, 5, 9, 10, 11}


class Stage:
    """A pybullet world (DIRECT, TinyRenderer on the CPU) holding the humanoid."""

    def __init__(self):
        import pybullet
        import pybullet_data
        from pybullet_utils import bullet_client

        self.p = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
        self.p.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.body = self.p.loadURDF("humanoid/humanoid.urdf", [0, 0.9, 0], globalScaling=0.25,
                                    useFixedBase=True, flags=pybullet.URDF_MAINTAIN_LINK_ORDER)
        self.links = range(-1, self.p.getNumJoints(self.body))

    def dress(self, look: Look):
        for link in self.links:
            part = 1 if link in ARMS else 2 if link in LEGS else 0
            self.p.changeVisualShape(self.body, link, rgbaColor=look.colours[part])

    def pose(self, pose: Pose):
        self.p.resetBasePositionAndOrientation(self.body, pose.root_position, pose.root_orientation)
        for (_, index, _), rotation in zip(JOINTS, pose.joints):
            self.p.resetJointStateMultiDof(self.body, index, list(rotation))

    def camera(self, look: Look) -> tuple[list, list]:
        view = self.p.computeViewMatrixFromYawPitchRoll(
            cameraTargetPosition=look.target, distance=look.distance, yaw=look.yaw,
            pitch=look.pitch, roll=0, upAxisIndex=1)
        projection = self.p.computeProjectionMatrixFOV(fov=45, aspect=WIDTH / HEIGHT,
                                                       nearVal=0.1, farVal=10)
        return view, projection

    def photograph(self, look: Look) -> np.ndarray:
        """The RGB frame (H, W, 3) uint8 of the current pose."""
        import pybullet

        view, projection = self.camera(look)
        _, _, rgba, _, segmentation = self.p.getCameraImage(
            WIDTH, HEIGHT, view, projection, lightDirection=list(look.light), shadow=0,
            renderer=pybullet.ER_TINY_RENDERER)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(HEIGHT, WIDTH, 4)[..., :3].copy()
        empty = np.asarray(segmentation).reshape(HEIGHT, WIDTH) < 0  # no body at this pixel
        rgb[empty] = look.background
        return rgb

    def keypoints(self) -> dict[str, np.ndarray]:
        """World position (3,) of every keypoint of the current pose."""
        out = {}
        for name, (link, where) in KEYPOINTS.items():
            if link == ROOT:
                out[name] = np.array(self.p.getBasePositionAndOrientation(self.body)[0])
            else:
                state = self.p.getLinkState(self.body, link, computeForwardKinematics=True)
                out[name] = np.array(state[4] if where == "joint" else state[0])
        return out


def project(points: dict[str, np.ndarray], view: list, projection: list) -> dict[str, np.ndarray]:
    """World points -> pixel coordinates (x right, y down) with pybullet's camera matrices
    (column-major 4x4 lists)."""
    matrix = np.asarray(projection).reshape(4, 4).T @ np.asarray(view).reshape(4, 4).T
    out = {}
    for name, point in points.items():
        clip = matrix @ np.append(point, 1.0)
        ndc = clip[:3] / clip[3]
        out[name] = np.array([(ndc[0] + 1) / 2 * WIDTH, (1 - ndc[1]) / 2 * HEIGHT])
    return out


def draw_label(pixels: dict[str, np.ndarray]) -> np.ndarray:
    """The label image (H, W, 3) uint8: every bone a 1-pixel line in its colour on black, drawn
    in BONES order (later bones on top), then a dot on every keypoint in its bone's colour."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (WIDTH, HEIGHT), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for start, end, colour in BONES:
        draw.line([tuple(pixels[start]), tuple(pixels[end])], fill=colour, width=1)
    return np.asarray(image, dtype=np.uint8).copy()


_STAGE: Stage | None = None


def generate_sequence(seed: int, length: int) -> dict[str, np.ndarray]:
    """One sequence: frames and labels, each (length, H, W, 3) uint8, determined by `seed`."""
    global _STAGE
    if _STAGE is None:  # one world per process, reused by every sequence it renders
        _STAGE = Stage()
    rng = np.random.default_rng(seed)
    poses = choreography(rng, length)
    look = random_look(rng)
    _STAGE.dress(look)
    view, projection = _STAGE.camera(look)
    frames = np.empty((length, HEIGHT, WIDTH, 3), np.uint8)
    labels = np.empty_like(frames)
    for t, pose in enumerate(poses):
        _STAGE.pose(pose)
        frames[t] = _STAGE.photograph(look)
        labels[t] = draw_label(project(_STAGE.keypoints(), view, projection))
    return {"frames": frames, "labels": labels}
