!> paramlib_py: a flat facade over paramlib_bridge for f90wrap.
!>
!> Python reaches libtorch through the same Fortran module a host model uses
!> (Python -> f2py -> this module -> paramlib_bridge -> C ABI -> libtorch), so the
!> Python tests exercise the Fortran path itself. f90wrap cannot wrap the
!> type-bound generics of paramlib_model, hence plain subroutines, one per kind
!> and rank, and integer handles into a table of models. Kinds are written as
!> literals (4, 8) because the f90wrap kind map is keyed on them.
!>
!> Handles are never reused: a freed slot keeps an unloaded model, so a stale
!> handle reaches the bridge as "not a loaded model" (PARAMLIB_ERR_HANDLE)
!> instead of silently addressing a newer model.
module paramlib_py
  use paramlib_bridge, only: paramlib_model, paramlib_last_error, paramlib_set_num_threads, &
                             PARAMLIB_OK
  implicit none
  private
  public :: load, free, set_num_threads, last_error, info, field_info, check_field
  public :: set_screening, require_units, set_precision, precision
  public :: set_input_r32_1, set_input_r32_2, set_input_r64_1, set_input_r64_2
  public :: forward, bad_columns, get_output_r32_2, get_output_r64_2

  type(paramlib_model), allocatable :: models(:)
  integer :: n_models = 0

