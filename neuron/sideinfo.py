"""Side information: per-class description embeddings for the three spatial and temporal rounds.

Neuron aligns evolution step i of the spatial branch with spatial round i (coarse → medium →
fine body-part descriptions) and step i of the temporal branch with temporal round i (phase 1,
phases 1+2, phases 1+2+3). Each class has Q descriptions per round (10 in the official release).

Sources (`SideInformationConfig.source`):

- `synthetic`: `neuron.synthetic.synthetic_descriptions()`, encoded with `text_model`;
- `official`: the Neuron release in `path` (`spatial/` and `temporal/` subfolders). With
  `use_precomputed` the six CLIP ViT-L/14@336px tensors (120, 10, 768) are read (rows 0..59 for
  NTU-60); otherwise the JSON texts are encoded with `text_model`;
- `descriptions`: your own six JSON files in `path` (`spatial_cg/mg/fg.json`,
  `temporal_fp/sp/tp.json`, each `{class name: [Q strings]}`), encoded with `text_model`.

Temporal rounds are cumulative, as the official `fsp`/`fstp` embeddings: round 2 text q is
`phase1[q] + " " + phase2[q]`, round 3 adds `" " + phase3[q]`. With `class_names_only` every
description of every round is the class name (Q = 1): the "class names instead of side
information" ablation. It changes one thing only: the class names go through the same text
encoder as the full model's descriptions. With the official precomputed tensors that encoder is
CLIP ViT-L/14@336px, so `text_model` must then be a local copy of it (`CLIP_L14_336`); anything
else is refused rather than silently swapping encoders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuron.classes import NTU120_SHORT_NAMES
from neuron.config import SideInformationConfig
from neuron.rounds import SPATIAL_ROUNDS, TEMPORAL_ROUNDS
from neuron.synthetic import synthetic_descriptions
from neuron.text import CLIP_MODEL_TYPES, encode_texts, resolve_text_model

OFFICIAL_TENSOR_ROUNDS: dict[str, tuple[str, ...]] = {
    "spatial": ("spatial_cg", "spatial_mg", "spatial_fg"),
    "temporal": ("temporal_fp", "temporal_fsp", "temporal_fstp"),
}
"""Suffixes of the official `.tar` tensors per branch, in step order (temporal is cumulative)."""

OFFICIAL_TEXT_MODEL = "CLIP ViT-L/14@336px (precomputed, official Neuron release)"
CLIP_L14_336 = "openai/clip-vit-large-patch14-336"
"""The hub name of the text tower that produced the official tensors."""
OFFICIAL_DIM = 768
NTU_DATASETS = ("ntu60", "ntu120")
MISSING_LISTED = 5
"""How many missing class names an error message lists."""


class SideInformationError(ValueError):
    """Side-information files are missing or malformed; the message names the file and the fix."""


@dataclass(frozen=True, eq=False)
class SideInformation:
    """Description embeddings of every class, per round."""

    spatial: torch.Tensor
    """(R=3, C, Q, D) float32: spatial rounds coarse, medium, fine."""
    temporal: torch.Tensor
    """(R=3, C, Q, D) float32: temporal rounds phase 1, phases 1+2, phases 1+2+3."""
    class_names: tuple[str, ...]
    source: str
    """Where the descriptions came from (source and path)."""
    text_model: str
    """The text encoder that produced the embeddings."""

    def __post_init__(self) -> None:
        for name in ("spatial", "temporal"):
            tensor = getattr(self, name)
            if (
                tensor.ndim != 4
                or tensor.shape[1] != len(self.class_names)
                or tensor.dtype != torch.float32
            ):
                raise SideInformationError(
                    f"SideInformation.{name}: shape {tuple(tensor.shape)} {tensor.dtype}, expected "
                    f"(rounds, {len(self.class_names)}, Q, D) float32"
                )
        if self.spatial.shape[-1] != self.temporal.shape[-1]:
            raise SideInformationError(
                f"SideInformation: spatial D={self.spatial.shape[-1]} and temporal D={self.temporal.shape[-1]} differ"
            )

    @property
    def dim(self) -> int:
        """Embedding size D."""
        return int(self.spatial.shape[-1])

    @property
    def num_descriptions(self) -> int:
        """Descriptions per class and round, Q."""
        return int(self.spatial.shape[2])


def _key_candidates(class_names: tuple[str, ...], dataset: str) -> list[tuple[str, ...]]:
    """Accepted JSON keys of each class: its name, and for NTU the official short name."""
    candidates: list[tuple[str, ...]] = [(name,) for name in class_names]
    if dataset in NTU_DATASETS:
        candidates = [(name, NTU120_SHORT_NAMES[i]) for i, name in enumerate(class_names)]
    return candidates


def _read_round(path: Path, class_names: tuple[str, ...], dataset: str) -> list[list[str]]:
    """Descriptions (C lists of Q strings) of one round file, in class order."""
    if not path.is_file():
        raise SideInformationError(
            f"{path}: no such description file; expected one of the six round files"
        )
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SideInformationError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(loaded, dict):
        raise SideInformationError(
            f"{path}: expected an object {{class name: [descriptions]}}, got {type(loaded).__name__}"
        )
    per_class: list[list[str]] = []
    missing: list[str] = []
    for name, candidates in zip(class_names, _key_candidates(class_names, dataset), strict=True):
        key = next((k for k in candidates if k in loaded), None)
        if key is None:
            missing.append(name)
            continue
        texts = loaded[key]
        if (
            not isinstance(texts, list)
            or not texts
            or not all(isinstance(t, str) and t.strip() for t in texts)
        ):
            raise SideInformationError(
                f"{path}: {key!r} must map to a non-empty list of non-empty strings"
            )
        per_class.append(texts)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:MISSING_LISTED])
        more = f" and {len(missing) - MISSING_LISTED} more" if len(missing) > MISSING_LISTED else ""
        raise SideInformationError(
            f"{path}: no descriptions for {len(missing)} of {len(class_names)} classes: {shown}{more}; "
            "add them (keys are the dataset's class names"
            + (", or the official NTU short names)" if dataset in NTU_DATASETS else ")")
        )
    counts = {len(texts) for texts in per_class}
    if len(counts) != 1:
        uneven = [
            f"{name!r}: {len(texts)}" for name, texts in zip(class_names, per_class, strict=True)
        ]
        raise SideInformationError(
            f"{path}: every class needs the same number of descriptions; found {sorted(counts)} "
            f"({', '.join(uneven[:MISSING_LISTED])}, …)"
        )
    return per_class


def read_descriptions(
    spatial_folder: Path, temporal_folder: Path, class_names: tuple[str, ...], dataset: str
) -> dict[str, list[list[str]]]:
    """The six rounds (stem → C lists of Q strings), with one Q for all files."""
    rounds = {
        stem: _read_round(spatial_folder / f"{stem}.json", class_names, dataset)
        for stem in SPATIAL_ROUNDS
    }
    rounds |= {
        stem: _read_round(temporal_folder / f"{stem}.json", class_names, dataset)
        for stem in TEMPORAL_ROUNDS
    }
    counts = {stem: len(per_class[0]) for stem, per_class in rounds.items()}
    if len(set(counts.values())) != 1:
        raise SideInformationError(
            f"{spatial_folder}: the round files have different numbers of descriptions per class "
            f"({counts}); every round needs the same Q"
        )
    return rounds


def cumulative_temporal(phases: list[list[list[str]]]) -> list[list[list[str]]]:
    """Rounds from per-phase texts: round r, text q = phase texts 1..r of q joined by spaces."""
    rounds = []
    for last in range(len(phases)):
        rounds.append(
            [
                [
                    " ".join(phases[p][c][q] for p in range(last + 1))
                    for q in range(len(phases[0][c]))
                ]
                for c in range(len(phases[0]))
            ]
        )
    return rounds


def _encode_rounds(
    spatial: list[list[list[str]]],
    temporal: list[list[list[str]]],
    text_model: str,
    cache_dir: Path,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode (R, C, Q) nested texts of both branches in one pass → two (R, C, Q, D) tensors."""
    flat = [
        text
        for rounds in (spatial, temporal)
        for per_class in rounds
        for texts in per_class
        for text in texts
    ]
    unique = sorted(set(flat))
    embeddings = encode_texts(unique, text_model, cache_dir)  # (U, D)
    index = {text: i for i, text in enumerate(unique)}
    shape = (len(spatial), len(spatial[0]), len(spatial[0][0]), embeddings.shape[1])
    rows = np.asarray([index[text] for text in flat])
    stacked = torch.from_numpy(embeddings[rows])  # (2 * R * C * Q, D)
    spatial_embeddings, temporal_embeddings = stacked.view(2, *shape).unbind(0)  # (R, C, Q, D)
    return spatial_embeddings, temporal_embeddings


