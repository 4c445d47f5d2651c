"""The `onepiece` command: thin click commands over the library layers, one module a command
(`run`, `submit`, `sweep`, `status`, `inspect_cmd`, `export_cmd`, `verify`, `merge`, `report`, `simulate`,
`bench*`); `main` groups them. `onepiece run`'s flags come from runtime/options.py."""

from onepiece_hpc._exports import lazy_exports

__all__ = ["cli"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {"main": ["cli"]})
