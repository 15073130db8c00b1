"""The layout docs/architecture.md describes, checked: stages never import each other, and the registry is
the one list of stages."""

from __future__ import annotations

import ast
from pathlib import Path

import libhyrax
from libhyrax.stages import STAGES

STAGE_DIR = Path(libhyrax.__file__).parent / "stages"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_no_stage_module_imports_another_stage():
    for path in sorted(STAGE_DIR.glob("*.py")):
        if path.name == "__init__.py":
            continue
        others = {f"libhyrax.stages.{s.name}" for s in STAGES} - {f"libhyrax.stages.{path.stem}"}
        bad = imported_modules(path) & others
        assert not bad, f"{path.name} imports {bad}: ask the input run's lineage (Result.find) instead"


def test_every_stage_that_makes_a_run_has_a_module_a_cli_command_and_an_api_function():
    from importlib import import_module

    for stage in STAGES:
        cli = import_module(f"hyrax_cli.{stage.name}")
        assert callable(cli.command)
        if stage.makes_run:
            assert (STAGE_DIR / f"{stage.name}.py").is_file()
            assert getattr(libhyrax, stage.name) is getattr(
                import_module(f"libhyrax.stages.{stage.name}"), stage.name
            )
    modules = {p.stem for p in STAGE_DIR.glob("*.py")} - {"__init__"}
    assert modules == {s.name for s in STAGES if s.makes_run}, "a stage module that the registry doesn't list"


def _calls(path: Path, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name
    ]


def test_every_stage_starts_its_run_through_the_one_call():
    """Config, input runs, resume and shards are settled in libhyrax.start.start_run, for every stage of
    the registry: no stage resolves its config, finds its input or opens its run by hand."""
    for stage in STAGES:
        if not stage.makes_run:
            continue
        path = STAGE_DIR / f"{stage.name}.py"
        starts = _calls(path, "start_run")
        assert len(starts) == 1, f"{path.name} must start its run with one start_run call"
        assert isinstance(starts[0].args[0], ast.Constant) and starts[0].args[0].value == stage.name
        by_hand = imported_modules(path) & {
            "libhyrax.runs",
            "libhyrax.runs.open_run",
            "libhyrax.config.resolve",
            "libhyrax.results.input_run",
        }
        assert not by_hand, f"{path.name} imports {by_hand}: start_run does that"
        assert not _calls(path, "open_run"), path.name
        assert not [c for c in _calls(path, "resolve") if isinstance(c.func, ast.Name)], path.name


def test_array_files_know_no_runs():
    hdf5 = imported_modules(Path(libhyrax.__file__).parent / "hdf5.py")
    assert not {
        m
        for m in hdf5
        if m.split(".")[:2]
        in (["libhyrax", "sharding"], ["libhyrax", "runs"], ["libhyrax", "results"], ["libhyrax", "rundir"])
    }


def test_the_core_never_imports_the_reference_tool_package():
    """The reference tool's facade, adapters and settings live in libhyrax/reference_tool/; it imports the
    core, never the other way round (libhyrax/__init__.py names `Hyrax` lazily, by a string)."""
    root = Path(libhyrax.__file__).parent
    for path in sorted(root.rglob("*.py")):
        if "reference_tool" in path.relative_to(root).parts:
            continue
        bad = {m for m in imported_modules(path) if m.startswith("libhyrax.reference_tool")}
        assert not bad, f"{path.relative_to(root)} imports {bad}: keep the reference's names in its package"
    assert not (root / "api.py").exists() and not (root / "reference.py").exists()
    assert not list(root.glob("*/reference.py")), (
        "the reference's adapters belong in libhyrax/reference_tool/"
    )
