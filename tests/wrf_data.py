"""The real WRF MSKF runs (../shared/data/wrf_mskf): importing this module skips the importing
test module, with the reason, where they are absent."""

import pytest

from paramlib.catalog import data_root

WRF_DIR = data_root() / "wrf_mskf"
CTL = WRF_DIR / "wrfout_d01_ctl.nc"
if not CTL.is_file():
    pytest.skip(
        f"real WRF MSKF output not found at {WRF_DIR}: set PARAMLIB_DATA_ROOT to the folder"
        " holding wrf_mskf/",
        allow_module_level=True,
    )
