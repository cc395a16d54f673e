"""Published seen/unseen class splits as data, and the split of a dataset into its evaluation sets.

Split ids are 0-based class ids, copied from the tables in `shared/NEURON.md`:

- SynSE-style fixed splits (used by Neuron): `ntu60_55_5`, `ntu60_48_12`, `ntu120_110_10`,
  `ntu120_96_24`, `pku_46_5`, `pku_39_12` [skelemoa/synse-zsl README; Neuron `main_match.py`].
- SMIE random splits `ntu60_smie1..3`, `ntu120_smie4..6`, `pku_smie7..9` [YujieOuO/SMIE
  `split.py`], and Neuron's own PKU ablation split `pku_neuron3`.
- This project's splits: `synthetic_default` and `synthetic_alt` (5 unseen of the 20 synthetic
  classes, each a new composition of primitives that seen classes contain), and `nwucla_8_2`.

Class roles (`ClassSplit`): *unseen* classes are only ever tested; *validation* classes are
pseudo-unseen classes carved from the seen ones for model selection and GZSL calibration; the
remaining seen classes are the *training* classes, the only ones that train either stage.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np


class SplitError(ValueError):
    """A split cannot be built; the message names the bad value and the fix."""


@dataclass(frozen=True)
class PublishedSplit:
    """A published seen/unseen protocol: the unseen class ids of one dataset."""

    name: str
    dataset: str
    """Dataset name as in `neuron.classes.DATASET_CLASSES` (or `synthetic`)."""
    num_classes: int
    unseen: tuple[int, ...]
    """0-based unseen class ids, sorted."""
    source: str
    """Where the ids were read from."""


_SYNSE = "SynSE fixed split (skelemoa/synse-zsl README; Neuron main_match.py)"
_SMIE = "SMIE random split (YujieOuO/SMIE split.py; Neuron ablations)"

PUBLISHED_SPLITS: dict[str, PublishedSplit] = {
    split.name: split
    for split in (
        PublishedSplit("ntu60_55_5", "ntu60", 60, (10, 11, 19, 26, 56), _SYNSE),
        PublishedSplit(
            "ntu60_48_12", "ntu60", 60, (3, 5, 9, 12, 15, 40, 42, 47, 51, 56, 58, 59), _SYNSE
        ),
        PublishedSplit(
            "ntu120_110_10", "ntu120", 120, (4, 13, 37, 43, 49, 65, 88, 95, 99, 106), _SYNSE
        ),
        PublishedSplit(
            "ntu120_96_24",
            "ntu120",
            120,
            (
                5,
                9,
                11,
                16,
                18,
                20,
                22,
                29,
                35,
                39,
                45,
                49,
                59,
                68,
                70,
                81,
                84,
                87,
                93,
                94,
                104,
                113,
                114,
                119,
            ),
            _SYNSE,
        ),
        PublishedSplit("pku_46_5", "pku_mmd", 51, (1, 9, 20, 34, 50), _SYNSE),
        PublishedSplit(
            "pku_39_12", "pku_mmd", 51, (3, 7, 11, 15, 19, 21, 25, 31, 33, 36, 43, 48), _SYNSE
        ),
        PublishedSplit("ntu60_smie1", "ntu60", 60, (4, 19, 31, 47, 51), _SMIE),
        PublishedSplit("ntu60_smie2", "ntu60", 60, (12, 29, 32, 44, 59), _SMIE),
        PublishedSplit("ntu60_smie3", "ntu60", 60, (7, 20, 28, 39, 58), _SMIE),
        PublishedSplit(
            "ntu120_smie4", "ntu120", 120, (3, 18, 26, 38, 41, 60, 87, 99, 102, 110), _SMIE
        ),
        PublishedSplit(
            "ntu120_smie5", "ntu120", 120, (5, 12, 14, 15, 17, 42, 67, 82, 100, 119), _SMIE
        ),
        PublishedSplit(
            "ntu120_smie6", "ntu120", 120, (6, 20, 27, 33, 42, 55, 71, 97, 104, 118), _SMIE
        ),
        PublishedSplit("pku_smie7", "pku_mmd", 51, (1, 9, 20, 34, 50), _SMIE),
        PublishedSplit("pku_smie8", "pku_mmd", 51, (3, 14, 29, 31, 49), _SMIE),
        PublishedSplit("pku_smie9", "pku_mmd", 51, (2, 15, 39, 41, 43), _SMIE),
        PublishedSplit(
            "pku_neuron3",
            "pku_mmd",
            51,
            (4, 12, 16, 22, 36),
            "Neuron PKU random split 3 (Neuron main_match.py)",
        ),
        PublishedSplit(
            "synthetic_default",
            "synthetic",
            20,
            (0, 6, 10, 13, 17),
            "this project: unseen classes are new compositions of seen primitives (neuron.synthetic)",
        ),
        PublishedSplit(
            "synthetic_alt",
            "synthetic",
            20,
            (2, 4, 12, 14, 18),
            "this project: a second compositional split of the synthetic classes (neuron.synthetic)",
        ),
        PublishedSplit(
            "nwucla_8_2",
            "nw_ucla",
            10,
            (1, 7),
            "this project: pick up with two hands and doffing unseen; their analogues (pick up with "
            "one hand, donning) stay seen",
        ),
    )
}
"""Every published split by name."""


def _sorted_unique(ids: tuple[int, ...], field: str) -> tuple[int, ...]:
    values = tuple(int(i) for i in ids)
    if list(values) != sorted(set(values)):
        raise SplitError(f"ClassSplit.{field}={list(values)}: must be sorted without duplicates")
    return values


@dataclass(frozen=True)
class ClassSplit:
    """Class roles of one run; all fields are sorted tuples of 0-based class ids."""

    seen: tuple[int, ...]
    """Every class the model may see labels of (training + validation)."""
    unseen: tuple[int, ...]
    """Zero-shot test classes; never used for training or selection."""
    validation: tuple[int, ...]
    """Pseudo-unseen classes carved from `seen` for model selection and calibration."""
    training: tuple[int, ...]
    """`seen` minus `validation`: the only classes that train either stage."""

    def __post_init__(self) -> None:
        for name in ("seen", "unseen", "validation", "training"):
            _sorted_unique(getattr(self, name), name)
        overlap = sorted(set(self.seen) & set(self.unseen))
        if overlap:
            raise SplitError(f"ClassSplit: classes {overlap} are both seen and unseen")
        outside = sorted(set(self.validation) - set(self.seen))
        if outside:
            raise SplitError(f"ClassSplit.validation: classes {outside} are not seen classes")
        expected = tuple(sorted(set(self.seen) - set(self.validation)))
        if self.training != expected:
            raise SplitError(
                f"ClassSplit.training={list(self.training)}: must be seen minus validation, {list(expected)}"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes that take a role (seen + unseen)."""
        return len(self.seen) + len(self.unseen)


