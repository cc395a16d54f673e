"""Rules of the architecture, checked on the source: data flows one way.

`neuron/` (the science) never imports ray, mlflow or optuna; no package imports a later one
(neuron → search → ablations); inside `neuron/` no module imports a later stage of the data
flow (the order of `NEURON_FLOW`). Imports under
`if TYPE_CHECKING:` only name types and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("neuron", "search", "ablations")
"""Packages in data-flow order: each may import only itself and the ones before it."""
EDGE_LIBRARIES = ("ray", "mlflow", "optuna")
"""Libraries only search/ and ablations/ may use."""

NEURON_FLOW: tuple[tuple[str, ...], ...] = (
    (
        "neuron",
        "neuron.config",
        "neuron.atomic",
        "neuron.safeload",
        "neuron.device",
        "neuron.classes",
    ),
    ("neuron.splits", "neuron.rounds", "neuron.dataset", "neuron.datacheck", "neuron.features"),
    ("neuron.cache",),
    ("neuron.joints", "neuron.benchmarks", "neuron.text"),
    ("neuron.importers", "neuron.synthetic", "neuron.preprocess"),
    ("neuron.sideinfo", "neuron.encoder", "neuron.metrics", "neuron.optim"),
    ("neuron.model",),
    ("neuron.pretrain",),
    ("neuron.extract",),
    ("neuron.prepare",),
    ("neuron.evaluate",),
    ("neuron.train",),
    ("neuron.cli",),
)
"""Stages of neuron/ in data-flow order (a package's modules share its stage)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import outside `if TYPE_CHECKING:` blocks, including
    imports inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for inner in ast.walk(statement)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from neuron.importers import ntu_raw` imports the submodule too
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def stage_of(module: str) -> int | None:
    """The NEURON_FLOW stage of a neuron module (its own, or its package's)."""
    for index, stage in enumerate(NEURON_FLOW):
        if any(
            module == name or module.startswith(f"{name}.") for name in stage if name != "neuron"
        ):
            return index
    return 0 if module == "neuron" else None


def test_neuron_never_imports_the_search_edge_libraries() -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{line}: import {name}"
        for path in sources("neuron")
        for line, name in imports(path)
        if name.split(".")[0] in EDGE_LIBRARIES
    ]
    assert offending == []


def test_no_package_imports_a_later_package() -> None:
    offending = []
    for rank, package in enumerate(PACKAGES):
        later = PACKAGES[rank + 1 :]
        for path in sources(package):
            for line, name in imports(path):
                if name.split(".")[0] in later:
                    offending.append(f"{path.relative_to(ROOT)}:{line}: import {name}")
    assert offending == []


def test_every_neuron_module_has_a_stage() -> None:
    unplaced = [module_name(p) for p in sources("neuron") if stage_of(module_name(p)) is None]
    assert unplaced == [], "add new modules to NEURON_FLOW (and the README's module map)"


def test_no_neuron_module_imports_a_later_stage_of_the_data_flow() -> None:
    offending = []
    for path in sources("neuron"):
        own = stage_of(module_name(path))
        assert own is not None
        for line, name in imports(path):
            if name.split(".")[0] != "neuron" or name == "neuron":
                continue
            imported = stage_of(name)
            if imported is not None and imported > own:
                offending.append(
                    f"{path.relative_to(ROOT)}:{line}: {module_name(path)} (stage {own}) "
                    f"imports {name} (stage {imported})"
                )
    assert offending == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import ray\n", ["ray"]),
        ("def f():\n    from mlflow import MlflowClient\n", ["mlflow", "mlflow.MlflowClient"]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import optuna\n",
            ["typing", "typing.TYPE_CHECKING"],
        ),
    ],
)
def test_the_import_scanner_sees_lazy_imports_and_skips_type_only_ones(
    tmp_path: Path, source: str, expected: list[str]
) -> None:
    path = tmp_path / "module.py"
    path.write_text(source)
    assert [name for _, name in imports(path)] == expected
