"""Checks of a dataset file's contents, run whenever one is opened: a dataset is data from a
user, validated when read, never trusted.

`find_problems(table, num_classes, num_joints)` runs vectorised checks over the Arrow columns
(no Python loop over rows; the coordinates are scanned in blocks): column types, missing
values, labels outside the class list or not integers, duplicate `sample_id`s, unknown
`partition` values, frame and body counts below 1, a `joints` length that does not match
`num_frames × num_bodies × joints × 3`, and NaN/inf coordinates. Each `Problem` names the
column, the first bad row (with its sample id), the bad value, how many rows have it and the fix.

`neuron data check FILE` prints every problem; opening a file for training
(`neuron.dataset.open_dataset`) refuses it with the first few.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neuron.dataset import PARTITIONS

INTEGER_COLUMNS = ("label", "subject", "view", "setup", "num_frames", "num_bodies")
STRING_COLUMNS = ("sample_id", "partition")
REIMPORT = "re-import the source with `neuron data import` (or fix the file that wrote it)"
BLOCK = 1 << 24
"""Coordinates checked per numpy call (64 MiB of float32)."""


@dataclass(frozen=True)
class Problem:
    """One kind of fault in one column, with its first occurrence."""

    column: str
    what: str
    """What is wrong, e.g. "label outside 0..59"."""
    fix: str
    row: int | None = None
    """The first bad row (0-based), when the fault is in rows."""
    sample_id: str | None = None
    value: str | None = None
    """The first bad value, as text."""
    rows: int = 0
    """How many rows have this fault."""

    def describe(self) -> str:
        where = f"column {self.column}"
        if self.row is not None:
            where += f", row {self.row}"
            if self.sample_id:
                where += f" (sample_id {self.sample_id})"
        value = f" = {self.value}" if self.value is not None else ""
        more = f" [{self.rows} rows]" if self.rows > 1 else ""
        return f"{where}{value}: {self.what}{more}; {self.fix}"


def _sample_id(table: pa.Table, row: int) -> str | None:
    column = table.column("sample_id") if "sample_id" in table.column_names else None
    if (
        column is None
        or not pa.types.is_string(column.type)
        and not pa.types.is_large_string(column.type)
    ):
        return None
    value = column[row].as_py()
    return None if value is None else str(value)


def _rows_problem(
    table: pa.Table, column: str, mask: np.ndarray, values: np.ndarray, what: str, fix: str
) -> Problem | None:
    """A Problem for the rows where `mask` is True (None when there are none)."""
    bad = np.flatnonzero(mask)
    if bad.size == 0:
        return None
    row = int(bad[0])
    return Problem(
        column=column,
        what=what,
        fix=fix,
        row=row,
        sample_id=_sample_id(table, row),
        value=repr(values[row].item() if hasattr(values[row], "item") else values[row]),
        rows=int(bad.size),
    )


def _type_problems(table: pa.Table) -> tuple[list[Problem], set[str]]:
    """Problems with column types, and the columns whose type is usable."""
    problems: list[Problem] = []
    usable: set[str] = set()
    for name in INTEGER_COLUMNS:
        column_type = table.column(name).type
        if pa.types.is_integer(column_type):
            usable.add(name)
            continue
        problems.append(
            Problem(
                column=name,
                what=f"has type {column_type}; {name} must hold integers (int32)"
                + (", e.g. class ids 0, 1, 2" if name == "label" else ""),
                fix=f"write {name} as int32 or {REIMPORT}",
                row=0 if len(table) else None,
                sample_id=_sample_id(table, 0) if len(table) else None,
                value=repr(table.column(name)[0].as_py()) if len(table) else None,
                rows=len(table),
            )
        )
    for name in STRING_COLUMNS:
        column_type = table.column(name).type
        if pa.types.is_string(column_type) or pa.types.is_large_string(column_type):
            usable.add(name)
        else:
            problems.append(
                Problem(
                    column=name,
                    what=f"has type {column_type}; {name} must hold strings",
                    fix=f"write {name} as strings or {REIMPORT}",
                    rows=len(table),
                )
            )
    joints = table.column("joints").type
    if (
        pa.types.is_list(joints) or pa.types.is_large_list(joints)
    ) and joints.value_type == pa.float32():
        usable.add("joints")
    else:
        problems.append(
            Problem(
                column="joints",
                what=f"has type {joints}; joints must be large_list<float32> "
                "(the (T, M, V, 3) coordinates of each row, flattened)",
                fix=f"write joints as lists of float32 or {REIMPORT}",
                rows=len(table),
            )
        )
    return problems, usable


def _integers(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.int64)


def find_problems(table: pa.Table, num_classes: int, num_joints: int) -> list[Problem]:
    """Every kind of fault in `table` (a dataset file's columns), first occurrence each."""
    if len(table) == 0:
        return [
            Problem(
                column="(all)",
                what="the file has no rows",
                fix=f"{REIMPORT}; an import that skips every item reports why",
            )
        ]
    problems, usable = _type_problems(table)
    for name in table.column_names:
        nulls = table.column(name).null_count
        if name in usable and nulls:
            mask = table.column(name).is_null().to_numpy(zero_copy_only=False)
            values = np.full(len(table), None, dtype=object)
            found = _rows_problem(
                table, name, mask, values, "missing value (null)", f"fill in {name} or {REIMPORT}"
            )
            if found is not None:
                problems.append(found)
                if name != "partition":  # its other values are still checked, nulls aside
                    usable.discard(name)
    if "label" in usable:
        labels = _integers(table, "label")
        found = _rows_problem(
            table,
            "label",
            (labels < 0) | (labels >= num_classes),
            labels,
            f"outside 0..{num_classes - 1} (the file names {num_classes} classes)",
            "labels are 0-based indices into neuron.class_names; fix the label or the class "
            f"list, or {REIMPORT}",
        )
        if found is not None:
            problems.append(found)
    if "sample_id" in usable:
        ids = np.asarray(table.column("sample_id").to_pylist(), dtype=object)
        _, first, inverse, counts = np.unique(
            ids.astype(str), return_index=True, return_inverse=True, return_counts=True
        )
        duplicate = (counts[inverse] > 1) & (np.arange(len(ids)) != first[inverse])
        found = _rows_problem(
            table,
            "sample_id",
            duplicate,
            ids,
            "duplicate sample_id (appears earlier in the file)",
            f"every sample needs its own id; remove the repeated rows or {REIMPORT}",
        )
        if found is not None:
            problems.append(found)
    if "partition" in usable:
        partition = table.column("partition")
        known = pc.fill_null(
            pc.is_in(partition, value_set=pa.array(PARTITIONS, type=partition.type)), True
        )
        found = _rows_problem(
            table,
            "partition",
            ~known.to_numpy(zero_copy_only=False),  # nulls: reported as missing above
            np.asarray(partition.to_pylist(), dtype=object),
            f"unknown partition, expected one of {', '.join(PARTITIONS)}",
            f"set partition to train or test under the file's benchmark, or {REIMPORT}",
        )
        if found is not None:
            problems.append(found)
    for name in ("num_frames", "num_bodies"):
        if name in usable:
            counts_column = _integers(table, name)
            found = _rows_problem(
                table,
                name,
                counts_column < 1,
                counts_column,
                "must be at least 1",
                f"drop empty sequences or {REIMPORT}",
            )
            if found is not None:
                problems.append(found)
    if {"joints", "num_frames", "num_bodies"} <= usable:
        problems += _joint_problems(table, num_joints)
    return problems


def _joint_problems(table: pa.Table, num_joints: int) -> list[Problem]:
    problems = []
    joints = table.column("joints")
    lengths = pc.list_value_length(joints).to_numpy(zero_copy_only=False).astype(np.int64)
    expected = _integers(table, "num_frames") * _integers(table, "num_bodies") * num_joints * 3
    found = _rows_problem(
        table,
        "joints",
        lengths != expected,
        lengths,
        f"holds this many numbers, but num_frames × num_bodies × {num_joints} joints × 3 "
        "says otherwise",
        f"store each row's coordinates as (T, M, {num_joints}, 3), flattened, with matching "
        f"num_frames and num_bodies, or {REIMPORT}",
    )
    if found is not None:
        problems.append(found)  # the scan below still finds each row by the list offsets
    bad_rows: list[np.ndarray] = []
    first_value: float | None = None
    start_row = 0
    for chunk in joints.chunks:
        values = chunk.flatten().to_numpy(zero_copy_only=False)
        offsets = chunk.offsets.to_numpy()
        offsets = offsets - offsets[0]
        for block in range(0, len(values), BLOCK):
            bad = np.flatnonzero(~np.isfinite(values[block : block + BLOCK])) + block
            if bad.size:
                if first_value is None:
                    first_value = float(values[bad[0]])
                bad_rows.append(np.searchsorted(offsets, bad, side="right") - 1 + start_row)
        start_row += len(chunk)
    if bad_rows:
        rows = np.unique(np.concatenate(bad_rows))
        row = int(rows[0])
        problems.append(
            Problem(
                column="joints",
                what="NaN or infinite coordinates",
                fix="zero or interpolate the missing coordinates, drop the sequence, or "
                f"{REIMPORT} (importers skip such sequences and list them)",
                row=row,
                sample_id=_sample_id(table, row),
                value=repr(first_value),
                rows=int(rows.size),
            )
        )
    return problems