def _suggest(num_classes: int) -> str:
    matching = [name for name, s in PUBLISHED_SPLITS.items() if s.num_classes == num_classes]
    if matching:
        return f"use one of {', '.join(matching)}, or split=custom with unseen_classes"
    return f"no published split has {num_classes} classes; use split=custom with unseen_classes"


def resolve_classes(
    values: tuple[int | str, ...], class_names: tuple[str, ...], field: str
) -> tuple[int, ...]:
    """Class ids or names → 0-based ids of a dataset with `class_names` (names match exactly,
    else ignoring case); an unknown name is an error that names the nearest class names."""
    by_name = {name: index for index, name in enumerate(class_names)}
    by_folded = {name.casefold(): index for index, name in enumerate(class_names)}
    ids = []
    for value in values:
        if isinstance(value, str):
            index = by_name.get(value, by_folded.get(value.casefold()))
            if index is None:
                close = difflib.get_close_matches(value, list(class_names), n=3, cutoff=0.5)
                hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
                raise SplitError(
                    f"{field}: {value!r} is not a class of the dataset; {hint}give class names as "
                    "`neuron data info FILE` lists them, or 0-based ids"
                )
            ids.append(index)
        else:
            if not 0 <= int(value) < len(class_names):
                raise SplitError(
                    f"{field}: class id {value} is outside 0..{len(class_names) - 1} (the "
                    f"dataset has {len(class_names)} classes)"
                )
            ids.append(int(value))
    if len(set(ids)) != len(ids):
        raise SplitError(f"{field}={list(values)}: a class is listed twice")
    return tuple(ids)


def _groups_of(
    class_groups: tuple[tuple[int | str, ...], ...], class_names: tuple[str, ...]
) -> list[tuple[int, ...]]:
    groups = [
        tuple(sorted(resolve_classes(group, class_names, f"data.class_groups[{index}]")))
        for index, group in enumerate(class_groups)
    ]
    owner: dict[int, int] = {}
    for index, group in enumerate(groups):
        for member in group:
            if member in owner:
                raise SplitError(
                    f"data.class_groups: {class_names[member]!r} is in groups {owner[member]} and "
                    f"{index}; merge them into one group"
                )
            owner[member] = index
    return groups


