"""Configuration: packaged defaults, a user file, plugin defaults and `--set` overrides, resolved into one
validated, migrated dict.

Resolution: `-c FILE` (must exist) -> `./hyrax_config.toml` -> defaults only. Merge order (later wins):
our defaults < a plugin's `default_config.toml` < the user file < `--set key=value`.

A config is a plain nested dict; `dump_config` writes it back as TOML with the defaults' comments.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tomllib
from copy import deepcopy
from pathlib import Path
from typing import Any

import tomlkit

from libhyrax.config.migrations import current_version, load_steps
from libhyrax.errors import ConfigError, did_you_mean

log = logging.getLogger("hyrax.config")

DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "default_config.toml"
REFERENCE_KEYS_FILE = Path(__file__).resolve().parent / "reference_v7_keys.txt"
LOCAL_CONFIG = "hyrax_config.toml"

# Tables whose keys are free-form: keyword arguments for a named class, and the data request (validated
# by its own schema), a SODA service's query parameters. `*` matches one table name.
FREE_FORM = (
    "data_request",
    "*.kwargs",
    "reduce_dimensions.*.kwargs",
    "download.*.params",
    "download.*.sia_params",
    "download.*.sia_select",
)
# Sub-tables of these may be a user class's parameters: unknown ones are accepted as free-form.
CLASS_TABLES = ("model", "data_set")


# --- reading ---------------------------------------------------------------------------------------


def read_toml(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; check the path given to -c/--config") from None
    except OSError as e:
        raise ConfigError(f"config file {path} can't be read: {e.strerror}") from None
    try:  # tomllib: the same dict, ten times faster (every stage reads three or four files)
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        pass  # tomlkit says what is wrong as before (or reads what it alone takes)
    try:
        return tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.ParseError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def default_config() -> dict:
    return read_toml(DEFAULTS_FILE)


def deep_merge(base: dict, over: dict) -> dict:
    """A new dict: `over`'s values on top of `base`, tables merged key by key."""
    out = deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = deepcopy(value)
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """`key.path=value`, the value read as TOML (`3`, `1e-3`, `true`, `[1, 2]`, `"x"`); an unquoted
    word that isn't TOML is taken as a string, so `--set model.name=HyraxCNN` works."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r} needs the form key=value, e.g. --set train.epochs=5")
    key, raw = item.split("=", 1)
    key, raw = key.strip(), raw.strip()
    try:
        value = tomlkit.parse(f"v = {raw}")["v"]
        value = value.unwrap() if hasattr(value, "unwrap") else value
    except Exception:
        value = raw
    return key, value


def set_key(cfg: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {p} is a value, not a table")
    node[leaf] = value


# --- migration -------------------------------------------------------------------------------------


def migrate(raw: dict, source: str = "config") -> dict:
    """Take a user config of any known version to the current one, logging each step's renames."""
    cfg = deepcopy(raw)
    current = current_version()
    version = cfg.get("config_version", current)
    if not isinstance(version, int) or version < 1:
        raise ConfigError(
            f"{source}: config_version must be a whole number from 1 to {current}, not {version!r}"
        )
    if version > current:
        raise ConfigError(
            f"{source} has config_version {version}, but this Hyrax knows versions up to {current}: "
            "it was written by a newer Hyrax. Upgrade: pip install -U hyrax-toolkit"
        )
    steps = load_steps()
    for v in range(version, current):
        for line in steps[v].migrate(cfg):
            log.info("%s: migrated config_version %d -> %d: %s", source, v, v + 1, line)
    cfg["config_version"] = current
    return cfg


# --- validation ------------------------------------------------------------------------------------


def _matches(path: str, pattern: str) -> bool:
    p, q = path.split("."), pattern.split(".")
    return len(p) >= len(q) and all(b == "*" or a == b for a, b in zip(p, q, strict=False))


def _is_free_form(path: str, defaults: dict, value: Any = None) -> bool:
    if any(_matches(path, pat) for pat in FREE_FORM):
        return True
    parts = path.split(".")
    # a user class's table, e.g. [model.MyNet] (a table: a plain `data_set.use_cache = false` is a key like
    # any other): free-form when our defaults don't define it
    is_class_table = len(parts) > 2 or (len(parts) == 2 and isinstance(value, dict))
    return is_class_table and parts[0] in CLASS_TABLES and parts[1] not in defaults.get(parts[0], {})


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _type_ok(value: Any, default: Any) -> bool:
    if default is False or value is False:
        return True  # false means unset; a key whose default is unset takes any type
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _reference_keys() -> set[str]:
    lines = REFERENCE_KEYS_FILE.read_text().splitlines()
    return {ln.strip().replace('"', "") for ln in lines if ln.strip() and not ln.startswith("#")}


