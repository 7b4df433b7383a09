!> What the examples share: the host's reaction to an error, and made-up columns.
module example_support
  use, intrinsic :: iso_fortran_env, only: real32, error_unit
  use paramlib_bridge, only: PARAMLIB_OK, paramlib_last_error
  implicit none
  private
  public :: stop_on_error, idealized_column

contains

  !> The library returns a status and never stops; these hosts choose to stop.
  subroutine stop_on_error(status, what)
    integer, intent(in) :: status
    character(*), intent(in) :: what
    if (status /= PARAMLIB_OK) then
      write (error_unit, '(a)') what // ' failed: ' // paramlib_last_error()
      error stop 1
    end if
  end subroutine

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
  end subroutine

end module example_support
