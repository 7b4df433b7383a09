"""paramlib: ML sub-grid parameterizations from model output, run inside Fortran models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("paramlib")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
