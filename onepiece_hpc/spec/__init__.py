"""Job files -> validated, immutable job descriptions; prompt sources; item keys and work units."""
