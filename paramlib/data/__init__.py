"""Data: readers, the bundled testbed, and training-set pipelines."""