def _check_groups_kept_whole(
    groups: list[tuple[int, ...]], held_out: tuple[int, ...], role: str, field: str,
    class_names: tuple[str, ...],
) -> None:  # fmt: skip
    for index, group in enumerate(groups):
        inside = [member for member in group if member in set(held_out)]
        outside = [member for member in group if member not in set(held_out)]
        if inside and outside:
            raise SplitError(
                f"data.class_groups[{index}]: {class_names[inside[0]]!r} is {role} but "
                f"{', '.join(repr(class_names[m]) for m in outside)} of its group is not; a group "
                f"is held out together: add the rest of the group to {field} or take "
                f"{class_names[inside[0]]!r} out"
            )


def _draw_validation(
    seen: tuple[int, ...], count: int, groups: list[tuple[int, ...]], seed: int, where: str
) -> tuple[int, ...]:
    """`count` seen classes drawn with `seed`; whole groups at a time when there are groups."""
    rng = np.random.default_rng(seed)
    if not groups:
        return tuple(
            sorted(int(i) for i in rng.choice(np.asarray(seen), size=count, replace=False))
        )
    grouped = {member for group in groups for member in group}
    units = [group for group in groups if set(group) <= set(seen)]
    units += [(index,) for index in seen if index not in grouped]
    chosen: list[int] = []
    for position in rng.permutation(len(units)):
        unit = units[int(position)]
        if len(chosen) + len(unit) <= count:
            chosen.extend(unit)
    if len(chosen) != count:
        raise SplitError(
            f"data.validation_classes={count}: the class groups of {where} cannot make exactly "
            f"{count} validation classes (drawn whole groups give {len(chosen)}); change the count "
            "or list the validation classes"
        )
    return tuple(sorted(chosen))


