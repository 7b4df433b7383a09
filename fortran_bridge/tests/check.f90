!> The one check every Fortran test program uses: print what was checked; on failure
!> print why and stop the *test program* (never a library).
module paramlib_check
  use, intrinsic :: iso_fortran_env, only: output_unit
  implicit none
  private
  public :: check

contains

  subroutine check(ok, what)
    logical, intent(in) :: ok
    character(*), intent(in) :: what
    if (ok) then
      write (output_unit, '(a)') '  ok    ' // what
    else
      write (output_unit, '(a)') '  FAIL  ' // what
      flush (output_unit)
      error stop 1
    end if
  end subroutine check

end module paramlib_check
