!> Betts-Miller against cases computed here by hand from its definition (Frierson 2007):
!> stable columns do nothing; a deep case relaxes at 1/tau toward the parcel's moist
!> adiabat shifted so that enthalpy is conserved and rains what it dries; a shallow case
!> cuts its depth so that it rains nothing; random columns always conserve and never give
!> negative rain.
program test_betts_miller
  use physical_constants, only: wp, GRAVITY, CP, LV, KAPPA
  use thermodynamics, only: saturation_humidity, parcel_profile, lcl_temperature
  use column_status, only: COLUMN_OK, COLUMN_MESSAGE_LEN
  use column_fields, only: column_state, mass_integral
  use betts_miller, only: betts_miller_scheme, bm_column, BM_NONE, BM_SHALLOW, BM_DEEP, &
                          BM_PARCEL_MAX_DLNP
  use column_checks, only: check, check_close, check_ok
  implicit none

  integer, parameter :: NLEV = 26
  real(wp), parameter :: TAU = 7200.0_wp, RH = 0.8_wp
  type(column_state) :: grid_column
  character(len=COLUMN_MESSAGE_LEN) :: message
  real(wp), dimension(NLEV) :: p, dp, t, q, tp, qsp, dtdt, dqdt
  real(wp) :: precip, cape
  integer :: kind, top, status

  message = ''
  call grid_column%init(NLEV, [1.0e5_wp], [300.0_wp], status, message)
  call check_ok(status, message, 'a 26-level column at 1000 hPa')
  p = grid_column%p(:, 1)
  dp = grid_column%dp(:, 1)

  call stable_columns()
  call deep_case()
  call inhibition_below_the_lcl()
  call shallow_case()
  call random_columns()
  call through_the_scheme()

