"""Joint layouts: the NTU RGB+D 25-joint Kinect v2 skeleton and the Kinect v1 mapping.

Every other module reads joint names, bones and body parts from here.
"""

from __future__ import annotations

NTU_JOINTS: tuple[str, ...] = (
    "spine_base", "spine_mid", "neck", "head",
    "shoulder_left", "elbow_left", "wrist_left", "hand_left",
    "shoulder_right", "elbow_right", "wrist_right", "hand_right",
    "hip_left", "knee_left", "ankle_left", "foot_left",
    "hip_right", "knee_right", "ankle_right", "foot_right",
    "spine_shoulder", "hand_tip_left", "thumb_left", "hand_tip_right", "thumb_right",
)  # fmt: skip
"""0-based NTU joint order (the dataset's 1-based joint j is index j - 1)."""

NUM_NTU_JOINTS = len(NTU_JOINTS)

NTU_PARENTS: tuple[int, ...] = (
    -1, 0, 20, 2,
    20, 4, 5, 6,
    20, 8, 9, 10,
    0, 12, 13, 14,
    0, 16, 17, 18,
    1, 22, 7, 24, 11,
)  # fmt: skip
"""Parent of each joint in the kinematic tree rooted at spine_base (-1 for the root)."""

NTU_BONES: tuple[tuple[int, int], ...] = tuple(
    (child, parent) for child, parent in enumerate(NTU_PARENTS) if parent >= 0
)
"""(child, parent) pairs, 24 bones."""

NTU_SPINE_JOINT = 1
"""Joint used to centre a skeleton (spine_mid, as in the reference preprocessing)."""

NTU_BODY_PARTS: dict[str, tuple[int, ...]] = {
    "head": (2, 3),
    "torso": (0, 1, 20),
    "left_arm": (4, 5, 6, 7, 21, 22),
    "right_arm": (8, 9, 10, 11, 23, 24),
    "left_leg": (12, 13, 14, 15),
    "right_leg": (16, 17, 18, 19),
}

KINECT_V1_JOINTS: tuple[str, ...] = (
    "hip_center", "spine", "shoulder_center", "head",
    "shoulder_left", "elbow_left", "wrist_left", "hand_left",
    "shoulder_right", "elbow_right", "wrist_right", "hand_right",
    "hip_left", "knee_left", "ankle_left", "foot_left",
    "hip_right", "knee_right", "ankle_right", "foot_right",
)  # fmt: skip
"""0-based Kinect v1 order used by NW-UCLA (20 joints)."""

KINECT_V1_TO_NTU: tuple[int, ...] = (
    0,
    1,
    20,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
)
"""NTU index of each Kinect v1 joint."""

NTU_FROM_KINECT_V1_DERIVED: dict[int, tuple[int, ...]] = {
    2: (2, 3),  # neck = midpoint of shoulder_center and head (Kinect v1 indices)
    21: (7,),  # hand tips and thumbs copy the hand
    22: (7,),
    23: (11,),
    24: (11,),
}
"""NTU joints with no Kinect v1 source: the mean of these Kinect v1 joints."""
