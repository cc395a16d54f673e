"""Ablation specs: every shipped spec validates; bad specs fail with a clear message."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from ablations.spec import (
    REFERENCE,
    AblationBase,
    AblationSpec,
    build_plan,
    expand_variants,
    load_ablation_spec,
)
from neuron.config import ConfigError

SPECS = Path(__file__).resolve().parents[2] / "ablations" / "specs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text("base: {config: tiny}\nseeds: [0, 1]\n" + text)
    return path


def plan_of(tmp_path: Path, text: str, *overrides: str):
    return build_plan(load_ablation_spec(write(tmp_path, text), list(overrides)))


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_specs_validate(path):
    plan = build_plan(load_ablation_spec(path))
    assert plan.variants[0].name == REFERENCE and plan.variants[0].overrides == {}
    assert len(plan.cells) == len(plan.variants) * len(plan.splits) * len(plan.spec.seeds)


@pytest.mark.parametrize("name", ["synthetic_components", "neuron_components"])
def test_shipped_specs_document_every_key(name):
    """Every spec key is written out, with a comment, in the full specs."""
    text = (SPECS / f"{name}.yaml").read_text()
    for cls, indent in ((AblationSpec, ""), (AblationBase, "  ")):
        for f in dataclasses.fields(cls):
            line = re.search(rf"^{indent}{f.name}:.*$", text, re.MULTILINE)
            assert line is not None, f"{f.name} is not in {name}.yaml"
            if f.name not in ("base", "resources"):
                assert "#" in line.group(0), f"{f.name} has no comment in {name}.yaml"


def test_component_specs_are_the_papers_set():
    names = [
        v.name for v in build_plan(load_ablation_spec(SPECS / "neuron_components.yaml")).variants
    ]
    for expected in (
        "full",
        "no-compression",
        "no-memory",
        "one-step",
        "class-names",
        "spatial-only",
        "temporal-only",
    ):
        assert expected in names
    assert any(n.startswith("spatial_prototypes-") for n in names)
    assert any(n.startswith("temporal_windows-") for n in names)
    plan = build_plan(load_ablation_spec(SPECS / "neuron_components.yaml"))
    assert plan.splits == ("ntu60_55_5", "ntu60_48_12")
    assert plan.config(plan.cells[0]).data.side_information.source == "official"


def test_the_class_names_ablation_keeps_the_full_models_text_encoder():
    plan = build_plan(load_ablation_spec(SPECS / "neuron_components.yaml"))
    encoders = {}
    for cell in plan.cells:
        side = plan.config(cell).data.side_information
        encoders[cell.variant] = (side.use_precomputed, side.text_model)
    assert encoders["class-names"] == encoders["full"]
    assert encoders["full"][0] is False  # both arms encoded by text_model, not the CLIP tensors


def test_sweep_and_grid_expansion(tmp_path):
    plan = plan_of(
        tmp_path,
        "variants:\n  no-memory: {model.memory: replace}\n"
        "sweeps:\n  model.spatial_prototypes: [8, 12, 16]\n"  # 8 is the base: the full model
        "  model.temporal_windows: [[1, 2, 4], [2, 4, 8]]\n"  # [2, 4, 8] is the base
        "grid:\n  model.hidden: [8, 32]\n  model.memory: [gated, replace]\n",
    )
    assert [v.name for v in plan.variants] == [
        "full",
        "no-memory",
        "spatial_prototypes-12",
        "spatial_prototypes-16",
        "temporal_windows-1-2-4",
        "hidden-8_memory-gated",
        "hidden-8_memory-replace",
        "hidden-32_memory-gated",
        "hidden-32_memory-replace",
    ]
    assert plan.variant("hidden-8_memory-replace").overrides == {
        "model.hidden": 8,
        "model.memory": "replace",
    }
    assert len(plan.cells) == 9 * 2
    cell = next(c for c in plan.cells if c.variant == "spatial_prototypes-12" and c.seed == 1)
    assert cell.title == "spatial_prototypes-12 · synthetic_default · seed 1"
    config = plan.config(cell)
    assert config.model.spatial_prototypes == 12 and config.run.seed == 1
    assert plan.config(cell, stage1=True).run.seed == 0  # stage 1 shared: the base's run.seed
    assert config.run.threads == 1 and Path(config.run.cache_dir).is_absolute()


def test_stage1_seeds(tmp_path):
    shared = plan_of(tmp_path, "", "stage1_seed=7")
    assert {c.stage1_seed for c in shared.cells} == {7}
    per_seed = plan_of(tmp_path, "", "retrain_stage1_per_seed=true", "seeds=[3,4]")
    assert {(c.seed, c.stage1_seed) for c in per_seed.cells} == {(3, 3), (4, 4)}


def test_overrides_on_the_command_line(tmp_path):
    plan = plan_of(
        tmp_path,
        "",
        "seeds=[0,1,2]",
        "base.overrides.train.epochs=1",
        "base.overrides.train.optimizer.lr_milestones=[]",
        "variants.no-memory={model.memory: replace}",
        "sweeps.model.hidden=[4]",
    )
    assert plan.spec.seeds == (0, 1, 2)
    assert plan.config(plan.cells[0]).train.epochs == 1
    assert [v.name for v in plan.variants] == ["full", "no-memory", "hidden-4"]


BAD = [
    ("seeds: [0]\n", "need at least 2 seeds"),
    ("sedes: [0, 1]\n", "did you mean 'seeds'"),
    ("variants:\n  x: {model.memroy: replace}\n", "did you mean 'model.memory'"),
    ("variants:\n  x: {model.steps: 7}\n", "variant 'x': .*model.steps=7"),
    ("variants:\n  x: {model.memory: gated}\n", "variant 'x' .* changes nothing"),
    (
        "variants:\n  a: {model.memory: replace}\n  b: {model.memory: replace}\n",
        "variants 'a' and 'b' resolve to the same config",
    ),
    (
        "variants:\n  a: {model.memory: replace}\n  a: {model.gate: sigmoid}\n",
        r"variants.a \(line \d+\) is given twice",
    ),
    (
        "variants:\n  spatial_prototypes-12: {model.memory: replace}\n"
        "sweeps:\n  model.spatial_prototypes: [12]\n",
        "'spatial_prototypes-12' is used twice",
    ),
    ("variants:\n  full: {model.memory: replace}\n", "'full' is reserved"),
    ("variants:\n  x: {run.seed: 3}\n", "run.seed is set by `seeds`"),
    ("variants:\n  x y: {model.memory: replace}\n", "variant name 'x y'"),
    ("sweeps:\n  model.hidden: 8\n", "expected a list of values"),
    ("splits: [ntu60_55_6]\n", "did you mean 'ntu60_55_5'"),
    ("metrics: [test/zsl_top5]\n", "did you mean 'test/zsl_top1'"),
    ("tracking_uri: ./mlruns\n", "MLflow 3 refuses file stores"),
    ("seeds: [1, 1]\n", "lists a seed twice"),
    ("seeds: [-1, 0]\n", r"seeds: -1 is not a seed; seeds are in \[0, 4294967295\]"),
    ("stage1_seed: -3\n", "stage1_seed: -3 is not a seed"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_specs_fail_with_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    head = "base: {config: tiny}\n" + ("" if text.startswith("seeds") else "seeds: [0, 1]\n")
    path.write_text(head + text)
    with pytest.raises(ConfigError, match=message):
        build_plan(load_ablation_spec(path))


def test_bad_spec_on_the_command_line_exits_2_without_traceback(tmp_path, capsys):
    from ablations.cli import main

    path = write(tmp_path, "variants:\n  x: {model.memroy: replace}\n")
    assert main([str(path), f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'model.memory'" in err and "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists()  # nothing started


def test_command_line_options_override_the_spec(tmp_path):
    path = write(tmp_path, "variants:\n  no-memory: {model.memory: replace}\n")
    spec = load_ablation_spec(path)
    changed = spec.with_overrides({"tracking_uri": "sqlite:////x/mlflow.db", "address": "auto"})
    assert (changed.tracking_uri, changed.address) == ("sqlite:////x/mlflow.db", "auto")
    assert changed.base == spec.base and changed.variants == spec.variants


@pytest.mark.parametrize("option", ["--tracking-uri", "--address"])
def test_tracking_uri_and_address_options_reach_the_tracking_check(tmp_path, capsys, option):
    """`neuron ablate SPEC --tracking-uri URI` / `--address A`: the spec is valid, so the run
    goes on to the tracking store, which this one cannot open (a path under /proc)."""
    from ablations.cli import main

    path = write(tmp_path, "variants:\n  no-memory: {model.memory: replace}\n")
    store = "sqlite:////proc/no-such/mlflow.db"
    value = store if option == "--tracking-uri" else "127.0.0.1:1"
    extra = [] if option == "--tracking-uri" else [f"tracking_uri={store}"]
    assert main([str(path), f"output_dir={tmp_path}", *extra, option, value, "--name", "s"]) == 2
    err = capsys.readouterr().err
    assert "/proc/no-such/mlflow.db" in err and "section" not in err, err


def test_expand_keeps_spec_order(tmp_path):
    spec = load_ablation_spec(
        write(tmp_path, "variants:\n  b: {model.hidden: 4}\n  a: {model.hidden: 32}\n")
    )
    assert [v.name for v in expand_variants(spec)] == ["full", "b", "a"]


@pytest.mark.parametrize("command", ["list", "report"])
def test_list_and_report_never_create_a_store(tmp_path, capsys, command):
    from ablations.cli import main

    store = tmp_path / "runs" / "ablate" / "mlflow.db"
    words = [command, *(["some-study"] if command == "report" else [])]
    assert main([*words, "--tracking-uri", f"sqlite:///{store}"]) == 2
    err = capsys.readouterr().err
    assert f"no MLflow store at {store}" in " ".join(err.split())
    assert not (tmp_path / "runs").exists()


def test_an_empty_spec_file_is_refused(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("\n")
    with pytest.raises(ConfigError, match="the spec is empty"):
        load_ablation_spec(path)
