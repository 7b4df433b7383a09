"""Set-up of dask.distributed workers that run pipeline tasks."""

from __future__ import annotations

import netCDF4
import xarray as xr
from distributed import Worker, WorkerPlugin

from paramlib.data.pipeline import NETCDF_CHUNK_CACHE_BYTES, OPEN_FILES


class BoundedFileMemory(WorkerPlugin):
    """The pipeline's limits on memory per open file (``bounded_file_memory``) in every worker
    process, for good: a worker serves the build alone. Workers that join later (SLURM jobs
    start when the queue lets them) get it too."""

    def setup(self, worker: Worker) -> None:
        netCDF4.set_chunk_cache(NETCDF_CHUNK_CACHE_BYTES)
        xr.set_options(file_cache_maxsize=OPEN_FILES)
