"""The one registry helper and its clash policy, in itself and in each of the four registries that use it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from libhyrax.errors import ConfigError, HyraxError, UsageError
from libhyrax.registry import Registry, import_object


def cls_in(module: str, name: str = "Thing", bases: tuple = ()) -> type:
    """A new class object as if `class <name>` ran in `module` (a re-run makes an equal-named new one)."""
    return type(name, bases, {"__module__": module})


@pytest.fixture
def restore():
    """Put a global registry's entries back afterwards, so a test's classes don't outlive it."""
    saved = []

    def keep(registry: Registry) -> Registry:
        saved.append((registry, dict(registry._entries)))
        return registry

    yield keep
    for registry, entries in saved:
        registry._entries = entries


# --- the helper ------------------------------------------------------------------------------------

def test_a_different_object_under_a_taken_name_is_refused_naming_both():
    reg = Registry("widget", rename_hint="rename one of them")
    first = reg.register("thing", cls_in("pkg_a.widgets"))
    with pytest.raises(HyraxError) as e:
        reg.register("thing", cls_in("pkg_b.widgets"))
    assert str(e.value) == (
        "widget 'thing' is already registered as pkg_a.widgets.Thing; can't also register "
        "pkg_b.widgets.Thing under it: rename one of them"
    )
    assert reg["thing"] is first  # the refused one did not replace it


def test_the_same_class_defined_again_replaces_the_old_entry():
    reg = Registry("widget")
    old = reg.register("thing", cls_in("__main__"))
    new = cls_in("__main__")  # a notebook cell run again: an equal-named new class object
    assert reg.register("thing", new) is new and reg["thing"] is new and old is not new
    assert reg.register("thing", new) is new  # the very same object again: nothing to do
    assert (
        list(reg) == ["thing"] and len(reg) == 1 and reg.name_of(new) == "thing" and reg.name_of(old) is None
    )


def test_objects_without_module_and_qualname_clash_unless_identical():
    reg = Registry("widget")
    reg.register("x", 1)
    reg.register("x", 1)
    with pytest.raises(HyraxError, match="'x' is already registered as 1; can't also register 2"):
        reg.register("x", 2)


def test_an_unknown_name_lists_the_known_ones_with_did_you_mean():
    reg = Registry("widget", error=UsageError)
    for name in ("sprocket", "gear", "cog"):
        reg.register(name, cls_in("pkg", name))
    with pytest.raises(UsageError) as e:
        reg.lookup("sprockett")
    assert str(e.value) == "unknown widget 'sprockett'; did you mean sprocket? Known: cog, gear, sprocket"
    with pytest.raises(UsageError, match=r"unknown widget 'zzz'; Known: cog, gear, sprocket$"):
        reg.lookup("zzz")
    assert reg.get("zzz") is None and "gear" in reg and reg.lookup("gear").__name__ == "gear"
    with pytest.raises(UsageError, match="unknown widget 'collections.OrderedDict'"):
        reg.lookup("collections.OrderedDict")  # import paths only where the registry takes them


def test_import_paths_dotted_or_with_a_colon():
    from collections import OrderedDict

    reg = Registry("widget", import_paths=True, base=dict)
    assert reg.lookup("collections.OrderedDict") is OrderedDict
    assert reg.lookup("collections:OrderedDict") is OrderedDict
    assert import_object("os.path:join", "key") is import_object("os.path.join", "key")
    assert "collections.OrderedDict" not in reg  # looked up, not registered
    with pytest.raises(ConfigError, match="module 'no_such_pkg' can't be imported .*check the import path"):
        reg.lookup("no_such_pkg.Thing")
    with pytest.raises(ConfigError, match="collections has no 'OrderedDcit'"):
        reg.lookup("collections.OrderedDcit")
    with pytest.raises(ConfigError, match="is the class collections.deque, not a subclass of builtins.dict"):
        reg.lookup("collections.deque")
    with pytest.raises(ConfigError, match="must be an import path"):
        import_object(".relative.Thing", "optimizer.name")


def test_lazy_builtins_load_on_first_use_and_keep_their_names(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "reg_holder.py").write_text(
        textwrap.dedent("""
        from libhyrax.registry import Registry
        REG = Registry("widget", lazy={"lazy": "reg_lazy", "broken": "reg_missing_module"})
    """)
    )
    (tmp_path / "reg_lazy.py").write_text(
        "from reg_holder import REG\n\nclass Lazy:\n    pass\n\nREG.register('lazy', Lazy)\n"
    )
    from reg_holder import REG

    assert sorted(REG) == ["broken", "lazy"] and "reg_lazy" not in sys.modules
    with pytest.raises(HyraxError, match="'lazy' is already registered as the built-in from reg_lazy"):
        REG.register("lazy", cls_in("someone_else"))  # a built-in's name, before its module loaded
    assert REG.lookup("lazy").__module__ == "reg_lazy"
    with pytest.raises(ConfigError, match="'broken' needs reg_missing_module, which can't be imported"):
        REG.lookup("broken")


