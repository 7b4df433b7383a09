!> Checks shared by the column model's test programs. Each prints what it checked; a
!> failure prints why and stops the test program (never the library).
module column_checks
  use, intrinsic :: iso_fortran_env, only: output_unit
  use physical_constants, only: wp
  use column_status, only: COLUMN_OK
  use paramlib_check, only: check
  implicit none
  private
  public :: check, check_close, check_ok

contains

  !> |actual - expected| <= rtol |expected|, or <= rtol where expected is zero.
  subroutine check_close(actual, expected, rtol, what)
    real(wp), intent(in) :: actual, expected, rtol
    character(len=*), intent(in) :: what
    character(len=80) :: values
    real(wp) :: tolerance
    tolerance = rtol * abs(expected)
    if (expected == 0.0_wp) tolerance = rtol
    write (values, '(a,es24.16,a,es24.16)') ': ', actual, ' vs ', expected
    call check(abs(actual - expected) <= tolerance, what // trim(values))
  end subroutine check_close

  subroutine check_ok(status, message, what)
    integer, intent(in) :: status
    character(len=*), intent(in) :: message, what
    if (status == COLUMN_OK) then
      call check(.true., what)
    else
      call check(.false., what // ': ' // trim(message))
    end if
  end subroutine check_ok

end module column_checks
