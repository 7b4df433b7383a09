!> paramlib_column_py: a flat facade over the column host model for f90wrap
!> (Python module paramlib._ext.paramlib_column; paramlib/testbed/column.py wraps it).
!>
!> f90wrap cannot wrap class() arguments or type-bound procedures, hence plain
!> subroutines on integer handles into a table of model instances. Each instance holds a
!> column model with its two convection schemes: Betts-Miller and tendencies supplied from
!> Python. Arrays are Fortran (nlev, ncol): a C-ordered numpy (ncol, nlev) array passes
!> as its transpose without a copy. Every routine returns a status (column_status codes,
!> 0 = success); last_error gives the message of the latest failure. Kinds are literals
!> (8) because the f90wrap kind map is keyed on them. Handles are never reused.
module paramlib_column_py
  use physical_constants, only: wp, GRAVITY, RD, RV, CP, LV, KAPPA, EPSILON, P0, T0, RHO_WATER
  use column_status, only: COLUMN_OK, COLUMN_ERR_ARGUMENT, COLUMN_ERR_HANDLE, COLUMN_MESSAGE_LEN
  use column_fields, only: column_state
  use column_host, only: column_model, N_PROCESSES, N_ENERGY_TERMS, N_WATER_TERMS, PROC_CONVECTION, &
                         PROCESS_NAMES, ENERGY_TERM_NAMES, WATER_TERM_NAMES
  use convection_slot, only: supplied_convection
  use betts_miller, only: betts_miller_scheme
  implicit none
  private
  public :: create, free, last_error, constants, sizes, names
  public :: set_parameter, get_parameter, set_wtg, set_bm, get_bm
  public :: set_columns, get_columns, reset_state, set_state, get_state, get_pressure
  public :: step_bm, step_supplied, diagnose_bm
  public :: get_surface_fluxes, get_convection, get_precipitation, get_tendency, get_budgets

  type :: column_instance
    logical :: live = .false.
    type(column_model) :: model
    type(betts_miller_scheme) :: bm
    type(supplied_convection) :: supplied
    type(column_state) :: scratch   !< the state diagnose_bm runs Betts-Miller on
  end type column_instance

  type(column_instance), allocatable, target :: instances(:)
  integer :: n_instances = 0
  character(len=COLUMN_MESSAGE_LEN) :: message = ''