contains

  !> The model behind a handle; unknown and freed handles give an unloaded model.
  function model_of(handle) result(m)
    integer, intent(in) :: handle
    type(paramlib_model) :: m
    if (handle >= 1 .and. handle <= n_models) m = models(handle)
  end function model_of

  !> Load a model file; device 0 = CPU, 1 = CUDA (device_index selects the GPU);
  !> sha256 = "" loads without pinning. handle is 0 when status is not PARAMLIB_OK.
  subroutine load(path, device, device_index, sha256, handle, status)
    character(len=*), intent(in) :: path, sha256
    integer, intent(in) :: device, device_index
    integer, intent(out) :: handle, status
    type(paramlib_model), allocatable :: grown(:)
    handle = 0
    if (.not. allocated(models)) allocate (models(16))
    if (n_models == size(models)) then
      allocate (grown(2 * size(models)))
      grown(:n_models) = models(:n_models)
      call move_alloc(grown, models)
    end if
    call models(n_models + 1)%load(path, status, device=device, device_index=device_index, &
                                   sha256=sha256)
    if (status /= PARAMLIB_OK) return
    n_models = n_models + 1
    handle = n_models
  end subroutine load

  subroutine free(handle, status)
    integer, intent(in) :: handle
    integer, intent(out) :: status
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%free(status)
    if (status == PARAMLIB_OK) models(handle) = m
  end subroutine free

  subroutine set_num_threads(n, status)
    integer, intent(in) :: n
    integer, intent(out) :: status
    call paramlib_set_num_threads(n, status)
  end subroutine set_num_threads

  !> Characters offset+1.. of the message of the last failure on this thread, as
  !> many as fit len(message) (the f90wrap wrapper's buffer, its -S string length),
  !> and the message's full length: the caller reads a long message in pieces.
  subroutine last_error(offset, message, length)
    integer, intent(in) :: offset
    character(len=*), intent(out) :: message
    integer, intent(out) :: length
    character(len=:), allocatable :: full
    full = paramlib_last_error()
    length = len(full)
    message = full(min(offset, length) + 1:)
  end subroutine last_error

  subroutine info(handle, n_inputs, n_outputs, ensemble_size, status)
    integer, intent(in) :: handle
    integer, intent(out) :: n_inputs, n_outputs, ensemble_size, status
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%info(n_inputs, n_outputs, ensemble_size, status)
  end subroutine info

  !> Field i (1-based) of kind 0 = input, 1 = output.
  subroutine field_info(handle, kind, i, name, units, nlev, status)
    integer, intent(in) :: handle, kind, i
    character(len=*), intent(out) :: name, units
    integer, intent(out) :: nlev, status
    type(paramlib_model) :: m
    character(len=:), allocatable :: n, u
    m = model_of(handle)
    call m%field_info(kind, i, n, u, nlev, status)
    name = n
    units = u
  end subroutine field_info

  !> units = "" skips the units check (unless required), level_order = "" the order check.
  subroutine check_field(handle, kind, name, nlev, units, level_order, status)
    integer, intent(in) :: handle, kind, nlev
    character(len=*), intent(in) :: name, units, level_order
    integer, intent(out) :: status
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%check_field(kind, name, nlev, status, units=units, level_order=level_order)
  end subroutine check_field

  subroutine require_units(handle, on, status)
    integer, intent(in) :: handle
    logical, intent(in) :: on
    integer, intent(out) :: status
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%require_units(on, status)
  end subroutine require_units

  subroutine set_screening(handle, on, status)
    integer, intent(in) :: handle
    logical, intent(in) :: on
    integer, intent(out) :: status
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%set_screening(on, status)
  end subroutine set_screening

  !> precision: 0 = fp32, 1 = bf16, 2 = tf32 (enum pl_precision).
  subroutine set_precision(handle, precision, tolerance, status)
    integer, intent(in) :: handle, precision
    real(8), intent(in) :: tolerance
    integer, intent(out) :: status
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%set_precision(precision, tolerance, status)
  end subroutine set_precision

  subroutine precision(handle, status, code, rel_error)
    integer, intent(in) :: handle
    integer, intent(out) :: status, code
    real(8), intent(out) :: rel_error
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%precision(code, rel_error, status)
  end subroutine precision

  ! set_input_*: the bridge may wrap a (contiguous, real32) array in place, so
  ! the caller keeps it alive and unchanged until forward returns. units = ""
  ! skips the units check.

  !> A one-level field as (ncol).
  subroutine set_input_r32_1(handle, name, a, units, status)
    integer, intent(in) :: handle
    character(len=*), intent(in) :: name, units
    real(4), intent(in), target :: a(:)
    integer, intent(out) :: status
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%set_input(name, a, status, units=units)
  end subroutine set_input_r32_1

  !> Columns as (nlev, ncol).
  subroutine set_input_r32_2(handle, name, a, units, status)
    integer, intent(in) :: handle
    character(len=*), intent(in) :: name, units
    real(4), intent(in), target :: a(:, :)
    integer, intent(out) :: status
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%set_input(name, a, status, units=units)
  end subroutine set_input_r32_2

  subroutine set_input_r64_1(handle, name, a, units, status)
    integer, intent(in) :: handle
    character(len=*), intent(in) :: name, units
    real(8), intent(in), target :: a(:)
    integer, intent(out) :: status
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%set_input(name, a, status, units=units)
  end subroutine set_input_r64_1

  subroutine set_input_r64_2(handle, name, a, units, status)
    integer, intent(in) :: handle
    character(len=*), intent(in) :: name, units
    real(8), intent(in), target :: a(:, :)
    integer, intent(out) :: status
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%set_input(name, a, status, units=units)
  end subroutine set_input_r64_2

  !> status 1 (PARAMLIB_WARN_BAD_INPUT) with n_bad > 0 when columns had NaN/Inf.
  subroutine forward(handle, status, n_bad)
    integer, intent(in) :: handle
    integer, intent(out) :: status, n_bad
    type(paramlib_model) :: m
    m = model_of(handle)
    n_bad = 0
    call m%forward(status, n_bad)
  end subroutine forward

  !> Per-column flags of the last forward (1 = a NaN/Inf input).
  subroutine bad_columns(handle, flags, status)
    integer, intent(in) :: handle
    integer, intent(inout) :: flags(:)
    integer, intent(out) :: status
    type(paramlib_model) :: m
    logical :: bad(size(flags))
    m = model_of(handle)
    call m%bad_columns(bad, status)
    flags = merge(1, 0, bad)
  end subroutine bad_columns

  ! get_output_*: a is (nlev, ncol), filled in place; statistic 0 = mean, 1 = spread,
  ! 2 = member (1-based); units = "" skips the units check.

  subroutine get_output_r32_2(handle, name, a, units, statistic, member, status)
    integer, intent(in) :: handle, statistic, member
    character(len=*), intent(in) :: name, units
    real(4), intent(inout) :: a(:, :)
    integer, intent(out) :: status
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%get_output(name, a, status, units=units, statistic=statistic, member=member)
  end subroutine get_output_r32_2

  subroutine get_output_r64_2(handle, name, a, units, statistic, member, status)
    integer, intent(in) :: handle, statistic, member
    character(len=*), intent(in) :: name, units
    real(8), intent(inout) :: a(:, :)
    integer, intent(out) :: status
    type(paramlib_model) :: m
    m = model_of(handle)
    call m%get_output(name, a, status, units=units, statistic=statistic, member=member)
  end subroutine get_output_r64_2

end module paramlib_py
