"""Text encoding (neuron.text) and side information (neuron.sideinfo).

Most tests use a tiny random BERT (MiniLM's tokenizer, 1 layer of width 32) written to a
temporary folder, so they are fast; one module-scoped block encodes a few hundred real
descriptions with the packaged MiniLM to check that the synthetic classes are distinguishable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from neuron import text
from neuron.classes import NTU60_CLASSES, NTU120_CLASSES, NTU120_SHORT_NAMES, NW_UCLA_CLASSES
from neuron.config import SideInformationConfig
from neuron.rounds import DESCRIPTION_ROUNDS, SPATIAL_ROUNDS, TEMPORAL_ROUNDS
from neuron.sideinfo import SideInformationError, cumulative_temporal, load_side_information
from neuron.splits import PUBLISHED_SPLITS
from neuron.synthetic import SYNTHETIC_CLASSES, synthetic_descriptions, write_descriptions
from neuron.text import TextModelError, encode_texts, resolve_text_model

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
OFFICIAL = SHARED_DATA / "neuron_semantics" / "ntu"
MINILM = "packaged:all-MiniLM-L6-v2"


def _needs_official() -> None:
    if not (OFFICIAL / "spatial").is_dir():
        pytest.skip(f"official Neuron side information not found at {OFFICIAL}")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random 2-layer BERT with MiniLM's tokenizer, saved as a local model folder."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    _, minilm = resolve_text_model(MINILM)
    assert minilm is not None
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm / name, folder / name)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run cache shared by the tests that do not test caching (texts are encoded once)."""
    return tmp_path_factory.mktemp("run_cache")


@pytest.fixture
def count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every model load by neuron.text."""
    loads: list[str] = []
    original = text.load_text_model

    def counting(model: str, device: str | torch.device | None = None) -> text.TextModel:
        loads.append(model)
        return original(model, device)

    monkeypatch.setattr(text, "load_text_model", counting)
    return loads


# --------------------------------------------------------------------------------------------
# neuron.text


def test_mean_pooling_matches_a_direct_computation(tiny_bert: str) -> None:
    from transformers import AutoModel, AutoTokenizer

    texts = [
        "raise the right arm",
        "a much longer sentence about waving the left hand side to side",
    ]
    embeddings = encode_texts(texts, tiny_bert, cache_dir=None)
    assert embeddings.shape == (2, 32) and embeddings.dtype == np.float32
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()
    for row, sentence in enumerate(texts):
        tokens = tokenizer([sentence], return_tensors="pt")
        with torch.no_grad():
            expected = (
                model(**tokens).last_hidden_state.mean(dim=1)[0].numpy()
            )  # no padding: plain mean
        np.testing.assert_allclose(embeddings[row], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.linalg.norm(embeddings, axis=1), 1.0), (
        "embeddings must not be L2-normalised"
    )


def test_cache_is_reused_and_only_new_texts_are_encoded(
    tiny_bert: str, tmp_path: Path, count_loads: list[str]
) -> None:
    first = encode_texts(["one", "two", "one"], tiny_bert, tmp_path)
    assert count_loads == [tiny_bert]
    np.testing.assert_array_equal(first[0], first[2])
    again = encode_texts(["two", "one"], tiny_bert, tmp_path)
    assert count_loads == [tiny_bert], "a cached call must not load the model"
    np.testing.assert_array_equal(again, first[[1, 0]])
    mixed = encode_texts(["one", "three"], tiny_bert, tmp_path, batch_size=1)
    assert len(count_loads) == 2
    np.testing.assert_array_equal(mixed[0], first[0])
    parts = sorted(tmp_path.rglob("*.parquet"))
    assert len(parts) == 2, "one cache file per call that encoded new texts"
    assert not list(tmp_path.rglob("*.partial"))


def test_an_unreadable_cache_file_is_ignored_with_a_warning(tiny_bert: str, tmp_path: Path) -> None:
    expected = encode_texts(["hello"], tiny_bert, tmp_path)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    (folder / "broken.parquet").write_bytes(b"not parquet")
    with pytest.warns(UserWarning, match="broken.parquet"):
        again = encode_texts(["hello"], tiny_bert, tmp_path)
    np.testing.assert_array_equal(again, expected)


def test_cache_is_keyed_by_model(tiny_bert: str, tmp_path: Path) -> None:
    other = tmp_path / "other_model"
    shutil.copytree(tiny_bert, other)
    from transformers import BertModel

    torch.manual_seed(1)
    BertModel(BertModel.from_pretrained(tiny_bert).config).save_pretrained(other)
    cache = tmp_path / "cache"
    ours = encode_texts(["same text"], tiny_bert, cache)
    theirs = encode_texts(["same text"], str(other), cache)
    assert not np.allclose(ours, theirs)
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2


def _tiny_clip(folder: Path, text_only: bool) -> torch.Tensor:
    """Save a random tiny CLIP (full or text-with-projection) and return its features of TEXTS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        PreTrainedTokenizerFast,
    )

    vocab = {"<pad>": 0, "<unk>": 1, "<|startoftext|>": 2, "<|endoftext|>": 3}
    for word in ["the", "person", "raises", "right", "left", "arm", "and", "waves", "hand"]:
        vocab[word] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 2), ("<|endoftext|>", 3)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        model_max_length=16,
    )
    text_config: dict[str, Any] = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "eos_token_id": 3,
        "bos_token_id": 2,
        "pad_token_id": 0,
    }
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    config = CLIPConfig(
        text_config=text_config,
        vision_config={**vision_config, "image_size": 32, "patch_size": 16},
        projection_dim=24,
    )
    torch.manual_seed(0)
    clip = CLIPModel(config).eval()
    if text_only:
        model = CLIPTextModelWithProjection(CLIPTextConfig(**{**text_config, "projection_dim": 24}))
        model.text_model.load_state_dict(clip.text_model.state_dict())
        model.text_projection.load_state_dict(clip.text_projection.state_dict())
        model.save_pretrained(folder)
    else:
        clip.save_pretrained(folder)
    fast.save_pretrained(folder)
    tokens = fast(CLIP_TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = clip.text_model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).pooler_output
        return clip.text_projection(pooled)


