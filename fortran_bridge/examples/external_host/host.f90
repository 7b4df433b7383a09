!> A host model outside the paramlib source tree, built against an installed bridge
!> in any of three ways (see CMakeLists.txt and Makefile):
!>   CMake:      find_package(paramlib_bridge) + target_link_libraries(host PRIVATE paramlib::bridge)
!>   Make:       include PREFIX/share/paramlib/paramlib_bridge.mk
!>   pkg-config: gfortran host.f90 $(pkg-config --cflags --libs paramlib_bridge)
!>
!>   host MODEL.pt
!>
!> Runs the model's first input -> first output on 3 columns with inputs
!> x(k, c) = (k - c) / 4 (exact in binary, so a test can rebuild them) and prints
!> one line per column.
program host
  use, intrinsic :: iso_fortran_env, only: real32, error_unit
  use paramlib_bridge
  implicit none
  integer, parameter :: ncol = 3
  type(paramlib_model) :: model
  character(len=:), allocatable :: model_file
  character(len=:), allocatable :: in_name, in_units, out_name, out_units
  real(real32), allocatable :: x(:, :), y(:, :)
  integer :: status, nlev_in, nlev_out, k, c, n

  if (command_argument_count() /= 1) then
    write (error_unit, '(a)') 'usage: host MODEL.pt'
    error stop 2
  end if
  call get_command_argument(1, length=n)  ! sized to the path: never cut to a fixed buffer
  allocate (character(len=n) :: model_file)
  call get_command_argument(1, model_file)
  call model%load(model_file, status)
  if (status == PARAMLIB_OK) call model%field_info(PARAMLIB_INPUT, 1, in_name, in_units, nlev_in, status)
  if (status == PARAMLIB_OK) call model%field_info(PARAMLIB_OUTPUT, 1, out_name, out_units, nlev_out, status)
  if (status /= PARAMLIB_OK) call fail()

  allocate (x(nlev_in, ncol), y(nlev_out, ncol))
  do c = 1, ncol
    do k = 1, nlev_in
      x(k, c) = real(k - c, real32) / 4
    end do
  end do
  call model%set_input(in_name, x, status)
  if (status == PARAMLIB_OK) call model%forward(status)
  if (status == PARAMLIB_OK) call model%get_output(out_name, y, status)
  if (status /= PARAMLIB_OK) call fail()

  print '(a)', 'paramlib_bridge ' // paramlib_version() // ': ' // in_name // ' -> ' // out_name
  do c = 1, ncol
    print '(a,i0,a,*(1x,es16.8))', 'column ', c, ':', y(:, c)
  end do
  call model%free(status)

contains

  subroutine fail()
    write (error_unit, '(a)') 'host: ' // paramlib_last_error()
    error stop 1
  end subroutine fail

end program host
