!> WRF's error and message hooks for hosts outside WRF (the tests, the benchmark, another
!> model): inside WRF, frame/module_wrf_error.F provides these and this file is not compiled.
!> wrf_error_fatal stops the program as WRF does (WRF also aborts its MPI job there).
subroutine wrf_error_fatal(str)
  implicit none
  character(len=*), intent(in) :: str
  call wrf_error_fatal3('', 0, str)
end subroutine wrf_error_fatal

!> What WRF's tools/standard.exe turns `CALL wrf_error_fatal(` into: the caller's file and
!> line come first (a file compiled through WRF's preprocessing rule calls this one).
subroutine wrf_error_fatal3(file_str, line, str)
  use, intrinsic :: iso_fortran_env, only: error_unit
  implicit none
  character(len=*), intent(in) :: file_str, str
  integer, intent(in) :: line
  write (error_unit, '(a)') '-------------- FATAL CALLED ---------------'
  if (len(file_str) > 0) write (error_unit, '(a,a,a,i0)') 'FATAL CALLED FROM FILE:  ', file_str, &
    '  LINE:  ', line
  write (error_unit, '(a)') trim(str)
  write (error_unit, '(a)') '-------------------------------------------'
  error stop 1
end subroutine wrf_error_fatal3

subroutine wrf_message(str)
  use, intrinsic :: iso_fortran_env, only: output_unit
  implicit none
  character(len=*), intent(in) :: str
  write (output_unit, '(a)') trim(str)
  flush (output_unit)
end subroutine wrf_message