contains

  subroutine run_bm(tau_bm)
    real(wp), intent(in) :: tau_bm
    call bm_column(t, q, p, dp, grid_column%grid%dlnp_layer, grid_column%grid%dlnp_level, &
                   tau_bm, RH, dtdt, dqdt, precip, cape, kind, top)
  end subroutine run_bm

  !> The parcel of the lowest level, as Betts-Miller lifts it.
  subroutine lift_parcel()
    call parcel_profile(t(1), q(1), p(1), p, grid_column%grid%dlnp_level, BM_PARCEL_MAX_DLNP, &
                        tp, qsp)
  end subroutine lift_parcel

  subroutine check_nothing(what)
    character(len=*), intent(in) :: what
    call check(kind == BM_NONE .and. top == 0 .and. precip == 0.0_wp .and. &
               all(dtdt == 0.0_wp) .and. all(dqdt == 0.0_wp), what // ': no tendencies, no rain')
  end subroutine check_nothing

  subroutine stable_columns()
    write (*, '(a)') 'stable columns'
    t = 250.0_wp
    q = 0.5_wp * saturation_humidity(t, p)
    call run_bm(TAU)
    call check(cape == 0.0_wp, 'isothermal 250 K column: CAPE = 0')
    call check_nothing('isothermal 250 K column')

    ! potential temperature rising by 40 K from the surface to the top, no vapour
    t = (300.0_wp + 40.0_wp * (1.0_wp - p / p(1))) * (p / 1.0e5_wp)**KAPPA
    q = 0.0_wp
    call run_bm(TAU)
    call check_nothing('dry, stably stratified column')

    ! moist, but 3 K warmer than the parcel everywhere above the lowest level
    call moist_lowest_level()
    t(2:) = tp(2:) + 3.0_wp
    q(2:) = 0.9_wp * saturation_humidity(t(2:), p(2:))
    call run_bm(TAU)
    call check(cape == 0.0_wp, 'column warmer than the parcel: CAPE = 0')
    call check_nothing('column warmer than the parcel')

    ! buoyant only through the parcel's vapour: CAPE > 0 but the parcel is colder in T, so
    ! relaxing T would cool the column (P_T < 0): no convection
    t(2:) = tp(2:) + 0.3_wp
    q(2:) = 1.0e-6_wp
    call run_bm(TAU)
    call check(cape > 0.0_wp, 'dry column 0.3 K warmer than a saturated parcel: CAPE > 0')
    call check_nothing('... with P_T < 0')
  end subroutine stable_columns

  !> Lowest level 300 K at 80 % relative humidity; tp, qsp its parcel.
  subroutine moist_lowest_level()
    t(1) = 300.0_wp
    q(1) = 0.8_wp * saturation_humidity(t(1), p(1))
    call lift_parcel()
  end subroutine moist_lowest_level

  !> Temperature `colder` K below the parcel's from the lowest level to 200 hPa, 10 K above
  !> it higher up: the parcel is buoyant up to 200 hPa.
  subroutine buoyant_to_200_hpa(colder)
    real(wp), intent(in) :: colder
    call moist_lowest_level()
    where (p > 2.0e4_wp)
      t = tp - colder
    else where
      t = tp + 10.0_wp
    end where
    t(1) = 300.0_wp
  end subroutine buoyant_to_200_hpa

  subroutine deep_case()
    real(wp) :: shift(NLEV), expected_shift, dtdt_1(NLEV), dqdt_1(NLEV), precip_1
    integer :: k, lnb
    write (*, '(a)') 'deep convection'
    ! 1.5 K colder than the parcel up to 200 hPa, 10 K warmer above; 90 % RH aloft
    call buoyant_to_200_hpa(1.5_wp)
    q(2:) = 0.9_wp * saturation_humidity(t(2:), p(2:))
    lnb = count(p > 2.0e4_wp)
    call run_bm(TAU)
    call check(kind == BM_DEEP .and. cape > 0.0_wp .and. precip > 0.0_wp, &
               'moist column colder than the parcel: deep convection, CAPE > 0, rain > 0')
    call check(top == lnb, 'relaxed up to the level of neutral buoyancy (last level below 200 hPa)')
    call check(all(dtdt(top + 1:) == 0.0_wp) .and. all(dqdt(top + 1:) == 0.0_wp), &
               'nothing above the level of neutral buoyancy')
    call check_close(mass_integral(dqdt, dp), -precip, 1e-12_wp, &
                     'water: sum(dq/dt dp)/g = -P')
    call check_close(CP * mass_integral(dtdt, dp), LV * precip, 1e-12_wp, &
                     'enthalpy: sum(cp dT/dt dp)/g = L P')
    call check(all(abs(dqdt(:top) * TAU - (RH * qsp(:top) - q(:top))) <= 1e-12_wp * q(:top)), &
               'q relaxes at 1/tau toward RH_BM q_s(T_parcel)')
    ! T relaxes at 1/tau toward the parcel's temperature plus one uniform shift, the one
    ! that makes the column's latent heating equal L P
    shift(:top) = dtdt(:top) * TAU - (tp(:top) - t(:top))
    expected_shift = TAU * (LV * GRAVITY * precip / CP - sum((tp(:top) - t(:top)) / TAU * dp(:top))) &
                     / sum(dp(:top))
    call check(maxval(shift(:top)) - minval(shift(:top)) < 1e-9_wp, &
               'dT/dt tau - (T_parcel - T) is the same on every relaxed level')
    call check_close(shift(1), expected_shift, 1e-9_wp, 'the shift of T_ref conserves enthalpy')
    call check(abs(expected_shift) > 0.01_wp, 'the shift matters in this case (|shift| > 0.01 K)')

    dtdt_1 = dtdt
    dqdt_1 = dqdt
    precip_1 = precip
    call run_bm(2.0_wp * TAU)
    call check(all(abs(2.0_wp * dtdt - dtdt_1) <= 1e-12_wp * maxval(abs(dtdt_1))) .and. &
               all(abs(2.0_wp * dqdt - dqdt_1) <= 1e-12_wp * maxval(abs(dqdt_1))), &
               'doubling tau halves the tendencies (rate 1/tau)')
    call check_close(2.0_wp * precip, precip_1, 1e-12_wp, 'doubling tau halves the rain')
    do k = 1, top
      if (abs(dtdt(k)) > 0.0_wp) exit
    end do
    call check(k <= top, 'the deep case has non-zero heating')
  end subroutine deep_case

  !> Buoyancy counts above the LCL only (Frierson's capecalcnew): a surface layer that is
  !> superadiabatic under a stable sub-cloud layer does not end the parcel's ascent there.
  subroutine inhibition_below_the_lcl()
    integer :: lcl, lnb
    write (*, '(a)') 'inhibition below the LCL'
    call buoyant_to_200_hpa(1.5_wp)
    q(2:) = 0.9_wp * saturation_humidity(t(2:), p(2:))
    lcl = findloc(p < p(1) * (lcl_temperature(t(1), q(1), p(1)) / t(1))**(1.0_wp / KAPPA), &
                  .true., dim=1)
    call check(lcl >= 4, 'the parcel saturates above level 3')
    t(lcl - 1) = tp(lcl - 1) + 2.0_wp  ! the parcel is buoyant at level 2, not just below its LCL
    lnb = count(p > 2.0e4_wp)
    call run_bm(TAU)
    call check(kind == BM_DEEP .and. top == lnb, &
               'deep convection to the level of neutral buoyancy above the stable sub-cloud layer')
  end subroutine inhibition_below_the_lcl

  subroutine shallow_case()
    real(wp) :: first_dq(NLEV), p_below(NLEV), fraction, scale
    integer :: j, lnb, expected_top
    write (*, '(a)') 'shallow convection'
    ! buoyant to 200 hPa as above, but moist only in the two levels above the lowest:
    ! relaxing q toward the reference would moisten the column (P_q < 0)
    call buoyant_to_200_hpa(1.0_wp)
    q(2:3) = 0.99_wp * saturation_humidity(t(2:3), p(2:3))
    q(4:) = 0.2_wp * saturation_humidity(t(4:), p(4:))
    lnb = count(p > 2.0e4_wp)
    ! by hand: the first-guess moistening, and the highest depth whose levels rain
    first_dq = (RH * qsp - q) / TAU
    p_below(1) = -first_dq(1) * dp(1) / GRAVITY
    do j = 2, lnb
      p_below(j) = p_below(j - 1) - first_dq(j) * dp(j) / GRAVITY
    end do
    call check(p_below(lnb) < 0.0_wp .and. maxval(p_below(:lnb - 1)) > 0.0_wp, &
               'the case is shallow: P_q < 0 over the buoyant depth, > 0 over a lower one')
    expected_top = findloc(p_below(:lnb - 1) > 0.0_wp, .true., dim=1, back=.true.) + 1
    fraction = p_below(expected_top - 1) / (p_below(expected_top - 1) - p_below(expected_top))

    call run_bm(TAU)
    call check(kind == BM_SHALLOW .and. precip == 0.0_wp, 'shallow convection, no rain')
    call check(top == expected_top .and. top < lnb, 'its top is where the rain of the levels below is zero')
    call check_close(dqdt(top) * TAU, fraction * (RH * qsp(top) - q(top)), 1e-12_wp, &
                     'the top level keeps the fraction P_j / (P_j - P_j+1) of its moistening')
    scale = maxval(abs(dqdt)) * sum(dp)
    call check(abs(sum(dqdt * dp)) <= 1e-12_wp * scale, 'sum(dq/dt dp) = 0: no rain')
    scale = maxval(abs(dtdt)) * sum(dp)
    call check(abs(sum(dtdt * dp)) <= 1e-12_wp * scale .and. scale > 0.0_wp, &
               'sum(dT/dt dp) = 0: enthalpy conserved')
    call check(all(dtdt(top + 1:) == 0.0_wp) .and. all(dqdt(top + 1:) == 0.0_wp), &
               'nothing above the new top')
    call check(all(abs(dqdt(:top - 1) * TAU - (RH * qsp(:top - 1) - q(:top - 1))) &
                   <= 1e-12_wp * q(:top - 1)), 'below the top, q relaxes at 1/tau to the reference')
  end subroutine shallow_case

  !> Perturbed versions of the deep case: every branch, and always conservation.
  subroutine random_columns()
    integer, parameter :: N = 400
    real(wp) :: t_base(NLEV), q_base(NLEV), noise(NLEV), factor(NLEV), worst_water, worst_energy
    integer :: n_kind(0:2), i, seed_size
    integer, allocatable :: seed(:)
    logical :: never_negative
    write (*, '(a)') 'random columns'
    call random_seed(size=seed_size)
    seed = [(1234 + 17 * i, i = 1, seed_size)]
    call random_seed(put=seed)
    call moist_lowest_level()
    t_base = tp - 1.0_wp
    t_base(1) = 300.0_wp
    q_base = 0.8_wp * saturation_humidity(t_base, p)
    n_kind = 0
    worst_water = 0.0_wp
    worst_energy = 0.0_wp
    never_negative = .true.
    do i = 1, N
      call random_number(noise)
      call random_number(factor)
      t = t_base + 4.0_wp * (noise - 0.5_wp)
      q = q_base * (0.5_wp + 1.0_wp * factor)
      call run_bm(TAU)
      n_kind(kind) = n_kind(kind) + 1
      never_negative = never_negative .and. precip >= 0.0_wp
      worst_water = max(worst_water, abs(mass_integral(dqdt, dp) + precip) &
                                     / max(mass_integral(abs(dqdt), dp), tiny(1.0_wp)))
      worst_energy = max(worst_energy, abs(CP * mass_integral(dtdt, dp) - LV * precip) &
                                       / max(CP * mass_integral(abs(dtdt), dp), tiny(1.0_wp)))
    end do
    write (*, '(a,3i5)') '        none, shallow, deep:', n_kind
    call check(all(n_kind > 0), 'the random columns take every branch')
    call check(never_negative, 'rain is never negative')
    call check(worst_water < 1e-12_wp, 'water conserved in every column: sum(dq dp)/g = -P')
    call check(worst_energy < 1e-12_wp, 'enthalpy conserved in every column: sum(cp dT dp)/g = L P')
  end subroutine random_columns

  !> The same kernel through the convection slot's interface, column by column.
  subroutine through_the_scheme()
    type(betts_miller_scheme) :: bm
    type(column_state) :: state
    real(wp) :: dtdt2(NLEV, 2), dqdt2(NLEV, 2), precip2(2)
    write (*, '(a)') 'the scheme object'
    call bm%set_parameters(0.0_wp, RH, status, message)
    call check(status /= COLUMN_OK, 'tau = 0 refused: ' // trim(message))
    call bm%set_parameters(TAU, 1.5_wp, status, message)
    call check(status /= COLUMN_OK, 'RH_BM = 1.5 refused: ' // trim(message))
    call bm%set_parameters(TAU, RH, status, message)
    call check_ok(status, message, 'tau = 2 h, RH_BM = 0.8 accepted')

    call state%init(NLEV, [1.0e5_wp, 1.0e5_wp], [300.0_wp, 300.0_wp], status, message)
    call deep_case_state()
    state%t(:, 1) = t
    state%q(:, 1) = q
    state%t(:, 2) = 250.0_wp
    state%q(:, 2) = 1.0e-4_wp
    call bm%compute(state, dtdt2, dqdt2, precip2, status, message)
    call check_ok(status, message, 'compute on two columns')
    call run_bm(TAU)
    call check(all(dtdt2(:, 1) == dtdt) .and. all(dqdt2(:, 1) == dqdt) .and. &
               precip2(1) == precip, 'column 1 equals the kernel on the same column')
    call check(bm%kind(1) == BM_DEEP .and. bm%kind(2) == BM_NONE .and. bm%cape(1) == cape, &
               'per-column diagnostics: deep and none, CAPE')
    call check(all(dtdt2(:, 2) == 0.0_wp) .and. precip2(2) == 0.0_wp, 'column 2 is stable')
  end subroutine through_the_scheme

  subroutine deep_case_state()
    call moist_lowest_level()
    t(2:) = tp(2:) - 1.5_wp
    q(2:) = 0.9_wp * saturation_humidity(t(2:), p(2:))
  end subroutine deep_case_state

end program test_betts_miller
