"""The one interface every PEFT method shares, and the registry that maps a name to a method.

A method is a small dataclass (its options) that knows how to inject itself into a model:

* :meth:`PeftConfig.inject` replaces or hooks modules and marks the tensors to train;
* modules it injects may define ``merged_module()`` (returns a plain module computing the same
  function, e.g. one ``nn.Linear``) so :func:`essa_monai.peft.merge_peft` can fold them away;
* modules it injects may list ``adapter_buffers`` (names of buffers that belong to the adapter, such
  as APLA's row indices) so they travel in the adapter-only state dict.

Everything else (freezing, counting, adapter save/load, merging) is generic and lives in
:mod:`essa_monai.peft.api`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

from torch import nn

__all__ = ["PeftConfig", "PEFT_METHODS", "register_peft", "make_peft_config", "replace_submodule"]

#: method name -> config class, filled by :func:`register_peft`.
PEFT_METHODS: dict[str, type["PeftConfig"]] = {}


@dataclasses.dataclass
class PeftConfig:
    """Base class of a PEFT method's options. Subclasses are dataclasses registered by name."""

    method: ClassVar[str] = ""

    def inject(self, model: nn.Module) -> None:
        """Modify ``model`` in place (all its parameters are already frozen) and set
        ``requires_grad=True`` on the tensors this method trains."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, ``{"method": name, **options}``; inverse of :func:`make_peft_config`."""
        out: dict[str, Any] = {"method": self.method}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out


def register_peft(name: str) -> Callable[[type[PeftConfig]], type[PeftConfig]]:
    """Class decorator: register a :class:`PeftConfig` dataclass under ``name``."""

    def decorator(cls: type[PeftConfig]) -> type[PeftConfig]:
        if name in PEFT_METHODS:
            raise ValueError(f"PEFT method {name!r} is already registered")
        cls.method = name
        PEFT_METHODS[name] = cls
        return cls

    return decorator


def make_peft_config(method: str | PeftConfig | Mapping[str, Any] = "apla", **options: Any) -> PeftConfig:
    """Build a method's config from a name and options, a ``to_dict()`` mapping, or pass one through.

    Raises ``ValueError`` naming the valid choices for an unknown method or option.
    """
    if isinstance(method, PeftConfig):
        if options:
            return dataclasses.replace(method, **options)
        return method
    if isinstance(method, Mapping):
        options = {**{k: v for k, v in method.items() if k != "method"}, **options}
        method = method.get("method", "")
    name = str(method).lower()
    if name not in PEFT_METHODS:
        raise ValueError(f"unknown PEFT method {method!r}; choose one of: {', '.join(sorted(PEFT_METHODS))}")
    cls = PEFT_METHODS[name]
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for PEFT method {name!r}; valid options: {sorted(valid) or 'none'}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in list(options.items()):
        if isinstance(value, list) and "tuple" in str(fields[key].type):
            options[key] = tuple(value)
    return cls(**options)


def replace_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` (e.g. ``blocks.3.attn.proj``) by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
