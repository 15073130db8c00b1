"""What the `check_*` functions share: refusing what isn't a subclass, and one message listing every problem.

    check_scorer(cls)      libhyrax.scorers            check_reducer(cls)   libhyrax.reducers.check
    check_index(cls)       libhyrax.vector_index.check check_provider(cls)  libhyrax.surveys.check
    check_model(cls)       libhyrax.models.check       check_dataset(cls)   libhyrax.data.check
"""

from __future__ import annotations

from libhyrax.errors import UsageError


def require_subclass(cls, base: type, checker: str) -> None:
    """`cls` must be a class deriving from `base`; else a UsageError saying how to write it."""
    if not isinstance(cls, type):
        kind = type(cls).__name__
        raise UsageError(f"{checker} takes a class, not a {kind}: pass {kind} itself, not an instance")
    name = cls.__name__
    if not issubclass(cls, base):
        raise UsageError(f"{name} does not subclass {base.__module__}.{base.__name__}; write "
                         f"`class {name}({base.__name__}):`")


def missing_methods(cls: type, base: type, required: dict[str, str]) -> list[str]:
    """'define ...' for each method of `required` (name -> what it does) that `cls` leaves to `base`."""
    return [f"define {what}" for name, what in required.items() if getattr(cls, name) is getattr(base, name)]


def contract_error(cls: type, contract: str, problems: list[str]) -> UsageError:
    return UsageError(f"{cls.__name__} does not meet the Hyrax {contract} contract:\n"
                      + "\n".join(f"  {i}. {p}" for i, p in enumerate(problems, 1)))
