"""The embedded synthetic dataset: compositional skeleton actions with matching side information.

Every class is a sequence of 2 or 3 *phases*; every phase is one body-part motion *primitive*
(a body part doing one motion, with a direction, a speed and a number of repetitions). Unseen
classes are new compositions of primitives that seen classes contain, so zero-shot transfer
through text is possible and learnable: the descriptions of an unseen class name the same parts
and motions that the model saw moving in seen classes, in a new combination and order.

Primitives (part, motion, direction), 14 in all:

| key              | part      | motion               | direction                                  |
|------------------|-----------|----------------------|--------------------------------------------|
| right_arm_raise  | right arm | raise                | forward and up above the head              |
| right_arm_wave   | right arm | wave side to side    | side to side above the shoulder            |
| right_arm_push   | right arm | push forward         | straight out in front at chest height      |
| right_arm_circle | right arm | circle               | out to the side in large circles           |
| left_arm_raise   | left arm  | raise                | forward and up above the head              |
| left_arm_wave    | left arm  | wave side to side    | side to side above the shoulder            |
| left_arm_push    | left arm  | push forward         | straight out in front at chest height      |
| both_arms_raise  | both arms | raise                | up over the head                           |
| both_arms_swing  | both arms | swing                | forward and backward beside the body       |
| torso_bend       | torso     | bend down            | forward at the waist                       |
| torso_twist      | torso     | twist                | to the left and to the right               |
| legs_kick        | legs      | kick                 | forward with the right foot                |
| legs_march       | legs      | step (march)         | on the spot with alternating knees         |
| head_nod         | head      | nod                  | down and back up                           |

Classes (id: name = phases as primitive × repetitions, speed). Every primitive occurs in at least
three classes, so each class shares every one of its primitives with at least two other classes:

|  id | name                                                  | phases                                                  |
|-----|-------------------------------------------------------|---------------------------------------------------------|
|   0 | raise right arm then wave it                          | right_arm_raise×1, right_arm_wave×3 quick               |
|   1 | wave left arm then raise it                           | left_arm_wave×3 quick, left_arm_raise×1 slow            |
|   2 | push right arm forward then circle it                 | right_arm_push×2, right_arm_circle×2                    |
|   3 | raise both arms then bend down                        | both_arms_raise×1 slow, torso_bend×1                    |
|   4 | march in place then kick                              | legs_march×2, legs_kick×1 quick                         |
|   5 | nod then wave right arm                               | head_nod×2, right_arm_wave×3 quick                      |
|   6 | bend down then swing both arms                        | torso_bend×1 slow, both_arms_swing×2                    |
|   7 | raise left arm, push right arm forward, then nod      | left_arm_raise×1, right_arm_push×1 quick, head_nod×2    |
|   8 | circle right arm then march in place                  | right_arm_circle×2, legs_march×2                        |
|   9 | kick, raise both arms, then twist torso               | legs_kick×1 quick, both_arms_raise×1, torso_twist×2     |
|  10 | twist torso then push left arm forward                | torso_twist×2, left_arm_push×2                          |
|  11 | swing both arms then march in place                   | both_arms_swing×2, legs_march×2 quick                   |
|  12 | push left arm forward, wave right arm, then bend down | left_arm_push×1, right_arm_wave×2 quick, torso_bend×1   |
|  13 | nod then raise both arms                              | head_nod×1 slow, both_arms_raise×1                      |
|  14 | wave left arm, circle right arm, then twist torso     | left_arm_wave×2, right_arm_circle×1 slow, torso_twist×1 |
|  15 | raise right arm, kick, then swing both arms           | right_arm_raise×1, legs_kick×2 quick, both_arms_swing×2 |
|  16 | push right arm then left arm forward, then nod        | right_arm_push×1, left_arm_push×1, head_nod×1           |
|  17 | march in place, raise left arm, then wave it          | legs_march×2, left_arm_raise×1, left_arm_wave×3 quick   |
|  18 | twist torso, raise right arm, then nod                | torso_twist×1, right_arm_raise×1, head_nod×2 quick      |
|  19 | bend down, kick, then circle right arm                | torso_bend×1, legs_kick×1 quick, right_arm_circle×2     |

(Speeds not written are moderate; `SYNTHETIC_CLASS_TABLE` is the authoritative data.) The
published synthetic splits live in `neuron.splits` (`synthetic_default`: unseen 0, 6, 10, 13, 17;
`synthetic_alt`: unseen 2, 4, 12, 14, 18); a test checks that every primitive of every unseen
class occurs in a seen class.

Generation. A rest pose is built from bone lengths along `neuron.joints.NTU_PARENTS`; each frame
sets limb-segment directions (arm elevation/azimuth, thigh/shin flexion), a torso rotation about
spine_base and a head rotation about the neck, then runs forward kinematics. Each primitive
starts and ends at the rest pose, so phases concatenate smoothly. Per-sample variation: bone
lengths and rest posture per subject, amplitude, camera view (yaw per camera, tilt, distance and
height per setup), sequence length, phase durations and per-phase time warps, joint noise and body
sway. Subjects are split 70/30 into the train/test partitions (cross-subject). Every random draw
comes from a numpy Generator seeded by the seed and what it varies with (the subject, the setup, or
the subject, repetition and class of one sequence), so the same preset and seed give a
byte-identical Arrow file, whatever the order of generation.

Side information (`synthetic_descriptions`) is written from the same primitives in the shape of
Neuron's: three spatial rounds (coarse: which parts move; medium: parts and motions; fine: with
direction, speed and repetitions) and three temporal rounds (what happens in phase 1, 2 and 3; a
two-phase class describes its return to rest as phase 3).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from neuron.atomic import write_text_atomic
from neuron.dataset import DatasetInfo, DatasetWriter
from neuron.joints import NTU_PARENTS, NUM_NTU_JOINTS
from neuron.rounds import DESCRIPTION_ROUNDS, SPATIAL_ROUNDS, TEMPORAL_ROUNDS

Speed = Literal["slow", "moderate", "quick"]

# --------------------------------------------------------------------------------------------
# Primitives and the class table (domain data)


@dataclass(frozen=True)
class Primitive:
    """One body-part motion primitive and the words that describe it."""

    key: str
    part: str
    """Body part as named in coarse descriptions: right arm, left arm, both arms, legs, torso, head."""
    motion: str
    direction: str
    """Direction of the motion (documentation; `fine_actions` put it into words)."""
    part_phrases: tuple[str, ...]
    """Synonyms of the part, with their article, for coarse descriptions."""
    actions: tuple[str, ...]
    """Third-person verb phrases, e.g. "raises the right arm"."""
    gerunds: tuple[str, ...]
    """The same as gerunds, e.g. "raising the right arm"."""
    clauses: tuple[str, ...]
    """Clauses with the part as subject, e.g. "the right arm rises"."""
    fine_actions: tuple[str, ...]
    """Verb phrases with the direction, e.g. "raises the right arm forward and up …"."""


def _arm_primitives(side: str) -> tuple[Primitive, ...]:
    arm = f"{side} arm"
    hand = f"{side} hand"
    return (
        Primitive(
            f"{side}_arm_raise", arm, "raise", "forward and up above the head",
            (f"the {arm}", f"the {side} arm and shoulder", f"the {side} upper limb"),
            (f"raises the {arm}", f"lifts the {arm} up", f"puts the {hand} up high"),
            (f"raising the {arm}", f"lifting the {arm} up", f"putting the {hand} up high"),
            (f"the {arm} rises", f"the {arm} goes up", f"the {hand} is lifted high"),
            (f"raises the {arm} forward and up until the hand is above the head", f"lifts the {arm} in front of the body up over the head"),
        ),
        Primitive(
            f"{side}_arm_wave", arm, "wave side to side", "side to side above the shoulder",
            (f"the {arm}", f"the {side} forearm and hand", f"the {side} upper limb"),
            (f"waves the {hand}", f"waves the {arm} side to side", f"swings the raised {hand} back and forth"),
            (f"waving the {hand}", f"waving the {arm} side to side", f"swinging the raised {hand} back and forth"),
            (f"the {hand} waves", f"the {side} forearm sways side to side", f"the raised {hand} swings back and forth"),
            (f"holds the {arm} up beside the head and waves the forearm side to side", f"waves the raised {hand} side to side above the shoulder"),
        ),
        Primitive(
            f"{side}_arm_push", arm, "push forward", "straight out in front at chest height",
            (f"the {arm}", f"the {side} arm and elbow", f"the {side} upper limb"),
            (f"pushes the {arm} forward", f"thrusts the {hand} forward", f"extends the {arm} out in front"),
            (f"pushing the {arm} forward", f"thrusting the {hand} forward", f"extending the {arm} out in front"),
            (f"the {arm} pushes forward", f"the {hand} thrusts forward", f"the {side} elbow straightens forward"),
            (f"bends the {side} elbow and pushes the {hand} straight forward at chest height", f"thrusts the {arm} straight out in front at chest height"),
        ),
        Primitive(
            f"{side}_arm_circle", arm, "circle", "out to the side in large circles",
            (f"the {arm}", f"the {side} shoulder and arm", f"the {side} upper limb"),
            (f"circles the {arm}", f"rotates the {arm} in circles", f"makes circles with the outstretched {arm}"),
            (f"circling the {arm}", f"rotating the {arm} in circles", f"making circles with the outstretched {arm}"),
            (f"the {arm} circles", f"the outstretched {arm} draws circles", f"the {side} shoulder rotates the arm around"),
            (f"stretches the {arm} out to the side and swings it in large circles", f"draws large circles with the {arm} held out to the side"),
        ),
    )  # fmt: skip


PRIMITIVES: dict[str, Primitive] = {
    primitive.key: primitive
    for primitive in (
        *_arm_primitives("right"),
        *(p for p in _arm_primitives("left") if p.key != "left_arm_circle"),
        Primitive(
            "both_arms_raise", "both arms", "raise", "up over the head",
            ("both arms", "the two arms", "both upper limbs"),
            ("raises both arms", "lifts both hands up", "puts both arms up over the head"),
            ("raising both arms", "lifting both hands up", "putting both arms up over the head"),
            ("both arms rise", "the two arms go up", "both hands are lifted overhead"),
            ("raises both arms in front of the body up over the head", "lifts both arms up until the hands are above the head"),
        ),
        Primitive(
            "both_arms_swing", "both arms", "swing", "forward and backward beside the body",
            ("both arms", "the two arms", "both upper limbs"),
            ("swings both arms", "swings the arms forward and back", "lets both arms swing like pendulums"),
            ("swinging both arms", "swinging the arms forward and back", "letting both arms swing like pendulums"),
            ("both arms swing", "the two arms swing forward and back", "the hanging arms sway like pendulums"),
            ("swings both hanging arms forward and backward beside the body", "lets both arms swing back and forth beside the body like pendulums"),
        ),
        Primitive(
            "torso_bend", "torso", "bend down", "forward at the waist",
            ("the torso", "the upper body", "the trunk"),
            ("bends down", "bends the torso forward", "bows forward at the waist"),
            ("bending down", "bending the torso forward", "bowing forward at the waist"),
            ("the torso bends forward", "the upper body leans down", "the trunk bows at the waist"),
            ("bends the upper body forward at the waist", "bows down from the hips with the back leaning forward"),
        ),
        Primitive(
            "torso_twist", "torso", "twist", "to the left and to the right",
            ("the torso", "the upper body", "the trunk"),
            ("twists the torso", "turns the upper body left and right", "rotates the trunk from side to side"),
            ("twisting the torso", "turning the upper body left and right", "rotating the trunk from side to side"),
            ("the torso twists", "the upper body turns left and right", "the trunk rotates from side to side"),
            ("twists the upper body to the left and to the right", "rotates the torso from side to side around the spine"),
        ),
        Primitive(
            "legs_kick", "legs", "kick", "forward with the right foot",
            ("the legs", "the lower limbs", "the legs and feet"),
            ("kicks", "kicks the right leg forward", "does a forward kick"),
            ("kicking", "kicking the right leg forward", "doing a forward kick"),
            ("the right leg kicks forward", "the right foot swings up in a kick", "one leg kicks out in front"),
            ("lifts the right leg and kicks forward with the right foot", "kicks the straight right leg forward and up"),
        ),
        Primitive(
            "legs_march", "legs", "step", "on the spot with alternating knees",
            ("the legs", "the lower limbs", "the legs and feet"),
            ("marches in place", "steps in place", "lifts the knees one after the other"),
            ("marching in place", "stepping in place", "lifting the knees one after the other"),
            ("the legs step in place", "the knees lift alternately", "the feet march on the spot"),
            ("marches on the spot, lifting the knees alternately", "steps in place, raising one knee and then the other"),
        ),
        Primitive(
            "head_nod", "head", "nod", "down and back up",
            ("the head", "the head and neck", "the neck"),
            ("nods", "nods the head", "tilts the head down and up"),
            ("nodding", "nodding the head", "tilting the head down and up"),
            ("the head nods", "the head dips down and comes back up", "the neck bends the head forward"),
            ("nods the head down and back up", "tips the head forward and lifts it again"),
        ),
    )
}  # fmt: skip
"""The 14 primitives, keyed by `part_motion`."""


@dataclass(frozen=True)
class Phase:
    """One phase of a class: a primitive with its repetitions and speed."""

    primitive: str
    repetitions: int = 1
    speed: Speed = "moderate"


@dataclass(frozen=True)
class SyntheticClass:
    """A synthetic action class: a name and its 2 or 3 phases, in order."""

    name: str
    phases: tuple[Phase, ...]

    @property
    def primitives(self) -> tuple[str, ...]:
        return tuple(phase.primitive for phase in self.phases)


def _class(name: str, *phases: tuple[str, int, Speed] | tuple[str, int]) -> SyntheticClass:
    return SyntheticClass(name, tuple(Phase(*phase) for phase in phases))


SYNTHETIC_CLASS_TABLE: tuple[SyntheticClass, ...] = (
    _class("raise right arm then wave it", ("right_arm_raise", 1), ("right_arm_wave", 3, "quick")),
    _class("wave left arm then raise it", ("left_arm_wave", 3, "quick"), ("left_arm_raise", 1, "slow")),
    _class("push right arm forward then circle it", ("right_arm_push", 2), ("right_arm_circle", 2)),
    _class("raise both arms then bend down", ("both_arms_raise", 1, "slow"), ("torso_bend", 1)),
    _class("march in place then kick", ("legs_march", 2), ("legs_kick", 1, "quick")),
    _class("nod then wave right arm", ("head_nod", 2), ("right_arm_wave", 3, "quick")),
    _class("bend down then swing both arms", ("torso_bend", 1, "slow"), ("both_arms_swing", 2)),
    _class(
        "raise left arm, push right arm forward, then nod",
        ("left_arm_raise", 1), ("right_arm_push", 1, "quick"), ("head_nod", 2),
    ),
    _class("circle right arm then march in place", ("right_arm_circle", 2), ("legs_march", 2)),
    _class(
        "kick, raise both arms, then twist torso",
        ("legs_kick", 1, "quick"), ("both_arms_raise", 1), ("torso_twist", 2),
    ),
    _class("twist torso then push left arm forward", ("torso_twist", 2), ("left_arm_push", 2)),
    _class("swing both arms then march in place", ("both_arms_swing", 2), ("legs_march", 2, "quick")),
    _class(
        "push left arm forward, wave right arm, then bend down",
        ("left_arm_push", 1), ("right_arm_wave", 2, "quick"), ("torso_bend", 1),
    ),
    _class("nod then raise both arms", ("head_nod", 1, "slow"), ("both_arms_raise", 1)),
    _class(
        "wave left arm, circle right arm, then twist torso",
        ("left_arm_wave", 2), ("right_arm_circle", 1, "slow"), ("torso_twist", 1),
    ),
    _class(
        "raise right arm, kick, then swing both arms",
        ("right_arm_raise", 1), ("legs_kick", 2, "quick"), ("both_arms_swing", 2),
    ),
    _class(
        "push right arm then left arm forward, then nod",
        ("right_arm_push", 1), ("left_arm_push", 1), ("head_nod", 1),
    ),
    _class(
        "march in place, raise left arm, then wave it",
        ("legs_march", 2), ("left_arm_raise", 1), ("left_arm_wave", 3, "quick"),
    ),
    _class(
        "twist torso, raise right arm, then nod",
        ("torso_twist", 1), ("right_arm_raise", 1), ("head_nod", 2, "quick"),
    ),
    _class(
        "bend down, kick, then circle right arm",
        ("torso_bend", 1), ("legs_kick", 1, "quick"), ("right_arm_circle", 2),
    ),
)  # fmt: skip
"""The 20 synthetic classes in label order (see the module docstring for the table)."""

SYNTHETIC_CLASSES: tuple[str, ...] = tuple(c.name for c in SYNTHETIC_CLASS_TABLE)
"""Class names in label order."""


@dataclass(frozen=True)
class SyntheticPreset:
    """Size of a synthetic dataset."""

    subjects: int
    repetitions: int
    """Repetitions of every class by every subject."""
    min_frames: int
    max_frames: int


PRESETS: dict[str, SyntheticPreset] = {
    "tiny": SyntheticPreset(subjects=4, repetitions=2, min_frames=20, max_frames=32),
    "small": SyntheticPreset(subjects=10, repetitions=6, min_frames=40, max_frames=80),
    "default": SyntheticPreset(subjects=20, repetitions=8, min_frames=50, max_frames=110),
}
"""Presets; all use the same 20 classes, so splits do not depend on the preset."""

TRAIN_SUBJECT_FRACTION = 0.7
"""Cross-subject protocol: this fraction of the subjects forms the train partition."""

CAMERA_YAWS_DEGREES = (-45.0, 0.0, 45.0)
"""Subject orientation seen by cameras 1, 2, 3 (NTU records every action from three views)."""

NUM_SETUPS = 3
"""Camera setups (distance and height); a repetition r is recorded in setup r mod 3 + 1."""

# --------------------------------------------------------------------------------------------
# Skeleton kinematics. Body frame: x = the subject's left, y = up, z = the subject's back
# (the subject faces the camera, which looks along +z).

_UP = (0.0, 1.0, 0.0)
_REFERENCE_BONES: dict[int, tuple[float, tuple[float, float, float] | None]] = {
    1: (0.27, _UP),
    20: (0.22, _UP),
    2: (0.07, _UP),
    3: (0.14, (0.0, 0.97, -0.24)),
    4: (0.17, (1.0, -0.12, 0.0)),
    5: (0.28, None),
    6: (0.25, None),
    7: (0.07, None),
    21: (0.06, None),
    22: (0.05, None),
    8: (0.17, (-1.0, -0.12, 0.0)),
    9: (0.28, None),
    10: (0.25, None),
    11: (0.07, None),
    23: (0.06, None),
    24: (0.05, None),
    12: (0.09, (1.0, -0.3, 0.0)),
    13: (0.42, None),
    14: (0.40, None),
    15: (0.12, None),
    16: (0.09, (-1.0, -0.3, 0.0)),
    17: (0.42, None),
    18: (0.40, None),
    19: (0.12, None),
}
"""Child joint → (length in metres for a 1.75 m adult, fixed direction or None when posed)."""

_MIRROR_JOINT = {4: 8, 5: 9, 6: 10, 7: 11, 21: 23, 22: 24, 12: 16, 13: 17, 14: 18, 15: 19}
_MIRROR_JOINT |= {right: left for left, right in _MIRROR_JOINT.items()}

# Pose parameters (radians), one column each in the (T, P) pose array.
_ARM_PARAMETERS = ("upper_elevation", "upper_azimuth", "fore_elevation", "fore_azimuth")
_POSE_PARAMETERS: tuple[str, ...] = (
    *(f"right_{name}" for name in _ARM_PARAMETERS),
    *(f"left_{name}" for name in _ARM_PARAMETERS),
    "right_thigh", "right_shin", "left_thigh", "left_shin",
    "torso_pitch", "torso_yaw", "head_pitch",
)  # fmt: skip
_P = {name: index for index, name in enumerate(_POSE_PARAMETERS)}
_REST_POSE = np.zeros(len(_POSE_PARAMETERS))
for _side in ("right", "left"):
    _REST_POSE[_P[f"{_side}_upper_elevation"]] = 0.12
    _REST_POSE[_P[f"{_side}_upper_azimuth"]] = math.pi / 2
    _REST_POSE[_P[f"{_side}_fore_elevation"]] = 0.22
    _REST_POSE[_P[f"{_side}_fore_azimuth"]] = 0.25

_SPEED_DURATION = {"slow": 1.25, "moderate": 1.0, "quick": 0.8}
"""Relative phase duration of each speed."""

_UPPER_BODY = frozenset({1, 20, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 21, 22, 23, 24})
"""Joints carried by the torso rotation (everything above spine_base except the legs)."""


def _kinematic_order() -> tuple[int, ...]:
    """Joints ordered so that every parent comes before its children."""
    order = [NTU_PARENTS.index(-1)]
    while len(order) < NUM_NTU_JOINTS:
        order += [j for j, parent in enumerate(NTU_PARENTS) if parent in order and j not in order]
    return tuple(order)


_ORDER = _kinematic_order()


def _limb_direction(elevation: np.ndarray, azimuth: np.ndarray, side: float) -> np.ndarray:
    """Unit vectors (T, 3): elevation 0 hangs down, π points up; azimuth 0 front, π/2 outward."""
    return np.stack(
        [
            side * np.sin(elevation) * np.sin(azimuth),
            -np.cos(elevation),
            -np.sin(elevation) * np.cos(azimuth),
        ],
        axis=-1,
    )


def _rotation_x(angle: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations about x; a positive angle tips +y towards the front (-z)."""
    cos, sin = np.cos(angle), np.sin(angle)
    zero, one = np.zeros_like(angle), np.ones_like(angle)
    rows = [[one, zero, zero], [zero, cos, sin], [zero, -sin, cos]]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def _rotation_y(angle: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations about the vertical axis."""
    cos, sin = np.cos(angle), np.sin(angle)
    zero, one = np.zeros_like(angle), np.ones_like(angle)
    rows = [[cos, zero, sin], [zero, one, zero], [-sin, zero, cos]]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _forward_kinematics(pose: np.ndarray, bone_lengths: np.ndarray) -> np.ndarray:
    """Joint positions (T, 25, 3) in the body frame from a (T, P) pose; feet stay on the ground."""
    frames = pose.shape[0]
    directions = np.zeros((frames, NUM_NTU_JOINTS, 3))
    for joint, (_, fixed) in _REFERENCE_BONES.items():
        if fixed is not None:
            directions[:, joint] = np.asarray(fixed) / np.linalg.norm(fixed)
    for side_name, side, (elbow, wrist, hand, tip, thumb) in (
        ("left", 1.0, (5, 6, 7, 21, 22)),
        ("right", -1.0, (9, 10, 11, 23, 24)),
    ):
        upper = _limb_direction(
            pose[:, _P[f"{side_name}_upper_elevation"]],
            pose[:, _P[f"{side_name}_upper_azimuth"]],
            side,
        )
        fore = _limb_direction(
            pose[:, _P[f"{side_name}_fore_elevation"]],
            pose[:, _P[f"{side_name}_fore_azimuth"]],
            side,
        )
        directions[:, elbow] = upper
        directions[:, wrist] = fore
        directions[:, hand] = fore
        directions[:, tip] = fore
        directions[:, thumb] = _normalise(fore + np.array([-side * 0.8, 0.0, -0.3]))
    for side_name, (knee, ankle, foot) in (("left", (13, 14, 15)), ("right", (17, 18, 19))):
        thigh = pose[:, _P[f"{side_name}_thigh"]]
        shin = pose[:, _P[f"{side_name}_shin"]]
        zero = np.zeros_like(thigh)
        directions[:, knee] = _limb_direction(thigh, zero, 1.0)
        directions[:, ankle] = _limb_direction(shin, zero, 1.0)
        directions[:, foot] = _limb_direction(shin + 1.27, zero, 1.0)
    # The neck takes half of the head's rotation, the head bone all of it.
    for joint, share in ((2, 0.5), (3, 1.0)):
        head_rotation = _rotation_x(share * pose[:, _P["head_pitch"]])
        directions[:, joint] = np.einsum("tij,tj->ti", head_rotation, directions[:, joint])
    torso_rotation = _rotation_y(pose[:, _P["torso_yaw"]]) @ _rotation_x(pose[:, _P["torso_pitch"]])
    upper_body = sorted(_UPPER_BODY)
    directions[:, upper_body] = np.einsum("tij,tvj->tvi", torso_rotation, directions[:, upper_body])

    positions = np.zeros((frames, NUM_NTU_JOINTS, 3))
    for joint in _ORDER[1:]:
        positions[:, joint] = (
            positions[:, NTU_PARENTS[joint]] + bone_lengths[joint] * directions[:, joint]
        )
    # Keep the lowest foot joint at its rest height: the standing foot stays on the floor.
    hip_drop = bone_lengths[12] * 0.3 / math.hypot(1.0, 0.3)
    rest_floor = -(
        hip_drop + bone_lengths[13] + bone_lengths[14] + bone_lengths[15] * math.cos(1.27)
    )
    lowest_foot = positions[:, [14, 15, 18, 19], 1].min(axis=1)
    positions[:, :, 1] += (rest_floor - lowest_foot)[:, None]
    return positions


def _oscillation(progress: np.ndarray, repetitions: int) -> np.ndarray:
    """0 → 1 → 0 once per repetition."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * repetitions * progress)


def _envelope(progress: np.ndarray) -> np.ndarray:
    """Blend weight from the rest pose into a primitive and back: smooth ramps over 25% each."""

    def smoothstep(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0.0, 1.0)
        return x * x * (3.0 - 2.0 * x)

    return smoothstep(progress / 0.25) * smoothstep((1.0 - progress) / 0.25)


def _arm_targets(
    motion: str, side: str, progress: np.ndarray, repetitions: int
) -> dict[str, np.ndarray]:
    """Target pose parameters of one arm doing `motion`."""
    cycle = 2.0 * np.pi * repetitions * progress
    constant = np.ones_like(progress)
    match motion:
        case "raise":
            upper = (2.9 * constant, 0.35 * constant)
            fore = (2.95 * constant, 0.35 * constant)
        case "wave side to side":
            upper = (1.9 * constant, 1.35 * constant)
            fore = (math.pi - 0.3 + 0.6 * np.sin(cycle), math.pi / 2 * constant)
        case "push forward":
            # The elbow bends (forearm up), then the arm straightens forward, once per repetition.
            upper = (1.45 * constant, 0.25 * constant)
            fore = (2.7 - 1.2 * _oscillation(progress, repetitions), 0.1 * constant)
        case "circle":
            upper = (math.pi / 2 + 0.45 * np.cos(cycle), math.pi / 2 - 0.45 * np.sin(cycle))
            fore = upper
        case "swing":
            swing = 0.9 * np.sin(cycle)
            upper = (swing, 0.0 * constant)
            fore = (1.1 * swing + 0.15, 0.0 * constant)
        case _:
            raise ValueError(f"no arm motion {motion!r}")
    names = (f"{side}_{name}" for name in _ARM_PARAMETERS)
    return dict(zip(names, (*upper, *fore), strict=True))


def _primitive_targets(
    primitive: Primitive, progress: np.ndarray, repetitions: int
) -> dict[str, np.ndarray]:
    """Target pose parameters of `primitive` at `progress` in [0, 1] (one value per frame)."""
    match primitive.part:
        case "right arm" | "left arm":
            return _arm_targets(primitive.motion, primitive.part.split()[0], progress, repetitions)
        case "both arms":
            return _arm_targets(primitive.motion, "right", progress, repetitions) | _arm_targets(
                primitive.motion, "left", progress, repetitions
            )
    cycle = 2.0 * np.pi * repetitions * progress
    match primitive.key:
        case "legs_kick":
            thigh = 1.3 * _oscillation(progress, repetitions)
            return {"right_thigh": thigh, "right_shin": 0.9 * thigh}
        case "legs_march":
            # Knees lift alternately; the shin stays near vertical (the knee bends by ~1.3 rad).
            right = 1.1 * np.maximum(np.sin(cycle), 0.0)
            left = 1.1 * np.maximum(-np.sin(cycle), 0.0)
            return {
                "right_thigh": right,
                "right_shin": -0.18 * right,
                "left_thigh": left,
                "left_shin": -0.18 * left,
            }
        case "torso_bend":
            return {"torso_pitch": 1.0 * _oscillation(progress, repetitions)}
        case "torso_twist":
            return {"torso_yaw": 0.9 * np.sin(cycle)}
        case "head_nod":
            return {"head_pitch": 0.9 * _oscillation(progress, repetitions)}
    raise ValueError(f"no motion for primitive {primitive.key!r}")


@dataclass(frozen=True)
class _Body:
    """Per-subject body: bone lengths (25,), rest pose (P,), amplitude and tempo habits."""

    bone_lengths: np.ndarray
    rest_pose: np.ndarray
    amplitude: float
    tempo: float


def _subject_body(seed: int, subject: int) -> _Body:
    rng = np.random.default_rng([seed, 1, subject])
    height = rng.uniform(0.88, 1.1)
    jitter: dict[int, float] = {}
    for joint in sorted(_REFERENCE_BONES):
        canonical = min(joint, _MIRROR_JOINT.get(joint, joint))
        if canonical not in jitter:
            jitter[canonical] = rng.normal(1.0, 0.04)
    bone_lengths = np.zeros(NUM_NTU_JOINTS)
    for joint, (length, _) in _REFERENCE_BONES.items():
        bone_lengths[joint] = length * height * jitter[min(joint, _MIRROR_JOINT.get(joint, joint))]
    rest_pose = _REST_POSE.copy()
    for side in ("right", "left"):
        rest_pose[_P[f"{side}_upper_elevation"]] += rng.uniform(-0.06, 0.06)
        rest_pose[_P[f"{side}_fore_elevation"]] += rng.uniform(-0.1, 0.1)
        rest_pose[_P[f"{side}_fore_azimuth"]] += rng.uniform(-0.15, 0.15)
    return _Body(
        bone_lengths, rest_pose, amplitude=rng.uniform(0.85, 1.05), tempo=rng.uniform(0.9, 1.1)
    )


def _setup_camera(seed: int, setup: int) -> tuple[float, float, float]:
    """(distance in m, height offset in m, tilt in rad) of a camera setup."""
    rng = np.random.default_rng([seed, 2, setup])
    return rng.uniform(2.6, 3.4), rng.uniform(-0.25, 0.25), rng.uniform(-0.12, 0.12)


def _generate_sequence(
    seed: int, preset: SyntheticPreset, body: _Body, subject: int, repetition: int, label: int
) -> tuple[np.ndarray, int, int]:
    """One sequence: joints (T, 1, 25, 3) float32 in camera metres, its view and its setup."""
    rng = np.random.default_rng([seed, 3, subject, repetition, label])
    action = SYNTHETIC_CLASS_TABLE[label]
    frames = int(
        np.clip(
            round(rng.uniform(preset.min_frames, preset.max_frames) * body.tempo),
            preset.min_frames,
            preset.max_frames,
        )
    )
    # Segment weights: leading rest, the phases, trailing rest (a two-phase class rests longer).
    weights = [rng.uniform(0.0, 0.1)]
    weights += [_SPEED_DURATION[phase.speed] * rng.uniform(0.8, 1.25) for phase in action.phases]
    weights.append(rng.uniform(0.4, 0.6) if len(action.phases) == 2 else rng.uniform(0.0, 0.08))
    boundaries = np.round(np.cumsum([0.0, *weights]) / sum(weights) * frames).astype(int)
    amplitude = body.amplitude * rng.uniform(0.9, 1.08)

    pose = np.tile(body.rest_pose, (frames, 1))  # (T, P)
    for index, phase in enumerate(action.phases):
        start, stop = boundaries[index + 1], boundaries[index + 2]
        if stop <= start:
            continue
        uniform = (np.arange(stop - start) + 0.5) / (stop - start)
        progress = uniform ** np.exp(rng.uniform(-0.3, 0.3))  # per-phase time warp
        envelope = amplitude * _envelope(progress)
        for name, target in _primitive_targets(
            PRIMITIVES[phase.primitive], progress, phase.repetitions
        ).items():
            column = _P[name]
            pose[start:stop, column] = body.rest_pose[column] + envelope * (
                target - body.rest_pose[column]
            )
    joints = _forward_kinematics(pose, body.bone_lengths)  # (T, 25, 3), body frame

    time = np.arange(frames) / 30.0
    sway = np.stack(
        [
            0.02 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * time + rng.uniform(0, 2 * np.pi))
            for _ in range(3)
        ],
        axis=-1,
    )  # (T, 3)
    joints = joints + sway[:, None, :]
    view = 1 + (subject + repetition + label) % len(CAMERA_YAWS_DEGREES)
    setup = 1 + repetition % NUM_SETUPS
    distance, height, tilt = _setup_camera(seed, setup)
    yaw = math.radians(CAMERA_YAWS_DEGREES[view - 1] + rng.normal(0.0, 5.0))
    rotation = _rotation_x(np.array([tilt]))[0] @ _rotation_y(np.array([yaw]))[0]
    offset = np.array([rng.uniform(-0.3, 0.3), height, distance + rng.uniform(-0.2, 0.2)])
    joints = np.einsum("ij,tvj->tvi", rotation, joints) + offset
    joints = joints + rng.normal(0.0, rng.uniform(0.004, 0.01), size=joints.shape)
    return joints[:, None].astype(np.float32), view, setup  # (T, M=1, V, 3)