def _flat_items(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        out |= _flat_items(v, path + ".") if isinstance(v, dict) and v else {path: v}
    return out


def validate(user: dict, defaults: dict, source: str) -> tuple[list[str], dict[str, Any]]:
    """Errors for `user` (already migrated) checked against `defaults`, and the reference Hyrax's keys
    that this Hyrax doesn't use, removed from `user` ({dotted key: value})."""
    errors: list[str] = []
    reference_only: dict[str, Any] = {}
    ref_keys = _reference_keys()

    def walk(node: dict, dflt: dict, prefix: str) -> None:
        for key in list(node):
            path = f"{prefix}{key}"
            value = node[key]
            if key == "config_version" and not prefix:
                continue
            if _is_free_form(path, defaults, value):
                if "." not in path and not isinstance(value, dict):
                    errors.append(f"{path} in {source} must be a table, not {_type_name(value)}")
                continue
            if key not in dflt:
                flat = _flat_items({key: value}, prefix)
                if all(f in ref_keys or f.rsplit(".", 1)[0] in ref_keys for f in flat):
                    reference_only.update(flat)
                    del node[key]
                    continue
                known = [f"{prefix}{k}" for k in dflt]
                errors.append(f"unknown key {path} in {source}{did_you_mean(path, known)}")
                continue
            if value is False and not isinstance(dflt[key], bool):
                del node[key]  # false means unset: the default applies
                continue
            if isinstance(dflt[key], dict):
                if not isinstance(value, dict):
                    errors.append(f"{path} in {source} must be a table, not {_type_name(value)}")
                else:
                    walk(value, dflt[key], path + ".")
            elif not _type_ok(value, dflt[key]):
                errors.append(
                    f"{path} in {source} must be {_type_name(dflt[key])} "
                    f"(like the default {dflt[key]!r}), not {value!r}"
                )

    walk(user, defaults, "")
    return errors, reference_only


def class_tables(user: dict, defaults: dict, source: str) -> list[str]:
    """A top-level table named by a class's import path (`["torch.optim.SGD"] lr = 0.05`, the reference
    Hyrax's form) holds that optimizer's or scheduler's keyword arguments: moved into `[optimizer.kwargs]`
    (or `[scheduler.kwargs]`) when `optimizer.name` picks that class; an error naming the setting
    otherwise (never dropped: the run would silently use other values)."""
    errors = []
    for key in [k for k, v in user.items() if "." in k and isinstance(v, dict)]:
        table = user.pop(key)
        for section in ("optimizer", "scheduler"):
            chosen = (user.get(section) or {}).get("name") or (defaults.get(section) or {}).get("name")
            if chosen == key:
                kwargs = user.setdefault(section, {}).setdefault("kwargs", {})
                kwargs.update(table)
                break
        else:
            kind = "scheduler" if ".lr_scheduler." in key else "optimizer"
            chosen = (user.get(kind) or {}).get("name") or (defaults.get(kind) or {}).get("name") or "unset"
            errors.append(
                f'["{key}"] in {source} sets arguments of {key}, but {kind}.name is {chosen}: set '
                f'{kind}.name = "{key}" to use them (its arguments then go in [{kind}.kwargs])'
            )
    return errors


# --- plugins ---------------------------------------------------------------------------------------


def _named_classes(cfg: dict) -> list[str]:
    names = [cfg.get("model", {}).get("name")]
    for group in (cfg.get("data_request") or {}).values():
        if isinstance(group, dict):
            names += [spec.get("dataset_class") for spec in group.values() if isinstance(spec, dict)]
    return [n for n in names if isinstance(n, str) and "." in n]


def plugin_defaults(cfg: dict) -> dict:
    """Defaults shipped by the packages whose classes `cfg` names by import path: a `default_config.toml`
    beside the class's module."""
    merged: dict = {}
    for import_path in _named_classes(cfg):
        module = import_path.rsplit(".", 1)[0]
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            continue  # an unimportable class is reported when a stage runs
        if spec is None or not spec.origin:
            continue
        candidate = Path(spec.origin).parent / "default_config.toml"
        if candidate.exists():
            merged = deep_merge(merged, read_toml(candidate))
    merged.pop("config_version", None)
    return merged


# --- the entry point -------------------------------------------------------------------------------


def find_config_file(path: str | os.PathLike | None) -> Path | None:
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; check the path given to -c/--config")
        return path
    local = Path.cwd() / LOCAL_CONFIG
    return local if local.is_file() else None


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | tuple = (), data: dict | None = None
) -> dict:
    """The resolved, migrated, validated config.

    `path`: a TOML file (else ./hyrax_config.toml, else defaults only); `data`: a dict used instead of a
    file (a notebook's config); `overrides`: `key=value` strings, as `--set` takes them. Keys of the
    reference Hyrax's config that this Hyrax doesn't use are named in one warning and left out.
    """
    cfg, ignored = load_config_ignoring(path, overrides, data)
    if ignored:
        source = "the given config" if data is not None else str(find_config_file(path) or "defaults")
        log.warning(
            "%s: the reference Hyrax's keys %s are not used by this Hyrax; ignoring them",
            source,
            ", ".join(sorted(ignored)),
        )
    return cfg


