!> The generic column interface (paramlib_column_physics), built with -fcheck=all, on the test
!> models of make_coupling_models.py (whose outputs are known exactly) and real column states:
!> mode switching, fallback by out-of-range inputs, by large spread and by the model's ood_score
!> (exactly where it is above 1, spread_max unused), the constraints (water
!> conserved, precipitation = the water removed, tendencies zeroed aloft), stochastic draws
!> reproducible from a seed and independent of chunking, Betts-Miller inputs, clones, NaN/Inf
!> outputs (never a result: physics in hybrid and stochastic, an error in ml), and the errors:
!> bad path (hybrid too, unless allow_missing_model), mismatched metadata, a path filling its
!> buffer, wrong shapes, missing fields; the warning for a host with more levels than the model.
!>   test_column_physics MODELDIR
program test_column_physics
  use, intrinsic :: iso_fortran_env, only: int64
  use, intrinsic :: ieee_arithmetic, only: ieee_is_finite, ieee_value, ieee_quiet_nan
  use physical_constants, only: wp, GRAVITY, CP, LV
  use column_fields, only: mass_integral
  use column_host, only: column_model
  use betts_miller, only: bm_column, betts_miller_scheme
  use paramlib_column_physics
  use column_checks, only: check, check_close, check_ok
  implicit none

  integer, parameter :: NLEV = 26, NLEV_Q = 22, NCOL = 8, MEMBERS = 4
  real(wp), parameter :: UNIT_HEATING = 1.0e-5_wp, UNIT_DRYING = 2.0e-5_wp, UNIT_PRECIP = 1.0e-4_wp
  real(wp), parameter :: STEP_S = 1200.0_wp
  real(wp), parameter :: F32 = 1.0e-6_wp   ! relative tolerance of values that went through float32
  character(len=4096) :: dir
  character(len=512) :: message
  integer :: status
  type(column_model) :: host
  real(wp) :: t(NLEV, NCOL), q(NLEV, NCOL), p(NLEV, NCOL), p_int(NLEV + 1, NCOL), ps(NCOL)
  real(wp) :: solin(NCOL), shflx(NCOL), lhflx(NCOL), dp(NLEV, NCOL)
  real(wp) :: dtdt(NLEV, NCOL), dqdt(NLEV, NCOL), precip(NCOL)
  type(column_diagnostics) :: diag

  call get_command_argument(1, dir)
  if (len_trim(dir) == 0) error stop 'usage: test_column_physics MODELDIR'
  message = ''
  call make_state()

  call physics_mode_is_betts_miller()
  call ml_mode_gives_the_ensemble_mean()
  call mode_switching()
  call hybrid_falls_back_out_of_range()
  call hybrid_falls_back_on_large_spread()
  call hybrid_falls_back_where_ood_score_above_one()
  call water_fix_conserves_column_water()
  call precipitation_is_the_water_removed()
  call tendencies_zeroed_aloft()
  call stochastic_reproducible_and_chunk_independent()
  call betts_miller_inputs_reach_the_model()
  call clone_gives_the_same_results()
  call nonfinite_outputs_never_pass()
  call errors()

