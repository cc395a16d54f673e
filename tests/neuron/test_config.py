from __future__ import annotations

import ast
from pathlib import Path

import pytest

import neuron.config as config_module
from neuron.config import (
    CONFIG_DIR,
    Config,
    ConfigError,
    config_from_plain,
    load_config,
    scale_milestones,
)

SHIPPED = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_validates_and_round_trips(name: str) -> None:
    config = load_config(None if name == "default" else name)
    assert isinstance(config, Config)
    assert config_from_plain(config.to_dict()) == config


def test_default_yaml_is_complete() -> None:
    # The shipped default spells out every field, so it equals the dataclass defaults.
    assert load_config() == Config()


def test_unknown_key_suggests_the_nearest_valid_key() -> None:
    with pytest.raises(
        ConfigError, match=r"model\.spatial_prototype.*did you mean 'model\.spatial_prototypes'"
    ):
        load_config("tiny", ["model.spatial_prototype=3"])


def test_dotted_overrides_are_parsed_as_yaml_values() -> None:
    config = load_config(
        "tiny",
        ["model.spatial_prototypes=12", "train.optimizer.lr=0.5", "model.temporal_windows=[1,2,8]"],
    )
    assert config.model.spatial_prototypes == 12
    assert config.train.optimizer.lr == 0.5
    assert config.model.temporal_windows == (1, 2, 8)


def test_exponent_numbers_without_a_dot_are_floats(tmp_path) -> None:
    # PyYAML's YAML 1.1 rules read `1e-3` as a string; configs read it as a number.
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  optimizer:\n    lr: 1e-3\n    weight_decay: 5E-4\n")
    config = load_config(path, ["train.epochs=25", "eval.gamma_grid=[1e-2, 1e1]"])
    assert config.train.optimizer.lr == 0.001
    assert config.train.optimizer.weight_decay == 0.0005
    assert config.eval.gamma_grid == (0.01, 10.0)
    assert load_config(path, ["run.output_dir=1e3x"]).run.output_dir == "1e3x"


def test_compression_that_drops_every_prototype_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"compression_per_step=3.*keep -1 prototypes.*<= 2"):
        load_config("tiny", ["model.compression_per_step=3"])


def test_a_window_longer_than_the_feature_map_is_rejected() -> None:
    # tiny: window 16 with one stride → 8 feature frames.
    with pytest.raises(ConfigError, match=r"temporal_windows=\[2, 4, 9\].*8 frames"):
        load_config("tiny", ["model.temporal_windows=[2,4,9]"])


def test_one_window_and_one_weight_per_step() -> None:
    with pytest.raises(ConfigError, match="one window per step"):
        load_config("tiny", ["model.steps=2"])
    config = load_config(
        "tiny",
        ["model.steps=2", "model.temporal_windows=[4,8]", "model.step_loss_weights=[0.5,0.5]"],
    )
    assert config.model.steps == 2


def test_type_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"train\.epochs='ten': expected an integer"):
        load_config("tiny", ["train.epochs=ten"])
    with pytest.raises(ConfigError, match=r"model\.memory='none'.*'gated', 'replace'"):
        load_config("tiny", ["model.memory=none"])


