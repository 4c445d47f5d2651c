"""Lazy re-exports for the packages' public names (PEP 562).

`import onepiece_hpc.store` must stay as cheap as it is (no h5py, torch, diffusers or mpi4py until
a name is used), yet `from onepiece_hpc.store import open_output` should work. Each package's
`__init__` lists its public names in `__all__` and says which module holds each; a name's module
is imported the first time the name is looked up.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence


def lazy_exports(package: str, public: Sequence[str], where: Mapping[str, Sequence[str]]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The package's `__getattr__` and `__dir__`: `where` maps each submodule (relative to
    `package`) to the names it gives; together they must be exactly `public` (its `__all__`)."""
    home = {name: module for module, names in where.items() for name in names}
    if sorted(home) != sorted(public) or len(home) != sum(len(names) for names in where.values()):
        raise ImportError(f"{package}: __all__ and the modules of its names differ: "
                          f"{sorted(set(public) ^ set(home))}")
    entries = set(os.listdir(os.path.dirname(sys.modules[package].__file__)))
    shadowed = [name for name in home if name in entries or f"{name}.py" in entries]
    if shadowed:  # the submodule, once imported, would replace the name on the package
        raise ImportError(f"{package}: names in __all__ that are also its submodules: {shadowed}")

    def __getattr__(name: str) -> object:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        setattr(sys.modules[package], name, value)  # looked up once
        return value

    def __dir__() -> list[str]:
        return sorted(set(public) | set(vars(sys.modules[package])))

    return __getattr__, __dir__
