"""The standard train/test partitions of the skeleton benchmarks, as data.

A rule benchmark assigns each sample to "train" or "test" from one of its recording fields:

| name           | dataset | field   | train                                 | valid ids |
|----------------|---------|---------|---------------------------------------|-----------|
| `ntu60-xsub`   | ntu60   | subject | the 20 subjects of the NTU RGB+D paper | P1..P40   |
| `ntu60-xview`  | ntu60   | view    | cameras 2 and 3 (camera 1 tests)      | C1..C3    |
| `ntu120-xsub`  | ntu120  | subject | the 53 subjects of the NTU-120 paper  | P1..P106  |
| `ntu120-xset`  | ntu120  | setup   | even setup ids                        | S1..S32   |
| `nwucla-xview` | nw_ucla | view    | views 1 and 2 (view 3 tests)          | V1..V3    |

Sources: Shahroudy et al., "NTU RGB+D", CVPR 2016, Sec. 4.1; Liu et al., "NTU RGB+D 120",
TPAMI 2019, Sec. 4.1; Wang et al., "Cross-view Action Modeling", CVPR 2014 (the view-3 test set
of `val_label.pkl`).

Source-partitioned benchmarks (`pku-xsub`, `pku-xview`) name protocols whose partition ships
inside the preprocessed files (their `x_train` / `x_test` arrays); they have no rule here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from neuron.dataset import DatasetError

Partition = Literal["train", "test"]

NTU60_TRAINING_SUBJECTS: tuple[int, ...] = (
    1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38,
)  # fmt: skip
"""NTU RGB+D cross-subject training performers (P ids, 1-based)."""

NTU120_TRAINING_SUBJECTS: tuple[int, ...] = NTU60_TRAINING_SUBJECTS + (
    45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86,
    89, 91, 92, 93, 94, 95, 97, 98, 100, 103,
)  # fmt: skip
"""NTU RGB+D 120 cross-subject training performers (P ids, 1-based)."""


@dataclass(frozen=True)
class Benchmark:
    """A published partition rule: samples whose `field` is in `training_ids` train, the rest test."""

    name: str
    dataset: str
    """Key of `neuron.classes.DATASET_CLASSES`."""
    field: Literal["subject", "view", "setup"]
    """The recording field that decides the partition."""
    training_ids: frozenset[int]
    valid_ids: range
    """Every id the dataset uses for `field`; anything else is an error, not a test sample."""


BENCHMARKS: dict[str, Benchmark] = {
    benchmark.name: benchmark
    for benchmark in (
        Benchmark(
            "ntu60-xsub", "ntu60", "subject", frozenset(NTU60_TRAINING_SUBJECTS), range(1, 41)
        ),
        Benchmark("ntu60-xview", "ntu60", "view", frozenset((2, 3)), range(1, 4)),
        Benchmark(
            "ntu120-xsub", "ntu120", "subject", frozenset(NTU120_TRAINING_SUBJECTS), range(1, 107)
        ),
        Benchmark("ntu120-xset", "ntu120", "setup", frozenset(range(2, 33, 2)), range(1, 33)),
        Benchmark("nwucla-xview", "nw_ucla", "view", frozenset((1, 2)), range(1, 4)),
    )
}
"""The rule benchmarks by name."""

BENCHMARK_NAMES: tuple[str, ...] = tuple(BENCHMARKS)

SOURCE_PARTITIONED_BENCHMARKS: dict[str, str] = {"pku-xsub": "pku_mmd", "pku-xview": "pku_mmd"}
"""Benchmarks whose partition comes from the source file, with their dataset."""


def get_benchmark(name: str) -> Benchmark:
    """The rule benchmark called `name`; a DatasetError listing the valid names otherwise."""
    if name not in BENCHMARKS:
        raise DatasetError(
            f"unknown benchmark {name!r}; valid benchmarks: {', '.join(BENCHMARK_NAMES)}"
        )
    return BENCHMARKS[name]


def benchmark_dataset(name: str) -> str:
    """The dataset (`neuron.classes.DATASET_CLASSES` key) a rule or source-partitioned benchmark belongs to."""
    if name in SOURCE_PARTITIONED_BENCHMARKS:
        return SOURCE_PARTITIONED_BENCHMARKS[name]
    if name not in BENCHMARKS:
        valid = BENCHMARK_NAMES + tuple(SOURCE_PARTITIONED_BENCHMARKS)
        raise DatasetError(f"unknown benchmark {name!r}; valid benchmarks: {', '.join(valid)}")
    return BENCHMARKS[name].dataset


def partition_of(benchmark: str, subject: int, view: int, setup: int) -> Partition:
    """ "train" or "test" for a sample recorded by `subject` from `view` in `setup` (1-based ids).

    Raises DatasetError for an unknown benchmark name (listing the valid ones) and for an id
    the benchmark's dataset does not use (e.g. performer 41 under `ntu60-xsub`).
    """
    rule = get_benchmark(benchmark)
    value = {"subject": subject, "view": view, "setup": setup}[rule.field]
    if int(value) not in rule.valid_ids:
        raise DatasetError(
            f"{benchmark}: {rule.field} {value} is outside {rule.valid_ids.start}..{rule.valid_ids.stop - 1} "
            f"used by {rule.dataset}; check the sample's {rule.field} id or pick the benchmark of its dataset"
        )
    return "train" if int(value) in rule.training_ids else "test"