def test_bad_yaml_file_is_named(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*train\.epochz.*'train\.epochs'"):
        load_config(path)


def test_fingerprint_changes_with_the_section() -> None:
    base = load_config("tiny")
    changed = base.replace({"train.optimizer.lr": 0.2})
    assert base.fingerprint("model") == changed.fingerprint("model")
    assert base.fingerprint("train") != changed.fingerprint("train")


def test_with_absolute_paths_resolves_every_relative_path(tmp_path) -> None:
    config = load_config(
        "nwucla",
        {
            "data.path": "data/x.arrow",
            "run.cache_dir": "cache",
            "data.side_information.cache_dir": None,
        },
    )
    resolved = config.with_absolute_paths(tmp_path)
    assert resolved.data.path == str(tmp_path / "data" / "x.arrow")
    assert resolved.run.cache_dir == str(tmp_path / "cache")
    assert resolved.run.output_dir == str(tmp_path / "runs" / "train")
    assert resolved.data.side_information.path == "packaged:nw_ucla"  # shipped sets stay named
    assert resolved.data.side_information.cache_dir is None
    assert resolved.with_absolute_paths("/elsewhere") == resolved  # idempotent


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.optimizer.lr=.inf"], r"train\.optimizer\.lr=inf: must be a finite number > 0"),
        (["train.optimizer.lr=.nan"], r"train\.optimizer\.lr=nan: must be a finite number > 0"),
        (["pretrain.optimizer.lr=0"], r"pretrain\.optimizer\.lr=0\.0: must be a finite"),
        (["train.optimizer.momentum=1"], r"train\.optimizer\.momentum=1\.0: must be in \[0, 1\)"),
        (["train.optimizer.lr_decay=0"], r"lr_decay=0\.0: must be in \(0, 1\]"),
        (["train.optimizer.lr_milestones=[20, 4]"], r"\[20, 4\]: must be strictly increasing"),
        # The default milestones (4, 20) would never fire with 4 epochs: refused, with a fix.
        (["train.epochs=4"], r"lr_milestones=\[4, 20\]: every milestone must be in \[1, 3\]"),
        # A milestone at the last epoch lowers a rate no epoch uses.
        (["train.epochs=20", "train.optimizer.lr_milestones=[4, 20]"], r"must be in \[1, 19\]"),
        (["pretrain.epochs=50"], r"pretrain\.optimizer\.lr_milestones=\[60, 80, 100\]"),
    ],
)
def test_optimiser_settings_are_checked_against_the_stage(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_both_stages_share_one_optimiser_config_with_their_own_defaults() -> None:
    config = Config()
    assert type(config.pretrain.optimizer) is type(config.train.optimizer)
    assert config.pretrain.optimizer.lr_milestones == (60, 80, 100)
    assert config.train.optimizer.lr_milestones == (4, 20)
    assert config.pretrain.optimizer.weight_decay == 1e-4
    assert config.train.optimizer.weight_decay == 5e-4


def test_milestones_rescale_with_the_epochs() -> None:
    assert scale_milestones((4, 20), 30, 30) == [4, 20]
    assert scale_milestones((4, 20), 30, 15) == [2, 10]
    assert scale_milestones((4, 20), 30, 7) == [1, 5]
    assert scale_milestones((4, 20), 30, 2) == [1]  # 20 -> 1.33 -> 1: merged with 4 -> 0.27 -> 0
    assert scale_milestones((1,), 2, 1) == []
    for epochs in range(1, 60):
        assert all(1 <= m < epochs for m in scale_milestones((4, 20), 30, epochs))


def _undocumented_fields(module_path: Path) -> list[str]:
    """Dataclass fields of a module not followed by a docstring."""
    missing = []
    for node in ast.parse(module_path.read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for index, statement in enumerate(node.body):
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                following = node.body[index + 1] if index + 1 < len(node.body) else None
                documented = (
                    isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)
                )
                if not documented:
                    missing.append(f"{node.name}.{statement.target.id}")
    return missing


def test_every_config_field_has_a_docstring() -> None:
    assert _undocumented_fields(Path(config_module.__file__)) == []


def test_class_lists_take_names_and_ids_and_groups() -> None:
    config = load_config(
        "tiny",
        [
            "data.split=custom",
            "data.unseen_classes=[Swim, Bow]",
            "data.validation_classes=[Sit, 3]",
            "data.class_groups=[[Wave your hand, Wave your other hand], [Jump, 2]]",
        ],
    )
    assert config.data.unseen_classes == ("Swim", "Bow")
    assert config.data.validation_classes == ("Sit", 3)
    assert config.data.class_groups == (("Wave your hand", "Wave your other hand"), ("Jump", 2))
    assert load_config("tiny", ["data.validation_classes=3"]).data.validation_classes == 3
    with pytest.raises(ConfigError, match=r"data\.validation_classes=\[\]: list at least one"):
        load_config("tiny", ["data.validation_classes=[]"])


def test_a_scalar_for_a_section_names_its_keys() -> None:
    with pytest.raises(
        ConfigError,
        match=r"command-line overrides \(data\.side_information=descriptions\): "
        r"data\.side_information='descriptions': data\.side_information is a section, not a "
        r"value; set its keys \(data\.side_information\.source, data\.side_information\.path,"
        r".*e\.g\. data\.side_information\.source=descriptions",
    ):
        load_config("tiny", ["data.side_information=descriptions"])


def test_override_errors_blame_the_command_line_not_the_file(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  epochs: 25\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["train.epochs=0"])
    message = str(caught.value)
    assert message.startswith("command-line overrides (train.epochs=0): train.epochs=0")
    assert "mine.yaml" not in message


def test_base_in_a_training_yaml_is_honoured(tmp_path) -> None:
    (tmp_path / "mine.yaml").write_text("base: quick\ntrain:\n  epochs: 14\n")
    mine = load_config(tmp_path / "mine.yaml")
    quick = load_config("quick")
    assert mine.train.epochs == 14
    assert mine.model == quick.model and mine.data == quick.data
    (tmp_path / "child.yaml").write_text("base: mine.yaml\nmodel:\n  hidden: 8\n")
    child = load_config(tmp_path / "child.yaml")
    assert child.train.epochs == 14 and child.model.hidden == 8
    assert child.model.spatial_prototypes == quick.model.spatial_prototypes
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: base: the configs name each other in a cycle"):
        load_config(tmp_path / "b.yaml")
    (tmp_path / "bad.yaml").write_text("base: quik\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: base: quik: no such config file or shipped"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    "override",
    ["model.temporal_windows=[3,5", "model.steps=!!python/name:os.system", "model.hidden=\udcff"],
)
def test_an_override_that_is_not_yaml_is_a_config_error(override: str) -> None:
    with pytest.raises(ConfigError, match="the value is not valid YAML") as error:
        load_config("quick", [override])
    assert repr(override.split("=")[0])[1:-1] in str(error.value)


def test_a_config_that_is_not_utf8_is_named(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_bytes(b"data:\n  window: 32 # \xff\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: not UTF-8 text \(byte 0xff at offset 21\)"):
        load_config(str(path))


def test_a_mapping_for_a_section_updates_it_key_by_key() -> None:
    quick = load_config("quick")
    changed = load_config(
        "quick", ["model={steps: 2, temporal_windows: [3, 5], step_loss_weights: [0.5, 0.5]}"]
    )
    assert (changed.model.steps, changed.model.temporal_windows) == (2, (3, 5))
    # Every other model value stays quick's, not the dataclass default.
    assert changed.model.spatial_prototypes == quick.model.spatial_prototypes == 24
    assert changed.model.encoder == quick.model.encoder
    assert quick.replace({"model": {"hidden": 8}}).model.logit_scale == quick.model.logit_scale


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.encoder.channels=[0,8,16]", "every unit needs >= 1 channel"),
        ("model.encoder.dropout=5", r"model.encoder.dropout=5.0: must be in \[0, 1\)"),
        ("model.hidden=0", "model.hidden=0: must be >= 1"),
        ("model.logit_scale=.nan", "model.logit_scale=nan: must be a finite number > 0"),
        ("model.step_loss_weights=[.inf,1,1]", "must be >= 0 with a positive sum"),
        ("eval.gamma_grid=[.nan]", "every γ must be a finite number"),
        ("data.rotation_degrees=.nan", r"data.rotation_degrees=nan: must be in \[0, 180\]"),
        ("data.rotation_degrees=-5", r"data.rotation_degrees=-5.0: must be in \[0, 180\]"),
        ("run.seed=-1", r"run.seed=-1: must be in \[0, 4294967295\]"),
        ("data.validation_seed=-1", "data.validation_seed=-1"),
        ("data.synthetic.seed=-1", "data.synthetic.seed=-1"),
        ("run.threads=-1", "run.threads=-1: must be >= 0"),
        ("run.num_workers=-1", "run.num_workers=-1: must be >= 0"),
    ],
)
def test_values_no_run_could_use_are_refused_by_name(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])
