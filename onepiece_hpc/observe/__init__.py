"""Seeing a run: the live snapshot rank 0 makes (live.py). Pure data; no torch, MPI or HDF5."""

from onepiece_hpc._exports import lazy_exports

__all__ = ["LiveSnapshot", "RankLive", "StageLive"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "live": ["LiveSnapshot", "RankLive", "StageLive"],
})
