"""Processes that load no model import neither diffusers nor transformers (each costs seconds a
process, paid by every rank): the launcher, rank 0's planning and commits, and a job's checks.
The launcher of a CPU job imports no torch either."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from support import CLI_TIMEOUT, builtin_model, write_job
from workflow_support import workflow_job

HEAVY = ("diffusers", "transformers", "scipy")


def _imported_by(code: str) -> set[str]:
    probe = textwrap.dedent(code) + textwrap.dedent(f"""
        import sys
        print(" ".join(name for name in {HEAVY!r} if name in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    return set(done.stdout.split())


def test_rank_0s_modules_and_a_planned_job_import_no_model_library(tmp_path, model_cache):
    for name in ("tiny-wan-t2v", "tiny-sd"):
        builtin_model(model_cache, name)  # building a built-in model does import them, once a cache
    job = write_job(tmp_path, ["a fox", "a cat"], model="builtin:tiny-wan-t2v",
                    params="{steps: 2, height: 32, width: 32, frames: 9}")
    write_job(tmp_path / "sd", ["a fox"])
    assert _imported_by("import onepiece_hpc.runtime.rank_main, onepiece_hpc.runtime.rank, "
                        "onepiece_hpc.cli.main") == set()
    # planning (model identity, layout, provenance) for two families, as rank 0 and the launcher do
    assert _imported_by(f"""
        from pathlib import Path
        from onepiece_hpc.runtime.prepare import prepare
        from onepiece_hpc.planning.layout import plan_layout
        for job in ({str(job)!r}, {str(tmp_path / 'sd/job.yaml')!r}):
            prepared = prepare(Path(job), None, Path({str(model_cache)!r}))
            plan_layout(prepared.job, 5, prepared.model.adapter.topology)
            prepared.model.adapter.output_specs("encode", prepared.plan.params[0], 1, prepared.placement.dtype)
    """) == set()


def test_a_stage_that_loads_imports_them(tmp_path, model_cache):
    job = write_job(tmp_path, ["a fox"])
    assert {"diffusers", "transformers"} <= _imported_by(f"""
        from pathlib import Path
        from onepiece_hpc.runtime.prepare import prepare
        prepared = prepare(Path({str(job)!r}), None, Path({str(model_cache)!r}))
        prepared.model.adapter.load("denoise", prepared.placement)
    """)


def test_the_launcher_of_a_cpu_job_imports_no_torch(tmp_path, model_cache):
    """`onepiece run -n N` checks a job (its file, model, device, sizes and layout) before any rank
    starts. On CPU that needs no torch, whose import cost each launch about a CPU-second: the
    launcher's imports, as `-X importtime` lists them, up to its refusal of a layout of too few
    ranks (the same checks come first in a run that starts), for every model family."""
    for name in ("tiny-sd", "tiny-sdxl", "tiny-wan-t2v", "tiny-wan-i2v"):
        builtin_model(model_cache, name)
    jobs = {"sd": write_job(tmp_path / "sd", ["a fox"]),
            "sdxl": write_job(tmp_path / "sdxl", ["a fox"], model="builtin:tiny-sdxl"),
            "wan": write_job(tmp_path / "wan", ["a fox"], model="builtin:tiny-wan-t2v",
                             params="{steps: 2, height: 32, width: 32, frames: 9}"),
            "workflow": workflow_job(tmp_path / "workflow")}
    for family, job in jobs.items():
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "onepiece_hpc.cli.main", "run", str(job),
                               "-n", "2"], capture_output=True, text=True, timeout=CLI_TIMEOUT, cwd=tmp_path)
        lines = done.stderr.splitlines()
        said = [line for line in lines if not line.startswith("import time:")]
        assert done.returncode == 2 and "2 ranks are too few" in "\n".join(said), (family, said[-20:])
        imported = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
        assert "onepiece_hpc.runtime.prepare" in imported and "onepiece_hpc.runtime.launch" in imported, family
        assert not imported & {"torch", *HEAVY}, (family, sorted(imported & {"torch", *HEAVY}))
