"""Joint layouts: the NTU RGB+D 25-joint Kinect v2 skeleton, the Kinect v1 mapping, and the
weights that map another layout onto the NTU one (`map_joints`).

Every other module reads joint names, bones, body parts and joint maps from here.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from neuron.dataset import DatasetError

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


def ntu_joint_weights(
    source_of_ntu_joint: Sequence[Sequence[int]], num_source_joints: int
) -> np.ndarray:
    """(25, V_src) float32 averaging weights: NTU joint j is the mean of its listed source joints."""
    weights = np.zeros((NUM_NTU_JOINTS, num_source_joints), dtype=np.float32)
    for ntu_joint, sources in enumerate(source_of_ntu_joint):
        for source in sources:
            weights[ntu_joint, source] += 1.0 / len(sources)
    return weights


def _nearest_mapped_joint(ntu_joint: int, mapped: set[int]) -> int:
    ancestor = NTU_PARENTS[ntu_joint]
    while ancestor >= 0:
        if ancestor in mapped:
            return ancestor
        ancestor = NTU_PARENTS[ancestor]
    neighbours: dict[int, list[int]] = {j: [] for j in range(NUM_NTU_JOINTS)}
    for child, parent in enumerate(NTU_PARENTS):
        if parent >= 0:
            neighbours[child].append(parent)
            neighbours[parent].append(child)
    distance = {ntu_joint: 0}
    queue = deque([ntu_joint])
    while queue:
        joint = queue.popleft()
        for other in neighbours[joint]:
            if other not in distance:
                distance[other] = distance[joint] + 1
                queue.append(other)
    return min(mapped, key=lambda j: (distance[j], j))


def joint_weights_from_map(
    ntu_index_of_source: Sequence[int | None], where: str = "joint map"
) -> np.ndarray:
    """(25, V_src) weights from one NTU index (or None) per source joint; unmapped NTU joints
    copy their nearest mapped ancestor, else the nearest mapped joint in the tree."""
    sources: dict[int, int] = {}
    for source, ntu_joint in enumerate(ntu_index_of_source):
        if ntu_joint is None:
            continue
        if (
            isinstance(ntu_joint, bool)
            or not isinstance(ntu_joint, int)
            or not 0 <= ntu_joint < NUM_NTU_JOINTS
        ):
            raise DatasetError(
                f"{where}: entry {source} is {ntu_joint!r}; expected an NTU joint index 0..{NUM_NTU_JOINTS - 1} or null"
            )
        if ntu_joint in sources:
            raise DatasetError(
                f"{where}: source joints {sources[ntu_joint]} and {source} both map to NTU joint {ntu_joint}; "
                "map each NTU joint at most once"
            )
        sources[ntu_joint] = source
    if not sources:
        raise DatasetError(f"{where}: no source joint is mapped to an NTU joint")
    mapped = set(sources)
    source_of_ntu_joint = [
        (sources[j] if j in mapped else sources[_nearest_mapped_joint(j, mapped)],)
        for j in range(NUM_NTU_JOINTS)
    ]
    return ntu_joint_weights(source_of_ntu_joint, len(ntu_index_of_source))


def kinect_v1_joint_weights() -> np.ndarray:
    """(25, 20) weights of the NW-UCLA Kinect v1 → NTU mapping (`KINECT_V1_TO_NTU`)."""
    source_of_ntu_joint: list[tuple[int, ...]] = [() for _ in range(NUM_NTU_JOINTS)]
    for source, ntu_joint in enumerate(KINECT_V1_TO_NTU):
        source_of_ntu_joint[ntu_joint] = (source,)
    for ntu_joint, sources in NTU_FROM_KINECT_V1_DERIVED.items():
        source_of_ntu_joint[ntu_joint] = sources
    return ntu_joint_weights(source_of_ntu_joint, len(KINECT_V1_TO_NTU))


def map_joints(joints: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(T, M, V_src, 3) source joints → (T, M, 25, 3) NTU joints with (25, V_src) weights."""
    return np.einsum(
        "jv,tmvc->tmjc", weights, joints.astype(np.float32, copy=False)
    )  # (T, M, 25, 3)


JOINT_LAYOUTS: dict[str, int] = {"ntu25": NUM_NTU_JOINTS, "kinect_v1": len(KINECT_V1_TO_NTU)}
"""Source layouts a joint map may name (`--joint-map kinect_v1`): layout → joints per body."""


def _layout_weights(layout: str, num_source_joints: int, where: str, named_in: str) -> np.ndarray:
    if num_source_joints != JOINT_LAYOUTS[layout]:
        raise DatasetError(
            f"{named_in}: layout {layout!r} has {JOINT_LAYOUTS[layout]} joints but {where} has "
            f"{num_source_joints} per body"
        )
    return (
        np.eye(NUM_NTU_JOINTS, dtype=np.float32) if layout == "ntu25" else kinect_v1_joint_weights()
    )


def read_joint_map(path: str | Path | None, num_source_joints: int, where: str) -> np.ndarray:
    """Weights for the `arrays` importer (`--joint-map`): a layout name of `JOINT_LAYOUTS`, a
    JSON file (format in neuron.importers.arrays), or the identity when there are 25 source
    joints and no map."""
    if path is None:
        if num_source_joints != NUM_NTU_JOINTS:
            raise DatasetError(
                f"{where}: {num_source_joints} joints per body, not the 25 of the NTU layout; give "
                "--joint-map kinect_v1 (the 20-joint Kinect v1 skeleton) or --joint-map FILE.json, "
                "a JSON list with one NTU joint index (or null) per source joint"
            )
        return np.eye(NUM_NTU_JOINTS, dtype=np.float32)
    if str(path) in JOINT_LAYOUTS and not Path(path).is_file():
        return _layout_weights(str(path), num_source_joints, where, f"--joint-map {path}")
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"--joint-map {path}: no such file and not a layout name ({', '.join(JOINT_LAYOUTS)})"
        )
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error
    if isinstance(spec, dict):
        layout = spec.get("layout")
        if layout not in JOINT_LAYOUTS:
            raise DatasetError(
                f"{path}: layout {layout!r}; expected one of {sorted(JOINT_LAYOUTS)} or a JSON list"
            )
        return _layout_weights(layout, num_source_joints, where, str(path))
    if not isinstance(spec, list):
        raise DatasetError(
            f'{path}: expected a JSON list of NTU indices or {{"layout": ...}}, got {type(spec).__name__}'
        )
    if len(spec) != num_source_joints:
        raise DatasetError(
            f"{path}: {len(spec)} entries but {where} has {num_source_joints} joints per body; give one entry per source joint"
        )
    return joint_weights_from_map(spec, str(path))
