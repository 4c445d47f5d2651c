"""Model adapters: split a diffusers pipeline into stage callables; the built-in tiny models.

`base` is the interface the runtime talks to (ModelAdapter, its stage runners, Placement,
UnitInput); `source` turns a model reference into a checked folder and its adapter; `topologies`
names a model's stages from its model_index.json alone; `plugins` finds adapters that installed
packages add. Each family has a folder with the same files: `adapter.py` (the stage split) and
`tiny.py` (the built-in random-weight model). Adapters never import MPI or the transport.
"""

from onepiece_hpc._exports import lazy_exports

__all__ = ["ModelAdapter", "ModelSource", "Placement", "PlainRunner", "StageRunner", "TensorSpec", "UnitInput",
           "pixels_to_uint8", "plugin_for", "resolve_model", "to_uint8", "topology_of"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "base": ["ModelAdapter", "Placement", "PlainRunner", "StageRunner", "TensorSpec", "UnitInput"],
    "pipeline_adapter": ["pixels_to_uint8", "to_uint8"],
    "plugins": ["plugin_for"],
    "source": ["ModelSource", "resolve_model"],
    "topologies": ["topology_of"],
})
