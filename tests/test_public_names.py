"""Every package says what it is and lists its public names (`__all__`); each name resolves, and
importing a package costs none of the heavy imports (torch, diffusers, h5py, mpi4py, ...)."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

import pytest

import onepiece_hpc
from support import REPO

PACKAGES = ["onepiece_hpc", *(m.name for m in pkgutil.walk_packages(onepiece_hpc.__path__, "onepiece_hpc.")
                              if m.ispkg)]
HEAVY = ("torch", "diffusers", "transformers", "h5py", "mpi4py", "numpy", "pydantic", "yaml", "click", "submitit")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_every_package_says_what_it_is_and_lists_its_public_names():
    import importlib

    assert len(PACKAGES) >= 16
    for name in PACKAGES:
        package = importlib.import_module(name)
        assert (package.__doc__ or "").strip(), f"{name} has no docstring"
        assert isinstance(package.__all__, list) and package.__all__, f"{name} has no __all__"
        assert len(set(package.__all__)) == len(package.__all__), name
        assert set(package.__all__) <= set(dir(package)), name


def test_every_public_name_resolves_in_a_fresh_interpreter():
    code = f"""
import importlib, json
missing = {{}}
for name in {PACKAGES!r}:
    package = importlib.import_module(name)
    for public in package.__all__:
        try:
            getattr(package, public)
        except Exception as err:
            missing.setdefault(name, []).append(f"{{public}}: {{err!r}}")
    exec(f"from {{name}} import *", {{}})
print(json.dumps(missing))
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}


@pytest.mark.parametrize("name", PACKAGES)
def test_importing_a_package_imports_none_of_the_heavy_libraries(name):
    done = _python(f"import sys, {name}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_a_name_of_a_package_is_the_object_its_module_defines():
    from onepiece_hpc.runtime import RunOptions
    from onepiece_hpc.runtime.options import RunOptions as defined
    from onepiece_hpc.store import open_output
    from onepiece_hpc.store.reader import open_output as read

    assert RunOptions is defined and open_output is read
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        onepiece_hpc.runtime.nothing_here
