!> Thermodynamics against published values and its own consistency: Bolton's (1980)
!> saturation vapour pressure, the LCL, the pseudo-adiabat against Bolton's equivalent
!> potential temperature, and the parcel's step-size convergence.
program test_thermodynamics
  use physical_constants, only: wp, EPSILON, KAPPA, T0
  use thermodynamics, only: saturation_vapour_pressure, saturation_humidity, &
                            virtual_temperature, lcl_temperature, parcel_profile
  use column_checks, only: check, check_close
  implicit none
  integer, parameter :: N = 41
  real(wp) :: p(N), dlnp(N), tp(N), qsp(N), tp_fine(N), qsp_fine(N), theta_e(N)
  real(wp) :: t_lcl, p_lcl, q, error_1, error_2
  integer :: k

  write (*, '(a)') 'saturation'
  call check_close(saturation_vapour_pressure(T0), 611.2_wp, 1e-14_wp, 'e_s(0 degC) = 611.2 Pa')
  ! WMO/Wexler reference values over water: 4245.5 Pa at 30 degC, 286.5 Pa at -10 degC
  call check_close(saturation_vapour_pressure(T0 + 30.0_wp), 4245.5_wp, 1e-3_wp, &
                   'e_s(30 degC) within 0.1 % of the reference 4245.5 Pa')
  call check_close(saturation_vapour_pressure(T0 - 10.0_wp), 286.5_wp, 3e-3_wp, &
                   'e_s(-10 degC) within 0.3 % of the reference 286.5 Pa')
  call check_close(saturation_humidity(300.0_wp, 1.0e5_wp), &
                   EPSILON * 3534.3_wp / (1.0e5_wp - (1.0_wp - EPSILON) * 3534.3_wp), 1e-4_wp, &
                   'q_s(300 K, 1000 hPa) from e_s = 3534.3 Pa')
  call check(saturation_humidity(300.0_wp, 1.0e3_wp) < 1.0_wp, &
             'q_s stays below 1 where e_s would exceed p (the cap)')
  call check_close(virtual_temperature(300.0_wp, 0.02_wp), &
                   300.0_wp * (1.0_wp + 0.02_wp * (1.0_wp - EPSILON) / EPSILON), 1e-15_wp, &
                   'virtual temperature')

  write (*, '(a)') 'lifting condensation level'
  q = 0.7_wp * saturation_humidity(300.0_wp, 1.0e5_wp)
  t_lcl = lcl_temperature(300.0_wp, q, 1.0e5_wp)
  p_lcl = 1.0e5_wp * (t_lcl / 300.0_wp)**(1.0_wp / KAPPA)
  call check(t_lcl < 300.0_wp .and. t_lcl > 290.0_wp, 'LCL of 70 % RH air at 300 K a few K colder')
  call check_close(saturation_humidity(t_lcl, p_lcl), q, 3e-3_wp, &
                   'the parcel is just saturated at its LCL (Bolton, within 0.3 %)')
  call check_close(lcl_temperature(290.0_wp, saturation_humidity(290.0_wp, 9.0e4_wp), 9.0e4_wp), &
                   290.0_wp, 1e-15_wp, 'saturated air is at its LCL')

  write (*, '(a)') 'pseudo-adiabat'
  ! A saturated parcel from 1000 hPa, 300 K, to 100 hPa.
  do k = 1, N
    p(k) = 1.0e5_wp * (0.1_wp)**(real(k - 1, wp) / (N - 1))
  end do
  dlnp(1) = 0.0_wp
  dlnp(2:) = log(p(2:) / p(:N - 1))
  q = saturation_humidity(300.0_wp, p(1))
  call parcel_profile(300.0_wp, q, p(1), p, dlnp, 1.0_wp, tp, qsp)
  call parcel_profile(300.0_wp, q, p(1), p, dlnp, 1e-3_wp, tp_fine, qsp_fine)
  error_1 = maxval(abs(tp - tp_fine))
  call parcel_profile(300.0_wp, q, p(1), p, dlnp, 0.5_wp * abs(dlnp(2)), tp, qsp)
  error_2 = maxval(abs(tp - tp_fine))
  write (*, '(a,2es10.2,a)') '        one and two steps per level vs fine steps:', error_1, error_2, ' K'
  call check(error_1 < 0.05_wp, 'one RK2 step per level (dln p = 0.058) within 0.05 K of 1e-3 steps')
  call check(error_1 / error_2 > 3.0_wp .and. error_1 / error_2 < 6.0_wp, &
             'halving the step divides the error by about 4 (second order)')
  theta_e = bolton_theta_e(tp_fine, qsp_fine, p)
  write (*, '(a,f6.2,a,f6.2,a)') '        Bolton theta_e at 1000 hPa', theta_e(1), &
    ' K, largest departure on the way up', maxval(abs(theta_e - theta_e(1))), ' K'
  call check(all(abs(theta_e - theta_e(1)) < 2.0_wp), &
             'Bolton theta_e along the pseudo-adiabat within 2 K of its start (neglected vapour heat capacity)')
  call check(tp_fine(N) < 210.0_wp .and. tp_fine(N) > 180.0_wp .and. &
             all(tp_fine(2:) < tp_fine(:N - 1)), 'the parcel cools monotonically to 180-210 K at 100 hPa')
  call check(all(tp_fine(2:) > 300.0_wp * (p(2:) / p(1))**KAPPA), &
             'the saturated parcel stays warmer than the dry adiabat')

contains

  !> Bolton (1980, eq. 43) for saturated air (T_LCL = T), r in g kg-1, p in hPa.
  elemental function bolton_theta_e(t, qs, p) result(theta_e)
    real(wp), intent(in) :: t, qs, p
    real(wp) :: theta_e, r
    r = 1.0e3_wp * qs / (1.0_wp - qs)
    theta_e = t * (1000.0_wp / (p / 100.0_wp))**(0.2854_wp * (1.0_wp - 0.28e-3_wp * r)) &
              * exp((3.376_wp / t - 0.00254_wp) * r * (1.0_wp + 0.81e-3_wp * r))
  end function bolton_theta_e

end program test_thermodynamics
