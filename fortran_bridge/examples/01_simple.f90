!> Example 01: load one model, run it on a batch of columns, print or save the output.
!>
!>   01_simple MODEL.pt                  built-in input columns, output printed
!>   01_simple MODEL.pt IN.bin OUT.bin   input read from IN.bin, output written to OUT.bin
!>
!> The model's first input and first output are used (e.g. the "simple" test model,
!> x on 4 levels -> y on 3 levels).
!>
!> IN.bin and OUT.bin are raw stream files in the machine's byte order (little-endian
!> on x86-64 and aarch64, hence "<i4" and "<f4" below):
!>   int32 nlev, int32 ncol, then nlev*ncol float32 values of the Fortran array
!>   a(nlev, ncol), the level index running fastest.
!> That is byte for byte PyTorch's (ncol, nlev) tensor. From numpy, with a of shape
!> (nlev, ncol) as in Fortran, i.e. x = a.T the model input of shape (ncol, nlev):
!>   with open("IN.bin", "wb") as f:
!>       np.array([nlev, ncol], dtype="<i4").tofile(f)
!>       a.T.astype("<f4").tofile(f)       # = x.astype("<f4"): tofile writes C order
!> and back:
!>   nlev, ncol = np.fromfile("OUT.bin", dtype="<i4", count=2)
!>   y = np.fromfile("OUT.bin", dtype="<f4", offset=8).reshape(ncol, nlev)
program simple
  use, intrinsic :: iso_fortran_env, only: real32, int32, error_unit
  use paramlib_bridge
  use example_support, only: stop_on_error, argument
  implicit none
  type(paramlib_model) :: model
  character(len=:), allocatable :: model_file, in_file, out_file
  character(len=:), allocatable :: in_name, in_units, out_name, out_units
  real(real32), allocatable :: x(:, :), y(:, :)
  integer :: status, nlev_in, nlev_out, nargs, k, c

  nargs = command_argument_count()
  if (nargs /= 1 .and. nargs /= 3) then
    write (error_unit, '(a)') 'usage: 01_simple MODEL.pt [IN.bin OUT.bin]'
    error stop 2
  end if
  model_file = argument(1)

  call model%load(model_file, status)
  call stop_on_error(status, 'load')
  call model%field_info(PARAMLIB_INPUT, 1, in_name, in_units, nlev_in, status)
  call stop_on_error(status, 'field_info')
  call model%field_info(PARAMLIB_OUTPUT, 1, out_name, out_units, nlev_out, status)
  call stop_on_error(status, 'field_info')
  print '(a)', 'model ' // model_file // ': ' // in_name // ' [' // in_units // '] -> ' // &
    out_name // ' [' // out_units // ']'

  if (nargs == 3) then
    in_file = argument(2)
    out_file = argument(3)
    x = read_raw(in_file)
  else
    allocate (x(nlev_in, 5))
    do c = 1, size(x, 2)
      do k = 1, nlev_in
        x(k, c) = 0.1 * k - 0.2 * c
      end do
    end do
  end if

  ! x is used in place (no copy) until forward returns.
  allocate (y(nlev_out, size(x, 2)))
  call model%set_input(in_name, x, status)
  call stop_on_error(status, 'set_input')
  call model%forward(status)
  call stop_on_error(status, 'forward')
  call model%get_output(out_name, y, status)
  call stop_on_error(status, 'get_output')

  if (nargs == 3) then
    call write_raw(out_file, y)
    print '(a,i0,a)', 'wrote ', size(y, 2), ' columns of ' // out_name // ' to ' // out_file
  else
    do c = 1, size(y, 2)
      print '(a,i0,a,*(1x,es12.4))', 'column ', c, ': ' // out_name // ' =', y(:, c)
    end do
  end if
  call model%free(status)

contains

  function read_raw(path) result(a)
    character(*), intent(in) :: path
    real(real32), allocatable :: a(:, :)
    integer(int32) :: nlev, ncol
    integer :: u
    open (newunit=u, file=path, access='stream', form='unformatted', status='old', action='read')
    read (u) nlev, ncol
    allocate (a(nlev, ncol))
    read (u) a
    close (u)
  end function read_raw

  subroutine write_raw(path, a)
    character(*), intent(in) :: path
    real(real32), intent(in) :: a(:, :)
    integer :: u
    open (newunit=u, file=path, access='stream', form='unformatted', status='replace', action='write')
    write (u) int(size(a, 1), int32), int(size(a, 2), int32), a
    close (u)
  end subroutine write_raw

end program simple
