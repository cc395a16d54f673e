"""Search spec loading and validation: shipped specs, dotted overrides, errors a user can act on."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from neuron.config import ConfigError
from search.space import FloatRange, IntRange, StrChoice
from search.spec import ObjectiveSpec, PrepareSpec, SearchSpec, load_search_spec

SPECS = Path(__file__).resolve().parents[2] / "search" / "specs"


@pytest.mark.parametrize("name", ["tiny", "quick", "ntu60"])
def test_shipped_specs_load_and_validate(name):
    spec = load_search_spec(SPECS / f"{name}.yaml")
    assert spec.objective.metric.startswith("val/")
    for split in spec.split_names:
        assert spec.base_config(split).data.split == split
    assert spec.max_concurrent_trials >= 2


def test_the_quick_spec_documents_every_key():
    """quick.yaml is the reference a user copies: every spec key is in it, each scalar with a
    comment, and its prepare section holds the defaults."""
    text = (SPECS / "quick.yaml").read_text()
    prepare = re.search(r"^prepare:.*\n((?:  .*\n)+)", text, re.MULTILINE)
    assert prepare is not None, "prepare is not in quick.yaml"
    for cls, indent, where in ((SearchSpec, "", text), (PrepareSpec, "  ", prepare.group(1))):
        for f in dataclasses.fields(cls):
            line = re.search(rf"^{indent}{f.name}:.*$", where, re.MULTILINE)
            assert line is not None, f"{f.name} is not in quick.yaml"
            if cls is PrepareSpec or f.name in ("pending_trials", "address", "tracking_uri"):
                assert "#" in line.group(0), f"{f.name} has no comment in quick.yaml"
    assert load_search_spec(SPECS / "quick.yaml").prepare == PrepareSpec()


def test_ntu60_spec_runs_one_study_per_split_with_fractional_gpus():
    spec = load_search_spec(SPECS / "ntu60.yaml")
    assert spec.split_names == ("ntu60_55_5", "ntu60_48_12")
    assert spec.resources.gpu == 0.25
    assert spec.base_config("ntu60_48_12").data.side_information.source == "official"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


BASIC = """
base:
  config: tiny
  overrides: {train.epochs: 4}
num_trials: 3
space:
  model:
    spatial_prototypes: {low: 8, high: 12, step: 2}
    temporal_prototypes: {low: 4, high: 8, step: 4}
    compression_per_step: {low: 1, high: 2}
  train:
    epochs: 4
    optimizer:
      lr: {low: 0.01, high: 0.1, log: true}
