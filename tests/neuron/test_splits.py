"""Published splits as data, class roles and the row partition into evaluation sets."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from neuron.classes import DATASET_CLASSES, NTU120_CLASSES, NW_UCLA_CLASSES, PKU_MMD_CLASSES
from neuron.splits import (
    PUBLISHED_SPLITS,
    SAMPLE_SETS,
    ClassSplit,
    SplitError,
    make_class_split,
    partition_samples,
)
from neuron.synthetic import SYNTHETIC_CLASSES


def _class_count(dataset: str) -> int:
    return len(SYNTHETIC_CLASSES) if dataset == "synthetic" else len(DATASET_CLASSES[dataset])


@pytest.mark.parametrize("name", sorted(PUBLISHED_SPLITS))
def test_published_split_ids_are_in_range_sorted_and_match_the_dataset(name: str) -> None:
    split = PUBLISHED_SPLITS[name]
    assert split.name == name
    assert split.num_classes == _class_count(split.dataset)
    assert list(split.unseen) == sorted(set(split.unseen))
    assert all(0 <= i < split.num_classes for i in split.unseen)
    assert split.source


@pytest.mark.parametrize("name", sorted(PUBLISHED_SPLITS))
def test_split_names_state_their_class_counts(name: str) -> None:
    split = PUBLISHED_SPLITS[name]
    counts = re.fullmatch(r"[a-z]+\d*_(\d+)_(\d+)", name)
    if counts:  # e.g. ntu60_55_5: 55 seen, 5 unseen
        seen, unseen = int(counts[1]), int(counts[2])
        assert len(split.unseen) == unseen
        assert split.num_classes - len(split.unseen) == seen
    else:  # random and project splits: 5 unseen of 60/51/20, 10 of 120
        assert len(split.unseen) == (10 if split.num_classes == 120 else 5)


def test_published_ids_are_the_tables_of_neuron_md() -> None:
    assert PUBLISHED_SPLITS["ntu60_55_5"].unseen == (10, 11, 19, 26, 56)
    assert PUBLISHED_SPLITS["ntu60_48_12"].unseen == (3, 5, 9, 12, 15, 40, 42, 47, 51, 56, 58, 59)
    assert PUBLISHED_SPLITS["ntu120_110_10"].unseen == (4, 13, 37, 43, 49, 65, 88, 95, 99, 106)
    assert len(PUBLISHED_SPLITS["ntu120_96_24"].unseen) == 24
    assert PUBLISHED_SPLITS["pku_smie7"].unseen == PUBLISHED_SPLITS["pku_46_5"].unseen
    assert PUBLISHED_SPLITS["pku_neuron3"].unseen == (4, 12, 16, 22, 36)
    assert PUBLISHED_SPLITS["ntu120_smie6"].unseen == (6, 20, 27, 33, 42, 55, 71, 97, 104, 118)


def test_unseen_ids_name_the_published_classes() -> None:
    def names(split: str, classes: tuple[str, ...]) -> list[str]:
        return [classes[i] for i in PUBLISHED_SPLITS[split].unseen]

    assert names("ntu60_55_5", NTU120_CLASSES) == [
        "reading",
        "writing",
        "put on a hat/cap",
        "jump up",
        "touch other person's pocket",
    ]
    assert names("ntu120_110_10", NTU120_CLASSES)[:3] == ["drop", "wear jacket", "salute"]
    assert (
        names("ntu120_96_24", NTU120_CLASSES)[-1]
        == "finger-guessing game (playing rock-paper-scissors)"
    )
    assert names("ntu60_smie1", NTU120_CLASSES) == [
        "drop",
        "put on a hat/cap",
        "taking a selfie",
        "nausea or vomiting condition",
        "pushing other person",
    ]
    assert names("pku_46_5", PKU_MMD_CLASSES) == [
        "brushing hair",
        "eat meal/snack",
        "pat on back of other person",
        "take off a hat/cap",
        "writing",
    ]
    assert names("pku_neuron3", PKU_MMD_CLASSES) == [
        "cheer up",
        "hand waving",
        "jump up",
        "playing with phone/tablet",
        "take off jacket",
    ]
    assert names("nwucla_8_2", NW_UCLA_CLASSES) == ["pick up with two hands", "doffing"]
    seen = [
        n for i, n in enumerate(NW_UCLA_CLASSES) if i not in PUBLISHED_SPLITS["nwucla_8_2"].unseen
    ]
    assert "pick up with one hand" in seen and "donning" in seen


def test_class_split_roles() -> None:
    split = make_class_split("ntu60_55_5", 60, validation_classes=5, validation_seed=3)
    assert set(split.seen).isdisjoint(split.unseen)
    assert set(split.validation) <= set(split.seen)
    assert set(split.training).isdisjoint(split.validation)
    assert set(split.training) | set(split.validation) == set(split.seen)
    assert set(split.seen) | set(split.unseen) == set(range(60))
    assert len(split.validation) == 5 and len(split.training) == 50
    for field in (split.seen, split.unseen, split.validation, split.training):
        assert list(field) == sorted(field)


def test_validation_draw_is_deterministic_and_depends_on_the_seed() -> None:
    draws = {
        seed: make_class_split(
            "ntu120_110_10", 120, validation_classes=10, validation_seed=seed
        ).validation
        for seed in range(4)
    }
    assert (
        draws[0]
        == make_class_split(
            "ntu120_110_10", 120, validation_classes=10, validation_seed=0
        ).validation
    )
    assert len(set(draws.values())) > 1


def test_custom_split() -> None:
    split = make_class_split(
        "custom", 10, unseen_classes=(7, 2), validation_classes=2, validation_seed=0
    )
    assert split.unseen == (2, 7)
    assert len(split.training) == 6


def test_published_split_on_a_dataset_of_another_size_names_the_right_splits() -> None:
    with pytest.raises(
        SplitError, match=r"ntu60_55_5 is for 60 classes but the dataset has 120.*ntu120_110_10"
    ):
        make_class_split("ntu60_55_5", 120, validation_classes=2, validation_seed=0)


@pytest.mark.parametrize(
    ("split", "num_classes", "unseen", "validation", "message"),
    [
        ("custom", 10, (3, 10), 1, r"class id 10 is outside 0\.\.9"),
        ("custom", 10, (-1,), 1, r"outside 0\.\.9"),
        ("custom", 10, (), 1, "empty"),
        ("custom", 10, (1, 1), 1, "a class is listed twice"),
        ("custom", 5, (0, 1), 2, r"only 1 would train.*validation_classes <= 1"),
        ("synthetic_default", 20, (), -1, "must be >= 0"),
        ("ntu60_55", 60, (), 1, "did you mean 'ntu60_55_5'"),
        ("ntu60_55_5", 60, (1,), 1, "only read with data.split=custom"),
    ],
)
def test_make_class_split_errors(
    split: str, num_classes: int, unseen: tuple[int, ...], validation: int, message: str
) -> None:
    with pytest.raises(SplitError, match=message):
        make_class_split(
            split,
            num_classes,
            unseen_classes=unseen,
            validation_classes=validation,
            validation_seed=0,
        )


def test_class_split_invariants_are_enforced() -> None:
    with pytest.raises(SplitError, match="both seen and unseen"):
        ClassSplit(seen=(0, 1, 2), unseen=(2,), validation=(), training=(0, 1, 2))
    with pytest.raises(SplitError, match="not seen classes"):
        ClassSplit(seen=(0, 1, 2), unseen=(3,), validation=(3,), training=(0, 1, 2))
    with pytest.raises(SplitError, match="seen minus validation"):
        ClassSplit(seen=(0, 1, 2), unseen=(3,), validation=(0,), training=(0, 1, 2))
    with pytest.raises(SplitError, match="sorted"):
        ClassSplit(seen=(1, 0, 2), unseen=(3,), validation=(), training=(1, 0, 2))


def _random_dataset(rng: np.random.Generator, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    size = int(rng.integers(4 * num_classes, 20 * num_classes))
    labels = rng.integers(0, num_classes, size=size)
    labels[: 2 * num_classes] = np.tile(np.arange(num_classes), 2)  # every class in both partitions
    partition = np.where(rng.random(size) < 0.7, "train", "test")
    partition[:num_classes] = "train"
    partition[num_classes : 2 * num_classes] = "test"
    return labels, partition


def test_no_unseen_or_validation_row_leaks_into_training_or_selection_sets() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        num_classes = int(rng.integers(5, 40))
        unseen = tuple(
            int(i)
            for i in rng.choice(
                num_classes, size=int(rng.integers(1, num_classes - 3)), replace=False
            )
        )
        validation = int(rng.integers(0, num_classes - len(unseen) - 1))
        split = make_class_split(
            "custom",
            num_classes,
            unseen_classes=unseen,
            validation_classes=validation,
            validation_seed=trial,
        )
        labels, partition = _random_dataset(rng, num_classes)
        fraction = float(rng.uniform(0.0, 0.45))
        sets = partition_samples(labels, partition, split, heldout_fraction=fraction, seed=trial)

        assert set(sets) == set(SAMPLE_SETS)
        for name in ("train", "val_seen", "val_unseen", "test_seen"):
            assert not np.isin(labels[sets[name]], split.unseen).any(), (trial, name)
        for name in ("train", "val_seen", "test_seen", "test_unseen"):
            assert not np.isin(labels[sets[name]], split.validation).any(), (trial, name)
        assert set(labels[sets["train"]]) <= set(split.training)
        assert set(labels[sets["test_unseen"]]) == set(split.unseen)
        assert (partition[sets["train"]] == "train").all() and (
            partition[sets["val_seen"]] == "train"
        ).all()
        assert (partition[sets["val_unseen"]] == "train").all()
        assert (partition[sets["test_seen"]] == "test").all() and (
            partition[sets["test_unseen"]] == "test"
        ).all()
        everything = np.concatenate(list(sets.values()))
        assert len(everything) == len(set(everything.tolist())), "a row is in two sets"
        # Every training class keeps training rows; held-out rows are about `fraction` of them.
        assert set(labels[sets["train"]]) == set(split.training)
        pool = np.isin(labels, split.training) & (partition == "train")
        assert len(sets["train"]) + len(sets["val_seen"]) == pool.sum()


def test_partition_is_deterministic_and_stratified() -> None:
    labels = np.repeat(np.arange(10), 20)
    partition = np.tile(np.array(["train"] * 15 + ["test"] * 5), 10)
    split = make_class_split(
        "custom", 10, unseen_classes=(0, 1), validation_classes=2, validation_seed=0
    )
    first = partition_samples(labels, partition, split, heldout_fraction=0.2, seed=5)
    again = partition_samples(labels, partition, split, heldout_fraction=0.2, seed=5)
    other = partition_samples(labels, partition, split, heldout_fraction=0.2, seed=6)
    for name in SAMPLE_SETS:
        np.testing.assert_array_equal(first[name], again[name])
        assert first[name].dtype == np.int64
    assert not np.array_equal(first["val_seen"], other["val_seen"])
    counts = np.bincount(labels[first["val_seen"]], minlength=10)
    assert all(counts[c] == 3 for c in split.training)  # round(0.2 * 15) per training class
    assert len(first["val_unseen"]) == 2 * 15
    assert len(first["test_unseen"]) == 2 * 5


def test_empty_train_or_test_unseen_is_an_error() -> None:
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    split = make_class_split(
        "custom", 4, unseen_classes=(3,), validation_classes=1, validation_seed=0
    )
    only_test = np.array(["test"] * 8)
    with pytest.raises(SplitError, match="'train' set is empty"):
        partition_samples(labels, only_test, split, heldout_fraction=0.1, seed=0)
    only_train = np.array(["train"] * 8)
    with pytest.raises(SplitError, match="'test_unseen' set is empty"):
        partition_samples(labels, only_train, split, heldout_fraction=0.1, seed=0)
    with pytest.raises(SplitError, match="partition values"):
        partition_samples(
            labels, np.array(["train"] * 7 + ["val"]), split, heldout_fraction=0.1, seed=0
        )


NAMES = ("Wave your hand", "Wave your other hand", "Jump", "Jump as high as you can", "Swim",
         "Bow", "Sit", "Stand", "Kick", "Clap")  # fmt: skip


def test_classes_by_name_explicit_validation_and_groups() -> None:
    split = make_class_split(
        "custom", 10, unseen_classes=("Swim", "bow"), validation_classes=("Sit", 9),
        validation_seed=0, class_names=NAMES,
    )  # fmt: skip
    assert split.unseen == (4, 5) and split.validation == (6, 9)
    assert split.training == (0, 1, 2, 3, 7, 8)
    groups = (("Wave your hand", "Wave your other hand"), ("Jump", "Jump as high as you can"))
    for seed in range(20):  # a drawn count takes whole groups
        drawn = make_class_split(
            "custom", 10, unseen_classes=("Swim",), validation_classes=2, validation_seed=seed,
            class_names=NAMES, class_groups=groups,
        )  # fmt: skip
        for group in ((0, 1), (2, 3)):
            assert set(group) <= set(drawn.validation) or not set(group) & set(drawn.validation)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"unseen_classes": ("Swimm",)}, r"data\.unseen_classes: 'Swimm' is not a class of the dataset; did you mean 'Swim'"),
        ({"unseen_classes": ("Jump",), "class_groups": groups},
         r"data\.class_groups\[1\]: 'Jump' is unseen but 'Jump as high as you can' of its group is not"),
        ({"validation_classes": ("Wave your hand",), "class_groups": groups},
         r"'Wave your hand' is a validation class but 'Wave your other hand' of its group is not"),
        ({"validation_classes": ("Swim",)}, r"data\.validation_classes: 'Swim' is an unseen class"),
        ({"class_groups": (("Jump", "Sit"), ("Sit", "Stand"))}, r"'Sit' is in groups 0 and 1"),
        ({"validation_classes": 3, "class_groups": ((0, 1), (2, 3), (6, 7), (8, 9)), "unseen_classes": (4, 5)},
         r"cannot make exactly 3 validation classes"),
    ]  # fmt: skip
    for options, message in cases:
        arguments: dict[str, Any] = {"unseen_classes": ("Swim",), "validation_classes": 1} | options
        with pytest.raises(SplitError, match=message):
            make_class_split("custom", 10, validation_seed=0, class_names=NAMES, **arguments)
