!> Example 02: several named inputs and outputs, with units.
!>
!>   02_named_fields MODEL.pt
!>
!> A host declares its own fields (name, units, levels) and checks them against the
!> model's metadata once at start-up with check_field, so a model trained on other
!> levels or units is refused before the first time step, not in the middle of a run.
!> Model: the "named" test model, T[K], q[kg kg-1] on 8 levels and ps[Pa]
!> -> heating[K s-1], moistening[kg kg-1 s-1] on 8 levels and precip[mm s-1].
program named_fields
  use, intrinsic :: iso_fortran_env, only: real32, error_unit
  use paramlib_bridge
  use example_support, only: stop_on_error, idealized_column, argument
  implicit none
  integer, parameter :: nlev = 8, ncol = 6

  !> One host field as the host knows it.
  type :: host_field
    character(len=16) :: name, units
    integer :: kind, nlev
  end type host_field

  type(host_field), parameter :: fields(6) = [ &
    host_field('T', 'K', PARAMLIB_INPUT, nlev), &
    host_field('q', 'kg kg-1', PARAMLIB_INPUT, nlev), &
    host_field('ps', 'Pa', PARAMLIB_INPUT, 1), &
    host_field('heating', 'K s-1', PARAMLIB_OUTPUT, nlev), &
    host_field('moistening', 'kg kg-1 s-1', PARAMLIB_OUTPUT, nlev), &
    host_field('precip', 'mm s-1', PARAMLIB_OUTPUT, 1)]

  type(paramlib_model) :: model
  character(len=:), allocatable :: model_file
  real(real32) :: t(nlev, ncol), q(nlev, ncol), ps(ncol)
  real(real32) :: heating(nlev, ncol), moistening(nlev, ncol), precip(ncol)
  integer :: status, i, c

  if (command_argument_count() /= 1) then
    write (error_unit, '(a)') 'usage: 02_named_fields MODEL.pt'
    error stop 2
  end if
  model_file = argument(1)
  call model%load(model_file, status)
  call stop_on_error(status, 'load')

  ! Start-up: every host field must agree with the model in name, levels and units.
  do i = 1, size(fields)
    call model%check_field(fields(i)%kind, trim(fields(i)%name), fields(i)%nlev, status, &
                           units=trim(fields(i)%units))
    call stop_on_error(status, 'check_field ' // trim(fields(i)%name))
  end do
  print '(a,i0,a)', 'all ', size(fields), ' host fields agree with the model metadata'

  do c = 1, ncol
    call idealized_column(c, t(:, c), q(:, c), ps(c))
  end do

  ! Inputs by name, in any order; units are checked again on every call.
  call model%set_input('ps', ps, status, units='Pa')
  call stop_on_error(status, 'set_input ps')
  call model%set_input('T', t, status, units='K')
  call stop_on_error(status, 'set_input T')
  call model%set_input('q', q, status, units='kg kg-1')
  call stop_on_error(status, 'set_input q')
  call model%forward(status)
  call stop_on_error(status, 'forward')
  call model%get_output('heating', heating, status, units='K s-1')
  call stop_on_error(status, 'get_output heating')
  call model%get_output('moistening', moistening, status, units='kg kg-1 s-1')
  call stop_on_error(status, 'get_output moistening')
  call model%get_output('precip', precip, status, units='mm s-1')
  call stop_on_error(status, 'get_output precip')

  print '(a)', ' column   precip [mm s-1]   max |heating| [K s-1]   max |moistening| [kg kg-1 s-1]'
  do c = 1, ncol
    print '(i7,3(3x,es14.4))', c, precip(c), maxval(abs(heating(:, c))), maxval(abs(moistening(:, c)))
  end do
  call model%free(status)
end program named_fields
