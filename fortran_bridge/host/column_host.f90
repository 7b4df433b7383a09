!> The column host model: a state, its forcings and a convection slot, stepped forward.
!>
!> One step (forward Euler, every process from the same state):
!>   1. surface fluxes from the state (kept in the state, for schemes that read them);
!>   2. the convection scheme passed to step, any convection_scheme;
!>   3. radiation, vertical advection, surface fluxes into the lowest layer, large-scale
!>      condensation and, if on, WTG relaxation (column_forcings);
!>   4. T += dt sum(dT/dt), q += dt sum(dq/dt); negative humidity is filled by borrowing
!>      from the rest of its column, so water is conserved;
!>   5. column budgets of the step, per column:
!>      energy  E = sum((cp T + L q) dp) / g  (W m-2), terms: storage dE/dt, radiation,
!>              advection, sensible, latent, convection, condensation, WTG, fixer, residual;
!>      water   W = sum(q dp) / g  (kg m-2 s-1), terms: storage dW/dt, advection,
!>              evaporation, convective and large-scale precipitation (-P_c, -P_ls),
!>              convection, fixer, residual.
!>      A process's energy term is sum((cp dT + L dq) dp) / g: zero for convection and
!>      condensation when they conserve moist enthalpy (latent heat stays in the column,
!>      condensate rains out). Convection's water term is sum(dq dp) / g + P_c, zero when
!>      the scheme's precipitation is the water it removed (P_ls is that by definition).
!>      residual = storage - the sum of the other terms: round-off.
!> A step allocates nothing (the per-column work arrays are automatic arrays, kept on the
!> stack by -fstack-arrays; see CMakeLists.txt).
module column_host
  use physical_constants, only: wp, GRAVITY, CP, LV
  use thermodynamics, only: saturation_humidity
  use column_fields, only: column_state, mass_integral
  use column_status, only: COLUMN_OK, COLUMN_ERR_ARGUMENT, COLUMN_ERR_STATE
  use column_forcings, only: troposphere_weight, radiative_heating, wtg_weight, wtg_heating, &
                             wtg_reference, omega_profile, vertical_advection, surface_fluxes, &
                             large_scale_condensation
  use convection_slot, only: convection_scheme
  implicit none
  private
  public :: column_model, column_parameters, fill_negative_humidity
  public :: PROC_RADIATION, PROC_ADVECTION, PROC_SURFACE, PROC_WTG, PROC_CONDENSATION
  public :: PROC_CONVECTION, N_PROCESSES
  public :: PROCESS_NAMES, ENERGY_TERM_NAMES, WATER_TERM_NAMES, N_ENERGY_TERMS, N_WATER_TERMS
  public :: E_STORAGE, E_RADIATION, E_ADVECTION, E_SENSIBLE, E_LATENT, E_CONVECTION, &
            E_CONDENSATION, E_WTG, E_FIXER, E_RESIDUAL
  public :: W_STORAGE, W_ADVECTION, W_EVAPORATION, W_PRECIP_CONVECTIVE, W_PRECIP_LARGE_SCALE, &
            W_CONVECTION, W_FIXER, W_RESIDUAL
  public :: PARAMETER_NAMES, N_PARAMETERS

  integer, parameter :: PROC_RADIATION = 1, PROC_ADVECTION = 2, PROC_SURFACE = 3, &
                        PROC_WTG = 4, PROC_CONDENSATION = 5, PROC_CONVECTION = 6, N_PROCESSES = 6
  character(len=*), parameter :: PROCESS_NAMES(N_PROCESSES) = [character(len=12) :: &
    'radiation', 'advection', 'surface', 'wtg', 'condensation', 'convection']

  integer, parameter :: E_STORAGE = 1, E_RADIATION = 2, E_ADVECTION = 3, E_SENSIBLE = 4, &
                        E_LATENT = 5, E_CONVECTION = 6, E_CONDENSATION = 7, E_WTG = 8, &
                        E_FIXER = 9, E_RESIDUAL = 10, N_ENERGY_TERMS = 10
  character(len=*), parameter :: ENERGY_TERM_NAMES(N_ENERGY_TERMS) = [character(len=18) :: &
    'storage', 'radiation', 'advection', 'sensible', 'latent', 'convection', 'condensation', &
    'wtg', 'fixer', 'residual']
  integer, parameter :: W_STORAGE = 1, W_ADVECTION = 2, W_EVAPORATION = 3, &
                        W_PRECIP_CONVECTIVE = 4, W_PRECIP_LARGE_SCALE = 5, W_CONVECTION = 6, &
                        W_FIXER = 7, W_RESIDUAL = 8, N_WATER_TERMS = 8
  character(len=*), parameter :: WATER_TERM_NAMES(N_WATER_TERMS) = [character(len=18) :: &
    'storage', 'advection', 'evaporation', 'precip_convective', 'precip_large_scale', &
    'convection', 'fixer', 'residual']

  !> Physical range a state must stay in; leaving it means the run has gone wrong.
  real(wp), parameter :: T_MIN = 100.0_wp, T_MAX = 400.0_wp, Q_MAX = 0.1_wp

  !> Settable by name (set_parameter); SI units. dt is the model timestep.
  type :: column_parameters
    real(wp) :: dt = 600.0_wp                     !< s
    real(wp) :: cooling_rate = 1.5_wp / 86400.0_wp  !< K s-1, tropospheric radiative cooling
    real(wp) :: t_strat = 200.0_wp                !< K, stratospheric relaxation temperature
    real(wp) :: tau_strat = 5.0_wp * 86400.0_wp   !< s
    real(wp) :: p_trop = 2.0e4_wp                 !< Pa, centre of the tropopause transition
    real(wp) :: dp_trop = 2.5e3_wp                !< Pa, its width
    real(wp) :: p_omega_top = 1.0e4_wp            !< Pa, omega is zero above
    real(wp) :: exchange_coefficient = 1.2e-3_wp  !< bulk C for heat and moisture
    real(wp) :: surface_wind = 7.0_wp             !< m s-1
    real(wp) :: sst_ref = 300.0_wp                !< K, domain-mean SST of the WTG reference
    real(wp) :: tau_wtg = 3.0_wp * 3600.0_wp      !< s
    real(wp) :: p_wtg_bl = 8.5e4_wp               !< Pa, top of the boundary layer WTG leaves alone
    real(wp) :: dp_wtg = 2.5e3_wp                 !< Pa, width of that transition
    real(wp) :: wtg_sst_offset = 1.0_wp           !< K, reference parcel at sst_ref - offset
    real(wp) :: wtg_rh = 0.8_wp                   !< relative humidity of the reference parcel
    logical :: wtg = .false.
  end type column_parameters

  integer, parameter :: N_PARAMETERS = 15
  character(len=*), parameter :: PARAMETER_NAMES(N_PARAMETERS) = [character(len=20) :: &
    'dt', 'cooling_rate', 't_strat', 'tau_strat', 'p_trop', 'dp_trop', 'p_omega_top', &
    'exchange_coefficient', 'surface_wind', 'sst_ref', 'tau_wtg', 'p_wtg_bl', 'dp_wtg', &
    'wtg_sst_offset', 'wtg_rh']

  type :: column_model
    type(column_parameters) :: params
    type(column_state) :: state
    integer :: nstep = 0
    real(wp), allocatable :: omega0(:)          !< (ncol) Pa s-1, amplitude of omega
    ! Fixed in time, from the parameters and the columns (prepare, before the next step or
    ! reset_state once either has changed).
    logical :: prepared = .false.
    real(wp), allocatable :: omega_int(:, :)    !< (nlev+1, ncol) Pa s-1
    real(wp), allocatable :: w_trop(:, :)       !< (nlev, ncol) troposphere weight
    real(wp), allocatable :: w_wtg(:, :)        !< (nlev, ncol) WTG weight
    real(wp), allocatable :: t_wtg(:, :)        !< (nlev, ncol) WTG reference temperature, K
    ! Of the last step.
    real(wp), allocatable :: tend_t(:, :, :)    !< (nlev, ncol, N_PROCESSES) K s-1
    real(wp), allocatable :: tend_q(:, :, :)    !< (nlev, ncol, N_PROCESSES) kg kg-1 s-1
    real(wp), allocatable :: precip(:)          !< (ncol) kg m-2 s-1, the convection scheme's
    real(wp), allocatable :: precip_ls(:)       !< (ncol) kg m-2 s-1, large-scale condensation's
    real(wp), allocatable :: energy_budget(:, :)  !< (N_ENERGY_TERMS, ncol) W m-2
    real(wp), allocatable :: water_budget(:, :)   !< (N_WATER_TERMS, ncol) kg m-2 s-1
  contains
    procedure :: init
    procedure :: reset_state
    procedure :: set_state
    procedure :: set_columns
    procedure :: set_wtg
    procedure :: set_parameter
    procedure :: get_parameter
    procedure :: step
    procedure, private :: prepare
    procedure, private :: parameter_slot
  end type column_model