def make_class_split(
    split: str,
    num_classes: int,
    *,
    unseen_classes: tuple[int | str, ...] = (),
    validation_classes: int | tuple[int | str, ...],
    validation_seed: int,
    class_names: tuple[str, ...] | None = None,
    class_groups: tuple[tuple[int | str, ...], ...] = (),
) -> ClassSplit:
    """Class roles for a dataset of `num_classes` classes named `class_names`.

    `split` is a name in `PUBLISHED_SPLITS`, or `custom` with `unseen_classes` (ids or names).
    `validation_classes` is an explicit list of (pseudo-unseen) classes, or a count: a
    deterministic draw of that many seen classes from a numpy Generator seeded with
    `validation_seed`. Each of `class_groups` is wholly unseen, validation or training; with a
    count, whole groups are drawn.
    """
    names = class_names or tuple(str(index) for index in range(num_classes))
    if len(names) != num_classes:
        raise SplitError(f"{len(names)} class names for a dataset of {num_classes} classes")
    if split == "custom":
        if not unseen_classes:
            raise SplitError(
                "data.unseen_classes: empty with data.split=custom; list the unseen class ids or "
                "names, e.g. data.unseen_classes=[3,7]"
            )
        unseen = resolve_classes(tuple(unseen_classes), names, "data.unseen_classes")
        where = "data.unseen_classes"
    elif split in PUBLISHED_SPLITS:
        published = PUBLISHED_SPLITS[split]
        if published.num_classes != num_classes:
            raise SplitError(
                f"data.split={split}: split {split} is for {published.num_classes} classes but the "
                f"dataset has {num_classes}; {_suggest(num_classes)}"
            )
        if unseen_classes:
            raise SplitError(
                f"data.unseen_classes={list(unseen_classes)} is only read with data.split=custom "
                f"(data.split is {split})"
            )
        unseen = published.unseen
        where = f"split {split}"
    else:
        close = difflib.get_close_matches(split, list(PUBLISHED_SPLITS), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SplitError(
            f"data.split={split!r}: unknown split; {hint}valid: custom, {', '.join(PUBLISHED_SPLITS)}"
        )
    unseen = tuple(sorted(unseen))
    seen = tuple(i for i in range(num_classes) if i not in set(unseen))
    groups = _groups_of(class_groups, names)
    _check_groups_kept_whole(groups, unseen, "unseen", "data.unseen_classes", names)
    if isinstance(validation_classes, int):
        if validation_classes < 0:
            raise SplitError(f"data.validation_classes={validation_classes}: must be >= 0")
        if len(seen) - validation_classes < 2:
            raise SplitError(
                f"data.validation_classes={validation_classes}: {where} leaves {len(seen)} seen "
                f"classes, so only {len(seen) - validation_classes} would train (at least 2 are "
                f"needed); use data.validation_classes <= {max(len(seen) - 2, 0)}"
            )
        validation = _draw_validation(seen, validation_classes, groups, validation_seed, where)
    else:
        listed = resolve_classes(tuple(validation_classes), names, "data.validation_classes")
        clash = [index for index in listed if index in set(unseen)]
        if clash:
            raise SplitError(
                f"data.validation_classes: {names[clash[0]]!r} is an unseen class ({where}); "
                "validation classes are carved from the seen classes"
            )
        validation = tuple(sorted(listed))
        _check_groups_kept_whole(
            groups, validation, "a validation class", "data.validation_classes", names
        )
        if len(seen) - len(validation) < 2:
            raise SplitError(
                f"data.validation_classes: {len(validation)} of the {len(seen)} seen classes "
                "leave fewer than 2 to train; list fewer"
            )
    training = tuple(i for i in seen if i not in set(validation))
    return ClassSplit(seen=seen, unseen=unseen, validation=validation, training=training)


SAMPLE_SETS = ("train", "val_seen", "val_unseen", "test_seen", "test_unseen")
"""Keys returned by `partition_samples`."""


def partition_samples(
    labels: np.ndarray,
    partition: np.ndarray,
    class_split: ClassSplit,
    *,
    heldout_fraction: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Row indices (sorted int64) of the five evaluation sets.

    - `train`: train-partition rows of training classes, minus the held-out part;
    - `val_seen`: a stratified, deterministic `heldout_fraction` of those rows (at least one row
      of every training class with two or more rows, never all of a class's rows);
    - `val_unseen`: train-partition rows of the validation (pseudo-unseen) classes;
    - `test_seen`: test-partition rows of training classes;
    - `test_unseen`: test-partition rows of unseen classes.

    Unseen-class rows appear only in `test_unseen`; validation-class rows only in `val_unseen`.
    Test-partition rows of validation classes are not used.
    """
    labels = np.asarray(labels)
    partition = np.asarray(partition)
    if labels.ndim != 1 or partition.shape != labels.shape:
        raise SplitError(
            f"labels {labels.shape} and partition {partition.shape} must be 1-D arrays of one length"
        )
    unknown = sorted(set(np.unique(partition).tolist()) - {"train", "test"})
    if unknown:
        raise SplitError(
            f"partition values {unknown}: expected 'train' or 'test' (re-import the dataset)"
        )
    if not 0.0 <= heldout_fraction < 1.0:
        raise SplitError(f"data.heldout_fraction={heldout_fraction}: must be in [0, 1)")
    in_train = partition == "train"
    in_test = partition == "test"
    is_training_class = np.isin(labels, class_split.training)

    rng = np.random.default_rng(seed)
    heldout: list[np.ndarray] = []
    for label in class_split.training:
        rows = np.flatnonzero(in_train & (labels == label))
        count = int(round(heldout_fraction * len(rows)))
        if heldout_fraction > 0 and len(rows) >= 2:
            count = min(max(count, 1), len(rows) - 1)
        if count > 0:
            heldout.append(np.sort(rng.choice(rows, size=count, replace=False)))
    val_seen = np.sort(np.concatenate(heldout)) if heldout else np.zeros(0, dtype=np.int64)
    train_mask = in_train & is_training_class
    train_mask[val_seen] = False
    sets = {
        "train": np.flatnonzero(train_mask),
        "val_seen": val_seen,
        "val_unseen": np.flatnonzero(in_train & np.isin(labels, class_split.validation)),
        "test_seen": np.flatnonzero(in_test & is_training_class),
        "test_unseen": np.flatnonzero(in_test & np.isin(labels, class_split.unseen)),
    }
    for name in ("train", "test_unseen"):
        if len(sets[name]) == 0:
            classes = class_split.training if name == "train" else class_split.unseen
            where = "train" if name == "train" else "test"
            raise SplitError(
                f"the {name!r} set is empty: no {where}-partition rows of classes {list(classes)}; check "
                f"that the dataset's labels and partition match the split (data.split, data.unseen_classes)"
            )
    return {name: values.astype(np.int64) for name, values in sets.items()}
