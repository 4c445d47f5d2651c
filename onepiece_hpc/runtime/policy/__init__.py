"""Rebalancing policies: pure functions from a view of the job and the ranks to rank moves.

The staged runtime's Node Manager and the simulator (`onepiece simulate`) call the very same
functions, so a policy can be tried at 10^4 ranks before it runs on one: the policy says how
many ranks go from which stage to which (`adaptive`), and `movers` says which ranks. `model` is
the data a policy sees and returns, `splits` the balanced split of ranks over stages, `registry`
the policies by the names a job file gives them.
"""

from onepiece_hpc._exports import lazy_exports

__all__ = ["Fleet", "Move", "POLICIES", "Policy", "PolicyInput", "PolicySettings", "RankMove", "StageQueue",
           "balanced_split", "choose_movers", "fleet_input", "make_policy", "oracle", "static"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "adaptive": ["oracle", "static"],
    "model": ["Move", "POLICIES", "Policy", "PolicyInput", "StageQueue"],
    "movers": ["Fleet", "RankMove", "choose_movers", "fleet_input"],
    "registry": ["PolicySettings", "make_policy"],
    "splits": ["balanced_split"],
})
