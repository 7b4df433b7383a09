!> What the examples share: the host's reaction to an error, made-up columns, and the
!> calls of the T, q, ps -> heating, moistening, precip model (spelled out in 02).
module example_support
  use, intrinsic :: iso_fortran_env, only: real32, error_unit
  use paramlib_bridge, only: PARAMLIB_OK, paramlib_last_error, paramlib_model
  implicit none
  private
  public :: stop_on_error, argument, idealized_column, set_column_inputs_and_forward, get_column_outputs

contains

  !> The library returns a status and never stops; these hosts choose to stop.
  subroutine stop_on_error(status, what)
    integer, intent(in) :: status
    character(*), intent(in) :: what
    if (status /= PARAMLIB_OK) then
      write (error_unit, '(a)') what // ' failed: ' // paramlib_last_error()
      error stop 1
    end if
  end subroutine stop_on_error

  !> Command-line argument i, however long: sized from its length, so a long path is
  !> never cut to a fixed buffer.
  function argument(i) result(s)
    integer, intent(in) :: i
    character(len=:), allocatable :: s
    integer :: n
    call get_command_argument(i, length=n)
    allocate (character(len=n) :: s)
    if (n > 0) call get_command_argument(i, s)
  end function argument

  !> Column number c of an idealized domain: warm and moist at the surface, colder
  !> and drier with height, varying across columns. The same c gives the same
  !> column whichever tile, thread or rank computes it.
  subroutine idealized_column(c, t, q, ps)
    integer, intent(in) :: c
    real(real32), intent(out) :: t(:), q(:), ps
    integer :: k
    ps = 1.0e5 - 300.0 * mod(c, 17)
    do k = 1, size(t)
      t(k) = 296.0 - 8.0 * (k - 1) + 2.0 * sin(0.1 * c)
      q(k) = 0.016 * exp(-0.35 * (k - 1)) * (0.8 + 0.2 * cos(0.07 * c))
    end do
  end subroutine idealized_column

  !> Inputs of the column model (example 02 shows these calls one by one), then forward.
  subroutine set_column_inputs_and_forward(model, t, q, ps)
    type(paramlib_model), intent(inout) :: model
    real(real32), intent(in), target :: t(:, :), q(:, :), ps(:)
    integer :: status
    call model%set_input('T', t, status, units='K')
    call stop_on_error(status, 'set_input T')
    call model%set_input('q', q, status, units='kg kg-1')
    call stop_on_error(status, 'set_input q')
    call model%set_input('ps', ps, status, units='Pa')
    call stop_on_error(status, 'set_input ps')
    call model%forward(status)
    call stop_on_error(status, 'forward')
  end subroutine set_column_inputs_and_forward

  subroutine get_column_outputs(model, heating, moistening, precip)
    type(paramlib_model), intent(inout) :: model
    real(real32), intent(inout) :: heating(:, :), moistening(:, :), precip(:)
    integer :: status
    call model%get_output('heating', heating, status, units='K s-1')
    call stop_on_error(status, 'get_output heating')
    call model%get_output('moistening', moistening, status, units='kg kg-1 s-1')
    call stop_on_error(status, 'get_output moistening')
    call model%get_output('precip', precip, status, units='mm s-1')
    call stop_on_error(status, 'get_output precip')
  end subroutine get_column_outputs

end module example_support
