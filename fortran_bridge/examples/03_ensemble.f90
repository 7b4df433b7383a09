!> Example 03: an ensemble model (e.g. an MF-RPN): one forward runs every member;
!> the host asks for the ensemble mean, the spread (population standard deviation
!> across members, a measure of the model's uncertainty) or a single member.
!>
!>   03_ensemble MODEL.pt
!>
!> Model: the "ensemble" test model (the named fields of example 02, 4 members).
program ensemble
  use, intrinsic :: iso_fortran_env, only: real32, error_unit
  use paramlib_bridge
  use example_support, only: stop_on_error, idealized_column, set_column_inputs_and_forward, argument
  implicit none
  integer, parameter :: nlev = 8, ncol = 4, level = 3
  type(paramlib_model) :: model
  character(len=:), allocatable :: model_file
  real(real32) :: t(nlev, ncol), q(nlev, ncol), ps(ncol)
  real(real32) :: mean(nlev, ncol), spread(nlev, ncol)
  real(real32), allocatable :: members(:, :, :)
  integer :: status, n_in, n_out, n_members, c, k

  if (command_argument_count() /= 1) then
    write (error_unit, '(a)') 'usage: 03_ensemble MODEL.pt'
    error stop 2
  end if
  model_file = argument(1)
  call model%load(model_file, status)
  call stop_on_error(status, 'load')
  call model%info(n_in, n_out, n_members, status)
  call stop_on_error(status, 'info')
  print '(a,i0,a,i0,a,i0,a)', 'model: ', n_in, ' inputs, ', n_out, ' outputs, ', n_members, ' members'

  do c = 1, ncol
    call idealized_column(c, t(:, c), q(:, c), ps(c))
  end do
  call set_column_inputs_and_forward(model, t, q, ps)

  ! Statistics are computed from the members of the last forward; no new forward.
  call model%get_output('heating', mean, status, statistic=PARAMLIB_MEAN)
  call stop_on_error(status, 'heating mean')
  call model%get_output('heating', spread, status, statistic=PARAMLIB_SPREAD)
  call stop_on_error(status, 'heating spread')
  allocate (members(nlev, ncol, n_members))
  do k = 1, n_members  ! members are numbered from 1
    call model%get_output('heating', members(:, :, k), status, statistic=PARAMLIB_MEMBER, member=k)
    call stop_on_error(status, 'heating member')
  end do
  print '(a,i0,a)', 'heating [K s-1] at level ', level, ':'
  print '(a)', ' column          mean        spread   members 1..n'
  do c = 1, ncol
    print '(i7,2es14.4,2x,*(es11.3))', c, mean(level, c), spread(level, c), members(level, c, :)
  end do
  call model%free(status)
end program ensemble
