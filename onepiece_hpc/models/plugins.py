"""Model adapters that installed packages add, beside the built-in ones.

A package declares its adapters as entry points of the group `onepiece_hpc.adapters` (in its
pyproject.toml: `[project.entry-points."onepiece_hpc.adapters"] NAME = "module:AdapterClass"`).
Each is a ModelAdapter subclass naming the pipeline classes it runs (`pipeline_classes`, matched
against a model folder's model_index.json) and, where its pipeline splits otherwise than encode ->
denoise -> decode, its `topology`. Every rank discovers them the same way, so a staged run needs
nothing more than the package installed where the ranks run. A plugin is code: it runs in every
rank with the job's rights, as any installed package does.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging

log = logging.getLogger(__name__)

GROUP = "onepiece_hpc.adapters"


@functools.cache
def plugin_adapters() -> tuple[type, ...]:
    """The adapter classes of every installed entry point of GROUP (one that fails to load is
    named in a warning and left out)."""
    found = []
    for entry in importlib.metadata.entry_points(group=GROUP):
        try:
            found.append(entry.load())
        except Exception as err:  # a broken plugin must not stop the built-in models
            log.warning("the model adapter plugin %s = %s could not be loaded (%s: %s); it is left out",
                        entry.name, entry.value, type(err).__name__, err)
    return tuple(found)


def plugin_for(pipeline_class: str) -> type | None:
    """The plugin adapter that runs `pipeline_class`, if an installed package adds one."""
    return next((a for a in plugin_adapters() if pipeline_class in getattr(a, "pipeline_classes", ())), None)
