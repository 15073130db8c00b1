"""`[data_request]`: which datasets each stage reads, in the reference Hyrax's structure.

    [data_request.<group>.<friendly name>]
    dataset_class = "HyraxHDF5Dataset"        # a registered name or an import path
    data_location = "data/cutouts.h5"
    fields = ["image", "object_id"]            # false/absent: every field of the dataset
    primary_id_field = "object_id"             # exactly one dataset per group is primary
    join_field = "object_id"                   # others: joined on this field (left join), or, without
                                               # it, aligned row by row with the primary
    dataset_config = {}                        # the class's options (merged over [data_set.<Class>])

Groups are train, validate, test, infer, ... A stage reading a group that isn't there reads "train".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_class: str
    data_location: str | None = None
    fields: list[str] | None = None
    primary_id_field: str | None = None
    join_field: str | None = None
    dataset_config: dict[str, Any] = {}

    @field_validator("data_location", "fields", "primary_id_field", "join_field", mode="before")
    @classmethod
    def _false_is_unset(cls, v):
        return None if v is False or v == "" else v


def _friendly(err: dict) -> str:
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key {where}; a dataset takes {', '.join(DatasetSpec.model_fields)}"
    if err["type"] == "missing":
        return f"{where} is missing"
    return f"{where}: {err['msg']}"


def parse_group(name: str, group: Any) -> tuple[dict[str, DatasetSpec], list[str]]:
    """The group's datasets and a list of problems (empty when fine)."""
    if not isinstance(group, dict) or not group:
        return {}, [f"data_request.{name} must be a table of datasets, like [data_request.{name}.cutouts]"]
    specs, errors = {}, []
    for friendly, raw in group.items():
        if not isinstance(raw, dict):
            errors.append(f"data_request.{name}.{friendly} must be a table with dataset_class, ...")
            continue
        try:
            specs[friendly] = DatasetSpec(**raw)
        except ValidationError as e:
            errors += [f"data_request.{name}.{friendly}: {_friendly(x)}" for x in e.errors()]
    if errors:
        return specs, errors
    primaries = [f for f, s in specs.items() if s.primary_id_field]
    if len(specs) > 1 and len(primaries) != 1:
        how = "none has" if not primaries else f"{', '.join(primaries)} all have"
        errors.append(f"data_request.{name} needs exactly one primary dataset (with primary_id_field), but "
                      f"{how} one")
    return specs, errors


def check_request_structure(request: Any) -> list[str]:
    """Structure problems in a whole `[data_request]` (called when a config is loaded)."""
    if not isinstance(request, dict):
        return ["data_request must be a table of groups (train, infer, ...)"]
    errors = []
    for name, group in request.items():
        errors += parse_group(name, group)[1]
    return errors


def primary_name(specs: dict[str, DatasetSpec]) -> str:
    """The primary dataset's friendly name (the only dataset when a group has one)."""
    return next((f for f, s in specs.items() if s.primary_id_field), next(iter(specs)))
