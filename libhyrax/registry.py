"""One name -> class registry for every Hyrax extension point (datasets, models, reducers, vector indexes).

    MODELS = Registry("model", import_paths=True, base=nn.Module)
    MODELS.register("HyraxCNN", HyraxCNN)
    MODELS.lookup("HyraxCNN")                      # or an import path: "pkg.mod.Net", "pkg.mod:Outer.Net"
    MODELS.lookup("HyraxCNM")                      # ConfigError: unknown model 'HyraxCNM'; did you mean ...

The clash policy, the same everywhere (astropy's I/O registry is the model):

- registering a *different* object under a name that is taken is refused (a HyraxError naming both),
  so one package can't silently swap out another's class;
- registering the *same* class again (same module and qualified name) replaces the old entry, because
  notebook users re-run the cell that defines a class, and `importlib.reload` re-creates a module's classes.

A registry is a read-only mapping (``name in reg``, ``reg[name]``, ``reg.get(name)``, iteration over
names), so code that used the plain dicts these replaced keeps working. Built-in entries may be *lazy*: a
name -> module table whose module is imported (and registers the name) on first use, so optional
dependencies load only when chosen. Nothing heavy is imported here.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from libhyrax.errors import ConfigError, HyraxError, unknown_choice

log = logging.getLogger("hyrax.registry")

T = TypeVar("T")


class Registry(Mapping, Generic[T]):
    """Names -> objects (usually classes) of one kind, with one clash policy and one error message.

    kind         what a name names, as the user writes it in messages: "model", "dataset_class", ...
    error        raised for an unknown name or a bad import path (ConfigError, or UsageError for a flag)
    rename_hint  what to do about a clash, in this extension point's terms
    lazy         built-in name -> the module that registers it when imported
    import_paths also accept "pkg.mod.Class" / "pkg.mod:Class" for classes not registered by name
    base         an imported class must subclass this (any class when None)
    """

    def __init__(self, kind: str, *, error: type[HyraxError] = ConfigError,
                 rename_hint: str = "register one of them under another name",
                 lazy: Mapping[str, str] | None = None, import_paths: bool = False, base: type | None = None):
        self.kind, self.error, self.rename_hint = kind, error, rename_hint
        self.import_paths, self.base = import_paths, base
        self._lazy = dict(lazy or {})
        self._entries: dict[str, T] = {}

    # --- registering ------------------------------------------------------------------------------

    def register(self, name: str, obj: T) -> T:
        """Add `obj` under `name`; returns `obj` (so it also works inside a decorator)."""
        old = self._entries.get(name)
        if old is None:
            self._refuse_a_builtins_name(name, obj)
        elif not same_definition(old, obj):
            raise HyraxError(self._clash_message(name, qualified_name(old), obj))
        elif old is not obj:
            log.debug(
                "%s %r: %s defined again (a notebook cell re-run or a module reloaded); using the new one",
                self.kind,
                name,
                qualified_name(obj),
            )
        self._entries[name] = obj
        return obj

    def _refuse_a_builtins_name(self, name: str, obj: Any) -> None:
        """A lazy built-in's name is taken before its module loads: only that module may register it."""
        module = self._lazy.get(name)
        if module is not None and getattr(obj, "__module__", None) != module:
            raise HyraxError(self._clash_message(name, f"the built-in from {module}", obj))

    def _clash_message(self, name: str, old: str, new: Any) -> str:
        return (
            f"{self.kind} {name!r} is already registered as {old}; can't also register "
            f"{qualified_name(new)} under it: {self.rename_hint}"
        )

    # --- looking up -------------------------------------------------------------------------------

    def lookup(self, name: str) -> T:
        """The object registered as `name` (or at that import path); the project's error otherwise,
        listing the known names with a did-you-mean."""
        if name in self:
            return self[name]
        if self.import_paths and is_import_path(name):
            return self._imported(name)
        raise self.error(unknown_choice(self.kind, name, self))

    def name_of(self, obj: Any) -> str | None:
        """The first name `obj` is registered under, or None."""
        return next((n for n, o in self._entries.items() if o is obj), None)

    def _imported(self, path: str) -> Any:
        obj = import_object(path, self.kind, self.error)
        if not isinstance(obj, type) or (self.base is not None and not issubclass(obj, self.base)):
            wanted = f"a subclass of {public_name(self.base)}" if self.base is not None else "a class"
            raise self.error(
                f"{self.kind} = {path!r} is {describe(obj)}, not {wanted}; give the import path of one"
            )
        return obj

    def _load(self, name: str) -> None:
        """Import the module of a lazy built-in, which registers it."""
        module = self._lazy[name]
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise self.error(
                f"{self.kind} {name!r} needs {module}, which can't be imported ({e}); install "
                "the package it needs or choose another"
            ) from None
        if name not in self._entries:
            raise self.error(
                f"{self.kind} {name!r}: {module} was imported but registers no {name!r}; "
                "this is a bug in Hyrax, please report it"
            )

    # --- the read-only mapping --------------------------------------------------------------------

    def __getitem__(self, name: str) -> T:
        if name not in self._entries and name in self._lazy:
            self._load(name)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        yield from self._entries
        yield from (n for n in self._lazy if n not in self._entries)

    def __len__(self) -> int:
        return len(self._entries.keys() | self._lazy.keys())

    def __repr__(self) -> str:
        return f"<Registry of {self.kind}: {', '.join(self) or 'empty'}>"


def same_definition(old: Any, new: Any) -> bool:
    """The same object, or the same class defined again (same module and qualified name)."""
    if old is new:
        return True
    key_old, key_new = _definition_key(old), _definition_key(new)
    return key_old is not None and key_old == key_new


def _definition_key(obj: Any) -> tuple[str, str] | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return (module, qualname) if isinstance(module, str) and isinstance(qualname, str) else None


def qualified_name(obj: Any) -> str:
    key = _definition_key(obj)
    return f"{key[0]}.{key[1]}" if key else repr(obj)


def public_name(cls: type) -> str:
    """The shortest import path of `cls` (torch.nn.Module, not torch.nn.modules.module.Module)."""
    parts = cls.__module__.split(".")
    for i in range(1, len(parts)):
        if getattr(sys.modules.get(".".join(parts[:i])), cls.__qualname__, None) is cls:
            return f"{'.'.join(parts[:i])}.{cls.__qualname__}"
    return qualified_name(cls)


def describe(obj: Any) -> str:
    if _definition_key(obj) is None:
        return f"{obj!r} (a {type(obj).__name__})"
    return f"the {'class' if isinstance(obj, type) else type(obj).__name__} {qualified_name(obj)}"


def is_import_path(name: Any) -> bool:
    return isinstance(name, str) and ("." in name or ":" in name)


def import_object(path: str, what: str, error: type[HyraxError] = ConfigError) -> Any:
    """The object at `pkg.module.Name`, or `pkg.module:Name` (whose part after ':' may be dotted,
    `pkg.module:Outer.Inner`); `error` naming `what` (a config key) when it can't be found."""
    if not is_import_path(path):
        raise error(f"{what} = {path!r} must be an import path like pkg.module.Name")
    module, _, attrs = path.partition(":") if ":" in path else path.rpartition(".")
    if not module or module.startswith(".") or not attrs:
        raise error(f"{what} = {path!r} must be an import path like pkg.module.Name (absolute, with a name)")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise error(
            f"{what} = {path!r}: module {module!r} can't be imported ({e}); check the import path and "
            "that its package is installed"
        ) from None
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise error(f"{what} = {path!r}: {module} has no {attrs!r}; check the spelling") from None
    return obj
