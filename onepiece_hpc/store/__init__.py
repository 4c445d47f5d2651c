"""HDF5 outputs: the schema, crash-safe commits and resume, inspection and export.

Writing: `output` (create or resume, commit units) over `datafile`, `index`, `journal`, `lock`,
`files` and `preflight`; `provenance` and `telemetry` record what produced it. Reading: `reader`
(one view over an output, a merged view or an older format), `safe_read`, `summary`, `verify`,
`integrity`, `failed`; `merge` and `export` make new files from outputs, never changing one.
"""

from onepiece_hpc._exports import lazy_exports

__all__ = ["FailedUnit", "MANIFEST", "MOVE_DTYPE", "OutputLayout", "OutputWriter", "PlanItems", "Provenance",
           "RANK_DTYPE", "RunInfo", "SAMPLE_DTYPE", "STAGE_DTYPE", "StoreSettings", "check_writable", "collect",
           "data_folder", "export_items", "hardware_of", "latest_commits", "latest_run", "merge_outputs",
           "open_output", "ranges", "read_dataset", "software_versions", "verify_output", "view_of"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "export": ["MANIFEST", "export_items"],
    "items": ["PlanItems"],
    "journal": ["FailedUnit"],
    "merge": ["merge_outputs"],
    "output": ["OutputLayout", "OutputWriter", "StoreSettings"],
    "preflight": ["check_writable"],
    "provenance": ["Provenance", "RunInfo", "collect", "hardware_of", "software_versions"],
    "reader": ["open_output", "view_of"],
    "safe_read": ["read_dataset"],
    "schema": ["data_folder"],
    "summary": ["latest_commits"],
    "telemetry": ["MOVE_DTYPE", "RANK_DTYPE", "SAMPLE_DTYPE", "STAGE_DTYPE", "latest_run"],
    "verify": ["ranges", "verify_output"],
})
