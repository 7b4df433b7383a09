"""The WRF coupling's Python side: the plugin's contract and test driver (`driver`), its
PyTorch parity (`parity`), its cost (`bench`), the `make demo` stage (`demo_stage`) and
`paramlib wrf ...` (`cli`). The plugin itself is fortran_bridge/wrf."""
