"""Job files -> validated, immutable job descriptions; prompt sources and the rules their text keeps.

`job` says what a job file may hold (frozen models) and builds the Job; `loader` reads one safely,
every problem at once with its line (`yaml_source`); `prompts` reads .txt and .jsonl prompt
sources into `columns` (no Python object per row); `images` checks conditioning images.
"""

from onepiece_hpc._exports import lazy_exports

__all__ = ["ConditionImage", "ConstantText", "DRAIN_SECONDS_MIN", "FIELD_HINTS", "GenParams", "Job", "JobFields",
           "NAME_PATTERN", "PolicySettings", "PromptRecord", "SlurmFields", "TextBuilder", "TextColumn", "Texts",
           "WorkflowJobFields", "WorkflowStep",
           "load_job", "open_condition_image", "read_document", "read_prompts", "resolve_path"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "columns": ["ConstantText", "TextBuilder", "TextColumn", "Texts"],
    "images": ["open_condition_image"],
    "job": ["ConditionImage", "DRAIN_SECONDS_MIN", "FIELD_HINTS", "GenParams", "Job", "JobFields", "NAME_PATTERN",
            "PolicySettings", "PromptRecord", "SlurmFields", "WorkflowJobFields", "WorkflowStep"],
    "loader": ["load_job", "read_document", "resolve_path"],
    "prompts": ["read_prompts"],
})