contains

  !> ncol = size(ps) columns of nlev levels with their surface pressure (Pa), SST (K) and
  !> omega amplitude (Pa s-1, < 0 ascent), default parameters, and the initial state of
  !> reset_state.
  subroutine init(self, nlev, ps, sst, omega0, status, message)
    class(column_model), intent(out) :: self
    integer, intent(in) :: nlev
    real(wp), intent(in) :: ps(:), sst(:), omega0(:)
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    integer :: ncol
    call self%state%init(nlev, ps, sst, status, message)
    if (status /= COLUMN_OK) return
    ncol = size(ps)
    allocate (self%omega0(ncol), self%omega_int(nlev + 1, ncol), self%w_trop(nlev, ncol), &
              self%w_wtg(nlev, ncol), self%t_wtg(nlev, ncol), &
              self%tend_t(nlev, ncol, N_PROCESSES), self%tend_q(nlev, ncol, N_PROCESSES), &
              self%precip(ncol), self%precip_ls(ncol), self%energy_budget(N_ENERGY_TERMS, ncol), &
              self%water_budget(N_WATER_TERMS, ncol))
    self%tend_t = 0.0_wp
    self%tend_q = 0.0_wp
    self%precip = 0.0_wp
    self%precip_ls = 0.0_wp
    self%energy_budget = 0.0_wp
    self%water_budget = 0.0_wp
    call self%set_columns(ps, sst, omega0, status, message)
    if (status /= COLUMN_OK) return
    call self%reset_state()
  end subroutine init

  !> The initial state: T of a moist pseudo-adiabat from each column's own SST (the WTG
  !> reference construction), joined to t_strat above the tropopause; relative humidity
  !> 0.2 + 0.6 sigma (0.8 at the surface).
  subroutine reset_state(self)
    class(column_model), intent(inout) :: self
    real(wp) :: t_moist(self%state%nlev)
    integer :: i
    call self%prepare()
    associate (s => self%state, pr => self%params)
      do i = 1, s%ncol
        call wtg_reference(s%sst(i), pr%wtg_sst_offset, pr%wtg_rh, s%p(:, i), t_moist)
        s%t(:, i) = self%w_trop(:, i) * t_moist + (1.0_wp - self%w_trop(:, i)) * pr%t_strat
        s%q(:, i) = (0.2_wp + 0.6_wp * s%grid%sigma) * saturation_humidity(s%t(:, i), s%p(:, i))
      end do
    end associate
    self%nstep = 0
  end subroutine reset_state

  !> New T (K) and q (kg kg-1), (nlev, ncol); refused outside the physical range.
  subroutine set_state(self, t, q, status, message)
    class(column_model), intent(inout) :: self
    real(wp), intent(in) :: t(:, :), q(:, :)
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    status = COLUMN_ERR_ARGUMENT
    if (any(shape(t) /= shape(self%state%t)) .or. any(shape(q) /= shape(self%state%t))) then
      write (message, '(a,4(i0,a))') 'set_state: T and q must be (nlev, ncol) = (', &
        self%state%nlev, ', ', self%state%ncol, '), got (', size(t, 1), ', ', size(t, 2), ')'
      return
    end if
    call check_range(t, q, 'set_state', status, message)
    if (status /= COLUMN_OK) then
      status = COLUMN_ERR_ARGUMENT
      return
    end if
    self%state%t = t
    self%state%q = q
  end subroutine set_state

  !> Surface pressure (Pa), SST (K) and omega amplitude (Pa s-1) of every column.
  subroutine set_columns(self, ps, sst, omega0, status, message)
    class(column_model), intent(inout) :: self
    real(wp), intent(in) :: ps(:), sst(:), omega0(:)
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    status = COLUMN_ERR_ARGUMENT
    if (size(sst) /= self%state%ncol .or. size(omega0) /= self%state%ncol) then
      write (message, '(a,i0,a)') 'set_columns: ps, sst and omega0 need ', self%state%ncol, &
        ' values each'
      return
    end if
    if (.not. all(sst > 250.0_wp .and. sst < 330.0_wp)) then
      message = 'set_columns: sst must lie between 250 and 330 K'
      return
    end if
    if (.not. all(abs(omega0) < 10.0_wp)) then
      message = 'set_columns: |omega0| must be below 10 Pa s-1'
      return
    end if
    call self%state%set_surface_pressure(ps, status, message)
    if (status /= COLUMN_OK) return
    self%state%sst = sst
    self%omega0 = omega0
    self%prepared = .false.
  end subroutine set_columns

  subroutine set_wtg(self, on)
    class(column_model), intent(inout) :: self
    logical, intent(in) :: on
    self%params%wtg = on
  end subroutine set_wtg

  subroutine set_parameter(self, name, value, status, message)
    class(column_model), intent(inout), target :: self
    character(len=*), intent(in) :: name
    real(wp), intent(in) :: value
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    real(wp), pointer :: slot
    logical :: positive
    call self%parameter_slot(name, slot, positive, status, message)
    if (status /= COLUMN_OK) return
    if (.not. (abs(value) <= huge(value) .and. (value > 0.0_wp .or. .not. positive))) then
      status = COLUMN_ERR_ARGUMENT
      message = 'parameter ' // trim(name) // ' must be a finite number' // &
                merge(' > 0', '    ', positive)
      return
    end if
    slot = value
    self%prepared = .false.
  end subroutine set_parameter

  subroutine get_parameter(self, name, value, status, message)
    class(column_model), intent(inout), target :: self
    character(len=*), intent(in) :: name
    real(wp), intent(out) :: value
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    real(wp), pointer :: slot
    logical :: positive
    value = 0.0_wp
    call self%parameter_slot(name, slot, positive, status, message)
    if (status == COLUMN_OK) value = slot
  end subroutine get_parameter

  !> The parameter called name, and whether it must be positive.
  subroutine parameter_slot(self, name, slot, positive, status, message)
    class(column_model), intent(inout), target :: self
    character(len=*), intent(in) :: name
    real(wp), pointer, intent(out) :: slot
    logical, intent(out) :: positive
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    status = COLUMN_OK
    positive = .true.
    slot => null()
    select case (name)
    case ('dt'); slot => self%params%dt
    case ('cooling_rate'); slot => self%params%cooling_rate; positive = .false.
    case ('t_strat'); slot => self%params%t_strat
    case ('tau_strat'); slot => self%params%tau_strat
    case ('p_trop'); slot => self%params%p_trop
    case ('dp_trop'); slot => self%params%dp_trop
    case ('p_omega_top'); slot => self%params%p_omega_top
    case ('exchange_coefficient'); slot => self%params%exchange_coefficient
    case ('surface_wind'); slot => self%params%surface_wind
    case ('sst_ref'); slot => self%params%sst_ref
    case ('tau_wtg'); slot => self%params%tau_wtg
    case ('p_wtg_bl'); slot => self%params%p_wtg_bl
    case ('dp_wtg'); slot => self%params%dp_wtg
    case ('wtg_sst_offset'); slot => self%params%wtg_sst_offset; positive = .false.
    case ('wtg_rh'); slot => self%params%wtg_rh
    case default
      status = COLUMN_ERR_ARGUMENT
      message = 'no parameter called "' // trim(name) // '"'
    end select
  end subroutine parameter_slot

  !> Profiles fixed in time: omega, the radiation and WTG weights, the WTG reference; only
  !> where a parameter or a column changed since they were last computed.
  subroutine prepare(self)
    class(column_model), intent(inout) :: self
    integer :: i
    if (self%prepared) return
    self%prepared = .true.
    associate (s => self%state, pr => self%params)
      do i = 1, s%ncol
        call omega_profile(s%p_int(:, i), self%omega0(i), pr%p_omega_top, self%omega_int(:, i))
        self%w_trop(:, i) = troposphere_weight(s%p(:, i), pr%p_trop, pr%dp_trop)
        self%w_wtg(:, i) = wtg_weight(s%p(:, i), pr%p_wtg_bl, pr%dp_wtg, self%w_trop(:, i))
        call wtg_reference(pr%sst_ref, pr%wtg_sst_offset, pr%wtg_rh, s%p(:, i), &
                           self%t_wtg(:, i))
      end do
    end associate
  end subroutine prepare

  !> One timestep with the given convection scheme. On failure the state is unchanged
  !> when the scheme failed, and out of range (status COLUMN_ERR_STATE) when the step
  !> produced an unphysical state.
  subroutine step(self, scheme, status, message)
    class(column_model), intent(inout) :: self
    class(convection_scheme), intent(inout) :: scheme
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    ! per column: the state before the step, its change, and the fixer's change of q
    real(wp), dimension(self%state%nlev) :: t_old, q_old, q_unfilled, change_t, change_q, filled
    real(wp) :: dt1, dq1
    integer :: i, k

    call self%prepare()
    associate (s => self%state, pr => self%params, tt => self%tend_t, tq => self%tend_q, &
               eb => self%energy_budget, wb => self%water_budget)
      tt(:, :, PROC_SURFACE) = 0.0_wp
      tq(:, :, PROC_SURFACE) = 0.0_wp
      do i = 1, s%ncol
        call surface_fluxes(s%t(1, i), s%q(1, i), s%p(1, i), s%ps(i), s%dp(1, i), s%sst(i), &
                            pr%exchange_coefficient * pr%surface_wind, s%shflx(i), &
                            s%lhflx(i), dt1, dq1)
        tt(1, i, PROC_SURFACE) = dt1
        tq(1, i, PROC_SURFACE) = dq1
      end do

      call scheme%compute(s, tt(:, :, PROC_CONVECTION), tq(:, :, PROC_CONVECTION), &
                          self%precip, status, message)
      if (status /= COLUMN_OK) return

      do i = 1, s%ncol
        tt(:, i, PROC_RADIATION) = radiative_heating(s%t(:, i), self%w_trop(:, i), &
                                                     pr%cooling_rate, pr%t_strat, pr%tau_strat)
        tq(:, i, PROC_RADIATION) = 0.0_wp
        call vertical_advection(s%t(:, i), s%q(:, i), s%dp(:, i), self%omega_int(:, i), &
                                s%grid%dlnp_lower, s%grid%dlnp_layer, &
                                tt(:, i, PROC_ADVECTION), tq(:, i, PROC_ADVECTION))
        if (pr%wtg) then
          tt(:, i, PROC_WTG) = wtg_heating(s%t(:, i), self%t_wtg(:, i), self%w_wtg(:, i), &
                                           pr%tau_wtg)
        else
          tt(:, i, PROC_WTG) = 0.0_wp
        end if
        tq(:, i, PROC_WTG) = 0.0_wp
        call large_scale_condensation(s%t(:, i), s%q(:, i), s%p(:, i), pr%dt, &
                                      tt(:, i, PROC_CONDENSATION), tq(:, i, PROC_CONDENSATION))
        self%precip_ls(i) = -mass_integral(tq(:, i, PROC_CONDENSATION), s%dp(:, i))

        t_old = s%t(:, i)
        q_old = s%q(:, i)
        do k = 1, s%nlev
          s%t(k, i) = s%t(k, i) + pr%dt * sum(tt(k, i, :))
          s%q(k, i) = s%q(k, i) + pr%dt * sum(tq(k, i, :))
        end do
        q_unfilled = s%q(:, i)
        call fill_negative_humidity(s%q(:, i), s%dp(:, i))
        change_t = s%t(:, i) - t_old
        change_q = s%q(:, i) - q_old
        filled = s%q(:, i) - q_unfilled

        call energy_terms(eb(:, i))
        call water_terms(wb(:, i))
      end do
      self%nstep = self%nstep + 1
      call check_range(s%t, s%q, 'step', status, message)
    end associate

  contains

    subroutine energy_terms(e)
      real(wp), intent(out) :: e(:)
      associate (s => self%state, tt => self%tend_t, tq => self%tend_q)
        e(E_STORAGE) = (CP * mass_integral(change_t, s%dp(:, i)) &
                        + LV * mass_integral(change_q, s%dp(:, i))) / self%params%dt
        e(E_RADIATION) = CP * mass_integral(tt(:, i, PROC_RADIATION), s%dp(:, i))
        e(E_ADVECTION) = moist_enthalpy_source(PROC_ADVECTION)
        e(E_SENSIBLE) = CP * mass_integral(tt(:, i, PROC_SURFACE), s%dp(:, i))
        e(E_LATENT) = LV * mass_integral(tq(:, i, PROC_SURFACE), s%dp(:, i))
        e(E_CONVECTION) = moist_enthalpy_source(PROC_CONVECTION)
        e(E_CONDENSATION) = moist_enthalpy_source(PROC_CONDENSATION)
        e(E_WTG) = CP * mass_integral(tt(:, i, PROC_WTG), s%dp(:, i))
        e(E_FIXER) = LV * mass_integral(filled, s%dp(:, i)) / self%params%dt
        e(E_RESIDUAL) = e(E_STORAGE) - sum(e(E_RADIATION:E_FIXER))
      end associate
    end subroutine energy_terms

    function moist_enthalpy_source(process) result(source)
      integer, intent(in) :: process
      real(wp) :: source
      source = CP * mass_integral(self%tend_t(:, i, process), self%state%dp(:, i)) &
               + LV * mass_integral(self%tend_q(:, i, process), self%state%dp(:, i))
    end function moist_enthalpy_source

    subroutine water_terms(w)
      real(wp), intent(out) :: w(:)
      associate (s => self%state, tq => self%tend_q)
        w(W_STORAGE) = mass_integral(change_q, s%dp(:, i)) / self%params%dt
        w(W_ADVECTION) = mass_integral(tq(:, i, PROC_ADVECTION), s%dp(:, i))
        w(W_EVAPORATION) = mass_integral(tq(:, i, PROC_SURFACE), s%dp(:, i))
        w(W_PRECIP_CONVECTIVE) = -self%precip(i)
        w(W_PRECIP_LARGE_SCALE) = -self%precip_ls(i)
        w(W_CONVECTION) = mass_integral(tq(:, i, PROC_CONVECTION), s%dp(:, i)) + self%precip(i)
        w(W_FIXER) = mass_integral(filled, s%dp(:, i)) / self%params%dt
        w(W_RESIDUAL) = w(W_STORAGE) - sum(w(W_ADVECTION:W_FIXER))
      end associate
    end subroutine water_terms

  end subroutine step

  !> Negative humidity set to zero, the water taken from the column's positive levels in
  !> proportion; a column with less than no water at all is dried to zero (the fixer
  !> budget term then shows the water created).
  pure subroutine fill_negative_humidity(q, dp)
    real(wp), intent(inout) :: q(:)
    real(wp), intent(in) :: dp(:)
    real(wp) :: deficit, available
    if (all(q >= 0.0_wp)) return
    deficit = -sum(min(q, 0.0_wp) * dp)
    available = sum(max(q, 0.0_wp) * dp)
    q = max(q, 0.0_wp)
    if (available > deficit) then
      q = q * (1.0_wp - deficit / available)
    else
      q = 0.0_wp
    end if
  end subroutine fill_negative_humidity

  subroutine check_range(t, q, what, status, message)
    real(wp), intent(in) :: t(:, :), q(:, :)
    character(len=*), intent(in) :: what
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    integer :: i
    status = COLUMN_OK
    do i = 1, size(t, 2)
      if (.not. (all(t(:, i) > T_MIN .and. t(:, i) < T_MAX) .and. &
                 all(q(:, i) >= 0.0_wp .and. q(:, i) < Q_MAX))) then
        status = COLUMN_ERR_STATE
        write (message, '(a,i0,a,2(f0.1,a),2(es10.3,a))') what // ': column ', i, &
          ' left the physical range (T ', minval(t(:, i)), ' to ', maxval(t(:, i)), ' K, q ', &
          minval(q(:, i)), ' to ', maxval(q(:, i)), ')'
        return
      end if
    end do
  end subroutine check_range

end module column_host
