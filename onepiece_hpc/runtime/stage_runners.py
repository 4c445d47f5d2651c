"""The stages a rank has loaded: load (from disk, or from the host copy an earlier move kept),
run, offload for a move, and a warm-up run before serving.

Invariant: a rank runs one stage at a time; a stage it left keeps its weights in host memory
(StageRunner.offload), so a move back restores instead of loading from disk. On a GPU, a unit's
seconds end when its kernels have (torch.cuda.synchronize), so busy time is real and the ring
slots its inputs were read from may be given back.
"""

from __future__ import annotations

import time

import torch

from onepiece_hpc.models.base import StageRunner, UnitInput
from onepiece_hpc.planning.plan import PlanSummary
from onepiece_hpc.runtime.prepare import Prepared
from onepiece_hpc.runtime.quiet import quiet_libraries


class StageRunners:
    def __init__(self, prepared: Prepared, summary: PlanSummary) -> None:
        self.prepared, self.summary = prepared, summary
        self.on_gpu = prepared.placement.device_type == "cuda"
        self._runners: dict[str, StageRunner] = {}

    def load(self, stage: str) -> float:
        """Bring `stage`'s components in: from the host copy kept by an earlier move, or from disk.
        Returns the seconds it took."""
        started = time.monotonic()
        if stage in self._runners:
            self._runners[stage].restore()
        else:
            quiet_libraries()
            self._runners[stage] = self.prepared.model.adapter.load(stage, self.prepared.placement)
        return time.monotonic() - started

    def offload(self, stage: str) -> None:
        """Free the device for another stage, keeping a host copy of `stage`'s weights."""
        self._runners[stage].offload()
        if self.on_gpu:
            torch.cuda.reset_peak_memory_stats()  # from here the rank's peak is its new stage's

    def rest(self, stage: str) -> float:
        """Between phases: `stage`'s weights back to their host copy and the GPU's blocks to the
        device, for the next rank of the GPU (the peak is kept: the stage is the same). Returns the
        seconds it took."""
        started = time.monotonic()
        self._runners[stage].offload()
        return time.monotonic() - started

    def run(self, stage: str, request: UnitInput, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = self._runners[stage](request, inputs)
        if self.on_gpu:
            torch.cuda.synchronize()
        return outputs

    def after_failure(self) -> None:
        """A unit failed: an out-of-memory leaves its blocks cached, and the next unit may need them."""
        if self.on_gpu:
            torch.cuda.empty_cache()

    def warm_up(self, stage: str, before: str | None) -> float:
        """Run `stage` once on the plan's first unit with zero inputs (the outputs of `before`), so
        that its one-time costs (kernel choice, workspaces, the allocator's growth) fall before
        serving starts. Returns the seconds it took."""
        started = time.monotonic()
        placement, adapter = self.prepared.placement, self.prepared.model.adapter
        params_id, size = self.summary.shapes[0]
        request = UnitInput(unit=-1, items=tuple(range(size)), prompts=("a warm-up prompt",) * size,
                            negative_prompts=("",) * size, seeds=(0,) * size, params=self.summary.params[params_id])
        specs = adapter.output_specs(before, request.params, size, placement.dtype) if before else ()
        inputs = {s.name: torch.zeros(s.shape, dtype=getattr(torch, s.dtype), device=placement.device) for s in specs}
        self.run(stage, request, inputs)
        return time.monotonic() - started
