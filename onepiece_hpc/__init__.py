"""onepiece-hpc: staged diffusion generation on Slurm clusters.

Job files in (`jobfile`), a plan of items and units (`planning`), model adapters that split a
diffusers pipeline into stages (`models`, with the stage chain in `topology`), ring channels
between stage ranks (`transport`), the ranks and the Node Manager (`runtime`), HDF5 outputs
(`store`), Slurm (`slurm`), the simulator (`sim`), benchmarks (`bench`) and the `onepiece`
command (`cli`). Each package's `__init__` lists its public names; none is imported before use.
"""

from onepiece_hpc._exports import lazy_exports

__version__ = "0.1.0"

__all__ = ["CLASSIC", "ExitCode", "StageDef", "Topology", "UserError", "Work", "__version__"]
__getattr__, __dir__ = lazy_exports(__name__, [name for name in __all__ if name != "__version__"], {
    "errors": ["UserError"],
    "exit_codes": ["ExitCode"],
    "topology": ["CLASSIC", "StageDef", "Topology", "Work"],
})
