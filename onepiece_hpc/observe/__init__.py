"""Seeing a run live: the snapshot rank 0 makes (live.py), its Prometheus exposition (metrics.py),
the endpoint, discovery entry and live.json that publish it (publish.py), and the watch that
`onepiece status --watch` draws (watch.py). No torch or MPI; h5py only to find an output's folder."""

from onepiece_hpc._exports import lazy_exports

__all__ = ["LivePublisher", "LiveRecord", "LiveSnapshot", "MetricsServer", "RankLive", "StageLive", "exposition",
           "read_live"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "live": ["LiveSnapshot", "RankLive", "StageLive"],
    "live_file": ["LiveRecord", "read_live"],
    "metrics": ["exposition"],
    "publish": ["LivePublisher"],
    "server": ["MetricsServer"],
})
