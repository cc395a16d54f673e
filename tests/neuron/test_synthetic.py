"""The embedded synthetic dataset and its side information."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from neuron import synthetic
from neuron.dataset import SkeletonTable
from neuron.joints import NTU_BONES, NTU_JOINTS
from neuron.rounds import DESCRIPTION_ROUNDS
from neuron.splits import PUBLISHED_SPLITS
from neuron.synthetic import (
    PRESETS,
    PRIMITIVES,
    SYNTHETIC_CLASS_TABLE,
    SYNTHETIC_CLASSES,
    synthetic_descriptions,
    write_descriptions,
    write_synthetic,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, float]:
    path = tmp_path_factory.mktemp("synthetic") / "tiny.arrow"
    start = time.perf_counter()
    summary = write_synthetic(path, preset="tiny", seed=0)
    return path, summary, time.perf_counter() - start


@pytest.fixture(scope="module")
def table(tiny: tuple[Path, dict, float]) -> SkeletonTable:
    return SkeletonTable(tiny[0])


def test_tiny_preset_is_fast_and_summarised(tiny: tuple[Path, dict, float]) -> None:
    path, summary, seconds = tiny
    assert seconds < 2.0
    preset = PRESETS["tiny"]
    assert summary["path"] == str(path)
    assert summary["sequences"] == preset.subjects * preset.repetitions * len(SYNTHETIC_CLASSES)
    assert summary["classes"] == 20
    assert summary["train"] + summary["test"] == summary["sequences"]


def test_same_seed_gives_identical_bytes_and_another_seed_differs(
    tmp_path: Path, tiny: tuple[Path, dict, float]
) -> None:
    again = tmp_path / "again.arrow"
    write_synthetic(again, preset="tiny", seed=0)
    assert again.read_bytes() == tiny[0].read_bytes()
    other = tmp_path / "other.arrow"
    write_synthetic(other, preset="tiny", seed=1)
    first, second = SkeletonTable(tiny[0]), SkeletonTable(other)
    assert (
        not np.array_equal(first.sequence(0), second.sequence(0))
        or first.num_frames[0] != second.num_frames[0]
    )
    assert second.info.source == "neuron synthetic tiny seed 1"


def test_layout_and_metadata(table: SkeletonTable) -> None:
    assert table.info.dataset == "synthetic"
    assert table.info.benchmark == "synthetic-xsub"
    assert table.info.source == "neuron synthetic tiny seed 0"
    assert table.class_names == SYNTHETIC_CLASSES
    assert table.info.num_joints == len(NTU_JOINTS) == 25
    preset = PRESETS["tiny"]
    assert (
        preset.min_frames <= table.num_frames.min() and table.num_frames.max() <= preset.max_frames
    )
    assert len(np.unique(table.num_frames)) > 3, "lengths should vary"
    assert (table.num_bodies == 1).all()
    assert set(np.unique(table.subject)) == set(range(1, preset.subjects + 1))
    assert set(np.unique(table.view)) == {1, 2, 3}
    assert (table.setup >= 1).all()
    assert np.bincount(table.labels).tolist() == [preset.subjects * preset.repetitions] * 20
    sequence = table.sequence(7)
    assert sequence.shape == (table.num_frames[7], 1, 25, 3) and sequence.dtype == np.float32
    assert (
        table.sample_ids[7].startswith("S") and f"A{table.labels[7] + 1:03d}" in table.sample_ids[7]
    )


def test_cross_subject_partition(table: SkeletonTable) -> None:
    train = set(table.subject[table.partition == "train"].tolist())
    test = set(table.subject[table.partition == "test"].tolist())
    assert train and test and train.isdisjoint(test)
    assert len(train) == round(0.7 * PRESETS["tiny"].subjects)
    for partition in ("train", "test"):
        assert set(table.labels[table.partition == partition].tolist()) == set(range(20))
    assert synthetic.train_subjects("small", 0) == tuple(
        sorted(synthetic.train_subjects("small", 0))
    )
    assert len(synthetic.train_subjects("small", 0)) == 7


def test_skeletons_are_plausible(table: SkeletonTable) -> None:
    """Rigid bones (up to noise), an upright body, metres in front of the camera."""
    children = np.array([child for child, _ in NTU_BONES])
    parents = np.array([parent for _, parent in NTU_BONES])
    for index in range(0, len(table), 13):
        joints = table.sequence(index)[:, 0]  # (T, 25, 3)
        lengths = np.linalg.norm(joints[:, children] - joints[:, parents], axis=-1)  # (T, 24)
        assert (lengths.std(axis=0) < 0.03).all()
        height = (
            joints[:, NTU_JOINTS.index("head"), 1] - joints[:, NTU_JOINTS.index("spine_base"), 1]
        )
        assert (height > 0.15).all()
        assert 2.0 < joints[..., 2].mean() < 4.0


def _hand_travel(sequence: np.ndarray, hand: int) -> float:
    relative = sequence[:, 0, hand] - sequence[:, 0, NTU_JOINTS.index("spine_shoulder")]  # (T, 3)
    return float(np.linalg.norm(relative - relative.mean(axis=0), axis=-1).max())


def test_the_moving_arm_is_the_described_arm(table: SkeletonTable) -> None:
    right, left = NTU_JOINTS.index("hand_right"), NTU_JOINTS.index("hand_left")
    checked = 0
    for label, action in enumerate(SYNTHETIC_CLASS_TABLE):
        parts = {PRIMITIVES[p].part for p in action.primitives}
        if parts & {"both arms", "torso"} or parts >= {"right arm", "left arm"}:
            continue
        moving, still = (
            (right, left)
            if "right arm" in parts
            else (left, right)
            if "left arm" in parts
            else (None, None)
        )
        if moving is None or still is None:
            continue
        for index in np.flatnonzero(table.labels == label):
            sequence = table.sequence(int(index))
            assert _hand_travel(sequence, moving) > 2 * _hand_travel(sequence, still), (
                SYNTHETIC_CLASSES[label]
            )
            checked += 1
    assert checked > 0


def test_class_table_is_compositional() -> None:
    occurrences = Counter(p for action in SYNTHETIC_CLASS_TABLE for p in set(action.primitives))
    assert set(occurrences) == set(PRIMITIVES)
    for action in SYNTHETIC_CLASS_TABLE:
        assert 2 <= len(action.phases) <= 3
        for primitive in action.primitives:
            assert occurrences[primitive] >= 3, (
                f"{primitive} of {action.name!r} occurs in < 2 other classes"
            )
    sequences = [action.primitives for action in SYNTHETIC_CLASS_TABLE]
    assert len(set(sequences)) == len(sequences), "two classes have the same composition"
    assert len(set(SYNTHETIC_CLASSES)) == 20
    for name in SYNTHETIC_CLASSES:
        assert name in synthetic.__doc__


@pytest.mark.parametrize("split", ["synthetic_default", "synthetic_alt"])
def test_unseen_classes_are_new_compositions_of_seen_primitives(split: str) -> None:
    unseen = set(PUBLISHED_SPLITS[split].unseen)
    assert PUBLISHED_SPLITS[split].num_classes == len(SYNTHETIC_CLASSES)
    seen_primitives = {
        p for i, a in enumerate(SYNTHETIC_CLASS_TABLE) if i not in unseen for p in a.primitives
    }
    seen_sequences = {a.primitives for i, a in enumerate(SYNTHETIC_CLASS_TABLE) if i not in unseen}
    for label in unseen:
        action = SYNTHETIC_CLASS_TABLE[label]
        assert set(action.primitives) <= seen_primitives, action.name
        assert action.primitives not in seen_sequences


def test_descriptions_structure_and_variety() -> None:
    descriptions = synthetic_descriptions(seed=0)
    assert (
        tuple(descriptions)
        == DESCRIPTION_ROUNDS
        == (
            "spatial_cg",
            "spatial_mg",
            "spatial_fg",
            "temporal_fp",
            "temporal_sp",
            "temporal_tp",
        )
    )
    for stem, per_class in descriptions.items():
        assert tuple(per_class) == SYNTHETIC_CLASSES, stem
        for name, texts in per_class.items():
            assert len(texts) == 10 and len(set(texts)) == 10, (stem, name)
            assert all(isinstance(t, str) and t[0].isupper() and t.endswith(".") for t in texts)
    assert synthetic_descriptions(seed=0) == descriptions
    assert synthetic_descriptions(seed=1) != descriptions


def test_descriptions_follow_the_primitives() -> None:
    descriptions = synthetic_descriptions(seed=0)
    two_phase = SYNTHETIC_CLASS_TABLE[0]  # raise right arm then wave it
    three_phase = SYNTHETIC_CLASS_TABLE[7]  # raise left arm, push right arm forward, then nod
    coarse = " ".join(descriptions["spatial_cg"][two_phase.name])
    assert "right" in coarse and "left" not in coarse and "leg" not in coarse
    fine = " ".join(descriptions["spatial_fg"][two_phase.name])
    assert "three times" in fine and ("once" in fine or "a single time" in fine)
    first = " ".join(descriptions["temporal_fp"][three_phase.name])
    assert "left" in first and "right" not in first and "nod" not in first
    assert all("nod" in t or "head" in t for t in descriptions["temporal_tp"][three_phase.name])
    rest = descriptions["temporal_tp"][two_phase.name]
    assert not any("wave" in t or "waving" in t for t in rest)


def test_write_descriptions_round_trip(tmp_path: Path) -> None:
    descriptions = synthetic_descriptions(seed=0)
    paths = write_descriptions(tmp_path / "side", descriptions)
    assert [p.name for p in paths] == [f"{stem}.json" for stem in DESCRIPTION_ROUNDS]
    for stem, path in zip(DESCRIPTION_ROUNDS, paths, strict=True):
        assert json.loads(path.read_text()) == descriptions[stem]
    with pytest.raises(ValueError, match="temporal_tp"):
        write_descriptions(
            tmp_path / "bad", {k: v for k, v in descriptions.items() if k != "temporal_tp"}
        )


def test_unknown_preset_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny, small, default"):
        write_synthetic(tmp_path / "x.arrow", preset="huge")
