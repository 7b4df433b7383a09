!> The cumulus plugin called as WRF calls it, on a real WRF state.
!>
!>   wrf_plugin_driver NAMELIST
!>
!> NAMELIST holds &physics (the plugin's options, as in WRF's namelist.input) and &driver:
!>   mode        'run' (default), 'init' (initialise only: the error tests) or 'screen' (one
!>               call on the tiles in OpenMP threads, then: every WRF output finite, and how
!>               many recomputed columns got zero outputs: a model with NaN outputs, or
!>               one whose call fails on some tiles, with paramlib_cu_on_error = 1)
!>   wrfout      WRF history file with the cumulus fields, frames one cumulus call apart
!>   first_frame first frame the scheme is called on (1-based); the frame before it is taken
!>               as the previous call's outputs, so the state starts right after that call
!>   ncalls      cumulus calls (frames first_frame, first_frame+1, ... give the state)
!>   tiles_x, tiles_y, halo   tile decomposition and halo width of the memory dims
!>   nan_columns columns given a NaN input in the NaN run
!>   output      netCDF file for the Python comparison (run A's first-call inputs, every
!>               call's outputs); '' for none
!>   levels      init mode: mass levels of the domain
!>
!> Runs, over ncalls cumulus calls with WRF's step loop (a call every STEPCU steps, NCA
!> counted down by advance_ppt after every step):
!>   A  one tile, serial      (the reference; NCA hold, W0AVG and halo checks)
!>   B  tiles_x x tiles_y tiles, serial        equal to A bit for bit
!>   C  the same tiles in OpenMP threads       equal to A bit for bit
!>   D  A's first call with NaN in qv of nan_columns recomputed columns: those get zero
!>      outputs, every other column equals A
!>   E  a cold start: cu_paramlib_init with RESTART = .false. (MSKF's initial values), KTAU = 1
!> Every check prints a line; the first failure stops the program with status 1. Fatal
!> initialisation errors stop it through wrf_error_fatal (wrf_error_shim.F90). A path that
!> fills its 1024-character buffer (it may have been cut short) stops it with status 2.
program wrf_plugin_driver
  use, intrinsic :: iso_fortran_env, only: error_unit
  use, intrinsic :: ieee_arithmetic, only: ieee_value, ieee_quiet_nan, ieee_is_finite
  use netcdf
  use module_cu_paramlib, only: cu_paramlib_init, cu_paramlib_finalize, &
    PARAMLIB_CU_TOP_FRACTION_DEFAULT
  use wrf_domain
  use paramlib_check, only: check
  implicit none

  character(len=1024) :: paramlib_cu_model = ''
  integer :: paramlib_cu_device = 0, paramlib_cu_device_index = 0, paramlib_cu_fallback = 0
  integer :: paramlib_cu_threads = 1, paramlib_cu_on_error = 0
  character(len=80) :: paramlib_cu_sha256 = 'none'
  real :: paramlib_cu_top_fraction = PARAMLIB_CU_TOP_FRACTION_DEFAULT
  integer :: paramlib_cu_water_closure = 0, paramlib_cu_ood_every = 0
  namelist /physics/ paramlib_cu_model, paramlib_cu_device, paramlib_cu_device_index, &
    paramlib_cu_fallback, paramlib_cu_threads, paramlib_cu_sha256, paramlib_cu_on_error, &
    paramlib_cu_top_fraction, paramlib_cu_water_closure, paramlib_cu_ood_every
  character(len=16) :: mode = 'run'
  character(len=1024) :: wrfout = '', output = ''
  integer :: first_frame = 2, ncalls = 3, tiles_x = 3, tiles_y = 2, halo = 3, nan_columns = 3
  integer :: levels = 0
  namelist /driver/ mode, wrfout, first_frame, ncalls, tiles_x, tiles_y, halo, nan_columns, &
    output, levels

  character(len=1024) :: path
  integer :: unit, ncid, nx, ny, nz, nframes, stepcu, c
  real :: dt, cudt
  type(domain), allocatable :: ref(:)      ! run A after each call
  type(domain) :: first_before             ! run A right before its first call
  type(tile_set) :: single, tiles
  integer :: out, nv, varids(64)          ! the output file of write_output
  character(len=16) :: names(64)

  if (command_argument_count() /= 1) then
    write (error_unit, '(a)') 'usage: wrf_plugin_driver NAMELIST'
    error stop 2
  end if
  call get_command_argument(1, path, status=c)
  call fits(c == 0 .and. len_trim(path) < len(path), 'the namelist path')
  open (newunit=unit, file=trim(path), status='old', action='read')
  read (unit, nml=physics)
  rewind (unit)
  read (unit, nml=driver)
  close (unit)
  ! paramlib_cu_model: the plugin refuses it itself, as it must inside WRF.
  call fits(len_trim(wrfout) < len(wrfout), '&driver wrfout')
  call fits(len_trim(output) < len(output), '&driver output')

  if (mode == 'init') then
    call cu_paramlib_init(paramlib_cu_model, paramlib_cu_device, paramlib_cu_device_index, &
                          paramlib_cu_fallback, paramlib_cu_threads, 1, levels + 1, &
                          SHA256=paramlib_cu_sha256, ON_ERROR=paramlib_cu_on_error, &
                        TOP_FRACTION=paramlib_cu_top_fraction, WATER_CLOSURE=paramlib_cu_water_closure, &
                        OOD_EVERY=paramlib_cu_ood_every)
    print '(a)', 'wrf_plugin_driver: init ok'
    call cu_paramlib_finalize()
    stop
  end if

  call nc(nf90_open(trim(wrfout), NF90_NOWRITE, ncid), wrfout)
  call get_dim('west_east', nx)
  call get_dim('south_north', ny)
  call get_dim('bottom_top', nz)
  call get_dim('Time', nframes)
  call nc(nf90_get_att(ncid, NF90_GLOBAL, 'DT', dt), 'attribute DT')
  call nc(nf90_get_att(ncid, NF90_GLOBAL, 'CUDT', cudt), 'attribute CUDT')
  stepcu = max(nint(cudt * 60.0 / dt), 1)
  if (first_frame < 2 .or. first_frame + ncalls - 1 > nframes) then
    write (error_unit, '(a,3(i0,a))') 'first_frame = ', first_frame, ', ncalls = ', ncalls, &
      ': need frames 1..', nframes, ' with one before the first call'
    error stop 2
  end if
  print '(a,i0,a,i0,a,i0,a,f5.1,a,i0)', 'wrf_plugin_driver: ', nx, ' x ', ny, ' columns, ', nz, &
    ' levels, DT = ', dt, ' s, STEPCU = ', stepcu

  call cu_paramlib_init(paramlib_cu_model, paramlib_cu_device, paramlib_cu_device_index, &
                        paramlib_cu_fallback, paramlib_cu_threads, 1, nz + 1, &
                        SHA256=paramlib_cu_sha256, ON_ERROR=paramlib_cu_on_error, &
                        TOP_FRACTION=paramlib_cu_top_fraction, WATER_CLOSURE=paramlib_cu_water_closure, &
                        OOD_EVERY=paramlib_cu_ood_every)
  allocate (ref(ncalls))
  block
    type(domain) :: d
    d = new_domain(nx, ny, nz, halo, dt, stepcu)
    single = make_tiles(d, 1, 1)
    tiles = make_tiles(d, tiles_x, tiles_y)
  end block
  call check(size(tiles%i_start) > 1 .and. maxval(tiles%i_end) == nx + 1, &
             'tiles: several, the last ending at the staggered ide')
  if (mode == 'screen') then
    call screen_run()
    call cu_paramlib_finalize()
    stop
  end if

  print '(a)', 'run A: one tile, serial'
  call simulate(single, .false., 'A')
  print '(a,i0,a)', 'run B: ', size(tiles%i_start), ' tiles, serial'
  call simulate(tiles, .false., 'B')
  print '(a,i0,a)', 'run C: ', size(tiles%i_start), ' tiles, OpenMP'
  call simulate(tiles, .true., 'C')
  print '(a)', 'run D: NaN inputs'
  call nan_run()
  print '(a)', 'run E: cold start'
  call cold_start_run()
  if (len_trim(output) > 0) call write_output()

  call cu_paramlib_finalize()
  call nc(nf90_close(ncid), wrfout)
  print '(a)', 'wrf_plugin_driver: all checks passed'

contains

  !> WRF's step loop over ncalls cumulus calls; run A records its states, B and C compare.
  subroutine simulate(ts, parallel, run)
    type(tile_set), intent(in) :: ts
    logical, intent(in) :: parallel
    character(len=1), intent(in) :: run
    type(domain) :: d, before
    integer :: s, n_held
    character(len=64) :: what

    d = start_domain()
    n_held = 0
    do s = 1, ncalls * stepcu
      if (mod(s, stepcu) == 0) then
        c = s / stepcu
        call load_state(first_frame + c - 1, d)
        before = d
        call cumulus_step(d, ts, s, parallel)
        write (what, '(a,a,i0)') run, ' call ', c
        call check(halo_intact(d, HALO_MARK), trim(what) // ': halo and level kde untouched')
        call check(outputs_finite(d), trim(what) // ': outputs finite (NaN halos never read)')
        if (run == 'A') then
          if (c == 1) first_before = before
          call check_call(before, d, trim(what), n_held)
          ref(c) = d
        else
          call check(same_outputs(d, ref(c)), trim(what) // ': equal to run A bit for bit')
        end if
      end if
      call advance_ppt(d)
    end do
    ! How many held columns there were depends on the data and the model: reported, and checked
    ! by the caller where the data guarantee some (wrf_plugin_cases.py parity).
    if (run == 'A') print '(a,i0,a)', 'A: ', n_held, ' held columns (NCA >= DT/2) over the calls'
  end subroutine simulate

  !> The checks of one call of run A: held columns untouched, recomputed ones with NCA a
  !> multiple of DT, W0AVG's running mean, the *_PREV copy as a history frame holds it.
  subroutine check_call(b, d, what, n_held)
    type(domain), intent(in) :: b, d
    character(len=*), intent(in) :: what
    integer, intent(inout) :: n_held
    integer :: i, j, kt
    logical :: held_kept, nca_ok, prev_ok, w0_ok
    real :: wm, expect
    kt = d%kde - 1
    held_kept = .true.
    nca_ok = .true.
    prev_ok = .true.
    w0_ok = .true.
    do j = d%jds, d%jde - 1
      do i = d%ids, d%ide - 1
        if (b%nca(i, j) >= 0.5 * dt) then
          n_held = n_held + 1
          held_kept = held_kept .and. all(d%rthcuten(i, :kt, j) == b%rthcuten(i, :kt, j)) .and. &
            all(d%rqvcuten(i, :kt, j) == b%rqvcuten(i, :kt, j)) .and.                          &
            d%pratec(i, j) == b%pratec(i, j) .and. d%raincv(i, j) == b%raincv(i, j) .and.      &
            d%nca(i, j) == b%nca(i, j) .and. d%cutop(i, j) == b%cutop(i, j)
        else
          nca_ok = nca_ok .and. (d%nca(i, j) == b%nca(i, j) .or. &
            (d%nca(i, j) >= dt .and. modulo(d%nca(i, j), dt) == 0.0))
        end if
        expect = merge(d%nca(i, j) - dt, d%nca(i, j), d%nca(i, j) > 0.0)
        prev_ok = prev_ok .and. d%nca_prev(i, j) == expect
        if (d%nca(i, j) > 0.0 .and. nint(d%nca(i, j) / dt) <= 1) then
          prev_ok = prev_ok .and. all(d%rthcuten_prev(i, :kt, j) == 0.0)
        else
          prev_ok = prev_ok .and. all(d%rthcuten_prev(i, :kt, j) == d%rthcuten(i, :kt, j)) .and. &
            all(d%rqscuten_prev(i, :kt, j) == d%rqscuten(i, :kt, j))
        end if
        wm = 0.5 * (b%w(i, 1, j) + b%w(i, 2, j))
        w0_ok = w0_ok .and. d%w0avg(i, 1, j) == (b%w0avg(i, 1, j) * (2.0 * stepcu - 1.0) + wm) / (2.0 * stepcu)
      end do
    end do
    call check(held_kept, what // ': columns with NCA >= DT/2 keep every output (held)')
    call check(nca_ok, what // ': recomputed columns: NCA unchanged or a new period, a multiple of DT')
    call check(prev_ok, what // ': *_PREV and NCA_PREV as a history frame at the end of the step')
    call check(w0_ok, what // ': W0AVG = MSKF''s running mean with TST = 2 STEPCU')
  end subroutine check_call

  !> Run A's first call again with NaN in qv of nan_columns recomputed columns.
  subroutine nan_run()
    type(domain) :: d
    logical, allocatable :: poisoned(:, :)
    integer :: i, j, n, kt
    logical :: zeroed, others_same
    d = start_domain()
    do j = 1, stepcu - 1
      call advance_ppt(d)
    end do
    call load_state(first_frame, d)
    allocate (poisoned(d%ims:d%ime, d%jms:d%jme), source=.false.)
    n = 0
    do j = d%jds, d%jde - 1
      do i = d%ids, d%ide - 1
        if (n < nan_columns .and. d%nca(i, j) < 0.5 * dt .and. mod(i + j, 7) == 0) then
          d%qv(i, 3, j) = ieee_value(0.0, ieee_quiet_nan)
          poisoned(i, j) = .true.
          n = n + 1
        end if
      end do
    end do
    call check(n == nan_columns, 'D: NaN put into qv of the requested number of recomputed columns')
    call cumulus_step(d, tiles, stepcu, .false.)
    kt = d%kde - 1
    zeroed = .true.
    others_same = .true.
    do j = d%jds, d%jde - 1
      do i = d%ids, d%ide - 1
        if (poisoned(i, j)) then
          zeroed = zeroed .and. all(d%rthcuten(i, :kt, j) == 0.0) .and. all(d%rqvcuten(i, :kt, j) == 0.0) &
            .and. d%pratec(i, j) == 0.0 .and. d%raincv(i, j) == 0.0
        else
          others_same = others_same .and. all(d%rthcuten(i, :kt, j) == ref(1)%rthcuten(i, :kt, j)) &
            .and. d%pratec(i, j) == ref(1)%pratec(i, j) .and. d%nca(i, j) == ref(1)%nca(i, j)
        end if
      end do
    end do
    call check(zeroed, 'D: columns with NaN inputs get zero tendencies and precipitation')
    call check(others_same, 'D: every other column equals run A')
  end subroutine nan_run

  !> One call on the tiles in OpenMP threads: every WRF output finite whatever the model gave;
  !> the recomputed columns counted by whether they got zero tendencies and precipitation.
  subroutine screen_run()
    type(domain) :: d
    logical, allocatable :: recomputed(:, :), zero(:, :)
    integer :: j, kt
    d = start_domain()
    do j = 1, stepcu - 1
      call advance_ppt(d)
    end do
    call load_state(first_frame, d)
    recomputed = d%nca(1:nx, 1:ny) < 0.5 * dt
    call cumulus_step(d, tiles, stepcu, .true.)
    call check(outputs_finite(d), 'screen: every WRF output finite')
    kt = d%kde - 1
    zero = all(d%rthcuten(1:nx, :kt, 1:ny) == 0.0, dim=2) .and. d%pratec(1:nx, 1:ny) == 0.0
    print '(a,i0,a,i0,a)', 'screen: ', count(recomputed .and. zero), &
      ' recomputed columns with zero cumulus outputs, ', count(recomputed .and. .not. zero), &
      ' with the model''s'
  end subroutine screen_run

  !> Stop (status 2) where a character buffer was filled: its value may have been cut short.
  subroutine fits(ok, what)
    logical, intent(in) :: ok
    character(len=*), intent(in) :: what
    if (ok) return
    write (error_unit, '(a,i0,a)') 'wrf_plugin_driver: ' // what // ' is longer than ', &
      len(path) - 1, ' characters: use a shorter path'
    error stop 2
  end subroutine fits

  !> A cold start: init with RESTART = .false. on each tile (as WRF's phy_init loops over them)
  !> gives MSKF's initial values; then KTAU = 1.
  subroutine cold_start_run()
    type(domain) :: d
    real :: wm
    logical :: w0_ok
    integer :: i, j, n
    d = start_domain()
    call load_state(first_frame, d)
    do n = 1, size(tiles%i_start)
      call cu_paramlib_init(paramlib_cu_model, paramlib_cu_device, paramlib_cu_device_index, &
                            paramlib_cu_fallback, paramlib_cu_threads, d%kds, d%kde, RESTART=.false., &
                            RTHCUTEN=d%rthcuten, RQVCUTEN=d%rqvcuten, RQCCUTEN=d%rqccuten,           &
                            RQRCUTEN=d%rqrcuten, RQICUTEN=d%rqicuten, RQSCUTEN=d%rqscuten,           &
                            NCA=d%nca, W0AVG=d%w0avg, RTHCUTEN_PREV=d%rthcuten_prev,                 &
                            RQVCUTEN_PREV=d%rqvcuten_prev, RQCCUTEN_PREV=d%rqccuten_prev,            &
                            RQRCUTEN_PREV=d%rqrcuten_prev, RQICUTEN_PREV=d%rqicuten_prev,            &
                            RQSCUTEN_PREV=d%rqscuten_prev, NCA_PREV=d%nca_prev,                      &
                            IDS=d%ids, IDE=d%ide, JDS=d%jds, JDE=d%jde, IMS=d%ims, IME=d%ime,        &
                            JMS=d%jms, JME=d%jme, KMS=d%kms, KME=d%kme, ITS=tiles%i_start(n),        &
                            ITE=tiles%i_end(n), JTS=tiles%j_start(n), JTE=tiles%j_end(n),            &
                            KTS=d%kds, KTE=d%kde)
    end do
    call check(all(d%nca(1:nx, 1:ny) == -100.0) .and. all(d%nca_prev(1:nx, 1:ny) == -100.0) .and. &
               all(d%rthcuten_prev(1:nx, 1:nz, 1:ny) == 0.0) .and. all(d%w0avg(1:nx, 1:nz, 1:ny) == 0.0), &
               'E: init with RESTART = .false.: NCA = -100, *_PREV and W0AVG 0 on every tile')
    call check(halo_intact(d, HALO_MARK), 'E: init with RESTART = .false.: halo and level kde untouched')
    call cumulus_step(d, tiles, 1, .true.)
    w0_ok = .true.
    do j = d%jds, d%jde - 1
      do i = d%ids, d%ide - 1
        wm = 0.5 * (d%w(i, 1, j) + d%w(i, 2, j))
        w0_ok = w0_ok .and. d%w0avg(i, 1, j) == (0.0 * (2.0 * stepcu - 1.0) + wm) / (2.0 * stepcu)
      end do
    end do
    call check(w0_ok, 'E: W0AVG starts from 0')
    call check(all(d%nca(1:nx, 1:ny) == -100.0 .or. d%nca(1:nx, 1:ny) >= dt), &
               'E: NCA = -100 (never convected) or a new period')
    print '(a,i0,a)', 'E: ', count(d%nca(1:nx, 1:ny) == -100.0), ' columns without convection'
  end subroutine cold_start_run

  !> Domain at the end of the step of the call before first_frame: that frame's cumulus
  !> fields as the live arrays and as the scheme's *_PREV copy; NaN in the inputs' halos.
  function start_domain() result(d)
    type(domain) :: d
    real :: nan
    logical, allocatable :: outside(:, :)
    integer :: k
    d = new_domain(nx, ny, nz, halo, dt, stepcu)
    call mark_halo(d, HALO_MARK)
    call read3('W0AVG', first_frame - 1, d%w0avg, d)
    call read3('RTHCUTEN', first_frame - 1, d%rthcuten, d)
    call read3('RQVCUTEN', first_frame - 1, d%rqvcuten, d)
    call read3('RQCCUTEN', first_frame - 1, d%rqccuten, d)
    call read3('RQRCUTEN', first_frame - 1, d%rqrcuten, d)
    call read3('RQICUTEN', first_frame - 1, d%rqicuten, d)
    call read3('RQSCUTEN', first_frame - 1, d%rqscuten, d)
    call read2('PRATEC', first_frame - 1, d%pratec, d)
    call read2('RAINCV', first_frame - 1, d%raincv, d)
    call read2('NCA', first_frame - 1, d%nca, d)
    call read2('CUTOP', first_frame - 1, d%cutop, d)
    call read2('CUBOT', first_frame - 1, d%cubot, d)
    call keep_as_previous(d)
    nan = ieee_value(0.0, ieee_quiet_nan)
    allocate (outside(d%ims:d%ime, d%jms:d%jme), source=.true.)
    outside(d%ids:d%ide - 1, d%jds:d%jde - 1) = .false.
    do k = d%kms, d%kme
      where (outside)
        d%u(:, k, :) = nan; d%v(:, k, :) = nan; d%th(:, k, :) = nan; d%t(:, k, :) = nan
        d%qv(:, k, :) = nan; d%p(:, k, :) = nan; d%pi(:, k, :) = nan; d%rho(:, k, :) = nan
        d%dz8w(:, k, :) = nan; d%w(:, k, :) = nan
      end where
    end do
    where (outside)
      d%hfx = nan; d%ust = nan; d%pblh = nan; d%xland = nan
    end where
  end function start_domain

  !> The state WRF's physics sees, from a history frame, with WRF's constants
  !> (module_model_constants: r_d = 287, cp = 7 r_d / 2, r_v = 461.6, g = 9.81).
  subroutine load_state(frame, d)
    integer, intent(in) :: frame
    type(domain), intent(inout) :: d
    real, parameter :: r_d = 287.0, cp = 7.0 * r_d / 2.0, r_v = 461.6, g = 9.81, p1000 = 1.0e5
    real, allocatable :: a(:, :, :), b(:, :, :), c(:, :, :)
    integer :: i, j, k
    call read_var('U', frame, a)       ! (west_east_stag, south_north, bottom_top)
    do j = 1, ny
      do k = 1, nz
        d%u(1:nx, k, j) = 0.5 * (a(1:nx, j, k) + a(2:nx + 1, j, k))
      end do
    end do
    call read_var('V', frame, a)
    do j = 1, ny
      do k = 1, nz
        d%v(1:nx, k, j) = 0.5 * (a(1:nx, j, k) + a(1:nx, j + 1, k))
      end do
    end do
    call read3('W', frame, d%w, d)
    call read3('T', frame, d%th, d)
    call read3('QVAPOR', frame, d%qv, d)
    call read3('P', frame, d%p, d)
    call read_var('PB', frame, a)
    call read_var('PH', frame, b)
    call read_var('PHB', frame, c)
    b = b + c   ! geopotential on full levels
    do j = 1, ny
      do k = 1, nz
        do i = 1, nx
          d%th(i, k, j) = d%th(i, k, j) + 300.0
          d%p(i, k, j) = d%p(i, k, j) + a(i, j, k)
          d%pi(i, k, j) = (d%p(i, k, j) / p1000)**(r_d / cp)
          d%t(i, k, j) = d%th(i, k, j) * d%pi(i, k, j)
          d%rho(i, k, j) = d%p(i, k, j) * (1.0 + d%qv(i, k, j)) / &
                           (r_d * d%t(i, k, j) * (1.0 + d%qv(i, k, j) * (r_v / r_d)))
          d%dz8w(i, k, j) = (b(i, j, k + 1) - b(i, j, k)) / g
        end do
      end do
    end do
    call read2('HFX', frame, d%hfx, d)
    call read2('UST', frame, d%ust, d)
    call read2('PBLH', frame, d%pblh, d)
    call read2('XLAND', frame, d%xland, d)
  end subroutine load_state

  !> A 3-D variable of one frame into the mass columns of a (i, k, j) array; W (full levels)
  !> fills k = 1..nz+1.
  subroutine read3(name, frame, dest, d)
    character(len=*), intent(in) :: name
    integer, intent(in) :: frame
    type(domain), intent(in) :: d
    real, intent(inout) :: dest(d%ims:, d%kms:, d%jms:)
    real, allocatable :: a(:, :, :)
    integer :: k
    call read_var(name, frame, a)
    do k = 1, size(a, 3)
      dest(1:nx, k, 1:ny) = a(1:nx, 1:ny, k)
    end do
  end subroutine read3

  subroutine read2(name, frame, dest, d)
    character(len=*), intent(in) :: name
    integer, intent(in) :: frame
    type(domain), intent(in) :: d
    real, intent(inout) :: dest(d%ims:, d%jms:)
    real, allocatable :: a(:, :, :)
    call read_var(name, frame, a)
    dest(1:nx, 1:ny) = a(:, :, 1)
  end subroutine read2

  !> One frame of a variable as stored, Fortran order (west_east, south_north, bottom_top);
  !> 2-D variables come back with a third dimension of 1.
  subroutine read_var(name, frame, a)
    character(len=*), intent(in) :: name
    integer, intent(in) :: frame
    real, allocatable, intent(out) :: a(:, :, :)
    integer :: varid, ndims, dimids(4), n(4), i
    call nc(nf90_inq_varid(ncid, name, varid), 'variable ' // name)
    call nc(nf90_inquire_variable(ncid, varid, ndims=ndims, dimids=dimids), name)
    n = 1
    do i = 1, ndims - 1
      call nc(nf90_inquire_dimension(ncid, dimids(i), len=n(i)), name)
    end do
    allocate (a(n(1), n(2), n(3)))
    if (ndims == 4) then
      call nc(nf90_get_var(ncid, varid, a, start=[1, 1, 1, frame], count=[n(1), n(2), n(3), 1]), name)
    else
      call nc(nf90_get_var(ncid, varid, a(:, :, 1), start=[1, 1, frame], count=[n(1), n(2), 1]), name)
    end if
  end subroutine read_var

  subroutine get_dim(name, length)
    character(len=*), intent(in) :: name
    integer, intent(out) :: length
    integer :: dimid
    call nc(nf90_inq_dimid(ncid, name, dimid), 'dimension ' // name)
    call nc(nf90_inquire_dimension(ncid, dimid, len=length), name)
  end subroutine get_dim

  subroutine nc(status, what)
    integer, intent(in) :: status
    character(len=*), intent(in) :: what
    if (status /= NF90_NOERR) then
      write (error_unit, '(a)') trim(wrfout) // ': ' // trim(what) // ': ' // trim(nf90_strerror(status))
      error stop 2
    end if
  end subroutine nc

  logical function same_outputs(a, b)
    type(domain), intent(in) :: a, b
    same_outputs = all(a%rthcuten == b%rthcuten) .and. all(a%rqvcuten == b%rqvcuten) .and. &
      all(a%rqccuten == b%rqccuten) .and. all(a%rqrcuten == b%rqrcuten) .and.               &
      all(a%rqicuten == b%rqicuten) .and. all(a%rqscuten == b%rqscuten) .and.               &
      all(a%pratec == b%pratec) .and. all(a%raincv == b%raincv) .and. all(a%nca == b%nca) .and. &
      all(a%cutop == b%cutop) .and. all(a%cubot == b%cubot) .and. all(a%w0avg == b%w0avg) .and. &
      all(a%nca_prev == b%nca_prev) .and. all(a%rthcuten_prev == b%rthcuten_prev) .and.     &
      all(a%cu_act_flag .eqv. b%cu_act_flag)
  end function same_outputs

  logical function outputs_finite(d)
    type(domain), intent(in) :: d
    outputs_finite = all(ieee_is_finite(d%rthcuten)) .and. all(ieee_is_finite(d%rqvcuten)) .and. &
      all(ieee_is_finite(d%pratec)) .and. all(ieee_is_finite(d%nca)) .and. all(ieee_is_finite(d%w0avg))
  end function outputs_finite

  !> Run A for the Python comparison: first-call inputs (the state and the arrays before the
  !> call) and every call's outputs, dims as in wrfout (x fastest).
  subroutine write_output()
    integer :: dx, dy, dz, dw, dc, n
    call nc(nf90_create(trim(output), NF90_CLOBBER, out), output)
    call nc(nf90_def_dim(out, 'west_east', nx, dx), output)
    call nc(nf90_def_dim(out, 'south_north', ny, dy), output)
    call nc(nf90_def_dim(out, 'bottom_top', nz, dz), output)
    call nc(nf90_def_dim(out, 'bottom_top_stag', nz + 1, dw), output)
    call nc(nf90_def_dim(out, 'call', ncalls, dc), output)
    call nc(nf90_put_att(out, NF90_GLOBAL, 'DT', dt), output)
    call nc(nf90_put_att(out, NF90_GLOBAL, 'STEPCU', stepcu), output)
    call nc(nf90_put_att(out, NF90_GLOBAL, 'first_frame', first_frame), output)
    nv = 0
    call def('u', [dx, dz, dy]); call def('v', [dx, dz, dy]); call def('w', [dx, dw, dy])
    call def('th', [dx, dz, dy]); call def('t', [dx, dz, dy]); call def('qv', [dx, dz, dy])
    call def('p', [dx, dz, dy]); call def('pi', [dx, dz, dy]); call def('rho', [dx, dz, dy])
    call def('dz8w', [dx, dz, dy]); call def('w0avg_before', [dx, dz, dy])
    call def('hfx', [dx, dy]); call def('ust', [dx, dy]); call def('pblh', [dx, dy])
    call def('xland', [dx, dy])
    call def('rthcuten_prev', [dx, dz, dy]); call def('rqvcuten_prev', [dx, dz, dy])
    call def('rqccuten_prev', [dx, dz, dy]); call def('rqrcuten_prev', [dx, dz, dy])
    call def('rqicuten_prev', [dx, dz, dy]); call def('rqscuten_prev', [dx, dz, dy])
    call def('pratec_before', [dx, dy]); call def('nca_before', [dx, dy])
    call def('nca_prev', [dx, dy])
    call def('rthcuten', [dx, dz, dy, dc]); call def('rqvcuten', [dx, dz, dy, dc])
    call def('rqccuten', [dx, dz, dy, dc]); call def('rqrcuten', [dx, dz, dy, dc])
    call def('rqicuten', [dx, dz, dy, dc]); call def('rqscuten', [dx, dz, dy, dc])
    call def('w0avg', [dx, dz, dy, dc])
    call def('pratec', [dx, dy, dc]); call def('raincv', [dx, dy, dc]); call def('nca', [dx, dy, dc])
    call def('cutop', [dx, dy, dc]); call def('cubot', [dx, dy, dc])
    call nc(nf90_enddef(out), output)
    associate (b => first_before)
      call put3('u', b%u, nz); call put3('v', b%v, nz); call put3('w', b%w, nz + 1)
      call put3('th', b%th, nz); call put3('t', b%t, nz); call put3('qv', b%qv, nz)
      call put3('p', b%p, nz); call put3('pi', b%pi, nz); call put3('rho', b%rho, nz)
      call put3('dz8w', b%dz8w, nz); call put3('w0avg_before', b%w0avg, nz)
      call put2('hfx', b%hfx); call put2('ust', b%ust); call put2('pblh', b%pblh)
      call put2('xland', b%xland)
      call put3('rthcuten_prev', b%rthcuten_prev, nz); call put3('rqvcuten_prev', b%rqvcuten_prev, nz)
      call put3('rqccuten_prev', b%rqccuten_prev, nz); call put3('rqrcuten_prev', b%rqrcuten_prev, nz)
      call put3('rqicuten_prev', b%rqicuten_prev, nz); call put3('rqscuten_prev', b%rqscuten_prev, nz)
      call put2('pratec_before', b%pratec); call put2('nca_before', b%nca)
      call put2('nca_prev', b%nca_prev)
    end associate
    do n = 1, ncalls
      call put3('rthcuten', ref(n)%rthcuten, nz, n); call put3('rqvcuten', ref(n)%rqvcuten, nz, n)
      call put3('rqccuten', ref(n)%rqccuten, nz, n); call put3('rqrcuten', ref(n)%rqrcuten, nz, n)
      call put3('rqicuten', ref(n)%rqicuten, nz, n); call put3('rqscuten', ref(n)%rqscuten, nz, n)
      call put3('w0avg', ref(n)%w0avg, nz, n)
      call put2('pratec', ref(n)%pratec, n); call put2('raincv', ref(n)%raincv, n)
      call put2('nca', ref(n)%nca, n); call put2('cutop', ref(n)%cutop, n)
      call put2('cubot', ref(n)%cubot, n)
    end do
    call nc(nf90_close(out), output)
    print '(a)', 'wrote ' // trim(output)
  end subroutine write_output

    subroutine def(name, dims)
      character(len=*), intent(in) :: name
      integer, intent(in) :: dims(:)
      nv = nv + 1
      names(nv) = name
      call nc(nf90_def_var(out, name, NF90_FLOAT, dims, varids(nv)), output)
    end subroutine def

    integer function vid(name)
      character(len=*), intent(in) :: name
      vid = varids(findloc(names(:nv), name, 1))
    end function vid

    subroutine put3(name, a, nk, call_index)
      character(len=*), intent(in) :: name
      real, intent(in) :: a(first_before%ims:, first_before%kms:, first_before%jms:)
      integer, intent(in) :: nk
      integer, intent(in), optional :: call_index
      if (present(call_index)) then
        call nc(nf90_put_var(out, vid(name), a(1:nx, 1:nk, 1:ny), start=[1, 1, 1, call_index], &
                             count=[nx, nk, ny, 1]), name)
      else
        call nc(nf90_put_var(out, vid(name), a(1:nx, 1:nk, 1:ny)), name)
      end if
    end subroutine put3

    subroutine put2(name, a, call_index)
      character(len=*), intent(in) :: name
      real, intent(in) :: a(first_before%ims:, first_before%jms:)
      integer, intent(in), optional :: call_index
      if (present(call_index)) then
        call nc(nf90_put_var(out, vid(name), a(1:nx, 1:ny), start=[1, 1, call_index], &
                             count=[nx, ny, 1]), name)
      else
        call nc(nf90_put_var(out, vid(name), a(1:nx, 1:ny)), name)
      end if
    end subroutine put2

end program wrf_plugin_driver
