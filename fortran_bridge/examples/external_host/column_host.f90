!> A GCM-like host outside the paramlib source tree that calls the installed column interface
!> (CMake: find_package(paramlib_bridge) + target_link_libraries(column_host PRIVATE
!> paramlib::column_physics)).
!>
!>   column_host
!>
!> Runs Betts-Miller (physics mode) on NCOL columns of a warm sounding, humid to dry, and prints
!> the statuses of init and compute, then one line per column: "column c: precip dT/dt(1)"
!> (mm s-1, K s-1). Exits non-zero when a status is not CP_OK.
program column_host
  use, intrinsic :: iso_fortran_env, only: real64, error_unit
  use paramlib_column_physics, only: column_physics, column_physics_config, column_diagnostics, &
                                     CP_PHYSICS, CP_OK
  implicit none
  integer, parameter :: nlev = 20, ncol = 3
  real(real64), parameter :: humidity(ncol) = [0.95_real64, 0.8_real64, 0.3_real64]
  type(column_physics) :: conv
  type(column_physics_config) :: config
  type(column_diagnostics) :: diag
  real(real64) :: t(nlev, ncol), q(nlev, ncol), p(nlev, ncol), p_int(nlev + 1, ncol), ps(ncol)
  real(real64) :: dtdt(nlev, ncol), dqdt(nlev, ncol), precip(ncol), es
  character(len=512) :: message
  integer :: status_init, status_compute, k, c

  do c = 1, ncol
    ps(c) = 1.0e5_real64
    do k = 1, nlev + 1
      p_int(k, c) = ps(c) * (1.0_real64 - 0.9_real64 * (k - 1) / nlev)
    end do
    do k = 1, nlev
      p(k, c) = 0.5_real64 * (p_int(k, c) + p_int(k + 1, c))
      t(k, c) = 302.0_real64 * (p(k, c) / ps(c))**0.19_real64
      es = 611.2_real64 * exp(17.67_real64 * (t(k, c) - 273.15_real64) / (t(k, c) - 29.65_real64))
      q(k, c) = humidity(c) * 0.622_real64 * es / p(k, c)
    end do
  end do

  message = ''
  config%mode = CP_PHYSICS
  call conv%init(config, nlev, status_init, message)
  status_compute = -1
  if (status_init == CP_OK) call conv%compute(t, q, p, p_int, ps, 600.0_real64, dtdt, dqdt, &
                                              precip, diag, status_compute, message)
  print '(a,i0,1x,i0)', 'status ', status_init, status_compute
  if (status_init /= CP_OK .or. status_compute /= CP_OK) then
    write (error_unit, '(a)') trim(message)
    error stop 1
  end if
  do c = 1, ncol
    print '(a,i0,a,2es16.7)', 'column ', c, ':', precip(c), dtdt(1, c)
  end do
  call conv%free()
end program column_host
