"""Planning a run: items with stable keys and the work units formed from them (plan.py), which
rank serves which stage of the model's topology (layout.py), and how much work each item is, for
progress and ETAs (work.py). Pure: no MPI, torch or HDF5."""

from onepiece_hpc._exports import lazy_exports

__all__ = ["NODE_MANAGER", "Plan", "PlanSummary", "StageLayout", "Unit", "default_split", "plan_job", "plan_layout",
           "WorkMeter", "WorkProgress", "item_work", "rows_work", "work_progress"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "layout": ["NODE_MANAGER", "StageLayout", "default_split", "plan_layout"],
    "plan": ["Plan", "PlanSummary", "Unit", "plan_job"],
    "work": ["WorkMeter", "WorkProgress", "item_work", "rows_work", "work_progress"],
})
