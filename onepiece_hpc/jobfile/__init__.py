"""Job files -> validated, immutable job descriptions; prompt sources and the rules their text keeps."""
