!> The column model: budgets close to round-off in every step (with and without WTG, with
!> Betts-Miller and with supplied tendencies that need the humidity fixer, at 26 and 44
!> levels); the advection's column integral is the lateral export; errors are reported.
program test_column_model
  use physical_constants, only: wp, GRAVITY
  use column_status, only: COLUMN_OK, COLUMN_ERR_ARGUMENT, COLUMN_ERR_NOT_READY, &
                           COLUMN_MESSAGE_LEN
  use column_fields, only: mass_integral
  use column_host, only: column_model, PROC_CONVECTION, N_ENERGY_TERMS, N_WATER_TERMS, &
                         E_RADIATION, E_CONVECTION, W_EVAPORATION, W_CONVECTION, W_FIXER, &
                         PARAMETER_NAMES
  use column_forcings, only: vertical_advection
  use convection_slot, only: supplied_convection
  use betts_miller, only: betts_miller_scheme
  use column_checks, only: check, check_close, check_ok
  implicit none

  integer, parameter :: NCOL = 12
  real(wp), parameter :: BUDGET_RTOL = 1e-10_wp
  character(len=COLUMN_MESSAGE_LEN) :: message
  integer :: status

  message = ''
  call budgets_with_betts_miller(26, .true.)
  call budgets_with_betts_miller(26, .false.)
  call budgets_with_betts_miller(44, .true.)
  call budgets_with_supplied_tendencies()
  call advection_is_lateral_export()
  call errors()

