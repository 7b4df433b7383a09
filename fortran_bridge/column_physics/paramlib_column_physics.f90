!> paramlib_column_physics: the generic column interface a GCM's column physics calls once per
!> chunk of columns. State (nlev, ncol) and surface fields (ncol) in; convective temperature
!> and humidity tendencies and surface precipitation out; per-column diagnostics out.
!>
!>   type(column_physics) :: conv
!>   type(column_diagnostics) :: diag
!>   call conv%init(config, nlev, status, message)          ! once; refuses a mismatched model
!>   call conv%compute(t, q, p, p_int, ps, dt, dtdt, dqdt, precip, diag, status, message, &
!>                     solin=solin, shflx=shflx, lhflx=lhflx, column_id=ids, step=n)
!>
!> Modes (config%mode, or set_mode between calls):
!>   CP_PHYSICS     simplified Betts-Miller (fortran_bridge/host/betts_miller.f90, the same code
!>                  the testbed's column model runs);
!>   CP_ML          the model file through the bridge (ensemble mean);
!>   CP_HYBRID      the model where the column's ensemble spread is at most spread_max and none
!>                  of its inputs lies outside the training range stored in the model metadata
!>                  (valid_range, widened on each side by ood_margin times its width);
!>                  Betts-Miller elsewhere. A model with the output ood_score (one value per
!>                  column, units 1: `paramlib ood calibrate`, whose score may include the
!>                  spread) replaces both checks: the model where ood_score <= 1, Betts-Miller
!>                  where it is above 1 or NaN (diag%reason FALLBACK_OOD); spread_max and
!>                  ood_margin are then unused;
!>   CP_STOCHASTIC  one ensemble member per column and call, drawn from (seed, column_id, step)
!>                  alone, so a run is reproducible and independent of how columns are split
!>                  into chunks, threads or MPI ranks. Needs a model exported with its members.
!> Columns whose inputs hold NaN/Inf get Betts-Miller in every mode (the bridge zeroes them).
!> Every output a forward gives (mean, drawn members, spread) is screened as well: a column
!> with a NaN/Inf output gets Betts-Miller in hybrid and stochastic modes (FALLBACK_NONFINITE,
!> diag%n_nonfinite, warning CP_WARN_NONFINITE) and fails the call in ml mode
!> (CP_ERR_NONFINITE): a NaN spread never passes as "below spread_max".
!>
!> Constraints, applied to every column's tendencies whatever path made them, each switchable
!> and reported per column (diag%fixes bits and amounts), in this order:
!>   FIX_TOP     tendencies set to zero where p < p_zero_above (0: off);
!>   FIX_PRECIP  net moistening removed (positive dq/dt scaled so that its column integral is 0),
!>               then precip = -sum(dq/dt dp) / g >= 0, replacing the model's own precipitation;
!>   FIX_WATER   q + dt dq/dt >= 0: negative values filled from the column's other levels in
!>               proportion (column_host's fill_negative_humidity), so column water is conserved.
!>
!> Model fields are matched by name, units and level order (the bridge requires units on every
!> field the interface passes or takes; levels surface to top; a model field of n < nlev
!> levels gets the lowest n and gives zero tendencies above). Inputs: t [K], q [kg kg-1], ps [Pa],
!> solin, shflx, lhflx [W m-2], and bm_heating [K s-1], bm_moistening [kg kg-1 s-1], bm_precip
!> [mm s-1] (Betts-Miller on the same state, for HF([BM, x]) models). Outputs: heating [K s-1],
!> moistening [kg kg-1 s-1], optionally precip [mm s-1], the spread outputs <name>_spread of
!> a mean_spread export (an export with members gives the spread through the bridge) and
!> ood_score [1].
!>
!> Nothing here stops the program: every procedure returns a status and a message. Statuses
!> 1..9 are warnings (the call did its work), >= 10 errors. A model that cannot be used (bad
!> path, metadata the interface cannot serve, a SHA-256 that differs from model_sha256) is an
!> error in every mode that uses the model; physics mode warns and runs Betts-Miller. Hybrid
!> runs Betts-Miller alone only where the host allows it (allow_missing_model) and the model
!> file does not exist, and then says so in a warning (CP_WARN_NO_MODEL).
!> A model field on fewer levels than the host's (30 host levels, a model of 26) is fed the
!> lowest levels: init warns (CP_WARN_LEVELS) with the levels each field uses.
!>
!> Threads: an instance holds one model handle and its work arrays; give each OpenMP thread its
!> own with clone (clones share the weights). Copies: the inputs are packed once into a reused
!> float32 array (the bridge then gathers each field, one copy), every output is copied once into
!> a reused work array; nothing is allocated per call once the chunk size is stable.
module paramlib_column_physics
  use, intrinsic :: iso_fortran_env, only: real32, real64, int64
  use, intrinsic :: ieee_arithmetic, only: ieee_is_finite
  use paramlib_bridge, only: paramlib_model, paramlib_last_error, PARAMLIB_OK, &
                             PARAMLIB_WARN_BAD_INPUT, PARAMLIB_WARN_NO_RANGE, PARAMLIB_CPU, &
                             PARAMLIB_SPREAD, PARAMLIB_MEMBER, PARAMLIB_INPUT, PARAMLIB_OUTPUT
  use physical_constants, only: wp, GRAVITY, CP, LV
  use column_fields, only: mass_integral
  use column_host, only: fill_negative_humidity
  use betts_miller, only: bm_column, BM_DEFAULT_TAU, BM_DEFAULT_RH
  implicit none
  private
  public :: column_physics, column_physics_config, column_diagnostics
  public :: mode_from_name, mode_name, stochastic_member

  integer, parameter, public :: CP_PHYSICS = 0, CP_ML = 1, CP_HYBRID = 2, CP_STOCHASTIC = 3
  character(len=*), parameter :: MODE_NAMES(0:3) = [character(len=10) :: &
    'physics', 'ml', 'hybrid', 'stochastic']

  integer, parameter, public :: CP_OK = 0
  integer, parameter, public :: CP_WARN_NO_MODEL = 1   !< physics in every column, model unusable
  integer, parameter, public :: CP_WARN_PARTIAL = 2    !< hybrid: no ood_score, spread or ranges
  integer, parameter, public :: CP_WARN_RUNTIME = 3    !< hybrid: forward failed, physics this call
  integer, parameter, public :: CP_WARN_NONFINITE = 4  !< NaN/Inf outputs: physics in those columns
  integer, parameter, public :: CP_WARN_LEVELS = 5     !< the model covers the lowest levels only
  integer, parameter, public :: CP_ERR_ARGUMENT = 10   !< shapes, sizes, config values
  integer, parameter, public :: CP_ERR_MODEL = 11      !< model file missing or not loadable
  integer, parameter, public :: CP_ERR_METADATA = 12   !< fields, units, levels or ranges unusable
  integer, parameter, public :: CP_ERR_MODE = 13       !< the mode needs what the model lacks
  integer, parameter, public :: CP_ERR_RUNTIME = 14    !< the model failed in forward
  integer, parameter, public :: CP_ERR_NOT_READY = 15  !< compute before a successful init
  integer, parameter, public :: CP_ERR_NONFINITE = 16  !< ml: the model gave NaN/Inf outputs

  !> Which path made a column's tendencies.
  integer, parameter, public :: PATH_PHYSICS = 0, PATH_ML = 1, PATH_MEMBER = 2
  !> Why a column got physics in an ML mode (bits of diag%reason).
  integer, parameter, public :: FALLBACK_OOD = 1, FALLBACK_SPREAD = 2, FALLBACK_BAD_INPUT = 4, &
                                FALLBACK_NO_MODEL = 8, FALLBACK_RUNTIME = 16, &
                                FALLBACK_NONFINITE = 32
  !> Constraints that changed a column (bits of diag%fixes).
  integer, parameter, public :: FIX_TOP = 1, FIX_PRECIP = 2, FIX_WATER = 4

  ! What the interface can give a model: name, units, on levels (else one value per column).
  integer, parameter :: IN_T = 1, IN_Q = 2, IN_PS = 3, IN_SOLIN = 4, IN_SHFLX = 5, IN_LHFLX = 6, &
                        IN_BM_HEATING = 7, IN_BM_MOISTENING = 8, IN_BM_PRECIP = 9, N_IN = 9
  character(len=*), parameter :: INPUT_NAMES(N_IN) = [character(len=13) :: 't', 'q', 'ps', &
    'solin', 'shflx', 'lhflx', 'bm_heating', 'bm_moistening', 'bm_precip']
  character(len=*), parameter :: INPUT_UNITS(N_IN) = [character(len=11) :: 'K', 'kg kg-1', &
    'Pa', 'W m-2', 'W m-2', 'W m-2', 'K s-1', 'kg kg-1 s-1', 'mm s-1']
  logical, parameter :: INPUT_ON_LEVELS(N_IN) = [.true., .true., .false., .false., .false., &
                                                 .false., .true., .true., .false.]
  character(len=*), parameter :: HEATING_UNITS = 'K s-1', MOISTENING_UNITS = 'kg kg-1 s-1'
  ! Precipitation is a mass flux: mm s-1 of liquid water is kg m-2 s-1.
  character(len=*), parameter :: PRECIP_UNITS_ALT = 'kg m-2 s-1'
  ! A precipitation change below this (kg m-2 s-1, 1e-7 mm day-1) is round-off, not a fix.
  real(wp), parameter :: PRECIP_ROUNDOFF = 1.0e-12_wp

  integer, parameter :: SPREAD_NONE = 0, SPREAD_OUTPUTS = 1, SPREAD_ENSEMBLE = 2

  !> How the interface runs; the defaults are a physics-only run.
  type :: column_physics_config
    integer :: mode = CP_PHYSICS
    character(len=1024) :: model_path = ''   !< a value filling all 1024 is refused (truncated)
    character(len=64) :: model_sha256 = ''   !< expected SHA-256 (hex) of the file; '' no check
    logical :: allow_missing_model = .false. !< hybrid: Betts-Miller alone when the file is absent
    integer :: device = PARAMLIB_CPU
    integer :: device_index = 0
    !> hybrid, models without ood_score: W m-2, column spread above which physics runs
    real(wp) :: spread_max = 200.0_wp
    !> hybrid, models without ood_score: fraction of each valid range's width added either side
    real(wp) :: ood_margin = 0.0_wp
    integer(int64) :: seed = 0           !< stochastic mode
    real(wp) :: bm_tau = BM_DEFAULT_TAU  !< s, Betts-Miller relaxation time
    real(wp) :: bm_rh = BM_DEFAULT_RH    !< Betts-Miller reference relative humidity
    logical :: fix_water = .true.
    logical :: fix_precip = .true.
    real(wp) :: p_zero_above = 0.0_wp    !< Pa, tendencies zeroed at lower pressures (0: off)
  end type column_physics_config

  !> Per-column diagnostics of the last compute (arrays of ncol, resized by compute).
  type :: column_diagnostics
    !> W m-2: (cp sum(sd(dT/dt) dp) + L sum(sd(dq/dt) dp)) / g over the ensemble; 0 without one
    real(wp), allocatable :: spread(:)
    integer, allocatable :: n_ood(:)      !< input values outside the (widened) valid range
    real(wp), allocatable :: ood_score(:) !< the model's ood_score (hybrid falls back above 1); 0
    integer, allocatable :: path(:)       !< PATH_PHYSICS, PATH_ML or PATH_MEMBER
    integer, allocatable :: reason(:)     !< FALLBACK_* bits where an ML mode used physics
    integer, allocatable :: member(:)     !< stochastic: the member used (1-based), else 0
    integer, allocatable :: fixes(:)      !< FIX_* bits of the constraints that changed the column
    real(wp), allocatable :: precip_change(:)  !< kg m-2 s-1, constrained minus raw precipitation
    real(wp), allocatable :: water_moved(:)    !< kg m-2 s-1 filled into negative humidity
    real(wp), allocatable :: top_removed(:)    !< W m-2 of cp dT/dt + L dq/dt zeroed aloft
    integer :: n_nonfinite = 0                 !< columns whose model outputs held NaN/Inf
  contains
    procedure :: resize => diagnostics_resize
  end type column_diagnostics

  !> A model input: which field, its levels, its place in the packed input array.
  type :: model_input
    integer :: field = 0, nlev = 0, offset = 0
  end type model_input

  type :: column_physics
    private
    type(column_physics_config) :: config
    logical :: initialised = .false., have_model = .false.
    integer :: nlev = 0
    type(paramlib_model) :: model
    integer :: ensemble_size = 1, spread_source = SPREAD_NONE
    type(model_input), allocatable :: inputs(:)
    integer :: nfeat = 0, nlev_heating = 0, nlev_moistening = 0
    logical :: has_precip = .false., needs_bm = .false., has_ranges = .false.
    logical :: has_ood_score = .false.
    character(len=len(PRECIP_UNITS_ALT)) :: precip_units = ''   !< the model's, of the two allowed
    real(wp), allocatable :: lo(:), hi(:)              !< (nfeat) widened valid range
    ! work arrays, (levels, ncol) or (ncol), kept between calls
    real(real32), allocatable :: x(:, :)
    real(wp), allocatable :: bm_t(:, :), bm_q(:, :), bm_p(:)
    real(wp), allocatable :: ml_t(:, :), ml_q(:, :), ml_p(:), sd_t(:, :), sd_q(:, :)
    real(wp), allocatable :: mem_t(:, :), mem_q(:, :), mem_p(:), dp(:, :)
    logical, allocatable :: bad(:), bm_done(:), nonfinite(:)
    integer(int64) :: calls = 0
    integer(int64) :: ticks_total = 0, ticks_bridge = 0, ticks_physics = 0
  contains
    procedure :: init
    procedure :: clone
    procedure :: free
    procedure :: set_mode
    procedure :: current_mode
    procedure :: compute
    procedure :: timings
    procedure, private :: load_model, run_model, betts_miller_columns, resize_work, drop_work
  end type column_physics

contains

  !> CP_PHYSICS .. CP_STOCHASTIC from 'physics', 'ml', 'hybrid', 'stochastic'; -1 if unknown.
  integer function mode_from_name(name) result(mode)
    character(len=*), intent(in) :: name
    do mode = lbound(MODE_NAMES, 1), ubound(MODE_NAMES, 1)
      if (trim(adjustl(name)) == trim(MODE_NAMES(mode))) return
    end do
    mode = -1
  end function mode_from_name

  function mode_name(mode) result(name)
    integer, intent(in) :: mode
    character(len=:), allocatable :: name
    if (mode >= lbound(MODE_NAMES, 1) .and. mode <= ubound(MODE_NAMES, 1)) then
      name = trim(MODE_NAMES(mode))
    else
      name = 'unknown'
    end if
  end function mode_name

  !> Set up for columns of nlev levels. With a model (config%model_path), the model is loaded
  !> and its fields checked against what the interface serves, at start-up, before any data.
  subroutine init(self, config, nlev, status, message)
    class(column_physics), intent(inout) :: self
    type(column_physics_config), intent(in) :: config
    integer, intent(in) :: nlev
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    character(len=:), allocatable :: levels_note
    integer :: ignored
    logical :: exists

    if (self%have_model) call self%model%free(ignored)
    self%have_model = .false.
    self%initialised = .false.
    call self%drop_work()
    self%calls = 0
    self%config = config
    self%nlev = nlev
    status = CP_ERR_ARGUMENT
    if (config%mode < CP_PHYSICS .or. config%mode > CP_STOCHASTIC) then
      write (message, '(a,i0)') 'column physics: unknown mode ', config%mode
    else if (nlev < 2) then
      write (message, '(a,i0)') 'column physics: nlev must be at least 2, got ', nlev
    else if (.not. (config%bm_tau > 0.0_wp .and. config%bm_tau < huge(1.0_wp))) then
      message = 'column physics: bm_tau must be a positive number of seconds'
    else if (.not. (config%bm_rh > 0.0_wp .and. config%bm_rh <= 1.0_wp)) then
      message = 'column physics: bm_rh must lie in (0, 1]'
    else if (.not. (config%spread_max >= 0.0_wp)) then
      message = 'column physics: spread_max must be >= 0 (W m-2)'
    else if (.not. (config%ood_margin >= 0.0_wp)) then
      message = 'column physics: ood_margin must be >= 0'
    else if (.not. (config%p_zero_above >= 0.0_wp)) then
      message = 'column physics: p_zero_above must be >= 0 (Pa; 0 turns it off)'
    else if (len_trim(config%model_path) == len(config%model_path)) then
      ! A longer path was cut to the buffer when it was assigned: never load another file.
      write (message, '(a,i0,a)') 'column physics: model_path fills all ', &
        len(config%model_path), ' characters of its buffer, so it may be cut short: use a ' // &
        'shorter path (a symbolic link, say)'
    else
      status = CP_OK
    end if
    if (status /= CP_OK) return
    self%initialised = .true.
    if (config%mode == CP_PHYSICS .and. len_trim(config%model_path) == 0) return

    call self%load_model(status, message, levels_note)
    if (status /= CP_OK) message = 'column physics: ' // message
    if (status == CP_OK) call self%set_mode(config%mode, status, message)
    if (status == CP_OK .and. config%mode == CP_HYBRID .and. .not. self%has_ood_score) then
      if (self%spread_source == SPREAD_NONE .or. .not. self%has_ranges) then
        status = CP_WARN_PARTIAL
        message = 'column physics: hybrid ' // trim(config%model_path) // ': the model has no ' &
                  // trim(merge('spread     ', 'valid_range', self%spread_source == SPREAD_NONE)) &
                  // ', that check is off'
      end if
    end if
    if (status < CP_ERR_ARGUMENT .and. len(levels_note) > 0) then
      if (status == CP_OK) then
        status = CP_WARN_LEVELS
        message = 'column physics: ' // levels_note
      else
        message = trim(message) // '; ' // levels_note
      end if
    end if
    if (status < CP_ERR_ARGUMENT) return
    if (self%have_model) call self%model%free(ignored)
    self%have_model = .false.
    inquire (file=trim(config%model_path), exist=exists)
    if (config%mode == CP_PHYSICS .or. &
        (config%mode == CP_HYBRID .and. config%allow_missing_model .and. .not. exists)) then
      ! Physics was asked for, or allowed for a missing model: physics everywhere, said loudly.
      status = CP_WARN_NO_MODEL
      message = 'column physics: PHYSICS ONLY: ' // mode_name(config%mode) // &
                ' runs Betts-Miller in every column, the model is not used: ' // &
                trim(message(len('column physics: ') + 1:))
    else
      self%initialised = .false.
      if (config%mode == CP_HYBRID .and. .not. exists) message = trim(message) // &
        ' (allow_missing_model = .true. runs Betts-Miller alone when the model file is missing)'
    end if
  end subroutine init

  !> Load config%model_path and check its fields; status CP_ERR_MODEL or CP_ERR_METADATA.
  !> levels_note: '' when the model's fields reach the host's top level, else which of the
  !> host's levels each field uses.
  subroutine load_model(self, status, message, levels_note)
    class(column_physics), intent(inout) :: self
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    character(len=:), allocatable, intent(out) :: levels_note
    character(len=:), allocatable :: name, units, path, used, matched_units
    real(real64), allocatable :: lo(:), hi(:)
    integer :: n_in, n_out, i, nl, field, st, widest
    logical :: has_heating_spread, has_moistening_spread

    levels_note = ''
    used = ''
    widest = 0
    path = trim(self%config%model_path)
    status = CP_ERR_MODEL
    if (len(path) == 0) then
      message = 'no model_path given for mode ' // mode_name(self%config%mode)
      return
    end if
    call self%model%load(path, st, device=self%config%device, &
                         device_index=self%config%device_index, sha256=self%config%model_sha256)
    if (st /= PARAMLIB_OK) then
      message = path // ': ' // paramlib_last_error()
      return
    end if
    self%have_model = .true.
    status = CP_ERR_METADATA
    call self%model%require_units(.true., st)   ! clones inherit it
    if (st == PARAMLIB_OK) call self%model%info(n_in, n_out, self%ensemble_size, st)
    if (st /= PARAMLIB_OK) then
      message = path // ': ' // paramlib_last_error()
      return
    end if

    if (allocated(self%inputs)) deallocate (self%inputs)
    allocate (self%inputs(n_in))
    self%nfeat = 0
    self%needs_bm = .false.
    do i = 1, n_in
      call self%model%field_info(PARAMLIB_INPUT, i, name, units, nl, st)
      field = name_index(name)
      if (field == 0) then
        message = path // ': model input "' // name // '" is not a field the column ' // &
                  'interface provides (t, q, ps, solin, shflx, lhflx, bm_heating, ' // &
                  'bm_moistening, bm_precip)'
        return
      end if
      if (.not. field_fits(PARAMLIB_INPUT, name, nl, INPUT_UNITS(field), &
                           INPUT_ON_LEVELS(field))) return
      if (INPUT_ON_LEVELS(field)) call note_levels(name, nl)
      self%inputs(i) = model_input(field, nl, self%nfeat)
      self%nfeat = self%nfeat + nl
      self%needs_bm = self%needs_bm .or. field >= IN_BM_HEATING
    end do

    self%nlev_heating = 0
    self%nlev_moistening = 0
    self%has_precip = .false.
    self%has_ood_score = .false.
    has_heating_spread = .false.
    has_moistening_spread = .false.
    do i = 1, n_out
      call self%model%field_info(PARAMLIB_OUTPUT, i, name, units, nl, st)
      select case (name)
      case ('heating')
        if (.not. field_fits(PARAMLIB_OUTPUT, name, nl, HEATING_UNITS, .true.)) return
        call note_levels(name, nl)
        self%nlev_heating = nl
      case ('moistening')
        if (.not. field_fits(PARAMLIB_OUTPUT, name, nl, MOISTENING_UNITS, .true.)) return
        call note_levels(name, nl)
        self%nlev_moistening = nl
      case ('precip')
        if (.not. field_fits(PARAMLIB_OUTPUT, name, nl, 'mm s-1', .false.)) return
        self%has_precip = .true.
        self%precip_units = matched_units
      case ('heating_spread')
        if (.not. field_fits(PARAMLIB_OUTPUT, name, nl, HEATING_UNITS, .true.)) return
        has_heating_spread = .true.
      case ('moistening_spread')
        if (.not. field_fits(PARAMLIB_OUTPUT, name, nl, MOISTENING_UNITS, .true.)) return
        has_moistening_spread = .true.
      case ('ood_score')
        if (.not. field_fits(PARAMLIB_OUTPUT, name, nl, '1', .false.)) return
        self%has_ood_score = .true.
      case default
        continue  ! an output the column physics does not use
      end select
    end do
    if (self%nlev_heating == 0 .or. self%nlev_moistening == 0) then
      message = path // ': the model must output "heating" (K s-1) and "moistening" ' // &
                '(kg kg-1 s-1) on levels'
      return
    end if
    if (has_heating_spread .and. has_moistening_spread) then
      self%spread_source = SPREAD_OUTPUTS
    else if (self%ensemble_size > 1) then
      self%spread_source = SPREAD_ENSEMBLE
    else
      self%spread_source = SPREAD_NONE
    end if

    ! The one pinned handle serves the ranges too: no second load of the file.
    if (allocated(self%lo)) deallocate (self%lo, self%hi)
    allocate (self%lo(self%nfeat), self%hi(self%nfeat))
    self%lo = -huge(1.0_wp)
    self%hi = huge(1.0_wp)
    self%has_ranges = .false.
    do i = 1, n_in
      call self%model%valid_range(trim(INPUT_NAMES(self%inputs(i)%field)), lo, hi, st)
      if (st == PARAMLIB_WARN_NO_RANGE) cycle
      if (st /= PARAMLIB_OK) then
        message = path // ': ' // paramlib_last_error()
        return
      end if
      self%has_ranges = .true.
      associate (off => self%inputs(i)%offset)
        self%lo(off + 1:off + size(lo)) = lo - self%config%ood_margin * (hi - lo)
        self%hi(off + 1:off + size(lo)) = hi + self%config%ood_margin * (hi - lo)
      end associate
    end do
    if (widest < self%nlev) levels_note = path // ': the model covers the lowest ' // &
      itoa(widest) // ' of the host''s ' // itoa(self%nlev) // ' levels (host levels used: ' &
      // used // '); tendencies above level ' // itoa(widest) // ' are zero'
    status = CP_OK

  contains

    !> Record that field name takes host levels 1..nl (surface up).
    subroutine note_levels(name, nl)
      character(len=*), intent(in) :: name
      integer, intent(in) :: nl
      if (len(used) > 0) used = used // ', '
      used = used // name // ' 1-' // itoa(nl)
      widest = max(widest, nl)
    end subroutine note_levels

    !> The field's levels (surface fields: 1; level fields: 1..nlev, surface to top) and units
    !> (into matched_units); precipitation may be in mm s-1 or kg m-2 s-1. Sets message on
    !> failure.
    logical function field_fits(kind, name, nl, expected, on_levels) result(ok)
      integer, intent(in) :: kind, nl
      character(len=*), intent(in) :: name, expected
      logical, intent(in) :: on_levels
      character(len=:), allocatable :: order
      integer :: st
      ok = .false.
      order = trim(merge('surface_to_top', '              ', on_levels))
      if ((on_levels .and. (nl < 1 .or. nl > self%nlev)) .or. (.not. on_levels .and. nl /= 1)) then
        write (message, '(a,i0,a,i0,a)') path // ': model field "' // name // '" has ', nl, &
          ' levels; the host has ', self%nlev, merge(' levels      ', ' (need 1)    ', on_levels)
        return
      end if
      matched_units = expected
      call self%model%check_field(kind, name, nl, st, units=expected, level_order=order)
      if (st /= PARAMLIB_OK .and. expected == 'mm s-1') then
        matched_units = PRECIP_UNITS_ALT
        call self%model%check_field(kind, name, nl, st, units=PRECIP_UNITS_ALT, level_order=order)
      end if
      if (st /= PARAMLIB_OK) then
        message = path // ': ' // paramlib_last_error() // ' (the column interface serves "' &
                  // name // '" in ' // expected // ')'
        return
      end if
      ok = .true.
    end function field_fits

  end subroutine load_model

  pure function itoa(n) result(text)
    integer, intent(in) :: n
    character(len=:), allocatable :: text
    character(len=12) :: buffer
    write (buffer, '(i0)') n
    text = trim(buffer)
  end function itoa

  !> Index of name in INPUT_NAMES, 0 if absent.
  integer function name_index(name)
    character(len=*), intent(in) :: name
    do name_index = 1, N_IN
      if (name == trim(INPUT_NAMES(name_index))) return
    end do
    name_index = 0
  end function name_index

  !> Switch mode between calls; ml and stochastic need a loaded model, stochastic one with
  !> members (exported with --output members).
  subroutine set_mode(self, mode, status, message)
    class(column_physics), intent(inout) :: self
    integer, intent(in) :: mode
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    status = CP_ERR_MODE
    if (mode < CP_PHYSICS .or. mode > CP_STOCHASTIC) then
      write (message, '(a,i0)') 'column physics: unknown mode ', mode
    else if ((mode == CP_ML .or. mode == CP_STOCHASTIC) .and. .not. self%have_model) then
      message = 'column physics: mode ' // mode_name(mode) // ' needs a model, none is loaded'
    else if (mode == CP_STOCHASTIC .and. self%ensemble_size < 2) then
      message = 'column physics: stochastic mode needs a model file with its ensemble ' // &
                'members (paramlib export RUN --output members); ' // &
                trim(self%config%model_path) // ' has one'
    else
      self%config%mode = mode
      status = CP_OK
    end if
  end subroutine set_mode

  integer function current_mode(self)
    class(column_physics), intent(in) :: self
    current_mode = self%config%mode
  end function current_mode

  !> A second instance for another thread: same configuration, its own model handle on the
  !> same weights, its own work arrays and timers.
  subroutine clone(self, copy, status, message)
    class(column_physics), intent(in) :: self
    type(column_physics), intent(out) :: copy
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    copy%config = self%config
    copy%initialised = self%initialised
    copy%nlev = self%nlev
    copy%ensemble_size = self%ensemble_size
    copy%spread_source = self%spread_source
    copy%nfeat = self%nfeat
    copy%nlev_heating = self%nlev_heating
    copy%nlev_moistening = self%nlev_moistening
    copy%has_precip = self%has_precip
    copy%needs_bm = self%needs_bm
    copy%has_ranges = self%has_ranges
    copy%precip_units = self%precip_units
    if (allocated(self%inputs)) copy%inputs = self%inputs
    if (allocated(self%lo)) then
      copy%lo = self%lo
      copy%hi = self%hi
    end if
    status = CP_OK
    if (.not. self%have_model) return
    call self%model%clone(copy%model, status)
    if (status /= PARAMLIB_OK) then
      status = CP_ERR_MODEL
      message = 'column physics: clone: ' // paramlib_last_error()
      copy%initialised = .false.
      return
    end if
    copy%have_model = .true.
  end subroutine clone

  subroutine free(self)
    class(column_physics), intent(inout) :: self
    integer :: ignored
    if (self%have_model) call self%model%free(ignored)
    self%have_model = .false.
    self%initialised = .false.
  end subroutine free

  !> Seconds spent since init: in compute, in bridge calls, in Betts-Miller.
  subroutine timings(self, total, bridge, physics)
    class(column_physics), intent(in) :: self
    real(wp), intent(out) :: total, bridge, physics
    integer(int64) :: rate
    call system_clock(count_rate=rate)
    total = real(self%ticks_total, wp) / rate
    bridge = real(self%ticks_bridge, wp) / rate
    physics = real(self%ticks_physics, wp) / rate
  end subroutine timings

  !> Convective tendencies of a chunk of columns. t, q, p: (nlev, ncol) levels surface to top;
  !> p_int (nlev+1, ncol) interface pressures, p_int(1) the surface; ps (ncol); dt the host
  !> step (s), for the water constraint. solin, shflx (upward), lhflx (upward) are needed when
  !> the model takes them. column_id: global column numbers (default 1..ncol) and step: the
  !> host's step number (default: calls so far), for stochastic draws. Out: dtdt (K s-1), dqdt
  !> (kg kg-1 s-1), precip (kg m-2 s-1 >= 0), diag.
  subroutine compute(self, t, q, p, p_int, ps, dt, dtdt, dqdt, precip, diag, status, message, &
                     solin, shflx, lhflx, column_id, step)
    class(column_physics), intent(inout), target :: self
    real(wp), intent(in) :: t(:, :), q(:, :), p(:, :), p_int(:, :), ps(:), dt
    real(wp), intent(out) :: dtdt(:, :), dqdt(:, :), precip(:)
    type(column_diagnostics), intent(inout) :: diag
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    real(wp), intent(in), optional :: solin(:), shflx(:), lhflx(:)
    integer(int64), intent(in), optional :: column_id(:)
    integer(int64), intent(in), optional :: step
    integer :: ncol, nlev, i, mode
    integer(int64) :: t0, t1, this_step
    logical :: ml_ran

    call system_clock(t0)
    dtdt = 0.0_wp
    dqdt = 0.0_wp
    precip = 0.0_wp
    nlev = size(t, 1)
    ncol = size(t, 2)
    status = CP_ERR_NOT_READY
    if (.not. self%initialised) then
      message = 'column physics: compute before a successful init'
      return
    end if
    status = CP_ERR_ARGUMENT
    if (nlev /= self%nlev) then
      write (message, '(a,i0,a,i0)') 'column physics: t has ', nlev, ' levels, init was told ', &
        self%nlev
      return
    end if
    if (any(shape(q) /= [nlev, ncol]) .or. any(shape(p) /= [nlev, ncol]) .or. &
        any(shape(p_int) /= [nlev + 1, ncol]) .or. size(ps) /= ncol .or. &
        any(shape(dtdt) /= [nlev, ncol]) .or. any(shape(dqdt) /= [nlev, ncol]) .or. &
        size(precip) /= ncol .or. .not. (fits(solin) .and. fits(shflx) .and. fits(lhflx))) then
      message = 'column physics: t, q, p, dtdt, dqdt must be (nlev, ncol), p_int ' // &
                '(nlev+1, ncol), ps, precip and the surface fields (ncol)'
      return
    end if
    if (present(column_id)) then
      if (size(column_id) /= ncol) then
        message = 'column physics: column_id must have one entry per column'
        return
      end if
    end if
    if (.not. (dt > 0.0_wp)) then
      message = 'column physics: dt must be > 0'
      return
    end if
    status = CP_OK

    call diag%resize(ncol)
    call self%resize_work(ncol)
    self%calls = self%calls + 1
    this_step = self%calls
    if (present(step)) this_step = step
    do i = 1, ncol
      self%dp(:, i) = p_int(:nlev, i) - p_int(2:, i)
    end do
    self%bm_done = .false.
    mode = self%config%mode

    ! Betts-Miller for every column where its tendencies are an input or the answer.
    if (mode == CP_PHYSICS .or. (self%have_model .and. self%needs_bm)) then
      call self%betts_miller_columns(t, q, p, p_int)
    end if

    ml_ran = .false.
    if (mode /= CP_PHYSICS .and. self%have_model) then
      call self%run_model(t, q, ps, solin, shflx, lhflx, diag, column_id, this_step, &
                          status, message)
      if (status >= CP_ERR_ARGUMENT .and. mode == CP_HYBRID) then
        message = 'column physics: hybrid: Betts-Miller in every column this call, ' // &
                  trim(message)
        status = CP_WARN_RUNTIME
        diag%reason = FALLBACK_RUNTIME
      else if (status < CP_ERR_ARGUMENT) then
        ml_ran = .true.
      end if
      if (ml_ran .and. diag%n_nonfinite > 0) then
        message = 'column physics: ' // trim(self%config%model_path) // ': the model gave ' // &
                  'NaN/Inf outputs in ' // itoa(diag%n_nonfinite) // ' of ' // itoa(ncol) // &
                  ' columns; '
        if (mode == CP_ML) then
          status = CP_ERR_NONFINITE
          message = trim(message) // ' ml mode has no fallback (hybrid runs Betts-Miller there)'
        else
          status = CP_WARN_NONFINITE
          message = trim(message) // ' Betts-Miller ran there'
        end if
      end if
      if (status >= CP_ERR_ARGUMENT) then
        call system_clock(t1)
        self%ticks_total = self%ticks_total + (t1 - t0)
        return
      end if
    end if

    ! Which path each column takes.
    do i = 1, ncol
      if (.not. ml_ran) then
        if (mode /= CP_PHYSICS .and. .not. self%have_model) diag%reason(i) = FALLBACK_NO_MODEL
        cycle
      end if
      if (self%bad(i)) diag%reason(i) = ior(diag%reason(i), FALLBACK_BAD_INPUT)
      if (self%nonfinite(i)) diag%reason(i) = ior(diag%reason(i), FALLBACK_NONFINITE)
      if (mode == CP_HYBRID .and. self%has_ood_score) then
        ! Written so that a NaN score falls back too.
        if (.not. (diag%ood_score(i) <= 1.0_wp)) diag%reason(i) = ior(diag%reason(i), FALLBACK_OOD)
      else if (mode == CP_HYBRID) then
        if (diag%n_ood(i) > 0) diag%reason(i) = ior(diag%reason(i), FALLBACK_OOD)
        if (self%spread_source /= SPREAD_NONE .and. diag%spread(i) > self%config%spread_max) then
          diag%reason(i) = ior(diag%reason(i), FALLBACK_SPREAD)
        end if
      end if
      if (diag%reason(i) == 0) diag%path(i) = merge(PATH_MEMBER, PATH_ML, mode == CP_STOCHASTIC)
    end do

    if (any(diag%path == PATH_PHYSICS .and. .not. self%bm_done)) then
      call self%betts_miller_columns(t, q, p, p_int, diag%path == PATH_PHYSICS)
    end if
    do i = 1, ncol
      if (diag%path(i) == PATH_PHYSICS) then
        dtdt(:, i) = self%bm_t(:, i)
        dqdt(:, i) = self%bm_q(:, i)
        precip(i) = self%bm_p(i)
      else
        dtdt(:self%nlev_heating, i) = self%ml_t(:, i)
        dqdt(:self%nlev_moistening, i) = self%ml_q(:, i)
        if (self%has_precip) then
          precip(i) = self%ml_p(i)
        else
          precip(i) = -mass_integral(dqdt(:, i), self%dp(:, i))
        end if
      end if
      call constrain_column(self%config, q(:, i), p(:, i), self%dp(:, i), dt, dtdt(:, i), &
                            dqdt(:, i), precip(i), diag%fixes(i), diag%precip_change(i), &
                            diag%water_moved(i), diag%top_removed(i))
    end do
    call system_clock(t1)
    self%ticks_total = self%ticks_total + (t1 - t0)

  contains

    logical function fits(a)
      real(wp), intent(in), optional :: a(:)
      fits = .true.
      if (present(a)) fits = size(a) == ncol
    end function fits

  end subroutine compute

  !> Betts-Miller into bm_t, bm_q, bm_p for the columns where mask is true (default all).
  subroutine betts_miller_columns(self, t, q, p, p_int, mask)
    class(column_physics), intent(inout) :: self
    real(wp), intent(in) :: t(:, :), q(:, :), p(:, :), p_int(:, :)
    logical, intent(in), optional :: mask(:)
    real(wp) :: dlnp_layer(size(t, 1)), dlnp_level(size(t, 1)), cape
    integer :: i, nlev, kind, top
    integer(int64) :: t0, t1
    call system_clock(t0)
    nlev = size(t, 1)
    do i = 1, size(t, 2)
      if (present(mask)) then
        if (.not. mask(i)) cycle
      end if
      dlnp_layer = log(p_int(:nlev, i) / p_int(2:, i))
      dlnp_level(1) = 0.0_wp
      dlnp_level(2:) = log(p(2:, i) / p(:nlev - 1, i))
      call bm_column(t(:, i), q(:, i), p(:, i), self%dp(:, i), dlnp_layer, dlnp_level, &
                     self%config%bm_tau, self%config%bm_rh, self%bm_t(:, i), self%bm_q(:, i), &
                     self%bm_p(i), cape, kind, top)
      self%bm_done(i) = .true.
    end do
    call system_clock(t1)
    self%ticks_physics = self%ticks_physics + (t1 - t0)
  end subroutine betts_miller_columns

  !> The model on every column: inputs packed and range-checked, forward, mean (or the drawn
  !> members) into ml_*, spread into diag%spread, NaN/Inf columns into bad.
  subroutine run_model(self, t, q, ps, solin, shflx, lhflx, diag, column_id, step, status, message)
    class(column_physics), intent(inout), target :: self
    real(wp), intent(in) :: t(:, :), q(:, :), ps(:)
    real(wp), intent(in), optional :: solin(:), shflx(:), lhflx(:)
    type(column_diagnostics), intent(inout) :: diag
    integer(int64), intent(in), optional :: column_id(:)
    integer(int64), intent(in) :: step
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    integer :: f, ncol, i, k, st, n_bad, nl, off
    integer(int64) :: t0, t1

    ncol = size(t, 2)
    self%nonfinite = .false.
    status = CP_ERR_ARGUMENT
    do f = 1, size(self%inputs)
      nl = self%inputs(f)%nlev
      off = self%inputs(f)%offset
      associate (x => self%x(off + 1:off + nl, :))
        select case (self%inputs(f)%field)
        case (IN_T)
          x = real(t(:nl, :), real32)
        case (IN_Q)
          x = real(q(:nl, :), real32)
        case (IN_PS)
          x(1, :) = real(ps, real32)
        case (IN_SOLIN, IN_SHFLX, IN_LHFLX)
          if (.not. surface_field(x(1, :))) return
        case (IN_BM_HEATING)
          x = real(self%bm_t(:nl, :), real32)
        case (IN_BM_MOISTENING)
          x = real(self%bm_q(:nl, :), real32)
        case (IN_BM_PRECIP)
          x(1, :) = real(self%bm_p, real32)
        case default
          continue  ! setup accepts no other input
        end select
      end associate
    end do
    do i = 1, ncol
      diag%n_ood(i) = count(self%x(:, i) < self%lo .or. self%x(:, i) > self%hi)
    end do

    call system_clock(t0)
    status = CP_ERR_RUNTIME
    bridge: block
      do f = 1, size(self%inputs)
        nl = self%inputs(f)%nlev
        off = self%inputs(f)%offset
        if (INPUT_ON_LEVELS(self%inputs(f)%field)) then
          call self%model%set_input(trim(INPUT_NAMES(self%inputs(f)%field)), &
                                    self%x(off + 1:off + nl, :), st, &
                                    units=trim(INPUT_UNITS(self%inputs(f)%field)))
        else
          call self%model%set_input(trim(INPUT_NAMES(self%inputs(f)%field)), &
                                    self%x(off + 1, :), st, &
                                    units=trim(INPUT_UNITS(self%inputs(f)%field)))
        end if
        if (st /= PARAMLIB_OK) exit bridge
      end do
      call self%model%forward(st, n_bad)
      if (st /= PARAMLIB_OK .and. st /= PARAMLIB_WARN_BAD_INPUT) exit bridge
      self%bad = .false.
      if (n_bad > 0) then
        call self%model%bad_columns(self%bad, st)
        if (st /= PARAMLIB_OK) exit bridge
      end if

      if (self%config%mode == CP_STOCHASTIC) then
        do i = 1, ncol
          if (present(column_id)) then
            diag%member(i) = stochastic_member(self%config%seed, column_id(i), step, &
                                               self%ensemble_size)
          else
            diag%member(i) = stochastic_member(self%config%seed, int(i, int64), step, &
                                               self%ensemble_size)
          end if
        end do
        ! One copy per member drawn: the bridge gives a member for all columns at once.
        do k = 1, self%ensemble_size
          if (.not. any(diag%member == k)) cycle
          call self%model%get_output('heating', self%mem_t, st, units=HEATING_UNITS, &
                                     statistic=PARAMLIB_MEMBER, member=k)
          if (st == PARAMLIB_OK) call self%model%get_output('moistening', self%mem_q, st, &
            units=MOISTENING_UNITS, statistic=PARAMLIB_MEMBER, member=k)
          if (st == PARAMLIB_OK .and. self%has_precip) call self%model%get_output( &
            'precip', self%mem_p, st, units=trim(self%precip_units), statistic=PARAMLIB_MEMBER, &
            member=k)
          if (st /= PARAMLIB_OK) exit bridge
          where (spread(diag%member == k, 1, self%nlev_heating)) self%ml_t = self%mem_t
          where (spread(diag%member == k, 1, self%nlev_moistening)) self%ml_q = self%mem_q
          where (diag%member == k) self%ml_p = self%mem_p
        end do
      else
        call self%model%get_output('heating', self%ml_t, st, units=HEATING_UNITS)
        if (st == PARAMLIB_OK) call self%model%get_output('moistening', self%ml_q, st, &
                                                          units=MOISTENING_UNITS)
        if (st == PARAMLIB_OK .and. self%has_precip) then
          call self%model%get_output('precip', self%ml_p, st, units=trim(self%precip_units))
        end if
        if (st /= PARAMLIB_OK) exit bridge
      end if

      select case (self%spread_source)
      case (SPREAD_OUTPUTS)
        call self%model%get_output('heating_spread', self%sd_t, st, units=HEATING_UNITS)
        if (st == PARAMLIB_OK) call self%model%get_output('moistening_spread', self%sd_q, st, &
                                                          units=MOISTENING_UNITS)
      case (SPREAD_ENSEMBLE)
        call self%model%get_output('heating', self%sd_t, st, units=HEATING_UNITS, &
                                   statistic=PARAMLIB_SPREAD)
        if (st == PARAMLIB_OK) call self%model%get_output('moistening', self%sd_q, st, &
                                                          units=MOISTENING_UNITS, &
                                                          statistic=PARAMLIB_SPREAD)
      case default
        continue  ! SPREAD_NONE: no spread to read
      end select
      if (st == PARAMLIB_OK .and. self%has_ood_score) then
        call self%model%get_output('ood_score', diag%ood_score, st, units='1')
      end if
      if (st /= PARAMLIB_OK) exit bridge
      status = CP_OK
    end block bridge
    if (status /= CP_OK) then
      message = 'column physics: ' // trim(self%config%model_path) // ': ' // paramlib_last_error()
      return
    end if
    ! Every output fetched is screened: a NaN spread must not pass as "not above spread_max".
    do i = 1, ncol
      self%nonfinite(i) = .not. (all(ieee_is_finite(self%ml_t(:, i))) .and. &
                                 all(ieee_is_finite(self%ml_q(:, i))) .and. ieee_is_finite(self%ml_p(i)))
      if (self%spread_source /= SPREAD_NONE) self%nonfinite(i) = self%nonfinite(i) .or. .not. &
        (all(ieee_is_finite(self%sd_t(:, i))) .and. all(ieee_is_finite(self%sd_q(:, i))))
    end do
    diag%n_nonfinite = count(self%nonfinite)
    if (self%spread_source == SPREAD_ENSEMBLE) then
      ! The bridge gives the population standard deviation, the exported <name>_spread outputs
      ! the sample one (n - 1); the sample one here, so both model files give one spread.
      self%sd_t = self%sd_t * sqrt(real(self%ensemble_size, wp) / (self%ensemble_size - 1))
      self%sd_q = self%sd_q * sqrt(real(self%ensemble_size, wp) / (self%ensemble_size - 1))
    end if
    if (self%spread_source /= SPREAD_NONE) then
      do i = 1, ncol
        diag%spread(i) = CP * mass_integral(self%sd_t(:, i), self%dp(:self%nlev_heating, i)) &
                         + LV * mass_integral(self%sd_q(:, i), self%dp(:self%nlev_moistening, i))
      end do
    end if
    call system_clock(t1)
    self%ticks_bridge = self%ticks_bridge + (t1 - t0)

  contains

    !> x = the surface field the current input names, or an error when the host passed none.
    logical function surface_field(x) result(ok)
      real(real32), intent(out) :: x(:)
      ok = .true.
      select case (self%inputs(f)%field)
      case (IN_SOLIN)
        ok = present(solin)
        if (ok) x = real(solin, real32)
      case (IN_SHFLX)
        ok = present(shflx)
        if (ok) x = real(shflx, real32)
      case (IN_LHFLX)
        ok = present(lhflx)
        if (ok) x = real(lhflx, real32)
      case default
        continue  ! called for the surface inputs only
      end select
      if (.not. ok) then
        x = 0.0_real32
        message = 'column physics: the model takes "' // trim(INPUT_NAMES(self%inputs(f)%field)) &
                  // '"; pass it to compute (' // trim(INPUT_NAMES(self%inputs(f)%field)) // '=...)'
      end if
    end function surface_field

  end subroutine run_model

  !> The constraints of the module header on one column, in place.
  pure subroutine constrain_column(config, q, p, dp, dt, dtdt, dqdt, precip, fixes, precip_change, &
                                   water_moved, top_removed)
    type(column_physics_config), intent(in) :: config
    real(wp), intent(in) :: q(:), p(:), dp(:), dt
    real(wp), intent(inout) :: dtdt(:), dqdt(:), precip
    integer, intent(out) :: fixes
    real(wp), intent(out) :: precip_change, water_moved, top_removed
    real(wp) :: q_new(size(q)), q_filled(size(q)), net, gain, raw
    fixes = 0
    water_moved = 0.0_wp
    top_removed = 0.0_wp
    raw = precip
    if (config%p_zero_above > 0.0_wp) then
      if (any(p < config%p_zero_above .and. (dtdt /= 0.0_wp .or. dqdt /= 0.0_wp))) then
        top_removed = (CP * sum(dtdt * dp, mask=p < config%p_zero_above) &
                       + LV * sum(dqdt * dp, mask=p < config%p_zero_above)) / GRAVITY
        where (p < config%p_zero_above)
          dtdt = 0.0_wp
          dqdt = 0.0_wp
        end where
        fixes = ior(fixes, FIX_TOP)
      end if
    end if
    if (config%fix_precip) then
      net = mass_integral(dqdt, dp)
      if (net > 0.0_wp) then   ! convection cannot make water: scale the moistening down
        gain = mass_integral(max(dqdt, 0.0_wp), dp)
        where (dqdt > 0.0_wp) dqdt = dqdt * (1.0_wp - net / gain)
      end if
    end if
    if (config%fix_water) then
      q_new = q + dt * dqdt
      if (any(q_new < 0.0_wp)) then
        q_filled = q_new
        call fill_negative_humidity(q_filled, dp)
        water_moved = mass_integral(max(-q_new, 0.0_wp), dp) / dt
        dqdt = (q_filled - q) / dt
        fixes = ior(fixes, FIX_WATER)
      end if
    end if
    if (config%fix_precip) then
      precip = max(0.0_wp, -mass_integral(dqdt, dp))
      if (abs(precip - raw) > max(PRECIP_ROUNDOFF, 1.0e-9_wp * abs(raw))) then
        fixes = ior(fixes, FIX_PRECIP)
      end if
    end if
    precip_change = precip - raw
  end subroutine constrain_column

  !> The member (1..members) a column gets in stochastic mode: a hash of (seed, column, step),
  !> nothing else, so the draw does not depend on chunking, threads or ranks.
  pure integer function stochastic_member(seed, column, step, members) result(member)
    integer(int64), intent(in) :: seed, column, step
    integer, intent(in) :: members
    integer(int64) :: h
    h = mix(mix(mix(1_int64, seed), column), step)
    member = 1 + int(modulo(h, int(members, int64)))
  end function stochastic_member

  !> One round of a 31-bit hash: xor the value in, multiply mod 2^31 - 1 (Park-Miller), then a
  !> 32-bit xorshift; every product fits in 64 bits, so no integer overflow.
  pure integer(int64) function mix(h, v)
    integer(int64), intent(in) :: h, v
    integer(int64), parameter :: M31 = 2147483647_int64, A = 48271_int64
    integer(int64), parameter :: MASK32 = 4294967295_int64
    integer :: round
    mix = modulo(ieor(h, modulo(v, M31)), M31)
    do round = 1, 3
      mix = modulo((mix + 1) * A, M31)
      mix = ieor(mix, iand(ishft(mix, 13), MASK32))
      mix = ieor(mix, ishft(mix, -17))
      mix = ieor(mix, iand(ishft(mix, 5), MASK32))
      mix = modulo(mix, M31)
    end do
  end function mix

  subroutine resize_work(self, ncol)
    class(column_physics), intent(inout) :: self
    integer, intent(in) :: ncol
    if (allocated(self%bm_p)) then
      if (size(self%bm_p) == ncol) return
    end if
    call self%drop_work()
    allocate (self%bm_t(self%nlev, ncol), self%bm_q(self%nlev, ncol), self%bm_p(ncol), &
              self%dp(self%nlev, ncol), self%bad(ncol), self%bm_done(ncol))
    self%bad = .false.
    if (.not. self%have_model) return
    allocate (self%x(self%nfeat, ncol), self%ml_t(self%nlev_heating, ncol), &
              self%ml_q(self%nlev_moistening, ncol), self%ml_p(ncol), &
              self%sd_t(self%nlev_heating, ncol), self%sd_q(self%nlev_moistening, ncol), &
              self%mem_t(self%nlev_heating, ncol), self%mem_q(self%nlev_moistening, ncol), &
              self%mem_p(ncol), self%nonfinite(ncol))
    self%nonfinite = .false.
    self%ml_p = 0.0_wp
    self%mem_p = 0.0_wp
  end subroutine resize_work

  !> Work arrays freed: a new chunk size, or init (a new model, other field sizes).
  subroutine drop_work(self)
    class(column_physics), intent(inout) :: self
    if (allocated(self%bm_p)) deallocate (self%bm_t, self%bm_q, self%bm_p, self%dp, self%bad, &
                                          self%bm_done)
    if (allocated(self%x)) deallocate (self%x, self%ml_t, self%ml_q, self%ml_p, self%sd_t, &
                                       self%sd_q, self%mem_t, self%mem_q, self%mem_p, &
                                       self%nonfinite)
  end subroutine drop_work

  subroutine diagnostics_resize(self, ncol)
    class(column_diagnostics), intent(inout) :: self
    integer, intent(in) :: ncol
    if (allocated(self%spread)) then
      if (size(self%spread) /= ncol) deallocate (self%spread, self%n_ood, self%ood_score, &
        self%path, self%reason, self%member, self%fixes, self%precip_change, self%water_moved, &
        self%top_removed)
    end if
    if (.not. allocated(self%spread)) allocate (self%spread(ncol), self%n_ood(ncol), &
      self%ood_score(ncol), self%path(ncol), self%reason(ncol), self%member(ncol), &
      self%fixes(ncol), self%precip_change(ncol), self%water_moved(ncol), self%top_removed(ncol))
    self%spread = 0.0_wp
    self%n_ood = 0
    self%ood_score = 0.0_wp
    self%path = PATH_PHYSICS
    self%reason = 0
    self%member = 0
    self%fixes = 0
    self%precip_change = 0.0_wp
    self%water_moved = 0.0_wp
    self%top_removed = 0.0_wp
    self%n_nonfinite = 0
  end subroutine diagnostics_resize

end module paramlib_column_physics