contains

  !> The instance behind handle, or status COLUMN_ERR_HANDLE.
  subroutine lookup(handle, inst, status)
    integer, intent(in) :: handle
    type(column_instance), pointer, intent(out) :: inst
    integer, intent(out) :: status
    inst => null()
    status = COLUMN_ERR_HANDLE
    if (handle < 1 .or. handle > n_instances) then
      write (message, '(a,i0)') 'no column model with handle ', handle
    else if (.not. instances(handle)%live) then
      write (message, '(a,i0,a)') 'column model ', handle, ' was freed'
    else
      inst => instances(handle)
      status = COLUMN_OK
    end if
  end subroutine lookup

  !> size(ps) columns of nlev levels; handle is 0 unless status is 0.
  subroutine create(nlev, ps, sst, omega0, handle, status)
    integer, intent(in) :: nlev
    real(8), intent(in) :: ps(:), sst(:), omega0(:)
    integer, intent(out) :: handle, status
    type(column_instance), allocatable :: grown(:)
    handle = 0
    if (.not. allocated(instances)) allocate (instances(8))
    if (n_instances == size(instances)) then
      allocate (grown(2 * size(instances)))
      grown(:n_instances) = instances(:n_instances)
      call move_alloc(grown, instances)
    end if
    associate (inst => instances(n_instances + 1))
      call inst%model%init(nlev, ps, sst, omega0, status, message)
      if (status /= COLUMN_OK) return
      inst%live = .true.
    end associate
    n_instances = n_instances + 1
    handle = n_instances
  end subroutine create

  subroutine free(handle, status)
    integer, intent(in) :: handle
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    type(column_instance) :: empty
    call lookup(handle, inst, status)
    if (status == COLUMN_OK) inst = empty
  end subroutine free

  !> Message of the latest failure.
  subroutine last_error(text)
    character(len=*), intent(out) :: text
    text = message
  end subroutine last_error

  subroutine constants(gravity_, rd_, rv_, cp_, lv_, kappa_, epsilon_, p0_, t0_, rho_water_)
    real(8), intent(out) :: gravity_, rd_, rv_, cp_, lv_, kappa_, epsilon_, p0_, t0_, rho_water_
    gravity_ = GRAVITY
    rd_ = RD
    rv_ = RV
    cp_ = CP
    lv_ = LV
    kappa_ = KAPPA
    epsilon_ = EPSILON
    p0_ = P0
    t0_ = T0
    rho_water_ = RHO_WATER
  end subroutine constants

  !> Columns, levels, steps taken, and the numbers of processes and budget terms (names).
  subroutine sizes(handle, ncol, nlev, nstep, nproc, nenergy, nwater, status)
    integer, intent(in) :: handle
    integer, intent(out) :: ncol, nlev, nstep, nproc, nenergy, nwater, status
    type(column_instance), pointer :: inst
    ncol = 0
    nlev = 0
    nstep = 0
    nproc = N_PROCESSES
    nenergy = N_ENERGY_TERMS
    nwater = N_WATER_TERMS
    call lookup(handle, inst, status)
    if (status /= COLUMN_OK) return
    ncol = inst%model%state%ncol
    nlev = inst%model%state%nlev
    nstep = inst%model%nstep
  end subroutine sizes

  !> Name i (1-based) of a process (kind 0, the order of get_tendency), an energy budget
  !> term (kind 1) or a water budget term (kind 2), as in get_budgets.
  subroutine names(kind, i, name, status)
    integer, intent(in) :: kind, i
    character(len=*), intent(out) :: name
    integer, intent(out) :: status
    name = ''
    status = COLUMN_ERR_ARGUMENT
    select case (kind)
    case (0)
      if (i >= 1 .and. i <= N_PROCESSES) name = PROCESS_NAMES(i)
    case (1)
      if (i >= 1 .and. i <= N_ENERGY_TERMS) name = ENERGY_TERM_NAMES(i)
    case (2)
      if (i >= 1 .and. i <= N_WATER_TERMS) name = WATER_TERM_NAMES(i)
    case default
      continue  ! an unknown kind leaves name blank: reported below
    end select
    if (len_trim(name) > 0) then
      status = COLUMN_OK
    else
      write (message, '(a,i0,a,i0)') 'names: no entry ', i, ' of kind ', kind
    end if
  end subroutine names

  !> A model parameter by name (column_host: column_parameters), SI units.
  subroutine set_parameter(handle, name, value, status)
    integer, intent(in) :: handle
    character(len=*), intent(in) :: name
    real(8), intent(in) :: value
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup(handle, inst, status)
    if (status == COLUMN_OK) call inst%model%set_parameter(name, value, status, message)
  end subroutine set_parameter

  subroutine get_parameter(handle, name, value, status)
    integer, intent(in) :: handle
    character(len=*), intent(in) :: name
    real(8), intent(out) :: value
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    value = 0
    call lookup(handle, inst, status)
    if (status == COLUMN_OK) call inst%model%get_parameter(name, value, status, message)
  end subroutine get_parameter

  !> WTG relaxation on (1) or off (0).
  subroutine set_wtg(handle, on, status)
    integer, intent(in) :: handle, on
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup(handle, inst, status)
    if (status == COLUMN_OK) call inst%model%set_wtg(on /= 0)
  end subroutine set_wtg

  !> Betts-Miller relaxation time (s) and reference relative humidity.
  subroutine set_bm(handle, tau, rh, status)
    integer, intent(in) :: handle
    real(8), intent(in) :: tau, rh
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup(handle, inst, status)
    if (status == COLUMN_OK) call inst%bm%set_parameters(tau, rh, status, message)
  end subroutine set_bm

  subroutine get_bm(handle, tau, rh, status)
    integer, intent(in) :: handle
    real(8), intent(out) :: tau, rh
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    tau = 0
    rh = 0
    call lookup(handle, inst, status)
    if (status /= COLUMN_OK) return
    tau = inst%bm%tau
    rh = inst%bm%rh
  end subroutine get_bm

  !> Surface pressure (Pa), SST (K) and omega amplitude (Pa s-1, < 0 ascent) per column.
  subroutine set_columns(handle, ps, sst, omega0, status)
    integer, intent(in) :: handle
    real(8), intent(in) :: ps(:), sst(:), omega0(:)
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup(handle, inst, status)
    if (status == COLUMN_OK) call inst%model%set_columns(ps, sst, omega0, status, message)
  end subroutine set_columns

  subroutine get_columns(handle, ps, sst, omega0, status)
    integer, intent(in) :: handle
    real(8), intent(inout) :: ps(:), sst(:), omega0(:)
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup_shaped(handle, inst, status, c1=ps, c2=sst, c3=omega0)
    if (status /= COLUMN_OK) return
    ps = inst%model%state%ps
    sst = inst%model%state%sst
    omega0 = inst%model%omega0
  end subroutine get_columns

  !> The initial state again, from the current parameters and columns.
  subroutine reset_state(handle, status)
    integer, intent(in) :: handle
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup(handle, inst, status)
    if (status == COLUMN_OK) call inst%model%reset_state()
  end subroutine reset_state

  subroutine set_state(handle, t, q, status)
    integer, intent(in) :: handle
    real(8), intent(in) :: t(:, :), q(:, :)
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup(handle, inst, status)
    if (status == COLUMN_OK) call inst%model%set_state(t, q, status, message)
  end subroutine set_state

  subroutine get_state(handle, t, q, status)
    integer, intent(in) :: handle
    real(8), intent(inout) :: t(:, :), q(:, :)
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup_shaped(handle, inst, status, f1=t, f2=q)
    if (status /= COLUMN_OK) return
    t = inst%model%state%t
    q = inst%model%state%q
  end subroutine get_state

  !> p (nlev, ncol) and p_int (nlev+1, ncol), Pa.
  subroutine get_pressure(handle, p, p_int, status)
    integer, intent(in) :: handle
    real(8), intent(inout) :: p(:, :), p_int(:, :)
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup_shaped(handle, inst, status, f1=p)
    if (status /= COLUMN_OK) return
    if (any(shape(p_int) /= shape(inst%model%state%p_int))) then
      call refuse_shape(status)
      return
    end if
    p = inst%model%state%p
    p_int = inst%model%state%p_int
  end subroutine get_pressure

  !> nsteps steps with the Betts-Miller scheme; stops at the first failure.
  subroutine step_bm(handle, nsteps, status)
    integer, intent(in) :: handle, nsteps
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    integer :: n
    call lookup(handle, inst, status)
    do n = 1, nsteps
      if (status /= COLUMN_OK) return
      call inst%model%step(inst%bm, status, message)
    end do
  end subroutine step_bm

  !> One step applying the convective tendencies dtdt (K s-1), dqdt (kg kg-1 s-1),
  !> (nlev, ncol), and precip (kg m-2 s-1, >= 0), (ncol), computed outside.
  subroutine step_supplied(handle, dtdt, dqdt, precip, status)
    integer, intent(in) :: handle
    real(8), intent(in) :: dtdt(:, :), dqdt(:, :), precip(:)
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup(handle, inst, status)
    if (status /= COLUMN_OK) return
    call inst%supplied%set(dtdt, dqdt, precip, status, message)
    if (status /= COLUMN_OK) return
    call inst%model%step(inst%supplied, status, message)
  end subroutine step_supplied

  !> Betts-Miller on the state (t, q) at this model's pressures, without stepping:
  !> tendencies, precipitation, CAPE (J kg-1), branch (0 none, 1 shallow, 2 deep) and the
  !> highest level relaxed (0 none).
  subroutine diagnose_bm(handle, t, q, dtdt, dqdt, precip, cape, kind, top, status)
    integer, intent(in) :: handle
    real(8), intent(in) :: t(:, :), q(:, :)
    real(8), intent(inout) :: dtdt(:, :), dqdt(:, :), precip(:), cape(:)
    integer, intent(inout) :: kind(:), top(:)
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup_shaped(handle, inst, status, f1=t, f2=q, f3=dtdt, f4=dqdt, c1=precip, c2=cape)
    if (status /= COLUMN_OK) return
    if (size(kind) /= size(precip) .or. size(top) /= size(precip)) then
      call refuse_shape(status)
      return
    end if
    inst%scratch = inst%model%state
    inst%scratch%t = t
    inst%scratch%q = q
    call inst%bm%compute(inst%scratch, dtdt, dqdt, precip, status, message)
    if (status /= COLUMN_OK) return
    cape = inst%bm%cape
    kind = inst%bm%kind
    top = inst%bm%top
  end subroutine diagnose_bm

  !> Sensible and latent heat fluxes of the last step (from its initial state), W m-2.
  subroutine get_surface_fluxes(handle, shflx, lhflx, status)
    integer, intent(in) :: handle
    real(8), intent(inout) :: shflx(:), lhflx(:)
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup_shaped(handle, inst, status, c1=shflx, c2=lhflx)
    if (status /= COLUMN_OK) return
    shflx = inst%model%state%shflx
    lhflx = inst%model%state%lhflx
  end subroutine get_surface_fluxes

  !> Convective tendencies and precipitation of the last step (the scheme's; large-scale
  !> condensation's is in get_precipitation).
  subroutine get_convection(handle, dtdt, dqdt, precip, status)
    integer, intent(in) :: handle
    real(8), intent(inout) :: dtdt(:, :), dqdt(:, :), precip(:)
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call get_tendency(handle, PROC_CONVECTION, dtdt, dqdt, status)
    if (status /= COLUMN_OK) return
    call lookup_shaped(handle, inst, status, c1=precip)
    if (status == COLUMN_OK) precip = inst%model%precip
  end subroutine get_convection

  !> Convective and large-scale precipitation of the last step, kg m-2 s-1.
  subroutine get_precipitation(handle, convective, large_scale, status)
    integer, intent(in) :: handle
    real(8), intent(inout) :: convective(:), large_scale(:)
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup_shaped(handle, inst, status, c1=convective, c2=large_scale)
    if (status /= COLUMN_OK) return
    convective = inst%model%precip
    large_scale = inst%model%precip_ls
  end subroutine get_precipitation

  !> Tendencies of process i (1-based, see names kind 0) in the last step.
  subroutine get_tendency(handle, process, dtdt, dqdt, status)
    integer, intent(in) :: handle, process
    real(8), intent(inout) :: dtdt(:, :), dqdt(:, :)
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup_shaped(handle, inst, status, f1=dtdt, f2=dqdt)
    if (status /= COLUMN_OK) return
    if (process < 1 .or. process > N_PROCESSES) then
      status = COLUMN_ERR_ARGUMENT
      write (message, '(a,i0,a,i0)') 'get_tendency: process must be 1 to ', N_PROCESSES, &
        ', got ', process
      return
    end if
    dtdt = inst%model%tend_t(:, :, process)
    dqdt = inst%model%tend_q(:, :, process)
  end subroutine get_tendency

  !> Budget terms of the last step: energy (n_energy_terms, ncol) in W m-2 and water
  !> (n_water_terms, ncol) in kg m-2 s-1, in the order of names kinds 1 and 2.
  subroutine get_budgets(handle, energy, water, status)
    integer, intent(in) :: handle
    real(8), intent(inout) :: energy(:, :), water(:, :)
    integer, intent(out) :: status
    type(column_instance), pointer :: inst
    call lookup(handle, inst, status)
    if (status /= COLUMN_OK) return
    if (any(shape(energy) /= shape(inst%model%energy_budget)) .or. &
        any(shape(water) /= shape(inst%model%water_budget))) then
      call refuse_shape(status)
      return
    end if
    energy = inst%model%energy_budget
    water = inst%model%water_budget
  end subroutine get_budgets

  !> lookup, then refuse any (nlev, ncol) field f* or per-column (ncol) array c* whose
  !> shape is not the model's.
  subroutine lookup_shaped(handle, inst, status, f1, f2, f3, f4, c1, c2, c3)
    integer, intent(in) :: handle
    type(column_instance), pointer, intent(out) :: inst
    integer, intent(out) :: status
    real(8), intent(in), optional :: f1(:, :), f2(:, :), f3(:, :), f4(:, :), c1(:), c2(:), c3(:)
    call lookup(handle, inst, status)
    if (status /= COLUMN_OK) return
    if (.not. (field_fits(f1) .and. field_fits(f2) .and. field_fits(f3) .and. field_fits(f4) &
               .and. columns_fit(c1) .and. columns_fit(c2) .and. columns_fit(c3))) then
      call refuse_shape(status)
    end if
  contains
    logical function field_fits(f)
      real(8), intent(in), optional :: f(:, :)
      field_fits = .true.
      if (present(f)) field_fits = all(shape(f) == shape(inst%model%state%t))
    end function field_fits
    logical function columns_fit(c)
      real(8), intent(in), optional :: c(:)
      columns_fit = .true.
      if (present(c)) columns_fit = size(c) == inst%model%state%ncol
    end function columns_fit
  end subroutine lookup_shaped

  subroutine refuse_shape(status)
    integer, intent(out) :: status
    status = COLUMN_ERR_ARGUMENT
    message = 'array shapes do not match the model: (nlev, ncol) fields, (ncol) per column'
  end subroutine refuse_shape

end module paramlib_column_py
