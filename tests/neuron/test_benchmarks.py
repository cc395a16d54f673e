"""The published partitions: membership, rule boundaries, errors, and the real NW-UCLA test set."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from neuron.benchmarks import (
    BENCHMARK_NAMES,
    BENCHMARKS,
    NTU60_TRAINING_SUBJECTS,
    NTU120_TRAINING_SUBJECTS,
    benchmark_dataset,
    partition_of,
)
from neuron.classes import DATASET_CLASSES
from neuron.dataset import DatasetError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_every_benchmark_names_its_dataset_and_splits_the_ids_both_ways() -> None:
    assert list(BENCHMARKS) == list(BENCHMARK_NAMES)
    for name, benchmark in BENCHMARKS.items():
        assert benchmark.name == name and benchmark_dataset(name) == benchmark.dataset
        assert benchmark.dataset in DATASET_CLASSES
        # the name says the dataset (ntu60-xsub is NTU-60, nwucla-xview is NW-UCLA)
        assert benchmark.dataset.replace("_", "") == name.split("-")[0]
        # a rule benchmark trains on some ids of its field and tests on the others
        assert benchmark.training_ids and benchmark.training_ids < set(benchmark.valid_ids)
    assert benchmark_dataset("pku-xsub") == "pku_mmd"


def test_training_subject_lists_match_the_papers() -> None:
    assert len(NTU60_TRAINING_SUBJECTS) == 20
    assert len(NTU120_TRAINING_SUBJECTS) == 53
    assert len(set(NTU120_TRAINING_SUBJECTS)) == 53
    assert set(NTU60_TRAINING_SUBJECTS) < set(NTU120_TRAINING_SUBJECTS)
    ntu60_train = [p for p in range(1, 41) if partition_of("ntu60-xsub", p, 1, 1) == "train"]
    assert ntu60_train == list(NTU60_TRAINING_SUBJECTS)


@pytest.mark.parametrize(
    ("benchmark", "subject", "view", "setup", "expected"),
    [
        ("ntu60-xsub", 1, 1, 1, "train"),
        ("ntu60-xsub", 3, 2, 1, "test"),
        ("ntu60-xsub", 38, 1, 17, "train"),
        ("ntu60-xsub", 40, 1, 17, "test"),
        ("ntu60-xview", 3, 1, 1, "test"),
        ("ntu60-xview", 3, 2, 1, "train"),
        ("ntu60-xview", 3, 3, 1, "train"),
        ("ntu120-xsub", 103, 1, 32, "train"),
        ("ntu120-xsub", 106, 1, 32, "test"),
        ("ntu120-xset", 1, 1, 1, "test"),
        ("ntu120-xset", 1, 1, 2, "train"),
        ("ntu120-xset", 1, 1, 32, "train"),
        ("ntu120-xset", 1, 1, 31, "test"),
        ("nwucla-xview", 1, 1, 0, "train"),
        ("nwucla-xview", 1, 2, 0, "train"),
        ("nwucla-xview", 1, 3, 0, "test"),
    ],
)
def test_partition_of(benchmark: str, subject: int, view: int, setup: int, expected: str) -> None:
    assert partition_of(benchmark, subject, view, setup) == expected


def test_unknown_benchmark_lists_the_valid_names() -> None:
    with pytest.raises(DatasetError, match="unknown benchmark 'ntu60-xsetup'") as error:
        partition_of("ntu60-xsetup", 1, 1, 1)
    for name in BENCHMARK_NAMES:
        assert name in str(error.value)


def test_ids_outside_the_dataset_are_errors_not_test_samples() -> None:
    with pytest.raises(DatasetError, match=r"subject 41 is outside 1\.\.40"):
        partition_of("ntu60-xsub", 41, 1, 1)
    with pytest.raises(DatasetError, match=r"view 4 is outside 1\.\.3"):
        partition_of("nwucla-xview", 1, 4, 1)
    with pytest.raises(DatasetError, match=r"setup 33 is outside 1\.\.32"):
        partition_of("ntu120-xset", 1, 1, 33)


class _BuiltinsOnly(pickle.Unpickler):
    """val_label.pkl holds only lists, dicts, strings and ints; refuse anything else."""

    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(
            f"val_label.pkl refers to {module}.{name}; expected plain data"
        )


@pytest.mark.shared_data
def test_nwucla_rule_reproduces_the_official_test_list() -> None:
    folder = SHARED_DATA / "nw_ucla"
    if not (folder / "val_label.pkl").is_file():
        pytest.skip(f"{folder} is absent (real NW-UCLA data lives in ../shared/data)")
    with open(folder / "val_label.pkl", "rb") as handle:
        official = {entry["file_name"] for entry in _BuiltinsOnly(handle).load()}
    assert len(official) == 464
    ruled = set()
    for path in (folder / "all_sqe").glob("*.json"):
        view = int(path.stem.split("_v")[1])
        if partition_of("nwucla-xview", 1, view, 0) == "test":
            ruled.add(path.stem)
    assert ruled == official
