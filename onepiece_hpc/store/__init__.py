"""HDF5 outputs: the schema, crash-safe commits and resume, inspection and export."""