def _load_official_tensors(
    folder: Path, class_names: tuple[str, ...], dataset: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The six precomputed official tensors as (3, C, 10, 768) spatial and temporal stacks."""
    branches = []
    for branch, suffixes in OFFICIAL_TENSOR_ROUNDS.items():
        tensors = []
        for suffix in suffixes:
            matches = sorted((folder / branch).glob(f"*_{suffix}.tar"))
            if len(matches) != 1:
                raise SideInformationError(
                    f"{folder / branch}: expected one file *_{suffix}.tar (e.g. ntu120_gpt4omini_incontext_"
                    f"{suffix}.tar), found {[m.name for m in matches]}; point data.side_information.path at "
                    "the official neuron_semantics/ntu folder or set use_precomputed=false"
                )
            path = matches[0]
            try:
                tensor = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # torch raises several types for corrupt or foreign files
                raise SideInformationError(
                    f"{path}: not a readable torch tensor file ({error})"
                ) from error
            if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
                found = (
                    tuple(tensor.shape)
                    if isinstance(tensor, torch.Tensor)
                    else type(tensor).__name__
                )
                raise SideInformationError(
                    f"{path}: found {found}, expected a (classes, Q, D) tensor"
                )
            rows = len(class_names)
            if dataset == "ntu60" and tensor.shape[0] == 120:
                tensor = tensor[:60]  # NTU-60 is A1..A60, the first 60 rows of the NTU-120 release
            if tensor.shape[0] != rows:
                raise SideInformationError(
                    f"{path}: tensor shape {tuple(tensor.shape)}, expected ({rows}, Q, D) for the {rows} "
                    f"classes of dataset {dataset!r}; the official tensors cover NTU-120 (and NTU-60 rows "
                    "0..59): for other datasets use source=descriptions with your own JSON files"
                )
            tensors.append(tensor.float())
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1:
            raise SideInformationError(
                f"{folder / branch}: the round tensors have different shapes {sorted(shapes)}"
            )
        branches.append(torch.stack(tensors))  # (3, C, Q, D)
    if branches[0].shape != branches[1].shape:
        raise SideInformationError(
            f"{folder}: spatial {tuple(branches[0].shape)} and temporal {tuple(branches[1].shape)} tensors differ"
        )
    return branches[0].contiguous(), branches[1].contiguous()


PACKAGED_PREFIX = "packaged:"
PACKAGED_DESCRIPTIONS = Path(__file__).parent / "resources" / "descriptions"
"""Description sets shipped with the package, named `packaged:<folder>` (e.g. packaged:nw_ucla)."""


def _require_folder(cfg: SideInformationConfig) -> Path:
    if not cfg.path:
        layout = (
            "spatial/ and temporal/ subfolders"
            if cfg.source == "official"
            else "the six round JSON files"
        )
        raise SideInformationError(
            f"data.side_information.path is empty with source={cfg.source}; set it to the folder with {layout}"
        )
    if cfg.path.startswith(PACKAGED_PREFIX):
        folder = PACKAGED_DESCRIPTIONS / cfg.path[len(PACKAGED_PREFIX) :]
        shipped = sorted(p.name for p in PACKAGED_DESCRIPTIONS.iterdir() if p.is_dir())
        if not folder.is_dir():
            raise SideInformationError(
                f"data.side_information.path={cfg.path}: no such packaged description set "
                f"(shipped: {', '.join(PACKAGED_PREFIX + name for name in shipped)})"
            )
        return folder
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        raise SideInformationError(f"data.side_information.path={cfg.path}: no such folder")
    return folder


def _require_official_encoder(cfg: SideInformationConfig) -> None:
    """Refuse class names encoded by anything but the official tensors' CLIP text tower."""
    _, folder = resolve_text_model(cfg.text_model)
    config_file = folder / "config.json" if folder is not None else None
    found = "not a local model folder"
    if config_file is not None and config_file.is_file():
        config = json.loads(config_file.read_text())
        projection = config.get("projection_dim")
        found = f"model_type {config.get('model_type')!r}, projection_dim {projection!r}"
        if config.get("model_type") in CLIP_MODEL_TYPES and projection == OFFICIAL_DIM:
            return
    raise SideInformationError(
        f"data.side_information.class_names_only=true with source=official and use_precomputed=true: "
        f"the full model's descriptions were encoded by CLIP ViT-L/14@336px (the official tensors), "
        f"so the class names must go through that same text tower, but "
        f"data.side_information.text_model={cfg.text_model!r} is another encoder ({found}), and "
        f"{CLIP_L14_336} is not available offline here. Fix: set data.side_information.text_model "
        f"to a local folder of {CLIP_L14_336} (config, tokenizer and weights), or compare against "
        "data.side_information.use_precomputed=false so both arms are encoded by text_model"
    )


def load_side_information(
    cfg: SideInformationConfig, class_names: tuple[str, ...], dataset: str, cache_dir: str | Path
) -> SideInformation:
    """Side information of `class_names` (the dataset's classes in label order).

    Text embeddings are cached under `cfg.cache_dir`, or `<cache_dir>/text` when it is unset.
    """
    class_names = tuple(class_names)
    text_cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cache_dir) / "text"
    if cfg.class_names_only:
        if cfg.source == "official" and cfg.use_precomputed:
            _require_official_encoder(cfg)
        names_only = [[[name] for name in class_names]] * len(SPATIAL_ROUNDS)
        spatial, temporal = _encode_rounds(names_only, names_only, cfg.text_model, text_cache)
        return SideInformation(
            spatial, temporal, class_names, f"class names ({dataset})", cfg.text_model
        )

    match cfg.source:
        case "synthetic":
            generated = synthetic_descriptions()
            missing = [name for name in class_names if name not in generated[SPATIAL_ROUNDS[0]]]
            if missing:
                raise SideInformationError(
                    f"data.side_information.source=synthetic describes only the synthetic classes; dataset "
                    f"{dataset!r} has other classes ({', '.join(map(repr, missing[:MISSING_LISTED]))}, …); "
                    "use source=official or source=descriptions"
                )
            rounds = {stem: [generated[stem][name] for name in class_names] for stem in generated}
            source = "synthetic"
        case "official":
            folder = _require_folder(cfg)
            if cfg.use_precomputed:
                spatial, temporal = _load_official_tensors(folder, class_names, dataset)
                return SideInformation(
                    spatial, temporal, class_names, f"official {folder}", OFFICIAL_TEXT_MODEL
                )
            rounds = read_descriptions(
                folder / "spatial", folder / "temporal", class_names, dataset
            )
            source = f"official {folder} (JSON)"
        case "descriptions":
            folder = _require_folder(cfg)
            rounds = read_descriptions(folder, folder, class_names, dataset)
            source = f"descriptions {folder}"
        case _:
            raise SideInformationError(
                f"data.side_information.source={cfg.source!r}: use synthetic, official or descriptions"
            )
    spatial_texts = [rounds[stem] for stem in SPATIAL_ROUNDS]
    temporal_texts = cumulative_temporal([rounds[stem] for stem in TEMPORAL_ROUNDS])
    spatial, temporal = _encode_rounds(spatial_texts, temporal_texts, cfg.text_model, text_cache)
    return SideInformation(spatial, temporal, class_names, source, cfg.text_model)