def train_subjects(preset: str, seed: int = 0) -> tuple[int, ...]:
    """Subject ids (1-based) of the cross-subject train partition of a preset."""
    subjects = _preset(preset).subjects
    count = min(subjects - 1, max(1, round(TRAIN_SUBJECT_FRACTION * subjects)))
    permutation = np.random.default_rng([seed, 4]).permutation(subjects) + 1
    return tuple(sorted(int(s) for s in permutation[:count]))


def _preset(preset: str) -> SyntheticPreset:
    if preset not in PRESETS:
        raise ValueError(f"synthetic preset {preset!r}: unknown; use one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def write_synthetic(
    out: str | Path, preset: str = "small", seed: int = 0, progress: bool = False
) -> dict[str, Any]:
    """Generate the synthetic dataset into `out` (`.arrow` or `.parquet`) and summarise it.

    Byte-identical output for the same preset and seed. Returns the path, preset, seed and counts.
    """
    size = _preset(preset)
    out = Path(out)
    training_subjects = set(train_subjects(preset, seed))
    info = DatasetInfo(
        dataset="synthetic",
        class_names=SYNTHETIC_CLASSES,
        source=f"neuron synthetic {preset} seed {seed}",
        benchmark="synthetic-xsub",
    )
    jobs = [
        (subject, repetition, label)
        for subject in range(1, size.subjects + 1)
        for repetition in range(size.repetitions)
        for label in range(len(SYNTHETIC_CLASS_TABLE))
    ]
    iterator: Any = jobs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(jobs, desc=f"synthetic {preset}", unit="seq")
    bodies = {subject: _subject_body(seed, subject) for subject in range(1, size.subjects + 1)}
    frame_counts = []
    with DatasetWriter(out, info) as writer:
        for subject, repetition, label in iterator:
            joints, view, setup = _generate_sequence(
                seed, size, bodies[subject], subject, repetition, label
            )
            writer.add(
                sample_id=f"S{setup:03d}C{view:03d}P{subject:03d}R{repetition + 1:03d}A{label + 1:03d}",
                label=label,
                joints=joints,
                partition="train" if subject in training_subjects else "test",
                subject=subject,
                view=view,
                setup=setup,
            )
            frame_counts.append(joints.shape[0])
    train_count = sum(1 for subject, _, _ in jobs if subject in training_subjects)
    return {
        "path": str(out),
        "dataset": "synthetic",
        "benchmark": "synthetic-xsub",
        "preset": preset,
        "seed": seed,
        "sequences": len(jobs),
        "classes": len(SYNTHETIC_CLASSES),
        "train": train_count,
        "test": len(jobs) - train_count,
        "subjects": size.subjects,
        "train_subjects": sorted(training_subjects),
        "frames_min": int(min(frame_counts)),
        "frames_max": int(max(frame_counts)),
    }


