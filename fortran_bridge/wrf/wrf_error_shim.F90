!> WRF's error and message hooks for hosts outside WRF (the tests, the benchmark, another
!> model): inside WRF, frame/module_wrf_error.F provides these and this file is not compiled.
!> wrf_error_fatal stops the program as WRF does (WRF also aborts its MPI job there).
subroutine wrf_error_fatal(str)
  use, intrinsic :: iso_fortran_env, only: error_unit
  implicit none
  character(len=*), intent(in) :: str
  write (error_unit, '(a)') '-------------- FATAL CALLED ---------------'
  write (error_unit, '(a)') trim(str)
  write (error_unit, '(a)') '-------------------------------------------'
  error stop 1
end subroutine wrf_error_fatal

subroutine wrf_message(str)
  use, intrinsic :: iso_fortran_env, only: output_unit
  implicit none
  character(len=*), intent(in) :: str
  write (output_unit, '(a)') trim(str)
  flush (output_unit)
end subroutine wrf_message