def test_the_registry_module_imports_nothing_heavy():
    code = "import sys, libhyrax.registry; print(sorted({'torch', 'numpy', 'h5py'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- the policy in each registry -------------------------------------------------------------------


def notebook_cell(source: str, **names) -> dict:
    """Run `source` as a notebook cell does: in the module __main__."""
    namespace = {"__name__": "__main__", **names}
    exec(textwrap.dedent(source), namespace)
    return namespace


def test_datasets(restore):
    from libhyrax.data import REGISTRY, Dataset, dataset_class

    restore(REGISTRY)
    cls_in("pkg_one.data", "RegTestCutouts", (Dataset,))
    with pytest.raises(
        HyraxError,
        match="'RegTestCutouts' is already registered as pkg_one.data.RegTestCutouts; "
        "can't also register pkg_two.data.RegTestCutouts",
    ):
        cls_in("pkg_two.data", "RegTestCutouts", (Dataset,))
    with pytest.raises(HyraxError, match="libhyrax.data.sample.HyraxSample"):
        cls_in("my_pkg", "HyraxSample", (Dataset,))
    cell = "class RegTestStars(Dataset):\n    def __len__(self):\n        return {n}\n"
    notebook_cell(cell.format(n=1), Dataset=Dataset)
    notebook_cell(cell.format(n=2), Dataset=Dataset)
    assert len(dataset_class("RegTestStars")()) == 2


def test_models(restore):
    from torch import nn

    from libhyrax.models import MODELS, HyraxModel, hyrax_model, model_class

    restore(MODELS)
    with pytest.raises(
        HyraxError,
        match="'HyraxCNN' is already registered as libhyrax.models.cnn.HyraxCNN; "
        "can't also register my_pkg.HyraxCNN under it.*@hyrax_model",
    ):
        cls_in("my_pkg", "HyraxCNN", (HyraxModel,))
    with pytest.raises(HyraxError, match="can't also register my_pkg.Net under it"):
        hyrax_model(name="HyraxCNN")(cls_in("my_pkg", "Net", (nn.Module,)))
    cell = "class RegTestAE(HyraxModel):\n    latent_dim = {n}\n"
    notebook_cell(cell.format(n=1), HyraxModel=HyraxModel)
    notebook_cell(cell.format(n=2), HyraxModel=HyraxModel)
    assert model_class("RegTestAE").latent_dim == 2


def test_reducers(restore):
    from libhyrax.reducers import REGISTRY, Reducer, make_reducer

    restore(REGISTRY)
    with pytest.raises(
        HyraxError,
        match="'pca' is already registered as .*libhyrax.reducers.pca.*; can't also "
        "register my_pkg.MyPCA under it: give one of the classes another",
    ):
        type("MyPCA", (Reducer,), {"__module__": "my_pkg", "name": "pca"})
    cell = "class Halve(Reducer):\n    name = 'reg-test-halve'\n    factor = {n}\n"
    notebook_cell(cell.format(n=1), Reducer=Reducer)
    notebook_cell(cell.format(n=2), Reducer=Reducer)
    assert make_reducer("reg-test-halve", {}).factor == 2


def test_vector_indexes(restore):
    from libhyrax.vector_index import REGISTRY, VectorIndex, backend_class

    restore(REGISTRY)
    with pytest.raises(
        HyraxError,
        match="'exact' is already registered as .*libhyrax.vector_index.exact.*; "
        "can't also register my_pkg.MyExact under it",
    ):
        type("MyExact", (VectorIndex,), {"__module__": "my_pkg", "backend": "exact"})
    cell = "class RegTestIndex(VectorIndex):\n    backend = 'reg-test'\n    version = {n}\n"
    notebook_cell(cell.format(n=1), VectorIndex=VectorIndex)
    notebook_cell(cell.format(n=2), VectorIndex=VectorIndex)
    assert backend_class("reg-test").version == 2
    with pytest.raises(UsageError, match="unknown vector index backend 'reg-tset'; did you mean reg-test"):
        backend_class("reg-tset")
