"""Fabrics: thin implementations of the one-sided region interface (in-process, shm, MPI RMA, verbs)."""