CLIP_TEXTS = ["the person raises right arm", "waves left hand", "arm"]


@pytest.mark.parametrize("text_only", [False, True], ids=["clip", "clip_text_model"])
def test_clip_models_give_projected_text_features(tmp_path: Path, text_only: bool) -> None:
    expected = _tiny_clip(tmp_path, text_only)
    model_type = json.loads((tmp_path / "config.json").read_text())["model_type"]
    assert model_type == ("clip_text_model" if text_only else "clip")
    embeddings = encode_texts(CLIP_TEXTS, str(tmp_path), cache_dir=None)
    assert embeddings.shape == (3, 24)
    np.testing.assert_allclose(embeddings, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_a_model_that_cannot_be_loaded_offline_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        TextModelError, match=r"'no-such-org/no-such-model' cannot be loaded offline.*local folder"
    ):
        encode_texts(["x"], "no-such-org/no-such-model", tmp_path)
    with pytest.raises(TextModelError, match="packaged models: packaged:all-MiniLM-L6-v2"):
        encode_texts(["x"], "packaged:no-such-model", tmp_path)
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(TextModelError, match="empty_model"):
        encode_texts(["x"], str(empty), None)


# --------------------------------------------------------------------------------------------
# neuron.sideinfo


def _config(tiny_bert: str, **fields: Any) -> SideInformationConfig:
    return SideInformationConfig(**{"text_model": tiny_bert, **fields})


@pytest.mark.slow  # encodes every synthetic description
def test_synthetic_side_information_shapes(tiny_bert: str, shared_cache: Path) -> None:
    side = load_side_information(_config(tiny_bert), SYNTHETIC_CLASSES, "synthetic", shared_cache)
    assert side.spatial.shape == side.temporal.shape == (3, 20, 10, 32)
    assert side.spatial.dtype == side.temporal.dtype == torch.float32
    assert side.dim == 32 and side.num_descriptions == 10
    assert side.class_names == SYNTHETIC_CLASSES and side.text_model == tiny_bert
    assert not torch.equal(side.spatial[0], side.spatial[2])


def test_cumulative_temporal_texts() -> None:
    phases = [[["a1", "a2"]], [["b1", "b2"]], [["c1", "c2"]]]  # (phase, class, q)
    assert cumulative_temporal(phases) == [
        [["a1", "a2"]],
        [["a1 b1", "a2 b2"]],
        [["a1 b1 c1", "a2 b2 c2"]],
    ]