# --------------------------------------------------------------------------------------------
# Side information in the shape of Neuron's (three spatial and three temporal rounds)

DESCRIPTIONS_PER_CLASS = 10

_PERSONS = ("the person", "the subject", "the performer", "someone")
_REPETITION_WORDS = {
    1: ("once", "a single time"),
    2: ("twice", "two times"),
    3: ("three times", "three times in a row"),
    4: ("four times", "four times in a row"),
}
_SPEED_WORDS: dict[str, tuple[str, ...]] = {
    "slow": ("slowly", "in a slow, controlled way", "gently"),
    "moderate": ("at a steady pace", "at a moderate speed", "smoothly"),
    "quick": ("quickly", "rapidly", "briskly"),
}


def _join(items: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


@dataclass(frozen=True)
class _Words:
    """Words drawn for one description: a person and one choice per phase."""

    person: str
    actions: list[str]
    gerunds: list[str]
    clauses: list[str]
    details: list[str]
    parts: list[str]


def _draw_words(action: SyntheticClass, rng: np.random.Generator) -> _Words:
    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    primitives = [PRIMITIVES[phase.primitive] for phase in action.phases]
    details = []
    for phase, primitive in zip(action.phases, primitives, strict=True):
        fine = pick(primitive.fine_actions)
        repetitions = pick(_REPETITION_WORDS[phase.repetitions])
        speed = pick(_SPEED_WORDS[phase.speed])
        details.append(pick((f"{fine} {repetitions} {speed}", f"{speed} {fine} {repetitions}")))
    parts: dict[str, str] = {}
    for primitive in primitives:
        parts.setdefault(primitive.part, pick(primitive.part_phrases))
    return _Words(
        person=pick(_PERSONS),
        actions=[pick(p.actions) for p in primitives],
        gerunds=[pick(p.gerunds) for p in primitives],
        clauses=[pick(p.clauses) for p in primitives],
        details=details,
        parts=list(parts.values()),
    )


def _spatial_templates(stem: str, words: _Words) -> tuple[str, ...]:
    person, parts = words.person, _join(words.parts)
    match stem:
        case "spatial_cg":
            return (
                f"This action involves {parts}.",
                f"Body parts involved: {parts}.",
                f"{person} moves {parts}.",
                f"An action performed with {parts}.",
                f"Motion is concentrated in {parts}.",
                f"{person} uses {parts} while the rest of the body stays mostly still.",
                f"Active body parts: {parts}.",
                f"The action is carried out by {parts}.",
            )
        case "spatial_mg":
            return (
                f"{person} {_join(words.actions)}.",
                f"This action consists of {_join(words.gerunds)}.",
                f"Movements: {'; '.join(words.clauses)}.",
                f"{_join(words.clauses)}.",
                f"The action combines {_join(words.gerunds)}.",
                f"{person} is {_join(words.gerunds)}.",
                f"It involves {_join(words.gerunds)}.",
            )
        case "spatial_fg":
            return (
                f"{person} {_join(words.details)}.",
                f"In detail, {person} {', then '.join(words.details)}.",
                f"{person} {'; and '.join(words.details)}.",
                f"Fine movement: {person} {_join(words.details)}.",
                f"Step by step, {person} {', and after that '.join(words.details)}.",
            )
    raise ValueError(f"no spatial round {stem!r}")


def _temporal_templates(stem: str, action: SyntheticClass, words: _Words) -> tuple[str, ...]:
    phase_index = TEMPORAL_ROUNDS.index(stem)
    person = words.person
    if phase_index >= len(action.phases):
        last_part = words.parts[-1]
        return (
            f"Finally, {person} returns to a relaxed standing pose.",
            f"The action ends with {person} standing still.",
            f"Lastly, {person} brings {last_part} back to rest.",
            f"In the last phase, {person} relaxes and stops moving.",
            f"To finish, {person} lowers the limbs and holds still.",
            f"The movement closes with {person} back in a neutral stance.",
        )
    verb = words.actions[phase_index]
    gerund = words.gerunds[phase_index]
    clause = words.clauses[phase_index]
    detail = words.details[phase_index]
    match phase_index:
        case 0:
            return (
                f"First, {person} {verb}.",
                f"The action begins as {person} {verb}.",
                f"At the start, {clause}.",
                f"Initially, {person} {detail}.",
                f"{person} starts by {gerund}.",
                f"In the first phase, {person} {verb}.",
                f"The movement opens with {person} {gerund}.",
            )
        case 1:
            return (
                f"Next, {person} {verb}.",
                f"Then {person} {detail}.",
                f"After that, {clause}.",
                f"In the second phase, {person} {verb}.",
                f"Following this, {person} is {gerund}.",
                f"Afterwards, {person} {verb}.",
            )
    return (
        f"Finally, {person} {verb}.",
        f"The action ends as {person} {detail}.",
        f"Lastly, {clause}.",
        f"In the last phase, {person} {verb}.",
        f"To finish, {person} is {gerund}.",
        f"The movement closes with {person} {gerund}.",
    )


def synthetic_descriptions(seed: int = 0) -> dict[str, dict[str, list[str]]]:
    """Side information of the synthetic classes: round stem → class name → 10 descriptions.

    Spatial rounds: coarse (which body parts move), medium (parts and motions), fine (with
    direction, speed and repetitions). Temporal rounds: what happens in phase 1, 2 and 3 (a
    two-phase class returns to rest in phase 3). The strings of one class and round are distinct.
    """
    descriptions: dict[str, dict[str, list[str]]] = {}
    for round_index, stem in enumerate(DESCRIPTION_ROUNDS):
        per_class: dict[str, list[str]] = {}
        for label, action in enumerate(SYNTHETIC_CLASS_TABLE):
            rng = np.random.default_rng([seed, 5, round_index, label])
            chosen: list[str] = []
            for _ in range(2000):
                words = _draw_words(action, rng)
                templates = (
                    _spatial_templates(stem, words)
                    if stem in SPATIAL_ROUNDS
                    else _temporal_templates(stem, action, words)
                )
                text = _sentence(templates[int(rng.integers(len(templates)))])
                if text not in chosen:
                    chosen.append(text)
                if len(chosen) == DESCRIPTIONS_PER_CLASS:
                    break
            else:
                raise RuntimeError(
                    f"{stem}: could not write {DESCRIPTIONS_PER_CLASS} distinct descriptions of {action.name!r}"
                )
            per_class[action.name] = chosen
        descriptions[stem] = per_class
    return descriptions


def write_descriptions(
    folder: str | Path, descriptions: dict[str, dict[str, list[str]]]
) -> list[Path]:
    """Write the six round files (`spatial_cg.json` … `temporal_tp.json`) in Neuron's JSON shape.

    Each file maps class name → list of descriptions. Writes are atomic. Returns the paths.
    """
    missing = [stem for stem in DESCRIPTION_ROUNDS if stem not in descriptions]
    if missing:
        raise ValueError(
            f"descriptions lack the rounds {missing}; expected all of {list(DESCRIPTION_ROUNDS)}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_text_atomic(
            folder / f"{stem}.json",
            json.dumps(descriptions[stem], indent=2, ensure_ascii=False) + "\n",
        )
        for stem in DESCRIPTION_ROUNDS
    ]
