!> netCDF files of paramlib_scm (netCDF-Fortran, CF-1.8 attributes).
!>
!> Columns file (input; paramlib.couple writes it), dims col and, for an initial state, lev:
!>   ps, sst, omega0, solin (col) in Pa, K, Pa s-1, W m-2; optional t, q (col, lev) in K and
!>   kg kg-1, levels surface to top (without them the run starts from the model's reset_state).
!> Output (rank 0 writes): dims time (unlimited: one record every output_every steps), col,
!> lev, step. Record variables are the state at the end of the interval (t, q, pw), means over
!> it (tendencies, precipitation, diagnostics of the column interface, fallback) or the largest
!> magnitude over it (budget residuals); cell_methods says which.
module scm_io
  use, intrinsic :: iso_fortran_env, only: int64
  use netcdf
  use physical_constants, only: wp
  use scm_record, only: output_record
  use scm_config, only: scm_settings
  use paramlib_column_physics, only: FALLBACK_OOD, FALLBACK_SPREAD, FALLBACK_BAD_INPUT, &
                                     FALLBACK_NO_MODEL, FALLBACK_RUNTIME, FALLBACK_NONFINITE, &
                                     FIX_TOP, FIX_PRECIP, FIX_WATER, CP_PHYSICS, CP_ML, CP_HYBRID, &
                                     CP_STOCHASTIC, PATH_PHYSICS, PATH_ML, PATH_MEMBER
  implicit none
  private
  public :: column_count, read_columns, scm_output

  integer, parameter :: LEVELS = 1, COLUMNS = 2   ! record variable shapes

  type :: scm_output
    integer :: ncid = -1, nrec = 0
    integer :: dim_time, dim_col, dim_lev, dim_step
    integer :: v_time, v_fallback_fraction, v_fallback_step, v_nonfinite_step
    integer :: v_t, v_q, v_dtdt, v_dqdt, v_pw, v_precip, v_precip_ls, v_spread, v_ood, &
               v_ood_score, v_ood_score_max, v_fallback, v_precip_change, v_water_moved, v_top_removed, &
               v_energy_conv, v_water_conv, v_energy_res, v_water_res, v_path, v_reason, v_fixes
    logical :: failed = .false.
    character(len=512) :: message = ''
  contains
    procedure :: create
    procedure :: write_record
    procedure :: write_steps
    procedure :: close => output_close
    procedure, private :: check, def, text
  end type scm_output

contains

  !> Number of columns (dim col) in the columns file.
  subroutine column_count(path, ncol, status, message)
    character(len=*), intent(in) :: path
    integer, intent(out) :: ncol, status
    character(len=*), intent(inout) :: message
    integer :: ncid, dimid
    ncol = 0
    status = nf90_open(path, nf90_nowrite, ncid)
    if (status == nf90_noerr) then
      status = nf90_inq_dimid(ncid, 'col', dimid)
      if (status == nf90_noerr) status = nf90_inquire_dimension(ncid, dimid, len=ncol)
      if (nf90_close(ncid) /= nf90_noerr) continue
    end if
    if (status /= nf90_noerr) message = trim(path) // ': dimension col: ' // &
                                        trim(nf90_strerror(status))
  end subroutine column_count

  !> Columns i0..i1 of the columns file; has_state when it holds t and q (then t, q are set).
  subroutine read_columns(path, i0, i1, nlev, ps, sst, omega0, solin, t, q, has_state, &
                          status, message)
    character(len=*), intent(in) :: path
    integer, intent(in) :: i0, i1, nlev
    real(wp), intent(out) :: ps(:), sst(:), omega0(:), solin(:), t(:, :), q(:, :)
    logical, intent(out) :: has_state
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    integer :: ncid, varid, dimid, nlev_file
    character(len=16) :: what
    has_state = .false.
    what = 'open'
    status = nf90_open(path, nf90_nowrite, ncid)
    if (status /= nf90_noerr) then
      message = trim(path) // ': ' // trim(nf90_strerror(status))
      return
    end if
    call column_field('ps', ps)
    call column_field('sst', sst)
    call column_field('omega0', omega0)
    call column_field('solin', solin)
    if (status == nf90_noerr) has_state = nf90_inq_varid(ncid, 't', varid) == nf90_noerr
    if (has_state) then
      what = 'lev'
      status = nf90_inq_dimid(ncid, 'lev', dimid)
      if (status == nf90_noerr) status = nf90_inquire_dimension(ncid, dimid, len=nlev_file)
      if (status == nf90_noerr .and. nlev_file /= nlev) then
        status = nf90_ebadDim
        write (message, '(a,i0,a,i0)') trim(path) // ': t and q have ', nlev_file, &
          ' levels, the run ', nlev
      end if
      call level_field('t', t)
      call level_field('q', q)
      has_state = status == nf90_noerr
    end if
    if (nf90_close(ncid) /= nf90_noerr) continue
    if (status /= nf90_noerr .and. len_trim(message) == 0) then
      message = trim(path) // ': ' // trim(what) // ': ' // trim(nf90_strerror(status))
    end if

  contains

    subroutine column_field(name, a)
      character(len=*), intent(in) :: name
      real(wp), intent(out) :: a(:)
      a = 0.0_wp
      if (status /= nf90_noerr) return
      what = name
      status = nf90_inq_varid(ncid, name, varid)
      if (status == nf90_noerr) status = nf90_get_var(ncid, varid, a, start=[i0], &
                                                      count=[i1 - i0 + 1])
    end subroutine column_field

    subroutine level_field(name, a)
      character(len=*), intent(in) :: name
      real(wp), intent(out) :: a(:, :)
      a = 0.0_wp
      if (status /= nf90_noerr) return
      what = name
      status = nf90_inq_varid(ncid, name, varid)
      if (status == nf90_noerr) status = nf90_get_var(ncid, varid, a, start=[1, i0], &
                                                      count=[nlev, i1 - i0 + 1])
    end subroutine level_field

  end subroutine read_columns

  !> Create the output file with its coordinates, the columns' fixed fields and every
  !> variable's attributes.
  subroutine create(self, s, nranks, ncol, sigma, p, dp, ps, sst, omega0, solin, status, message)
    class(scm_output), intent(inout) :: self
    type(scm_settings), intent(in) :: s
    integer, intent(in) :: nranks, ncol
    real(wp), intent(in) :: sigma(:), p(:, :), dp(:, :), ps(:), sst(:), omega0(:), solin(:)
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    integer :: v_col, v_lev, v_ptop, v_p, v_dp, v_ps, v_sst, v_omega0, v_solin, v_mode, v_step, i
    integer :: dims_lev(3), dims_col(2)
    real(wp) :: dt

    dt = 0.0_wp
    do i = 1, s%n_parameters
      if (s%parameter_names(i) == 'dt') dt = s%parameter_values(i)
    end do
    if (.not. folder_exists(s%output_file)) then   ! netCDF would say "Permission denied"
      status = 1
      message = '&scm_run: output_file ' // trim(s%output_file) // ': its folder does not ' // &
                'exist; create it first'
      return
    end if
    call self%check(nf90_create(s%output_file, ior(nf90_netcdf4, nf90_clobber), self%ncid), &
                    'create')
    if (self%failed) then
      status = 1
      message = self%message
      return
    end if
    call self%check(nf90_def_dim(self%ncid, 'time', nf90_unlimited, self%dim_time), 'time')
    call self%check(nf90_def_dim(self%ncid, 'col', ncol, self%dim_col), 'col')
    call self%check(nf90_def_dim(self%ncid, 'lev', size(sigma), self%dim_lev), 'lev')
    call self%check(nf90_def_dim(self%ncid, 'step', s%nsteps, self%dim_step), 'step')
    dims_lev = [self%dim_lev, self%dim_col, self%dim_time]
    dims_col = [self%dim_col, self%dim_time]

    self%v_time = self%def('time', nf90_double, [self%dim_time], 'seconds since 2000-01-01 00:00:00', &
                           'time at the end of the output interval', 'time')
    call self%text(self%v_time, 'calendar', 'standard')
    v_col = self%def('col', nf90_int, [self%dim_col], '1', 'global column number')
    v_lev = self%def('lev', nf90_double, [self%dim_lev], '1', 'sigma at full levels (p / ps)', &
                     'atmosphere_sigma_coordinate')
    call self%text(v_lev, 'positive', 'down')
    call self%text(v_lev, 'formula_terms', 'sigma: lev ps: ps ptop: ptop')
    v_ptop = self%def('ptop', nf90_double, [integer ::], 'Pa', 'pressure at the model top of the sigma formula')
    v_p = self%def('p', nf90_double, [self%dim_lev, self%dim_col], 'Pa', 'full-level pressure', &
                   'air_pressure')
    v_dp = self%def('dp', nf90_double, [self%dim_lev, self%dim_col], 'Pa', &
                    'layer thickness in pressure (column mass per area times g)')
    v_ps = self%def('ps', nf90_double, [self%dim_col], 'Pa', 'surface pressure', 'surface_air_pressure')
    v_sst = self%def('sst', nf90_double, [self%dim_col], 'K', 'sea surface temperature (with sst_shift)', &
                     'sea_surface_temperature')
    v_omega0 = self%def('omega0', nf90_double, [self%dim_col], 'Pa s-1', &
                        'amplitude of the prescribed vertical pressure velocity (< 0: ascent)')
    v_solin = self%def('solin', nf90_double, [self%dim_col], 'W m-2', &
                       'daily-mean insolation at the top of the atmosphere', &
                       'toa_incoming_shortwave_flux')
    v_mode = self%def('mode', nf90_int, [integer ::], '1', 'convection of the run')
    call self%check(nf90_put_att(self%ncid, v_mode, 'flag_values', [CP_PHYSICS, CP_ML, &
                                                                    CP_HYBRID, CP_STOCHASTIC]), 'mode')
    call self%text(v_mode, 'flag_meanings', 'physics ml hybrid stochastic')
    v_step = self%def('step', nf90_int, [self%dim_step], '1', 'model step number')
    self%v_fallback_step = self%def('fallback_fraction_step', nf90_double, [self%dim_step], '1', &
      'fraction of all columns that ran physics in an ML mode, per step')
    self%v_nonfinite_step = self%def('nonfinite_step', nf90_int, [self%dim_step], '1', &
      'columns whose model outputs held NaN/Inf (physics ran there), per step')
    self%v_fallback_fraction = self%def('fallback_fraction', nf90_double, [self%dim_time], '1', &
      'fraction of column steps that ran physics in an ML mode', cell='time: mean')

    self%v_t = self%def('t', nf90_double, dims_lev, 'K', 'air temperature', 'air_temperature', &
                        'time: point')
    self%v_q = self%def('q', nf90_double, dims_lev, 'kg kg-1', 'specific humidity', &
                        'specific_humidity', 'time: point')
    self%v_pw = self%def('pw', nf90_double, dims_col, 'kg m-2', 'precipitable water', &
                         'atmosphere_mass_content_of_water_vapor', 'time: point')
    self%v_dtdt = self%def('dtdt_conv', nf90_float, dims_lev, 'K s-1', &
      'temperature tendency of convection', 'tendency_of_air_temperature_due_to_convection', &
      'time: mean')
    self%v_dqdt = self%def('dqdt_conv', nf90_float, dims_lev, 'kg kg-1 s-1', &
      'specific humidity tendency of convection', &
      'tendency_of_specific_humidity_due_to_convection', 'time: mean')
    self%v_precip = self%def('precip', nf90_double, dims_col, 'kg m-2 s-1', &
      'convective precipitation', 'convective_precipitation_flux', 'time: mean')
    self%v_precip_ls = self%def('precip_ls', nf90_double, dims_col, 'kg m-2 s-1', &
      'large-scale precipitation', 'large_scale_precipitation_flux', 'time: mean')
    self%v_spread = self%def('spread', nf90_float, dims_col, 'W m-2', &
      'ensemble spread: (cp int sd(dT/dt) dp + L int sd(dq/dt) dp) / g', cell='time: mean')
    self%v_ood = self%def('n_ood', nf90_float, dims_col, '1', &
      'model inputs outside the training range, per step', cell='time: mean')
    self%v_ood_score = self%def('ood_score', nf90_float, dims_col, '1', &
      'the model''s out-of-distribution score (hybrid: physics above 1); 0 without one', &
      cell='time: mean')
    self%v_ood_score_max = self%def('ood_score_max', nf90_float, dims_col, '1', &
      'largest out-of-distribution score of the interval (NaN counts as huge)', &
      cell='time: maximum')
    self%v_fallback = self%def('fallback', nf90_float, dims_col, '1', &
      'fraction of steps the column ran physics in an ML mode', cell='time: mean')
    self%v_precip_change = self%def('precip_change', nf90_float, dims_col, 'kg m-2 s-1', &
      'precipitation constraint: constrained minus raw precipitation', cell='time: mean')
    self%v_water_moved = self%def('water_moved', nf90_float, dims_col, 'kg m-2 s-1', &
      'water constraint: water filled into negative humidity', cell='time: mean')
    self%v_top_removed = self%def('top_removed', nf90_float, dims_col, 'W m-2', &
      'top constraint: moist enthalpy tendency zeroed above p_zero_above', cell='time: mean')
    self%v_energy_conv = self%def('energy_convection', nf90_double, dims_col, 'W m-2', &
      'column moist enthalpy source of convection (0: enthalpy conserved)', cell='time: mean')
    self%v_water_conv = self%def('water_convection', nf90_double, dims_col, 'kg m-2 s-1', &
      'column water source of convection, int dq/dt dp / g + P (0: P is the water removed)', &
      cell='time: mean')
    self%v_energy_res = self%def('energy_residual', nf90_double, dims_col, 'W m-2', &
      'column energy budget residual of the step', cell='time: maximum_absolute_value')
    self%v_water_res = self%def('water_residual', nf90_double, dims_col, 'kg m-2 s-1', &
      'column water budget residual of the step', cell='time: maximum_absolute_value')
    self%v_path = self%def('path', nf90_int, dims_col, '1', 'path of the last step', &
                           cell='time: point')
    call self%check(nf90_put_att(self%ncid, self%v_path, 'flag_values', [PATH_PHYSICS, PATH_ML, &
                                                                         PATH_MEMBER]), 'path')
    call self%text(self%v_path, 'flag_meanings', 'physics ml_mean ml_member')
    self%v_reason = self%def('fallback_reason', nf90_int, dims_col, '1', &
                             'why physics ran in an ML mode (bits seen in the interval)')
    call self%check(nf90_put_att(self%ncid, self%v_reason, 'flag_masks', [FALLBACK_OOD, &
      FALLBACK_SPREAD, FALLBACK_BAD_INPUT, FALLBACK_NO_MODEL, FALLBACK_RUNTIME, &
      FALLBACK_NONFINITE]), 'reason')
    call self%text(self%v_reason, 'flag_meanings', &
                   'out_of_range large_spread bad_input no_model model_failed nonfinite_output')
    self%v_fixes = self%def('fixes', nf90_int, dims_col, '1', &
                            'constraints that changed the column (bits seen in the interval)')
    call self%check(nf90_put_att(self%ncid, self%v_fixes, 'flag_masks', [FIX_TOP, FIX_PRECIP, &
                                                                        FIX_WATER]), 'fixes')
    call self%text(self%v_fixes, 'flag_meanings', 'zeroed_aloft precipitation water')

    call self%text(nf90_global, 'Conventions', 'CF-1.8')
    call self%text(nf90_global, 'title', 'paramlib_scm column host model run')
    call self%text(nf90_global, 'source', 'paramlib_scm (fortran_bridge/host), the testbed '// &
                   'column model with its convection slot on paramlib_column_physics')
    call self%text(nf90_global, 'mode', trim(s%mode_name))
    call self%text(nf90_global, 'model_path', trim(s%coupling%model_path))
    call self%text(nf90_global, 'columns_file', trim(s%columns_file))
    call self%text(nf90_global, 'device', trim(s%device))
    call self%text(nf90_global, 'run_status', 'running')
    call put_real('sst_shift', s%sst_shift)
    call put_real('dt', dt)
    call put_real('spread_max', s%coupling%spread_max)
    call put_real('ood_margin', s%coupling%ood_margin)
    call put_real('bm_tau', s%coupling%bm_tau)
    call put_real('bm_rh', s%coupling%bm_rh)
    call put_real('p_zero_above', s%coupling%p_zero_above)
    call put_int('seed', int(s%coupling%seed))
    call put_int('ranks', nranks)
    call put_int('chunk_size', s%chunk_size)
    call put_int('output_every', s%output_every)
    call put_int('wtg', merge(1, 0, s%wtg))
    call put_int('fix_water', merge(1, 0, s%coupling%fix_water))
    call put_int('fix_precip', merge(1, 0, s%coupling%fix_precip))
    call self%check(nf90_enddef(self%ncid), 'enddef')

    call self%check(nf90_put_var(self%ncid, v_col, [(i, i = 1, ncol)]), 'col')
    call self%check(nf90_put_var(self%ncid, v_lev, sigma), 'lev')
    call self%check(nf90_put_var(self%ncid, v_ptop, 0.0_wp), 'ptop')
    call self%check(nf90_put_var(self%ncid, v_p, p), 'p')
    call self%check(nf90_put_var(self%ncid, v_dp, dp), 'dp')
    call self%check(nf90_put_var(self%ncid, v_ps, ps), 'ps')
    call self%check(nf90_put_var(self%ncid, v_sst, sst), 'sst')
    call self%check(nf90_put_var(self%ncid, v_omega0, omega0), 'omega0')
    call self%check(nf90_put_var(self%ncid, v_solin, solin), 'solin')
    call self%check(nf90_put_var(self%ncid, v_mode, s%coupling%mode), 'mode')
    call self%check(nf90_put_var(self%ncid, v_step, [(i, i = 1, s%nsteps)]), 'step')
    status = merge(1, 0, self%failed)
    if (self%failed) message = self%message

  contains

    subroutine put_real(name, value)
      character(len=*), intent(in) :: name
      real(wp), intent(in) :: value
      call self%check(nf90_put_att(self%ncid, nf90_global, name, value), name)
    end subroutine put_real

    subroutine put_int(name, value)
      character(len=*), intent(in) :: name
      integer, intent(in) :: value
      call self%check(nf90_put_att(self%ncid, nf90_global, name, value), name)
    end subroutine put_int

  end subroutine create

  !> A variable with its CF attributes; 0 once the file has failed.
  integer function def(self, name, xtype, dims, units, long_name, standard_name, cell) result(varid)
    class(scm_output), intent(inout) :: self
    character(len=*), intent(in) :: name, units, long_name
    integer, intent(in) :: xtype, dims(:)
    character(len=*), intent(in), optional :: standard_name, cell
    varid = 0
    call self%check(nf90_def_var(self%ncid, name, xtype, dims, varid), name)
    if (size(dims) > 1) call self%check(nf90_def_var_deflate(self%ncid, varid, 1, 1, 1), name)
    call self%text(varid, 'units', units)
    call self%text(varid, 'long_name', long_name)
    if (present(standard_name)) call self%text(varid, 'standard_name', standard_name)
    if (present(cell)) call self%text(varid, 'cell_methods', cell)
  end function def

  subroutine text(self, varid, name, value)
    class(scm_output), intent(inout) :: self
    integer, intent(in) :: varid
    character(len=*), intent(in) :: name, value
    call self%check(nf90_put_att(self%ncid, varid, name, value), name)
  end subroutine text

  subroutine check(self, code, what)
    class(scm_output), intent(inout) :: self
    integer, intent(in) :: code
    character(len=*), intent(in) :: what
    if (code == nf90_noerr .or. self%failed) return
    self%failed = .true.
    self%message = 'netCDF output: ' // what // ': ' // trim(nf90_strerror(code))
  end subroutine check

  !> Record number nrec + 1: rec (global columns) at time_s seconds since the start.
  subroutine write_record(self, rec, time_s, fallback_fraction, status, message)
    class(scm_output), intent(inout) :: self
    type(output_record), intent(in) :: rec
    real(wp), intent(in) :: time_s, fallback_fraction
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    integer :: n
    n = self%nrec + 1
    call self%check(nf90_put_var(self%ncid, self%v_time, [time_s], start=[n]), 'time')
    call self%check(nf90_put_var(self%ncid, self%v_fallback_fraction, [fallback_fraction], &
                                 start=[n]), 'fallback_fraction')
    call levels(self%v_t, rec%t, 't')
    call levels(self%v_q, rec%q, 'q')
    call levels(self%v_dtdt, rec%dtdt, 'dtdt_conv')
    call levels(self%v_dqdt, rec%dqdt, 'dqdt_conv')
    call columns(self%v_pw, rec%pw, 'pw')
    call columns(self%v_precip, rec%precip, 'precip')
    call columns(self%v_precip_ls, rec%precip_ls, 'precip_ls')
    call columns(self%v_spread, rec%spread, 'spread')
    call columns(self%v_ood, rec%n_ood, 'n_ood')
    call columns(self%v_ood_score, rec%ood_score, 'ood_score')
    call columns(self%v_ood_score_max, rec%ood_score_max, 'ood_score_max')
    call columns(self%v_fallback, rec%fallback, 'fallback')
    call columns(self%v_precip_change, rec%precip_change, 'precip_change')
    call columns(self%v_water_moved, rec%water_moved, 'water_moved')
    call columns(self%v_top_removed, rec%top_removed, 'top_removed')
    call columns(self%v_energy_conv, rec%energy_convection, 'energy_convection')
    call columns(self%v_water_conv, rec%water_convection, 'water_convection')
    call columns(self%v_energy_res, rec%energy_residual, 'energy_residual')
    call columns(self%v_water_res, rec%water_residual, 'water_residual')
    call flags(self%v_path, rec%path, 'path')
    call flags(self%v_reason, rec%reason, 'fallback_reason')
    call flags(self%v_fixes, rec%fixes, 'fixes')
    self%nrec = n
    status = merge(1, 0, self%failed)
    if (self%failed) message = self%message

  contains

    subroutine levels(varid, a, name)
      integer, intent(in) :: varid
      real(wp), intent(in) :: a(:, :)
      character(len=*), intent(in) :: name
      call self%check(nf90_put_var(self%ncid, varid, a, start=[1, 1, n], &
                                   count=[size(a, 1), size(a, 2), 1]), name)
    end subroutine levels

    subroutine columns(varid, a, name)
      integer, intent(in) :: varid
      real(wp), intent(in) :: a(:)
      character(len=*), intent(in) :: name
      call self%check(nf90_put_var(self%ncid, varid, a, start=[1, n], count=[size(a), 1]), name)
    end subroutine columns

    subroutine flags(varid, a, name)
      integer, intent(in) :: varid
      integer, intent(in) :: a(:)
      character(len=*), intent(in) :: name
      call self%check(nf90_put_var(self%ncid, varid, a, start=[1, n], count=[size(a), 1]), name)
    end subroutine flags

  end subroutine write_record

  !> fallback_fraction_step and nonfinite_step for steps first .. first + size(fractions) - 1.
  subroutine write_steps(self, first, fractions, nonfinite)
    class(scm_output), intent(inout) :: self
    integer, intent(in) :: first
    real(wp), intent(in) :: fractions(:)
    integer, intent(in) :: nonfinite(:)
    if (size(fractions) == 0) return
    call self%check(nf90_put_var(self%ncid, self%v_fallback_step, fractions, start=[first], &
                                 count=[size(fractions)]), 'fallback_fraction_step')
    call self%check(nf90_put_var(self%ncid, self%v_nonfinite_step, nonfinite, start=[first], &
                                 count=[size(nonfinite)]), 'nonfinite_step')
  end subroutine write_steps

  !> Whether the folder of path exists (the current folder for a bare file name).
  logical function folder_exists(path)
    character(len=*), intent(in) :: path
    integer :: slash
    slash = index(trim(path), '/', back=.true.)
    folder_exists = .true.
    if (slash > 1) inquire (file=path(:slash - 1) // '/.', exist=folder_exists)
  end function folder_exists

  !> Close, recording how the run ended (run_status: 'completed' or the error).
  subroutine output_close(self, run_status, status, message)
    class(scm_output), intent(inout) :: self
    character(len=*), intent(in) :: run_status
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    if (self%ncid < 0) then
      status = 0
      return
    end if
    call self%check(nf90_redef(self%ncid), 'redef')
    call self%text(nf90_global, 'run_status', run_status)
    call self%check(nf90_enddef(self%ncid), 'enddef')
    call self%check(nf90_close(self%ncid), 'close')
    self%ncid = -1
    status = merge(1, 0, self%failed)
    if (self%failed) message = self%message
  end subroutine output_close

end module scm_io