def _write_rounds(
    folder: Path, class_keys: list[str], per_class: int = 2
) -> dict[str, dict[str, list[str]]]:
    rounds = {
        stem: {key: [f"{stem} {key} number {q}" for q in range(per_class)] for key in class_keys}
        for stem in DESCRIPTION_ROUNDS
    }
    write_descriptions(folder, rounds)
    return rounds


def test_own_descriptions_round_trip_with_cumulative_temporal_rounds(
    tiny_bert: str, tmp_path: Path, shared_cache: Path
) -> None:
    names = ("wave", "kick", "nod")
    rounds = _write_rounds(tmp_path / "own", list(names))
    cfg = _config(tiny_bert, source="descriptions", path=str(tmp_path / "own"))
    side = load_side_information(cfg, names, "custom", shared_cache)
    assert side.spatial.shape == (3, 3, 2, 32)
    cache = shared_cache / "text"
    for r, stem in enumerate(SPATIAL_ROUNDS):
        expected = encode_texts(rounds[stem]["kick"], tiny_bert, cache)
        np.testing.assert_allclose(side.spatial[r, 1].numpy(), expected, rtol=1e-5, atol=1e-6)
    phases = [rounds[stem]["nod"] for stem in TEMPORAL_ROUNDS]
    for r in range(3):
        joined = [" ".join(phase[q] for phase in phases[: r + 1]) for q in range(2)]
        expected = encode_texts(joined, tiny_bert, cache)
        np.testing.assert_allclose(side.temporal[r, 2].numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # encodes every synthetic description twice
def test_written_synthetic_descriptions_equal_the_synthetic_source(
    tiny_bert: str, tmp_path: Path, shared_cache: Path
) -> None:
    write_descriptions(tmp_path / "synthetic", synthetic_descriptions())
    cfg = _config(tiny_bert, source="descriptions", path=str(tmp_path / "synthetic"))
    from_files = load_side_information(cfg, SYNTHETIC_CLASSES, "synthetic", shared_cache)
    generated = load_side_information(
        _config(tiny_bert), SYNTHETIC_CLASSES, "synthetic", shared_cache
    )
    assert torch.equal(from_files.spatial, generated.spatial)
    assert torch.equal(from_files.temporal, generated.temporal)


def test_missing_classes_are_listed_with_the_file(tiny_bert: str, tmp_path: Path) -> None:
    names = tuple(f"class {i}" for i in range(8))
    _write_rounds(tmp_path / "own", list(names))
    mg = tmp_path / "own" / "spatial_mg.json"
    loaded = json.loads(mg.read_text())
    for name in names[1:8]:
        del loaded[name]
    mg.write_text(json.dumps(loaded))
    cfg = _config(tiny_bert, source="descriptions", path=str(tmp_path / "own"))
    with pytest.raises(
        SideInformationError,
        match=r"spatial_mg\.json: no descriptions for 7 of 8 classes: 'class 1'",
    ) as error:
        load_side_information(cfg, names, "custom", tmp_path)
    assert "and 2 more" in str(error.value)


def test_uneven_description_counts_are_an_error(tiny_bert: str, tmp_path: Path) -> None:
    _write_rounds(tmp_path / "own", ["a", "b"])
    fp = tmp_path / "own" / "temporal_fp.json"
    fp.write_text(json.dumps({"a": ["x", "y"], "b": ["z"]}))
    cfg = _config(tiny_bert, source="descriptions", path=str(tmp_path / "own"))
    with pytest.raises(
        SideInformationError, match=r"temporal_fp\.json: every class needs the same number"
    ):
        load_side_information(cfg, ("a", "b"), "custom", tmp_path)
    _write_rounds(tmp_path / "mixed", ["a", "b"])
    _write_rounds(tmp_path / "three", ["a", "b"], per_class=3)
    shutil.copy(tmp_path / "three" / "spatial_fg.json", tmp_path / "mixed" / "spatial_fg.json")
    cfg = _config(tiny_bert, source="descriptions", path=str(tmp_path / "mixed"))
    with pytest.raises(SideInformationError, match="same Q"):
        load_side_information(cfg, ("a", "b"), "custom", tmp_path)


def test_ntu_short_names_are_accepted_as_keys(tiny_bert: str, tmp_path: Path) -> None:
    _write_rounds(tmp_path / "ntu", list(NTU120_SHORT_NAMES[:60]), per_class=1)
    cfg = _config(tiny_bert, source="descriptions", path=str(tmp_path / "ntu"))
    side = load_side_information(cfg, NTU60_CLASSES, "ntu60", tmp_path)
    assert side.spatial.shape == (3, 60, 1, 32)
    differing = sum(
        short != name for short, name in zip(NTU120_SHORT_NAMES, NTU60_CLASSES, strict=False)
    )
    message = f"no descriptions for {differing} of 60 classes: 'eat meal/snack'"
    with pytest.raises(SideInformationError, match=message):
        load_side_information(cfg, NTU60_CLASSES, "custom", tmp_path)


def test_class_names_only_ablation(tiny_bert: str, shared_cache: Path) -> None:
    cfg = _config(tiny_bert, class_names_only=True)
    side = load_side_information(cfg, SYNTHETIC_CLASSES, "synthetic", shared_cache)
    assert side.spatial.shape == side.temporal.shape == (3, 20, 1, 32)
    names = encode_texts(list(SYNTHETIC_CLASSES), tiny_bert, shared_cache / "text")
    for r in range(3):
        np.testing.assert_allclose(side.spatial[r, :, 0].numpy(), names, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(side.temporal[r, :, 0].numpy(), names, rtol=1e-5, atol=1e-6)


def test_side_information_cache_is_reused(
    tiny_bert: str, tmp_path: Path, count_loads: list[str]
) -> None:
    classes = SYNTHETIC_CLASSES[:3]
    first = load_side_information(_config(tiny_bert), classes, "synthetic", tmp_path)
    assert len(count_loads) == 1, "all rounds are encoded with one model load"
    assert (tmp_path / "text").is_dir(), "the default cache is <cache_dir>/text"
    second = load_side_information(_config(tiny_bert), classes, "synthetic", tmp_path)
    assert len(count_loads) == 1
    assert torch.equal(first.temporal, second.temporal)
    custom = tmp_path / "elsewhere"
    load_side_information(_config(tiny_bert, cache_dir=str(custom)), classes, "synthetic", tmp_path)
    assert len(count_loads) == 2 and any(custom.rglob("*.parquet"))


def test_unloadable_text_model_is_a_clear_error(tmp_path: Path) -> None:
    cfg = SideInformationConfig(text_model="no-such-org/no-such-model")
    with pytest.raises(TextModelError, match="no-such-org/no-such-model.*pass a local folder"):
        load_side_information(cfg, SYNTHETIC_CLASSES, "synthetic", tmp_path)


def test_configuration_errors(tiny_bert: str, tmp_path: Path) -> None:
    with pytest.raises(SideInformationError, match="path is empty"):
        load_side_information(
            _config(tiny_bert, source="descriptions"), ("a", "b"), "custom", tmp_path
        )
    with pytest.raises(SideInformationError, match="no such folder"):
        load_side_information(
            _config(tiny_bert, source="official", path=str(tmp_path / "absent")),
            NTU60_CLASSES,
            "ntu60",
            tmp_path,
        )
    with pytest.raises(SideInformationError, match="describes only the synthetic classes"):
        load_side_information(_config(tiny_bert), NW_UCLA_CLASSES, "nw_ucla", tmp_path)


@pytest.mark.shared_data
def test_official_precomputed_tensors(tmp_path: Path) -> None:
    _needs_official()
    cfg = SideInformationConfig(source="official", path=str(OFFICIAL))
    ntu60 = load_side_information(cfg, NTU60_CLASSES, "ntu60", tmp_path)
    assert ntu60.spatial.shape == ntu60.temporal.shape == (3, 60, 10, 768)
    assert ntu60.dim == 768 and "CLIP" in ntu60.text_model
    fsp = torch.load(
        OFFICIAL / "temporal" / "ntu120_gpt4omini_incontext_temporal_fsp.tar",
        map_location="cpu",
        weights_only=True,
    )
    assert torch.equal(ntu60.temporal[1], fsp[:60])
    ntu120 = load_side_information(cfg, NTU120_CLASSES, "ntu120", tmp_path)
    assert ntu120.spatial.shape == (3, 120, 10, 768)
    fg = torch.load(
        OFFICIAL / "spatial" / "ntu120_gpt4omini_incontext_spatial_fg.tar",
        map_location="cpu",
        weights_only=True,
    )
    assert torch.equal(ntu120.spatial[2], fg)
    assert not (tmp_path / "text").exists(), "precomputed embeddings need no text model"


@pytest.mark.shared_data
def test_official_tensors_on_a_dataset_of_another_size(tmp_path: Path) -> None:
    _needs_official()
    cfg = SideInformationConfig(source="official", path=str(OFFICIAL))
    with pytest.raises(
        SideInformationError,
        match=r"spatial_cg\.tar: tensor shape \(120, 10, 768\), expected \(10, Q, D\)",
    ):
        load_side_information(cfg, NW_UCLA_CLASSES, "nw_ucla", tmp_path)


@pytest.mark.slow  # encodes every official description
@pytest.mark.shared_data
def test_official_json_texts_are_encoded_with_the_text_model(
    tiny_bert: str, shared_cache: Path
) -> None:
    _needs_official()
    cfg = _config(tiny_bert, source="official", path=str(OFFICIAL), use_precomputed=False)
    side = load_side_information(cfg, NTU60_CLASSES, "ntu60", shared_cache)
    assert side.spatial.shape == (3, 60, 10, 32)
    first = json.loads((OFFICIAL / "temporal" / "temporal_fp.json").read_text(encoding="utf-8"))
    second = json.loads((OFFICIAL / "temporal" / "temporal_sp.json").read_text(encoding="utf-8"))
    key = NTU120_SHORT_NAMES[10]  # reading
    joined = encode_texts([f"{first[key][0]} {second[key][0]}"], tiny_bert, shared_cache / "text")
    np.testing.assert_allclose(side.temporal[1, 10, 0].numpy(), joined[0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# The packaged MiniLM makes the synthetic unseen classes distinguishable by their descriptions.


@pytest.fixture(scope="module")
def minilm_unseen(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, np.ndarray]]:
    """Normalised MiniLM embeddings (5, 10, 384) of synthetic_default's unseen classes, per seed."""
    unseen = [SYNTHETIC_CLASSES[i] for i in PUBLISHED_SPLITS["synthetic_default"].unseen]
    cache = tmp_path_factory.mktemp("minilm")
    texts: list[str] = []
    for seed in (0, 1):
        descriptions = synthetic_descriptions(seed)
        texts += [t for name in unseen for t in descriptions["spatial_fg"][name]]
        phases = [[descriptions[stem][name] for name in unseen] for stem in TEMPORAL_ROUNDS[:2]]
        texts += [t for per_class in cumulative_temporal(phases)[1] for t in per_class]
    embeddings = encode_texts(texts, MINILM, cache).reshape(
        2, 2, 5, 10, -1
    )  # (seed, round, class, q, D)
    embeddings /= np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return {
        seed: {"spatial_fg": embeddings[seed, 0], "temporal_fsp": embeddings[seed, 1]}
        for seed in (0, 1)
    }


@pytest.mark.slow  # MiniLM over every synthetic description
@pytest.mark.parametrize("round_name", ["spatial_fg", "temporal_fsp"])
def test_minilm_separates_the_unseen_synthetic_classes(
    minilm_unseen: dict[int, dict[str, np.ndarray]], round_name: str
) -> None:
    reference = minilm_unseen[0][round_name]  # (5, 10, D)
    means = reference.mean(axis=1)
    means /= np.linalg.norm(means, axis=-1, keepdims=True)
    assert means.shape == (5, 384)
    # Descriptions drawn with another seed land nearest to their own class's mean description.
    held_out = minilm_unseen[1][round_name]
    nearest_class_means = np.argmax(held_out.mean(axis=1) @ means.T, axis=1)
    assert nearest_class_means.tolist() == list(range(5))
    nearest_single = np.argmax(held_out @ means.T, axis=-1)  # (5, 10)
    assert (nearest_single == np.arange(5)[:, None]).mean() >= 0.8


def test_packaged_nw_ucla_descriptions_cover_every_class(tmp_path) -> None:
    from neuron.sideinfo import (
        PACKAGED_DESCRIPTIONS,
        SideInformationError,
        _require_folder,
        read_descriptions,
    )

    folder = _require_folder(SideInformationConfig(source="descriptions", path="packaged:nw_ucla"))
    assert folder == PACKAGED_DESCRIPTIONS / "nw_ucla"
    with pytest.raises(SideInformationError, match=r"packaged:nothing.*shipped: packaged:nw_ucla"):
        _require_folder(SideInformationConfig(source="descriptions", path="packaged:nothing"))
    rounds = read_descriptions(folder, folder, NW_UCLA_CLASSES, "nw_ucla")
    assert len(rounds) == 6
    assert all(
        len(per_class) == 10 and all(len(q) == 10 for q in per_class)
        for per_class in rounds.values()
    )
