"""Workflows: models chained in one staged job (docs/workflows.md).

topology.py (the chain's stages, without torch: `onepiece submit` names them before anything is
queued), seeds.py (each step's seed of an item), adapter.py (the chained stages as one adapter),
compose.py (the steps resolved, checked against each other, and made one model source).
"""

from onepiece_hpc._exports import lazy_exports

__all__ = ["Step", "WorkflowAdapter", "chain_topology", "step_seed", "workflow_topology"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "adapter": ["Step", "WorkflowAdapter"],
    "seeds": ["step_seed"],
    "topology": ["chain_topology", "workflow_topology"],
})
