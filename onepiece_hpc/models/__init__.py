"""Model adapters: split a diffusers pipeline into stage callables; the built-in tiny models.

Each family has a folder with the same two files: `adapter.py` (the stage split) and
`tiny.py` (the built-in random-weight model). Adapters never import MPI or the transport.
"""
