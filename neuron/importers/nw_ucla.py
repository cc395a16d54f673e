"""The `nw-ucla` importer.

A folder (searched recursively) of NW-UCLA `all_sqe` JSON files
`{"file_name": "aAA_sSS_eEE_vVV", "skeletons": [T][20][3], "label": 1..10}`. The Kinect v1
joints are mapped to the NTU layout with `neuron.joints.KINECT_V1_TO_NTU` and
`NTU_FROM_KINECT_V1_DERIVED`; subject = s, view = v, setup = e (the repetition);
benchmark `nwucla-xview`; label = label - 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import numpy as np

from neuron.benchmarks import partition_of
from neuron.dataset import DatasetError, DatasetInfo
from neuron.importers.common import (
    ImportPlan,
    ImportRequest,
    SequenceRecord,
    SkippedItem,
    class_names_for,
    list_files,
)
from neuron.joints import KINECT_V1_TO_NTU, kinect_v1_joint_weights, map_joints

NW_UCLA_SAMPLE_NAME = re.compile(r"a(\d+)_s(\d+)_e(\d+)_v(\d+)")


def plan(request: ImportRequest) -> ImportPlan:
    """The JSON files of SOURCE, in file-name order, mapped to the NTU joint layout."""
    source = request.source
    benchmark = request.benchmark or "nwucla-xview"
    if benchmark != "nwucla-xview":
        raise DatasetError(
            f"nw-ucla: benchmark {benchmark!r}; NW-UCLA has one benchmark, nwucla-xview"
        )
    class_names = class_names_for("nw_ucla", request.class_names_file)
    files = list_files(source, "*.json", "NW-UCLA all_sqe JSON")
    weights = kinect_v1_joint_weights()
    source_joints = len(KINECT_V1_TO_NTU)
    info = DatasetInfo(
        dataset="nw_ucla", class_names=class_names, source="nw-ucla", benchmark=benchmark
    )

    def items() -> Iterator[SequenceRecord | SkippedItem]:
        for path in files:
            match = NW_UCLA_SAMPLE_NAME.fullmatch(path.stem)
            if match is None:
                yield SkippedItem(path.name, "file name does not follow aAA_sSS_eEE_vVV")
                continue
            _, subject, repetition, view = (int(group) for group in match.groups())
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                line = getattr(error, "lineno", "?")
                yield SkippedItem(
                    path.name, f"{path.name}:{line}: not valid JSON ({error})", malformed=True
                )
                continue
            if not isinstance(record, dict) or "skeletons" not in record or "label" not in record:
                yield SkippedItem(
                    path.name,
                    f"{path.name}: expected an object with 'skeletons' and 'label'",
                    malformed=True,
                )
                continue
            try:
                skeletons = np.asarray(record["skeletons"], dtype=np.float32)
            except (ValueError, TypeError):
                skeletons = np.empty(0, dtype=np.float32)
            if (
                skeletons.ndim != 3
                or skeletons.shape[0] < 1
                or skeletons.shape[1:] != (source_joints, 3)
            ):
                yield SkippedItem(
                    path.name,
                    f"{path.name}: field 'skeletons' has shape {skeletons.shape}, expected [T][{source_joints}][3] with T >= 1",
                    malformed=True,
                )
                continue
            label = record["label"]
            if (
                isinstance(label, bool)
                or not isinstance(label, int)
                or not 1 <= label <= len(class_names)
            ):
                yield SkippedItem(
                    path.name,
                    f"{path.name}: field 'label' is {label!r}, expected 1..{len(class_names)}",
                    malformed=True,
                )
                continue
            joints = map_joints(skeletons[:, None], weights)  # (T, 20, 3) -> (T, 1, 25, 3)
            yield SequenceRecord(
                sample_id=path.stem,
                label=label - 1,
                joints=joints,
                partition=partition_of(benchmark, subject, view, repetition),
                subject=subject,
                view=view,
                setup=repetition,
            )

    return ImportPlan(info=info, total=len(files), items=items())
