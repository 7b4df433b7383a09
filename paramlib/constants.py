"""Physical constants shared by the testbed, readers and metrics (SI units).

The Fortran column model uses the same values (fortran_bridge/host/physical_constants.f90);
a test checks that the two agree.
"""

GRAVITY = 9.80665  # m s-2
RD = 287.04  # J kg-1 K-1, dry air
RV = 461.50  # J kg-1 K-1, water vapour
CP = 1004.64  # J kg-1 K-1, dry air at constant pressure
LV = 2.501e6  # J kg-1, latent heat of vaporisation at 0 degC
KAPPA = RD / CP
EPSILON = RD / RV
P0 = 1.0e5  # Pa, reference pressure of potential temperature
T0 = 273.15  # K, 0 degC
RHO_WATER = 1000.0  # kg m-3: 1 kg m-2 s-1 of water is 1 mm s-1
