!> Physical constants of the column model (SI units). The values are those of
!> paramlib/constants.py; tests/test_column_model.py reads the compiled values through
!> the Python bindings and checks that the two agree.
module physical_constants
  use, intrinsic :: iso_fortran_env, only: real64
  implicit none
  private

  !> Working precision of the column model: everything is real64.
  integer, parameter, public :: wp = real64

  real(wp), parameter, public :: GRAVITY = 9.80665_wp      !< m s-2
  real(wp), parameter, public :: RD = 287.04_wp            !< J kg-1 K-1, dry air
  real(wp), parameter, public :: RV = 461.50_wp            !< J kg-1 K-1, water vapour
  real(wp), parameter, public :: CP = 1004.64_wp           !< J kg-1 K-1, dry air
  real(wp), parameter, public :: LV = 2.501e6_wp           !< J kg-1, vaporisation at 0 degC
  real(wp), parameter, public :: KAPPA = RD / CP
  real(wp), parameter, public :: EPSILON = RD / RV
  real(wp), parameter, public :: P0 = 1.0e5_wp             !< Pa, reference of potential temperature
  real(wp), parameter, public :: T0 = 273.15_wp            !< K, 0 degC
  real(wp), parameter, public :: RHO_WATER = 1000.0_wp     !< kg m-3
end module physical_constants
