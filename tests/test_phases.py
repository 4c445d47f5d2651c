"""Stages in phases (runtime/phases.py): a group of units goes through one stage at a time, each
stage's weights brought in once per group; the outputs are the bits of the unit-by-unit run, a
unit that fails is dropped from the later stages while the rest of its group goes on."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from support import write_job

pytestmark = pytest.mark.timeout(300)


class Recorder:
    """A stage runner that notes what happened to it, in order, in a shared log."""

    def __init__(self, name: str, log: list, fail_unit: int | None = None) -> None:
        self.name, self.log, self.fail_unit = name, log, fail_unit

    def __call__(self, unit, inputs):
        if unit.unit == self.fail_unit:
            raise ValueError(f"unit {unit.unit} can't be run")
        self.log.append((self.name, "run", unit.unit))
        return {"trail": torch.tensor([*inputs.get("trail", torch.tensor([])).tolist(), len(self.log)])}

    def offload(self) -> None:
        self.log.append((self.name, "offload", None))

    def restore(self) -> None:
        self.log.append((self.name, "restore", None))


def _request(unit: int):
    from onepiece_hpc.models.base import UnitInput

    return UnitInput(unit=unit, items=(unit,), prompts=("p",), negative_prompts=("",), seeds=(unit,), params=None)


def test_a_phase_brings_each_stage_in_once_and_runs_every_unit_through_it_in_turn():
    from onepiece_hpc.runtime.phases import run_phase

    log: list = []
    runners = {name: Recorder(name, log) for name in ("encode", "denoise", "decode")}
    outcomes = run_phase([_request(u) for u in (4, 5, 6)], runners, torch.device("cpu"))
    assert [o.ok for o in outcomes] == [True, True, True]
    expected = []
    for stage in ("encode", "denoise", "decode"):
        expected += [(stage, "restore", None)] + [(stage, "run", u) for u in (4, 5, 6)] + [(stage, "offload", None)]
    assert log == expected
    assert all(len(o.seconds) == 3 for o in outcomes)


def test_a_unit_that_fails_is_dropped_from_the_later_stages_and_its_group_goes_on():
    from onepiece_hpc.runtime.phases import run_phase

    log: list = []
    runners = {"encode": Recorder("encode", log), "denoise": Recorder("denoise", log, fail_unit=5),
               "decode": Recorder("decode", log)}
    outcomes = run_phase([_request(u) for u in (4, 5, 6)], runners, torch.device("cpu"))
    assert [(o.ok, o.failed_stage) for o in outcomes] == [(True, None), (False, "denoise"), (True, None)]
    assert "ValueError: unit 5 can't be run" in outcomes[1].error
    assert [entry for entry in log if entry[:2] == ("decode", "run")] == [("decode", "run", 4), ("decode", "run", 6)]


def test_resident_runs_move_no_weights():
    from onepiece_hpc.runtime.phases import run_phase

    log: list = []
    runners = {name: Recorder(name, log) for name in ("encode", "decode")}
    run_phase([_request(1)], runners, torch.device("cpu"), move_weights=False)
    assert [entry[1] for entry in log] == ["run", "run"]


@pytest.mark.parametrize("model, params", [
    ("builtin:tiny-sd", "{steps: 2, guidance: 5.0, height: 64, width: 64}"),
    ("builtin:tiny-wan-t2v", "{steps: 2, guidance: 3.0, height: 32, width: 32, frames: 5}"),
])
def test_a_phased_run_writes_the_bits_of_the_unit_by_unit_run(tmp_path, model_cache, model, params):
    from onepiece_hpc.runtime.monolithic import run_monolithic
    from onepiece_hpc.runtime.prepare import prepare

    prompts = [f"a harbour at dawn, study {i}" for i in range(7)]
    outputs = {}
    for phase in (None, 3):
        job = write_job(tmp_path / f"phase-{phase}", prompts, model=model, params=params, microbatch="2")
        prepared = prepare(job, None, model_cache)
        summary = run_monolithic(prepared, phase=phase)
        assert summary.committed_now == len(prompts)
        with h5py.File(prepared.output, "r") as f:
            assert f["done"][...].all()
            (name,) = f["outputs"].keys()
            outputs[phase] = f[f"outputs/{name}"][...]
    np.testing.assert_array_equal(outputs[3], outputs[None])


def test_onepiece_run_monolithic_with_phases_writes_the_plain_runs_bits(tmp_path, model_cache):
    from support import invoke

    prompts = [f"a kite over dunes, study {i}" for i in range(5)]
    plain = write_job(tmp_path / "plain", prompts)
    phased = write_job(tmp_path / "phased", prompts)
    assert invoke("run", plain, "--monolithic").code == 0
    result = invoke("run", phased, "--monolithic", "--phases", "2")
    assert result.code == 0, result.err
    with h5py.File(tmp_path / "plain/out/t.h5", "r") as a, h5py.File(tmp_path / "phased/out/t.h5", "r") as b:
        np.testing.assert_array_equal(a["outputs/images"][...], b["outputs/images"][...])
    assert invoke("run", phased, "--monolithic", "--phases", "0").code == 2


def test_a_phased_workflow_keeps_the_bits_of_its_steps(tmp_path, model_cache):
    from support import REPO, invoke

    outputs = {}
    for phases in ([], ["--phases", "3"]):
        out = tmp_path / f"wf{len(phases)}.h5"
        result = invoke("run", REPO / "jobs" / "workflow-tiny.yaml", "--monolithic", "-o", out, *phases)
        assert result.code == 0, result.err
        with h5py.File(out, "r") as f:
            outputs[len(phases)] = {name: f[name][...] for name in ("outputs/videos", "outputs/image/images")}
    for name, array in outputs[0].items():
        np.testing.assert_array_equal(outputs[2][name], array)
