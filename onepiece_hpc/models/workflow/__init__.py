"""Workflows: models chained in one staged job (docs/workflows.md).

topology.py (the chain's stages, without torch: `onepiece submit` names them before anything is
queued), seeds.py (each step's seed of an item), adapter.py (the chained stages as one adapter),
compose.py (the steps resolved, checked against each other, and made one model source).
"""
