"""A workflow as one adapter: the steps' stages in one chain, each step's outputs conditioning the
next step, so the runtime (layout, routes, policy, moves, telemetry, output) takes it as any
pipeline.

What passes between the chain's stages, beside each stage's own tensors:
- PROMPTS, each item's prompt (UTF-8, zero-padded to MAX_PROMPT_BYTES), from the first stage to
  the last step's first: every step encodes the prompt, and only the first stage is handed it;
- STEP/images, the outputs of a step the job keeps, from the next step's first stage to the end,
  where the output's extra dataset /outputs/STEP/images takes them.
The first stage of every later step takes the step before's outputs as its items' condition
images (the adapter's `condition_images_input`): exactly the uint8 pixels a user would pass on,
as PIL images, from the first pipeline's output to the second.

Each stage runs with its step's own params (the unit's are the last step's, which the output's
items record), each item's seed for that step (seeds.py), and its step's negative prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.jobfile.job import GenParams
from onepiece_hpc.jobfile.workflow import MAX_PROMPT_BYTES
from onepiece_hpc.models.base import ModelAdapter, Placement, StageRunner, TensorSpec, UnitInput
from onepiece_hpc.models.source import ModelSource
from onepiece_hpc.models.workflow.seeds import step_seed
from onepiece_hpc.models.workflow.topology import chain_topology
from onepiece_hpc.topology import Topology

if TYPE_CHECKING:
    import torch

#: the tensor that carries each item's prompt between a workflow's stages
PROMPTS = "_prompts"


@dataclass(frozen=True)
class Step:
    """One resolved step: its name, model, params (sizes and frames decided) and negative prompt,
    and whether its outputs are kept."""

    index: int
    name: str
    source: ModelSource
    params: GenParams
    negative_prompt: str
    keep: bool

    @property
    def adapter(self) -> ModelAdapter:
        return self.source.adapter

    def output_spec(self, batch: int, dtype: torch.dtype) -> TensorSpec:
        """The step's outputs: its last stage's first tensor ("images" or "videos")."""
        return self.adapter.output_specs(self.adapter.topology.last, self.params, batch, dtype)[0]

    @property
    def output(self) -> str:
        """The name of the step's outputs' tensor."""
        return self.output_spec(1, "float32").name

    @property
    def kept_name(self) -> str:
        """The tensor (and the output's dataset under /outputs) that carries the kept outputs."""
        return f"{self.name}/{self.output}"


def encode_prompts(prompts: tuple[str, ...]) -> torch.Tensor:
    """(N, MAX_PROMPT_BYTES) uint8: each prompt's UTF-8, zero-padded (prompt text holds no NUL)."""
    import torch

    rows = np.zeros((len(prompts), MAX_PROMPT_BYTES), dtype=np.uint8)
    for row, prompt in enumerate(prompts):
        raw = prompt.encode("utf-8")
        if len(raw) > MAX_PROMPT_BYTES:  # the job's check refuses such prompts before any rank starts
            raise ValueError(f"a prompt of {len(raw)} bytes passes the {MAX_PROMPT_BYTES} a workflow carries")
        rows[row, :len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return torch.from_numpy(rows)


def decode_prompts(tensor: torch.Tensor) -> tuple[str, ...]:
    return tuple(bytes(row).rstrip(b"\0").decode("utf-8") for row in tensor.cpu().numpy())


class ChainedStage:
    """A step's stage inside the chain: the step's own runner, handed the step's params, seeds and
    prompts and its own inputs; what passes through (PROMPTS, kept outputs) is added to its outputs,
    copied (a ring slot's tensors are only lent for the call)."""

    def __init__(self, workflow: WorkflowAdapter, position: int, runner: StageRunner) -> None:
        self.workflow, self.position, self.runner = workflow, position, runner

    def __call__(self, unit: UnitInput, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        flow = self.workflow
        step, stage = flow.place(self.position)
        first = flow.starts[step.index] == self.position
        own = {name: tensor for name, tensor in inputs.items() if name not in flow.passed}
        prompts = unit.prompts
        if first and step.index > 0:
            prompts = decode_prompts(inputs[PROMPTS])
            own = {step.adapter.condition_images_input: inputs[flow.outputs[step.index - 1]]}
        request = replace(unit, prompts=prompts, negative_prompts=(step.negative_prompt,) * len(unit.items),
                          params=step.params, seeds=tuple(step_seed(seed, step.index) for seed in unit.seeds))
        outputs = dict(self.runner(request, own))
        for name in flow.passing(self.position):
            outputs[name] = self._passed(name, unit, inputs)
        return outputs

    def _passed(self, name: str, unit: UnitInput, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if name == PROMPTS and self.position == 0:
            return encode_prompts(unit.prompts)
        if name in inputs:
            return inputs[name].clone()
        kept = next(kept for kept in self.workflow.kept if kept.kept_name == name)  # kept from this stage on
        return inputs[self.workflow.outputs[kept.index]].clone()

    def offload(self) -> None:
        self.runner.offload()

    def restore(self) -> None:
        self.runner.restore()


class WorkflowAdapter(ModelAdapter):
    """The steps of a workflow as one pipeline (see the module docstring). Its folder, index, output
    kind, sizes and frame rate are the last step's: its outputs are the job's."""

    def __init__(self, steps: tuple[Step, ...]) -> None:
        last = steps[-1]
        super().__init__(last.source.folder, last.adapter.index)
        self.steps = steps
        self.kept = tuple(step for step in steps if step.keep)
        self.outputs = [step.output for step in steps]  # each step's outputs' tensor
        self.passed = {PROMPTS, *(kept.kept_name for kept in self.kept)}  # the tensors stages pass through
        self._topology = chain_topology([s.name for s in steps], [s.adapter.topology for s in steps])
        self._places: list[tuple[Step, str]] = [(step, stage) for step in steps for stage in step.adapter.topology]
        self.starts = [sum(len(s.adapter.topology) for s in steps[:k]) for k in range(len(steps))]
        self.output_kind = last.adapter.output_kind
        self.frame_rate = last.adapter.frame_rate
        self.needs_image = steps[0].adapter.needs_image

    @property
    def topology(self) -> Topology:
        return self._topology

    def place(self, position: int) -> tuple[Step, str]:
        """The step a stage of the chain belongs to, and its name within the step."""
        return self._places[position]

    def _position(self, stage: str) -> int:
        return self._topology.index(stage)

    def passing(self, position: int) -> list[str]:
        """The tensors a stage passes on beside its own: PROMPTS until the last step begins, and the
        outputs of each kept step once the next step has taken them as conditions."""
        names = [PROMPTS] if position < self.starts[-1] else []
        return names + [kept.kept_name for kept in self.kept if self.starts[kept.index + 1] <= position]

    def kept_specs(self, batch: int, dtype: torch.dtype) -> tuple[TensorSpec, ...]:
        """The kept steps' outputs as the last stage sends them (the output's extra datasets)."""
        return tuple(replace(kept.output_spec(batch, dtype), name=kept.kept_name) for kept in self.kept)

    # -- the adapter interface ---------------------------------------------------------------
    def components(self, stage: str) -> tuple[str, ...]:
        step, own = self.place(self._position(stage))
        return step.adapter.components(own)

    def output_specs(self, stage: str, params: GenParams, batch: int, dtype: torch.dtype) -> tuple[TensorSpec, ...]:
        """The stage's own tensors (at its step's params: `params`, the unit's, are the last
        step's) and those it passes on."""
        position = self._position(stage)
        step, own = self.place(position)
        specs = list(step.adapter.output_specs(own, step.params, batch, dtype))
        kept = {spec.name: spec for spec in self.kept_specs(batch, dtype)}
        for name in self.passing(position):
            specs.append(TensorSpec(PROMPTS, (batch, MAX_PROMPT_BYTES), "uint8") if name == PROMPTS else kept[name])
        return tuple(specs)

    def size_multiple(self) -> int:
        return self.steps[-1].adapter.size_multiple()

    def default_size(self) -> tuple[int, int]:
        return self.steps[-1].adapter.default_size()

    def default_frames(self) -> int:
        return self.steps[-1].adapter.default_frames()

    def frame_step(self) -> int:
        return self.steps[-1].adapter.frame_step()

    def load(self, stage: str, placement: Placement) -> StageRunner:
        position = self._position(stage)
        step, own = self.place(position)
        return ChainedStage(self, position, step.adapter.load(own, placement))

    def load_plain(self, placement: Placement):
        raise UserError("a workflow job has no one plain pipeline call to measure against; fix: measure each "
                        "step's model as a job of its own")
