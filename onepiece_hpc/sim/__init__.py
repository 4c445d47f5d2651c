"""A discrete-event simulator of the staged pipeline that runs the runtime's own policies."""
