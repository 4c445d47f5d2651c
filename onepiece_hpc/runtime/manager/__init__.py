"""The Node Manager's rooms, one role each; runtime/node_manager.py's loop calls them in turn.

- units.py: every unit's state (planned, dispatched, committed, failed) and the dispatch order
- dispatch.py: answers first-stage ranks' requests with units and their inputs
- commit.py: outputs arriving at rank 0's rings go to the writer; unit failures are judged
- moves.py: the routes, where each rank is, and the moves (the pure choice is in runtime/policy/)
- record.py: the run's telemetry tables for the output
- outcome.py: the run's summary, or the one error that says why it stopped
"""

from onepiece_hpc._exports import lazy_exports

__all__ = ["Committer", "Dispatcher", "JobFailed", "MoveRecord", "Moves", "StagedSummary", "UnitBook",
           "initial_routes", "record_telemetry"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "commit": ["Committer"],
    "dispatch": ["Dispatcher"],
    "moves": ["MoveRecord", "Moves", "initial_routes"],
    "outcome": ["JobFailed", "StagedSummary"],
    "record": ["record_telemetry"],
    "units": ["UnitBook"],
})