contains

  function path(name) result(full)
    character(len=*), intent(in) :: name
    character(len=:), allocatable :: full
    full = trim(dir) // '/' // name
  end function path

  !> Real states: columns cool to warm, ascent growing with SST, after a day of the host model.
  subroutine make_state()
    type(betts_miller_scheme) :: bm
    real(wp) :: sst(NCOL), omega0(NCOL), ps0(NCOL)
    integer :: i
    do i = 1, NCOL
      ps0(i) = 1.0e5_wp + 1.0e3_wp * mod(i, 3)
      sst(i) = 297.0_wp + 6.0_wp * (i - 1) / (NCOL - 1)
      omega0(i) = 0.05_wp - 0.15_wp * (i - 1) / (NCOL - 1)
    end do
    call host%init(NLEV, ps0, sst, omega0, status, message)
    call check_ok(status, message, 'host columns')
    call host%set_parameter('sst_ref', sum(sst) / NCOL, status, message)
    call host%set_wtg(.true.)
    do i = 1, 144   ! a day with Betts-Miller: its own quasi-equilibrium, where it rains
      call host%step(bm, status, message)
    end do
    call check_ok(status, message, 'a day of the host model')
    t = host%state%t
    q = host%state%q
    p = host%state%p
    p_int = host%state%p_int
    ps = host%state%ps
    dp = host%state%dp
    solin = 420.0_wp
    shflx = 10.0_wp
    lhflx = 120.0_wp
  end subroutine make_state

  function settings(mode, model, fixes) result(config)
    integer, intent(in) :: mode
    character(len=*), intent(in) :: model
    logical, intent(in) :: fixes
    type(column_physics_config) :: config
    config%mode = mode
    if (len(model) > 0) config%model_path = path(model)
    config%fix_water = fixes
    config%fix_precip = fixes
    config%spread_max = huge(1.0_wp)
  end function settings

  subroutine start(conv, config, expected, what)
    type(column_physics), intent(inout) :: conv
    type(column_physics_config), intent(in) :: config
    integer, intent(in) :: expected
    character(len=*), intent(in) :: what
    call conv%init(config, NLEV, status, message)
    if (status /= expected) write (*, '(a,i0,a)') '        status ', status, ': ' // trim(message)
    call check(status == expected, what)
  end subroutine start

  subroutine run(conv, what, ids, step)
    type(column_physics), intent(inout) :: conv
    character(len=*), intent(in) :: what
    integer(int64), intent(in), optional :: ids(:), step
    call conv%compute(t, q, p, p_int, ps, STEP_S, dtdt, dqdt, precip, diag, status, message, &
                      solin=solin, shflx=shflx, lhflx=lhflx, column_id=ids, step=step)
    if (status /= CP_OK) write (*, '(a,i0,a)') '        status ', status, ': ' // trim(message)
    call check(status == CP_OK, what)
  end subroutine run

  !> Betts-Miller called directly on column i, with the log-pressure ratios from p and p_int.
  subroutine betts_miller(i, bt, bq, bp)
    integer, intent(in) :: i
    real(wp), intent(out) :: bt(NLEV), bq(NLEV), bp
    real(wp) :: layer(NLEV), level(NLEV), cape
    integer :: kind, top
    type(column_physics_config) :: defaults
    layer = log(p_int(:NLEV, i) / p_int(2:, i))
    level(1) = 0.0_wp
    level(2:) = log(p(2:, i) / p(:NLEV - 1, i))
    call bm_column(t(:, i), q(:, i), p(:, i), dp(:, i), layer, level, defaults%bm_tau, &
                   defaults%bm_rh, bt, bq, bp, cape, kind, top)
  end subroutine betts_miller

  subroutine physics_mode_is_betts_miller()
    type(column_physics) :: conv
    real(wp) :: bt(NLEV), bq(NLEV), bp
    integer :: i
    logical :: same
    print '(a)', 'physics mode'
    call start(conv, settings(CP_PHYSICS, '', .false.), CP_OK, 'init without a model')
    call run(conv, 'compute')
    same = .true.
    do i = 1, NCOL
      call betts_miller(i, bt, bq, bp)
      same = same .and. all(dtdt(:, i) == bt) .and. all(dqdt(:, i) == bq) .and. precip(i) == bp
    end do
    call check(same, 'tendencies and precipitation are Betts-Miller''s, bit for bit')
    call check(all(diag%path == PATH_PHYSICS) .and. all(diag%reason == 0), 'path physics')
    call check(any(precip > 0.0_wp), 'some columns rain')
    call conv%free()
  end subroutine physics_mode_is_betts_miller

  subroutine ml_mode_gives_the_ensemble_mean()
    type(column_physics) :: conv
    real(wp) :: mean
    integer :: i
    logical :: ok
    print '(a)', 'ml mode'
    mean = (MEMBERS + 1) / 2.0_wp
    call start(conv, settings(CP_ML, 'members.pt', .false.), CP_OK, 'init with members.pt')
    call run(conv, 'compute')
    ok = .true.
    do i = 1, NCOL
      ok = ok .and. all(abs(dtdt(:, i) - mean * UNIT_HEATING) <= F32 * mean * UNIT_HEATING)
      ok = ok .and. all(abs(dqdt(:NLEV_Q, i) + mean * UNIT_DRYING * q(1, i)) &
                        <= F32 * mean * UNIT_DRYING * q(1, i)) .and. all(dqdt(NLEV_Q + 1:, i) == 0.0_wp)
      ok = ok .and. abs(precip(i) - mean * UNIT_PRECIP) <= F32 * mean * UNIT_PRECIP
    end do
    call check(ok, 'outputs are the ensemble mean; moistening zero above its 22 levels')
    call check(all(diag%path == PATH_ML), 'path ml in every column')
    call check(all(diag%spread > 0.0_wp), 'spread reported')
    call conv%free()
  end subroutine ml_mode_gives_the_ensemble_mean

  subroutine mode_switching()
    type(column_physics) :: conv
    real(wp) :: bt(NLEV), bq(NLEV), bp
    print '(a)', 'mode switching'
    call start(conv, settings(CP_ML, 'members.pt', .false.), CP_OK, 'init ml')
    call run(conv, 'ml')
    call check(all(diag%path == PATH_ML) .and. conv%current_mode() == CP_ML, 'ml path')
    call conv%set_mode(CP_PHYSICS, status, message)
    call check_ok(status, message, 'set_mode physics')
    call run(conv, 'physics')
    call betts_miller(NCOL, bt, bq, bp)
    call check(all(diag%path == PATH_PHYSICS) .and. all(dtdt(:, NCOL) == bt), &
               'physics path, Betts-Miller tendencies')
    call conv%set_mode(CP_STOCHASTIC, status, message)
    call check_ok(status, message, 'set_mode stochastic')
    call run(conv, 'stochastic')
    call check(all(diag%path == PATH_MEMBER) .and. all(diag%member >= 1) &
               .and. all(diag%member <= MEMBERS), 'member path')
    call conv%set_mode(CP_HYBRID, status, message)
    call check_ok(status, message, 'set_mode hybrid')
    call run(conv, 'hybrid')
    call check(all(diag%path == PATH_ML), 'hybrid in range and sure: ml everywhere')
    call conv%set_mode(7, status, message)
    call check(status == CP_ERR_MODE .and. conv%current_mode() == CP_HYBRID, &
               'unknown mode refused, mode kept')
    call check(mode_from_name('stochastic') == CP_STOCHASTIC .and. mode_from_name('x') == -1 &
               .and. mode_name(CP_HYBRID) == 'hybrid', 'mode names')
    call conv%free()
  end subroutine mode_switching

  subroutine hybrid_falls_back_out_of_range()
    type(column_physics) :: conv
    type(column_physics_config) :: config
    real(wp) :: bt(NLEV), bq(NLEV), bp, saved
    print '(a)', 'hybrid: out-of-range inputs'
    config = settings(CP_HYBRID, 'members.pt', .false.)
    call start(conv, config, CP_OK, 'init hybrid')
    saved = t(5, 3)
    t(5, 3) = 360.0_wp   ! the training range of t is 150..350 K
    lhflx(6) = -500.0_wp  ! and of lhflx -200..1500 W m-2
    call run(conv, 'compute')
    call check(diag%n_ood(3) == 1 .and. diag%n_ood(6) == 1 .and. count(diag%n_ood > 0) == 2, &
               'one value out of range in columns 3 and 6, none elsewhere')
    call check(diag%path(3) == PATH_PHYSICS .and. diag%reason(3) == FALLBACK_OOD .and. &
               diag%path(6) == PATH_PHYSICS .and. count(diag%path == PATH_ML) == NCOL - 2, &
               'those two columns fall back to physics, the others run the model')
    call betts_miller(3, bt, bq, bp)
    call check(all(dtdt(:, 3) == bt) .and. all(dqdt(:, 3) == bq), 'with Betts-Miller''s tendencies')
    call conv%free()
    config%ood_margin = 0.1_wp   ! 350 + 0.1 * 200 = 370 K
    call start(conv, config, CP_OK, 'init hybrid, ood_margin 0.1')
    call run(conv, 'compute')
    call check(diag%n_ood(3) == 0 .and. diag%n_ood(6) == 1, 'the margin widens the range')
    t(5, 3) = saved
    lhflx(6) = 120.0_wp
    call conv%free()
  end subroutine hybrid_falls_back_out_of_range

  subroutine hybrid_falls_back_on_large_spread()
    type(column_physics) :: ensemble, outputs
    type(column_physics_config) :: config
    real(wp) :: sd, expected(NCOL), from_members(NCOL)
    integer :: i
    print '(a)', 'hybrid: large spread'
    ! Members m * x have the standard deviation sd(1..M) * x (n - 1 in the denominator).
    sd = sqrt(sum(([(real(i, wp), i = 1, MEMBERS)] - (MEMBERS + 1) / 2.0_wp)**2) / (MEMBERS - 1))
    do i = 1, NCOL
      expected(i) = sd * (CP * UNIT_HEATING * sum(dp(:, i)) + LV * UNIT_DRYING * q(1, i) &
                          * sum(dp(:NLEV_Q, i))) / GRAVITY
    end do
    config = settings(CP_HYBRID, 'members.pt', .false.)
    config%spread_max = 0.5_wp * (minval(expected) + maxval(expected))
    call start(ensemble, config, CP_OK, 'init hybrid, members')
    call run(ensemble, 'compute')
    call check(all(abs(diag%spread - expected) <= 1e-5_wp * expected), &
               'spread = (cp int sd(dT/dt) dp + L int sd(dq/dt) dp) / g from the members')
    call check(all((diag%path == PATH_PHYSICS) .eqv. (expected > config%spread_max)) .and. &
               any(diag%path == PATH_PHYSICS) .and. any(diag%path == PATH_ML), &
               'columns above spread_max fall back, the others run the model')
    call check(all((diag%reason == FALLBACK_SPREAD) .eqv. (diag%path == PATH_PHYSICS)), &
               'reason: spread')
    from_members = diag%spread
    config%model_path = path('mean_spread.pt')
    call start(outputs, config, CP_OK, 'init hybrid, mean_spread export')
    call run(outputs, 'compute')
    call check(all(abs(diag%spread - from_members) <= 1e-5_wp * from_members), &
               'the <name>_spread outputs give the same spread')
    call ensemble%free()
    call outputs%free()
  end subroutine hybrid_falls_back_on_large_spread

  !> ood_score.pt: mean_spread.pt plus ood_score = (t(1) - 250 K) / 50 K (make_coupling_models).
  subroutine hybrid_falls_back_where_ood_score_above_one()
    type(column_physics) :: conv
    type(column_physics_config) :: config
    real(wp) :: saved(NCOL), expected(NCOL), bt(NLEV), bq(NLEV), bp
    integer :: i
    print '(a)', 'hybrid: ood_score'
    saved = t(1, :)
    t(1, :) = [(290.0_wp + 3.0_wp * i, i = 1, NCOL)]   ! 293 .. 314 K: score 0.86 .. 1.28
    expected = (t(1, :) - 250.0_wp) / 50.0_wp
    config = settings(CP_HYBRID, 'ood_score.pt', .false.)
    config%spread_max = 0.0_wp   ! every column's spread is above it: unused with ood_score
    call start(conv, config, CP_OK, 'init hybrid, ood_score: no partial-check warning')
    call run(conv, 'compute')
    call check(all(abs(diag%ood_score - expected) <= F32 * expected), &
               'diag%ood_score is the model''s output')
    call check(all((diag%path == PATH_PHYSICS) .eqv. (expected > 1.0_wp)) .and. &
               count(diag%path == PATH_PHYSICS) == 5, &
               'physics exactly in the columns with ood_score > 1, the model elsewhere')
    call check(all((diag%reason == FALLBACK_OOD) .eqv. (expected > 1.0_wp)), 'reason: ood')
    call betts_miller(8, bt, bq, bp)
    call check(all(dtdt(:, 8) == bt) .and. all(dqdt(:, 8) == bq), 'with Betts-Miller''s tendencies')
    call check(all(abs(dtdt(:, 1) - 2.5_wp * UNIT_HEATING) <= F32 * 2.5_wp * UNIT_HEATING), &
               'a column with ood_score <= 1 gets the ensemble mean')
    t(1, 2) = ieee_value(t(1, 2), ieee_quiet_nan)   ! NaN input: NaN score, never "<= 1"
    call conv%compute(t, q, p, p_int, ps, STEP_S, dtdt, dqdt, precip, diag, status, message, &
                      solin=solin, shflx=shflx, lhflx=lhflx)
    call check(diag%path(2) == PATH_PHYSICS .and. status < CP_ERR_ARGUMENT, &
               'a NaN input falls back, the call succeeds')
    call conv%set_mode(CP_ML, status, message)
    t(1, :) = [(290.0_wp + 3.0_wp * i, i = 1, NCOL)]
    call run(conv, 'compute, ml')
    call check(all(diag%path == PATH_ML), 'ml mode ignores ood_score')
    t(1, :) = saved
    call conv%free()
  end subroutine hybrid_falls_back_where_ood_score_above_one

  subroutine water_fix_conserves_column_water()
    type(column_physics) :: raw, fixed
    type(column_physics_config) :: config
    real(wp) :: dqdt_raw(NLEV, NCOL)
    integer :: i
    logical :: conserved
    print '(a)', 'water fix'
    config = settings(CP_ML, 'members.pt', .false.)
    call start(raw, config, CP_OK, 'init, constraints off')
    call run(raw, 'compute')
    dqdt_raw = dqdt
    call check(any(q + STEP_S * dqdt_raw < 0.0_wp), 'the model dries upper levels below zero')
    config%fix_water = .true.
    call start(fixed, config, CP_OK, 'init, water fix on')
    call run(fixed, 'compute')
    ! (q - q_filled) / dt * dt is q - q_filled to an ulp, so "zero" may be -1e-22.
    call check(all(q + STEP_S * dqdt >= -1e-18_wp), 'no negative humidity after the step')
    conserved = .true.
    do i = 1, NCOL
      conserved = conserved .and. abs(mass_integral(dqdt(:, i), dp(:, i)) &
                                      - mass_integral(dqdt_raw(:, i), dp(:, i))) &
                                  <= 1e-12_wp * abs(mass_integral(dqdt_raw(:, i), dp(:, i)))
    end do
    call check(conserved, 'column water tendency unchanged (to 1e-12)')
    call check(all(iand(diag%fixes, FIX_WATER) /= 0) .and. all(diag%water_moved > 0.0_wp), &
               'reported: FIX_WATER and the water moved')
    call check(all(dtdt == UNIT_HEATING * 2.5_wp .or. abs(dtdt - 2.5_wp * UNIT_HEATING) <= F32 * UNIT_HEATING), &
               'temperature tendencies untouched')
    call raw%free()
    call fixed%free()
  end subroutine water_fix_conserves_column_water

  subroutine precipitation_is_the_water_removed()
    type(column_physics) :: conv
    type(column_physics_config) :: config
    integer :: i, mode
    logical :: consistent
    real(wp) :: saved
    print '(a)', 'precipitation constraint'
    do mode = CP_PHYSICS, CP_STOCHASTIC
      config = settings(mode, 'members.pt', .true.)
      call start(conv, config, CP_OK, 'init ' // mode_name(mode))
      call run(conv, 'compute')
      consistent = .true.
      do i = 1, NCOL
        consistent = consistent .and. precip(i) >= 0.0_wp .and. &
          abs(precip(i) + mass_integral(dqdt(:, i), dp(:, i))) <= 1e-12_wp * max(precip(i), 1e-6_wp)
      end do
      call check(consistent, mode_name(mode) // ': precip = -int dq/dt dp / g >= 0')
      if (mode == CP_ML) call check(all(iand(diag%fixes, FIX_PRECIP) /= 0) .and. &
        all(abs(diag%precip_change) > 0.0_wp), 'ml: the model''s own precip replaced, reported')
      call conv%free()
    end do
    ! A column the model moistens (q below zero at the surface): no water from nowhere.
    saved = q(1, 2)
    q(1, 2) = -1.0e-6_wp
    call start(conv, settings(CP_ML, 'members.pt', .true.), CP_OK, 'init ml')
    call run(conv, 'compute')
    call check(precip(2) <= 1e-15_wp .and. abs(mass_integral(dqdt(:, 2), dp(:, 2))) <= 1e-15_wp, &
               'net moistening removed: no water created, precip 0 (to round-off)')
    q(1, 2) = saved
    call conv%free()
  end subroutine precipitation_is_the_water_removed

  subroutine tendencies_zeroed_aloft()
    type(column_physics) :: conv
    type(column_physics_config) :: config
    real(wp) :: removed
    print '(a)', 'tendencies zeroed aloft'
    config = settings(CP_ML, 'members.pt', .false.)
    config%p_zero_above = 2.0e4_wp
    call start(conv, config, CP_OK, 'init, p_zero_above 200 hPa')
    call run(conv, 'compute')
    call check(all(pack(dtdt, p < 2.0e4_wp) == 0.0_wp) .and. &
               all(pack(dqdt, p < 2.0e4_wp) == 0.0_wp), 'zero where p < 200 hPa')
    call check(all(pack(dtdt, p >= 2.0e4_wp) > 0.0_wp), 'kept below')
    removed = CP * 2.5_wp * UNIT_HEATING * sum(pack(dp(:, 1), p(:, 1) < 2.0e4_wp)) / GRAVITY &
              - LV * 2.5_wp * UNIT_DRYING * q(1, 1) * sum(pack(dp(:NLEV_Q, 1), p(:NLEV_Q, 1) < 2.0e4_wp)) &
              / GRAVITY
    call check_close(diag%top_removed(1), removed, 1e-5_wp, 'reported: the enthalpy removed')
    call check(all(iand(diag%fixes, FIX_TOP) /= 0), 'reported: FIX_TOP')
    call conv%free()
  end subroutine tendencies_zeroed_aloft

  subroutine stochastic_reproducible_and_chunk_independent()
    type(column_physics) :: a, b
    type(column_physics_config) :: config
    integer(int64) :: ids(NCOL), step
    integer :: first(NCOL), drawn(NCOL), i, k, used(MEMBERS)
    real(wp) :: whole(NLEV, NCOL)
    logical :: other_seed_differs
    print '(a)', 'stochastic mode'
    config = settings(CP_STOCHASTIC, 'members.pt', .false.)
    config%seed = 42
    ids = [(int(100 + 7 * i, int64), i = 1, NCOL)]
    call start(a, config, CP_OK, 'init, seed 42')
    call run(a, 'compute', ids, 5_int64)
    first = diag%member
    call check(all(abs(dtdt(1, :) - diag%member * UNIT_HEATING) <= F32 * diag%member * UNIT_HEATING), &
               'each column gets the drawn member''s tendencies')
    whole = dtdt
    call start(b, config, CP_OK, 'a second instance, seed 42')
    call run(b, 'compute', ids, 5_int64)
    call check(all(diag%member == first), 'same seed, column and step: same members')
    ! The same columns in two chunks give the same draws and tendencies.
    call b%compute(t(:, :3), q(:, :3), p(:, :3), p_int(:, :3), ps(:3), STEP_S, dtdt(:, :3), &
                   dqdt(:, :3), precip(:3), diag, status, message, solin=solin(:3), &
                   shflx=shflx(:3), lhflx=lhflx(:3), column_id=ids(:3), step=5_int64)
    drawn(:3) = diag%member
    call b%compute(t(:, 4:), q(:, 4:), p(:, 4:), p_int(:, 4:), ps(4:), STEP_S, dtdt(:, 4:), &
                   dqdt(:, 4:), precip(4:), diag, status, message, solin=solin(4:), &
                   shflx=shflx(4:), lhflx=lhflx(4:), column_id=ids(4:), step=5_int64)
    drawn(4:) = diag%member
    call check(all(drawn == first) .and. all(dtdt == whole), 'chunked: same draws and tendencies')
    other_seed_differs = .false.
    used = 0
    do step = 1, 50
      do i = 1, NCOL
        k = stochastic_member(42_int64, ids(i), step, MEMBERS)
        used(k) = used(k) + 1
        other_seed_differs = other_seed_differs .or. &
                             k /= stochastic_member(43_int64, ids(i), step, MEMBERS)
      end do
    end do
    call check(other_seed_differs, 'another seed draws other members')
    call check(all(used > 50 * NCOL / MEMBERS / 2), 'every member drawn, none rarely')
    call a%free()
    call b%free()
  end subroutine stochastic_reproducible_and_chunk_independent

  subroutine betts_miller_inputs_reach_the_model()
    type(column_physics) :: conv
    real(wp) :: bt(NLEV), bq(NLEV), bp
    integer :: i
    logical :: ok
    print '(a)', 'Betts-Miller inputs'
    call start(conv, settings(CP_ML, 'with_bm.pt', .false.), CP_OK, 'init with_bm.pt')
    call run(conv, 'compute')
    ok = .true.
    do i = 1, NCOL
      call betts_miller(i, bt, bq, bp)
      ok = ok .and. all(abs(dtdt(:, i) - bt) <= F32 * maxval(abs(bt)) + tiny(1.0)) .and. &
           all(abs(dqdt(:NLEV_Q, i) - bq(:NLEV_Q)) <= F32 * maxval(abs(bq)) + tiny(1.0))
    end do
    call check(ok, 'the model echoes Betts-Miller''s tendencies of the same state')
    call conv%free()
  end subroutine betts_miller_inputs_reach_the_model

  subroutine clone_gives_the_same_results()
    type(column_physics) :: conv, copy
    real(wp) :: first(NLEV, NCOL)
    print '(a)', 'clone'
    call start(conv, settings(CP_HYBRID, 'mean_spread.pt', .true.), CP_OK, 'init')
    call run(conv, 'original')
    first = dqdt
    call conv%clone(copy, status, message)
    call check(status == CP_OK, 'clone')
    call conv%free()
    call run(copy, 'clone computes after the original is freed')
    call check(all(dqdt == first), 'same tendencies')
    call copy%free()
  end subroutine clone_gives_the_same_results

  !> nan_members.pt: member 2's heating is NaN in columns 2, 5, 8 (mean and spread NaN there);
  !> nan_spread.pt: only heating_spread is NaN there. Neither may pass for a result.
  !> nan_members.pt: member 2's heating is NaN in columns 2, 5, 8 (mean and spread NaN there);
  !> nan_spread.pt: only heating_spread is NaN there. Neither may pass for a result.
  subroutine nonfinite_outputs_never_pass()
    type(column_physics) :: conv
    print '(a)', 'non-finite outputs'
    call start(conv, settings(CP_ML, 'nan_members.pt', .true.), CP_OK, 'init ml')
    call conv%compute(t, q, p, p_int, ps, STEP_S, dtdt, dqdt, precip, diag, status, message, &
                      solin=solin, shflx=shflx, lhflx=lhflx)
    call check(status == CP_ERR_NONFINITE .and. index(message, 'NaN/Inf outputs in 3 of 8') > 0, &
               'ml: an error naming the count of columns')
    call check(diag%n_nonfinite == 3, 'ml: counted')
    call conv%free()
    call nonfinite_fallback('hybrid, NaN mean and spread', CP_HYBRID, 'nan_members.pt')
    call nonfinite_fallback('hybrid, NaN spread alone (never "below spread_max")', CP_HYBRID, &
                            'nan_spread.pt')
    call nonfinite_fallback('stochastic, NaN member', CP_STOCHASTIC, 'nan_members.pt')
  end subroutine nonfinite_outputs_never_pass

  !> Columns 2, 5, 8 get Betts-Miller, counted and flagged; every tendency is finite.
  subroutine nonfinite_fallback(what, mode, model)
    character(len=*), intent(in) :: what, model
    integer, intent(in) :: mode
    type(column_physics) :: conv
    logical :: nan_column(NCOL), bm_there
    real(wp) :: bt(NLEV), bq(NLEV), bp
    integer :: i
    nan_column = [(mod(i - 1, 3) == 1, i = 1, NCOL)]
    call start(conv, settings(mode, model, .false.), CP_OK, what // ': init')
    call conv%compute(t, q, p, p_int, ps, STEP_S, dtdt, dqdt, precip, diag, status, message, &
                      solin=solin, shflx=shflx, lhflx=lhflx)
    call check(status == CP_WARN_NONFINITE .and. index(message, 'in 3 of 8') > 0, &
               what // ': a warning naming the count')
    call check(diag%n_nonfinite == 3 .and. all((iand(diag%reason, FALLBACK_NONFINITE) /= 0) &
               .eqv. nan_column), what // ': counted, reason nonfinite_output in those columns')
    call check(all((diag%path == PATH_PHYSICS) .eqv. nan_column), &
               what // ': physics there, the model elsewhere')
    bm_there = .true.
    do i = 1, NCOL
      if (.not. nan_column(i)) cycle
      call betts_miller(i, bt, bq, bp)
      bm_there = bm_there .and. all(abs(dtdt(:, i) - bt) <= 1e-12_wp * maxval(abs(bt)))
    end do
    call check(bm_there .and. all(ieee_is_finite(dtdt)) .and. all(ieee_is_finite(dqdt)) .and. &
               all(ieee_is_finite(precip)), what // ': Betts-Miller''s tendencies, all finite')
    call conv%free()
  end subroutine nonfinite_fallback

  subroutine errors()
    type(column_physics) :: conv
    type(column_physics_config) :: config
    real(wp) :: bt(NLEV), bq(NLEV), bp
    integer :: i
    logical :: same
    print '(a)', 'errors'
    call run_expecting_not_ready()
    call start(conv, settings(CP_ML, 'missing.pt', .true.), CP_ERR_MODEL, 'ml, bad path: error')
    call check(index(message, 'missing.pt') > 0, 'the message names the file')
    call start(conv, settings(CP_HYBRID, 'missing.pt', .true.), CP_ERR_MODEL, &
               'hybrid, bad path: error')
    call check(index(message, 'missing.pt') > 0 .and. index(message, 'allow_missing_model') > 0, &
               'the message names the file and the switch')
    config = settings(CP_HYBRID, 'missing.pt', .true.)
    config%allow_missing_model = .true.
    call start(conv, config, CP_WARN_NO_MODEL, 'hybrid, bad path, allow_missing_model: warning')
    call check(index(message, 'PHYSICS ONLY') > 0 .and. &
               index(message, 'Betts-Miller in every column') > 0, 'the message says physics only')
    call run(conv, 'hybrid without a model computes')
    same = .true.
    do i = 1, NCOL
      call betts_miller(i, bt, bq, bp)
      same = same .and. all(abs(dtdt(:, i) - bt) <= 1e-12_wp * maxval(abs(bt)))
    end do
    call check(same .and. all(diag%path == PATH_PHYSICS) .and. &
               all(diag%reason == FALLBACK_NO_MODEL), 'physics everywhere, reason no_model')
    call conv%free()
    config = settings(CP_HYBRID, 'bad_units.pt', .true.)
    config%allow_missing_model = .true.
    call start(conv, config, CP_ERR_METADATA, &
               'hybrid, heating in K day-1: error, allow_missing_model or not')
    call start(conv, settings(CP_ML, 'bad_units.pt', .true.), CP_ERR_METADATA, &
               'ml, heating in K day-1: metadata error')
    call check(index(message, 'K s-1') > 0, 'the message names the units')
    call start(conv, settings(CP_ML, 'unknown_input.pt', .true.), CP_ERR_METADATA, &
               'ml, an input the interface does not provide')
    call check(index(message, '"u"') > 0, 'the message names the input')
    call start(conv, settings(CP_ML, 'too_many_levels.pt', .true.), CP_ERR_METADATA, &
               'ml, t on more levels than the host has')
    call conv%init(settings(CP_ML, 'members.pt', .true.), 30, status, message)
    call check(status == CP_WARN_LEVELS .and. index(message, 'lowest 26 of the host''s 30') > 0 &
               .and. index(message, 't 1-26, q 1-22, heating 1-26, moistening 1-22') > 0, &
               'a 30-level host, a 26-level model: a warning naming the levels used')
    call conv%free()
    config = settings(CP_ML, '', .true.)
    config%model_path = repeat('m', len(config%model_path))
    call start(conv, config, CP_ERR_ARGUMENT, 'a model_path filling its buffer: error')
    call check(index(message, 'model_path fills all 1024') > 0, 'the message names model_path')
    call start(conv, settings(CP_STOCHASTIC, 'mean_spread.pt', .true.), CP_ERR_MODE, &
               'stochastic without members')
    call check(index(message, '--output members') > 0, 'the message says how to export')
    call start(conv, settings(CP_HYBRID, 'mean.pt', .true.), CP_WARN_PARTIAL, &
               'hybrid without spread: warning')
    call conv%free()
    config = settings(CP_PHYSICS, '', .true.)
    config%bm_rh = 1.5_wp
    call start(conv, config, CP_ERR_ARGUMENT, 'bm_rh > 1 refused')

    call start(conv, settings(CP_ML, 'members.pt', .true.), CP_OK, 'init')
    call conv%compute(t(:, :2), q, p, p_int, ps, STEP_S, dtdt, dqdt, precip, diag, status, message)
    call check(status == CP_ERR_ARGUMENT, 'shapes that disagree: argument error')
    call conv%compute(t, q, p, p_int, ps, STEP_S, dtdt, dqdt, precip, diag, status, message)
    call check(status == CP_ERR_ARGUMENT .and. index(message, 'solin') > 0, &
               'a model input not passed: argument error naming it')
    call conv%free()
  end subroutine errors

  subroutine run_expecting_not_ready()
    type(column_physics) :: conv
    call conv%compute(t, q, p, p_int, ps, STEP_S, dtdt, dqdt, precip, diag, status, message)
    call check(status == CP_ERR_NOT_READY, 'compute before init: not ready')
  end subroutine run_expecting_not_ready

end program test_column_physics