contains

  subroutine make_model(model, nlev, wtg)
    type(column_model), intent(out) :: model
    integer, intent(in) :: nlev
    logical, intent(in) :: wtg
    real(wp) :: ps(NCOL), sst(NCOL), omega0(NCOL)
    integer :: i
    do i = 1, NCOL
      ps(i) = 1.0e5_wp + 1.2e3_wp * mod(i, 3)
      sst(i) = 298.0_wp + 5.0_wp * (i - 1) / (NCOL - 1)
      omega0(i) = 0.05_wp - 0.15_wp * (i - 1) / (NCOL - 1)
    end do
    call model%init(nlev, ps, sst, omega0, status, message)
    call check_ok(status, message, 'init')
    call model%set_parameter('sst_ref', sum(sst) / NCOL, status, message)
    call check_ok(status, message, 'set sst_ref')
    call model%set_wtg(wtg)
  end subroutine make_model

  !> Largest |residual| / |largest term| over the columns of the last step.
  function worst_residual(budget) result(worst)
    real(wp), intent(in) :: budget(:, :)
    real(wp) :: worst
    integer :: i, n
    n = size(budget, 1)
    worst = 0.0_wp
    do i = 1, size(budget, 2)
      worst = max(worst, abs(budget(n, i)) / maxval(abs(budget(:n - 1, i))))
    end do
  end function worst_residual

  subroutine budgets_with_betts_miller(nlev, wtg)
    integer, intent(in) :: nlev
    logical, intent(in) :: wtg
    type(column_model) :: model
    type(betts_miller_scheme) :: bm
    real(wp) :: worst_energy, worst_water, worst_conv
    integer :: n
    character(len=40) :: label
    write (label, '(i0,a,l1)') nlev, ' levels, WTG ', wtg
    write (*, '(a)') 'Betts-Miller, ' // trim(label)
    call make_model(model, nlev, wtg)
    worst_energy = 0.0_wp
    worst_water = 0.0_wp
    worst_conv = 0.0_wp
    do n = 1, 3 * 144
      call model%step(bm, status, message)
      if (status /= COLUMN_OK) exit
      worst_energy = max(worst_energy, worst_residual(model%energy_budget))
      worst_water = max(worst_water, worst_residual(model%water_budget))
      ! Betts-Miller conserves moist enthalpy and rains what it dries
      worst_conv = max(worst_conv, maxval(abs(model%energy_budget(E_CONVECTION, :))) &
                                   / maxval(abs(model%energy_budget(E_RADIATION, :))))
    end do
    call check_ok(status, message, 'three days of steps')
    write (*, '(a,3es10.2)') '        worst energy, water residual, convective energy:', &
      worst_energy, worst_water, worst_conv
    call check(worst_energy < BUDGET_RTOL, 'energy budget closes in every step and column')
    call check(worst_water < BUDGET_RTOL, 'water budget closes in every step and column')
    call check(worst_conv < BUDGET_RTOL, 'Betts-Miller adds no moist enthalpy')
    call check(maxval(model%precip) > 0.0_wp, 'some columns rain')
    call check(all(model%state%q >= 0.0_wp), 'humidity stays >= 0')
  end subroutine budgets_with_betts_miller

  !> Tendencies supplied from outside that drive q negative in places: the fixer fills it
  !> from the same column, and the budgets still close.
  subroutine budgets_with_supplied_tendencies()
    type(column_model) :: model
    type(supplied_convection) :: supplied
    real(wp), allocatable :: dtdt(:, :), dqdt(:, :), precip(:)
    real(wp) :: worst_energy, worst_water
    integer :: n
    write (*, '(a)') 'supplied tendencies'
    call make_model(model, 26, .true.)
    allocate (dtdt(26, NCOL), dqdt(26, NCOL), precip(NCOL))
    call model%step(supplied, status, message)
    call check(status == COLUMN_ERR_NOT_READY, 'a step with nothing supplied is refused: ' // &
               trim(message))
    call supplied%set(dtdt(:, :2), dqdt, precip, status, message)
    call check(status == COLUMN_ERR_ARGUMENT, 'mismatched shapes refused: ' // trim(message))
    precip = -1.0_wp
    call supplied%set(dtdt, dqdt, precip, status, message)
    call check(status == COLUMN_ERR_ARGUMENT, 'negative rain refused: ' // trim(message))

    worst_energy = 0.0_wp
    worst_water = 0.0_wp
    do n = 1, 21
      ! heat the mid troposphere, every other step dry level 10 by twice what it holds,
      ! rain an arbitrary amount
      dtdt = 0.0_wp
      dtdt(8:12, :) = 2.0_wp / 86400.0_wp
      dqdt = 0.0_wp
      if (mod(n, 2) == 1) dqdt(10, :) = -2.0_wp * model%state%q(10, :) / model%params%dt
      precip = 1.0e-5_wp
      call supplied%set(dtdt, dqdt, precip, status, message)
      if (status == COLUMN_OK) call model%step(supplied, status, message)
      if (status /= COLUMN_OK) exit
      worst_energy = max(worst_energy, worst_residual(model%energy_budget))
      worst_water = max(worst_water, worst_residual(model%water_budget))
    end do
    call check_ok(status, message, '21 steps with supplied tendencies')
    call check(all(model%tend_t(:, :, PROC_CONVECTION) == dtdt), 'the supplied heating was applied')
    call check(all(model%state%q(10, :) == 0.0_wp) .and. all(model%state%q >= 0.0_wp), &
               'in the last step the over-dried level was filled to zero, q >= 0 everywhere')
    call check(all(abs(model%water_budget(W_FIXER, :)) <= &
                   1e-12_wp * abs(model%water_budget(W_EVAPORATION, :))), &
               'the fixer borrowed within each column: no water created (to round-off)')
    call check(all(abs(model%water_budget(W_CONVECTION, :)) > 0.0_wp), &
               'the non-conserving scheme shows in the convection water term')
    call check(worst_energy < BUDGET_RTOL, 'energy budget closes')
    call check(worst_water < BUDGET_RTOL, 'water budget closes')
    call check(N_ENERGY_TERMS == size(model%energy_budget, 1) .and. &
               N_WATER_TERMS == size(model%water_budget, 1), 'budget sizes')
    call model%step(supplied, status, message)
    call check(status == COLUMN_ERR_NOT_READY, 'supplied tendencies apply to one step only')
  end subroutine budgets_with_supplied_tendencies

  !> Flux form: the column integral of the advective moistening is the lateral import
  !> sum(q_k (omega_k-1/2 - omega_k+1/2)) / g.
  subroutine advection_is_lateral_export()
    type(column_model) :: model
    real(wp) :: dtdt(26), dqdt(26), import
    integer :: i
    write (*, '(a)') 'advection'
    call make_model(model, 26, .false.)
    associate (s => model%state, w => model%omega_int)
      do i = 1, NCOL, NCOL - 1
        call vertical_advection(s%t(:, i), s%q(:, i), s%dp(:, i), w(:, i), s%grid%dlnp_lower, &
                                s%grid%dlnp_layer, dtdt, dqdt)
        import = sum(s%q(:, i) * (w(:26, i) - w(2:, i))) / GRAVITY
        call check_close(mass_integral(dqdt, s%dp(:, i)), import, 1e-12_wp, &
                         'column integral of q advection = lateral import')
      end do
      call check(w(1, NCOL) == 0.0_wp .and. all(w(:, NCOL) <= 0.0_wp) .and. &
                 minval(w(:, NCOL)) < -0.09_wp, 'omega: zero at the surface, ascent of 0.1 Pa s-1')
      call check(all(w(:, 1) >= 0.0_wp), 'descent in the first column')
      call check(all(w(:, NCOL) == 0.0_wp .or. s%p_int(:, NCOL) > model%params%p_omega_top), &
                 'no omega above p_omega_top')
      call check(dqdt(2) > 0.0_wp, 'ascent moistens the lower troposphere')
    end associate
  end subroutine advection_is_lateral_export

  subroutine errors()
    type(column_model) :: model
    real(wp) :: value, t(26, NCOL)
    integer :: i
    write (*, '(a)') 'errors'
    call model%init(3, [1.0e5_wp], [300.0_wp], [0.0_wp], status, message)
    call check(status == COLUMN_ERR_ARGUMENT, '3 levels refused: ' // trim(message))
    call model%init(26, [1.0e5_wp, 2.0e5_wp], [300.0_wp, 300.0_wp], [0.0_wp, 0.0_wp], status, message)
    call check(status == COLUMN_ERR_ARGUMENT, 'ps = 2000 hPa refused: ' // trim(message))
    call model%init(26, [1.0e5_wp], [300.0_wp, 301.0_wp], [0.0_wp], status, message)
    call check(status == COLUMN_ERR_ARGUMENT, 'one sst per column: ' // trim(message))
    call make_model(model, 26, .false.)
    call model%set_parameter('no_such_thing', 1.0_wp, status, message)
    call check(status == COLUMN_ERR_ARGUMENT, 'unknown parameter refused: ' // trim(message))
    call model%set_parameter('dt', -600.0_wp, status, message)
    call check(status == COLUMN_ERR_ARGUMENT, 'negative dt refused: ' // trim(message))
    do i = 1, size(PARAMETER_NAMES)
      call model%get_parameter(trim(PARAMETER_NAMES(i)), value, status, message)
      if (status /= COLUMN_OK) exit
      call model%set_parameter(trim(PARAMETER_NAMES(i)), value, status, message)
      if (status /= COLUMN_OK) exit
    end do
    call check_ok(status, message, 'every listed parameter can be read and written back')
    call model%get_parameter('dt', value, status, message)
    call check(value == 600.0_wp, 'default dt is 600 s')
    t = 250.0_wp
    call model%set_state(t(:, :3), t(:, :3), status, message)
    call check(status == COLUMN_ERR_ARGUMENT, 'state of the wrong shape refused: ' // trim(message))
    t(5, 7) = 500.0_wp
    call model%set_state(t, 0.0_wp * t, status, message)
    call check(status == COLUMN_ERR_ARGUMENT, 'T = 500 K refused: ' // trim(message))
  end subroutine errors

end program test_column_model