def load_config_ignoring(
    path: str | os.PathLike | None = None, overrides: list[str] | tuple = (), data: dict | None = None
) -> tuple[dict, dict[str, Any]]:
    """`load_config`'s config, and the reference Hyrax's keys it left out ({dotted key: value}) for the
    caller to judge (the reference facade honours some and refuses the others)."""
    if data is not None:
        user, source = deepcopy(data), "the given config"
    else:
        file = find_config_file(path)
        user, source = (read_toml(file), str(file)) if file else ({}, "defaults")
    user = migrate(user, source)
    for item in overrides:
        key, value = parse_override(item)
        set_key(user, key, value)
    defaults = deep_merge(default_config(), plugin_defaults(user))
    # a user data request replaces the default (built-in sample) request wholesale; a group it lacks
    # (say infer) falls back to its train group when a stage reads it
    if "data_request" in user:
        defaults["data_request"] = {}
    errors = class_tables(user, defaults, source)
    more, ignored = validate(user, defaults, source if not overrides else f"{source} (with --set)")
    errors += more
    cfg = deep_merge(defaults, user)
    errors += _check_data_request(cfg, source)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    cfg["config_version"] = current_version()
    return cfg, ignored


def _check_data_request(cfg: dict, source: str) -> list[str]:
    try:
        from libhyrax.data.request import check_request_structure
    except ImportError:
        return []
    return [f"{e} (in {source})" for e in check_request_structure(cfg.get("data_request", {}))]


def resolve(config: dict | str | os.PathLike | None = None, overrides: list[str] | tuple = ()) -> dict:
    """What every libhyrax stage function calls on its `config` argument: None (defaults or
    ./hyrax_config.toml), a path, or a dict. A dict is always validated again (cheap: a resolved config
    resolves to itself), so a notebook's edits to a config are checked before a stage runs. The CLI
    hands a stage its file and --set overrides, so a command resolves its config once, here. The config's
    `general.log_level` applies from here on (unless --debug pinned the level)."""
    from libhyrax.log import apply_config_level

    if isinstance(config, dict):
        cfg = load_config(data=config, overrides=overrides)
    else:
        cfg = load_config(config, overrides)
    apply_config_level(cfg["general"]["log_level"])
    return cfg


def resolve_ignoring(
    config: dict | str | os.PathLike | None = None, overrides: list[str] | tuple = ()
) -> tuple[dict, dict[str, Any]]:
    """`resolve`, and the reference Hyrax's keys the config left out ({dotted key: value}), unwarned."""
    from libhyrax.log import apply_config_level

    data, path = (config, None) if isinstance(config, dict) else (None, config)
    cfg, ignored = load_config_ignoring(path, overrides, data)
    apply_config_level(cfg["general"]["log_level"])
    return cfg, ignored


def dump_config(cfg: dict) -> str:
    """TOML text of `cfg`, keeping the defaults' comments where the keys are the defaults'. Secrets (URL
    credentials, keys named like passwords or tokens) are masked: this text is saved and printed."""
    from libhyrax import redact

    cfg = redact.config(cfg)
    doc = tomlkit.parse(DEFAULTS_FILE.read_text(encoding="utf-8"))

    def update(target, values: dict) -> None:
        for key in list(target.keys()):
            if key not in values:
                del target[key]
        for key, value in values.items():
            if isinstance(value, dict) and key in target and isinstance(target[key], dict):
                update(target[key], value)
            else:
                target[key] = value

    update(doc, cfg)
    return tomlkit.dumps(doc)
