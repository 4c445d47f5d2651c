"""Planning a run: items with stable keys and the work units formed from them (plan.py), and which
rank serves which stage of the model's topology (layout.py). Pure: no MPI, torch or HDF5."""
