"""Rebalancing policies: pure functions from a view of the job and the ranks to rank moves.

The staged runtime's Node Manager and the simulator (`onepiece simulate`) call the very same
functions, so a policy can be tried at 10^4 ranks before it runs on one: the policy says how
many ranks go from which stage to which (adaptive.py), and movers.py says which ranks.
"""

from onepiece_hpc.runtime.policy.model import Move, Policy, PolicyInput, StageQueue
from onepiece_hpc.runtime.policy.movers import Fleet, RankMove, choose_movers, fleet_input
from onepiece_hpc.runtime.policy.registry import POLICIES, PolicySettings, make_policy

__all__ = ["Move", "Policy", "PolicyInput", "StageQueue", "POLICIES", "PolicySettings", "make_policy",
           "Fleet", "RankMove", "choose_movers", "fleet_input"]