"""


def test_dotted_overrides_change_the_spec_and_keep_the_rest(tmp_path):
    spec = load_search_spec(
        write(tmp_path, BASIC),
        [
            "num_trials=5",
            "space.train.optimizer.lr.low=0.02",
            "space.train.optimizer.weight_decay=0.001",
            "base.overrides.train.batch_size=8",
        ],
    )
    assert spec.num_trials == 5
    assert spec.space.train.optimizer.lr == FloatRange(low=0.02, high=0.1, log=True)
    assert spec.space.train.optimizer.weight_decay == FloatRange(fixed=0.001)  # bare: fixed
    assert spec.space.train.epochs == IntRange(fixed=4)
    # a range the file gives replaces the default range; the rest of a section keeps defaults
    assert spec.space.model.temporal_prototypes == IntRange(4, 8, step=4)
    assert spec.space.model.memory == StrChoice(("gated", "replace"))
    assert spec.base.overrides == {"train.epochs": 4, "train.batch_size": 8}
    assert spec.base_config().train.batch_size == 8


def test_a_left_out_parameter_gets_a_range_from_overrides(tmp_path):
    spec = load_search_spec(
        write(tmp_path, BASIC.replace("  model:\n", "  model:\n    logit_scale: null\n")),
        [
            "space.model.logit_scale.low=0.05",
            "space.model.logit_scale.high=0.5",
            "space.model.logit_scale.log=true",
        ],
    )
    assert spec.space.model.logit_scale == FloatRange(0.05, 0.5, log=True)
    assert spec.space.train.epochs == IntRange(fixed=4)
    left_out = load_search_spec(
        write(tmp_path, BASIC.replace("  model:\n", "  model:\n    logit_scale: null\n"))
    )
    assert left_out.space.model.logit_scale is None
    assert "model.logit_scale" not in left_out.space.searched()


def test_relative_base_config_is_read_next_to_the_spec(tmp_path):
    # 4 epochs (the spec's base override) need milestones below 4
    (tmp_path / "mine.yaml").write_text(
        "model:\n  hidden: 12\ntrain:\n  optimizer:\n    lr_milestones: [2]\n"
    )
    spec = load_search_spec(write(tmp_path, BASIC.replace("config: tiny", "config: mine.yaml")))
    assert spec.base_config().model.hidden == 12


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("num_trails=3", "unknown key num_trails: did you mean 'num_trials'?"),
        (
            "space.train.optimizer.lr.lo=0.1",
            "unknown key space.train.optimizer.lr.lo: did you mean 'space.train.optimizer.lr.low'?",
        ),
        ("space.learning_rate=0.1", "unknown key space.learning_rate"),
        ("space.temporal_memory=gated", "unknown key space.temporal_memory"),
        ("objective.metric=test/zsl_top1", "test metrics (unseen test classes) must never select"),
        ("objective.metric=train/loss", "must be a validation metric"),
        ("objective.mode=maximize", "objective.mode='maximize': must be one of 'max', 'min'"),
        ("space.train.optimizer.lr.low=0.5", "space.train.optimizer.lr: low=0.5 >= high=0.1"),
        (
            "space.model.compression_per_step.high=3",
            "use space.model.compression_per_step.high <= 2",
        ),
        ("tracking_uri=./mlruns", "MLflow 3 refuses file stores"),
        ("tracking_uri=file:///tmp/mlruns", "MLflow 3 refuses file stores"),
        ("scheduler.grace_period=5", "scheduler.grace_period=5: longer than the trials (4 epochs)"),
        ("scheduler.name=pbt", "scheduler.name='pbt': must be one of"),
        ("scheduler.reduction_factor=1", "scheduler.reduction_factor=1.0: must be a finite"),
        ("scheduler.reduction_factor=.nan", "scheduler.reduction_factor=nan: must be a finite"),
        ("seed=-1", "seed=-1: must be in [0, 4294967295]"),
        ("resources.cpu=.nan", "resources.cpu=nan: must be a finite number > 0"),
        ("resources.gpu=.nan", "resources.gpu=nan"),
        ("space.train.optimizer.lr.low=.nan", "space.train.optimizer.lr.low=nan: must be a finite"),
        ("splits=[ntu60_55]", "'ntu60_55' is not a published split; did you mean 'ntu60_55_5'?"),
        ("splits=[synthetic_default, synthetic_default]", "lists a split twice"),
        ("max_concurrent_trials=0", "max_concurrent_trials=0: must be >= 1"),
        ("resources.cpu=0", "resources.cpu=0.0: must be a finite number > 0"),
        ("resources.gpu=1.5", "resources.gpu=1.5"),
        ("base.overrides.model.hidden=-", "base: "),
        ("time_budget_s=-1", "time_budget_s=-1"),
        ("sampler.name=cmaes", "sampler.name='cmaes': must be one of 'tpe', 'random'"),
        ("sampler.startup_trials=0", "sampler.startup_trials=0: must be >= 1"),
        (
            ["sampler.name=random", "sampler.multivariate=true"],
            "only TPE models parameters; drop it or use sampler.name=tpe",
        ),
        ("confirm.top=1", "confirm.top=1: must be >= 2 (the best and at least one runner-up)"),
        ("confirm.seeds=1", "confirm.seeds=1: must be >= 2"),
    ],
)
def test_bad_input_names_the_field_and_the_fix(tmp_path, override, message):
    path = write(tmp_path, BASIC)
    with pytest.raises(ConfigError) as error:
        load_search_spec(path, [override] if isinstance(override, str) else override)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_unknown_key_in_the_file_suggests_the_nearest(tmp_path):
    with pytest.raises(
        ConfigError, match="unknown key max_concurent_trials: did you mean 'max_concurrent_trials'"
    ):
        load_search_spec(write(tmp_path, BASIC + "max_concurent_trials: 2\n"))


def test_a_missing_spec_file_or_base_config_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_search_spec(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="no such config file or shipped config"):
        load_search_spec(write(tmp_path, BASIC.replace("config: tiny", "config: nowhere")))


def test_defaults_resolve_the_storage_and_tracking_store_under_the_output_dir(tmp_path):
    spec = load_search_spec(write(tmp_path, BASIC), [f"output_dir={tmp_path / 'out'}"])
    assert spec.resolved_tracking_uri() == f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    assert spec.resolved_storage_path() == str(tmp_path / "out")
    remote = spec.with_overrides({"storage_path": "s3://bucket/search"})
    assert remote.resolved_storage_path() == "s3://bucket/search"


def test_a_test_objective_is_refused_in_code_too():
    with pytest.raises(ConfigError, match="test metrics"):
        ObjectiveSpec("test/gzsl_h")


def test_trials_inherit_threads_device_and_gpu_share_from_the_resources() -> None:
    from search.runner import study_base

    shared = load_search_spec(SPECS / "ntu60.yaml")  # 0.25 GPU and 2 CPUs per trial
    config = study_base(shared, shared.split_names[0])
    assert (config.run.device, config.run.gpu_fraction, config.run.threads) == ("cuda", 0.25, 2)
    cpu_only = load_search_spec(SPECS / "tiny.yaml")
    config = study_base(cpu_only, cpu_only.split_names[0])
    assert (config.run.device, config.run.gpu_fraction, config.run.threads) == ("cpu", 1.0, 1)


def test_an_empty_spec_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="the spec is empty; start from search/specs/quick.yaml"):
        load_search_spec(write(tmp_path, "# nothing yet\n"))
