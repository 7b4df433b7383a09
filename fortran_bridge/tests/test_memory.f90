!> A long run must not grow memory: 10^4 calls after a warm-up, through every
!> input path (in-place float32, converted real64, NaN-screened), with the
!> resident set size from /proc/self/statm before and after.
program test_memory
  use, intrinsic :: iso_fortran_env, only: real32, real64, int64
  use, intrinsic :: ieee_arithmetic, only: ieee_value, ieee_quiet_nan
  use paramlib_bridge
  use paramlib_test_utils
  implicit none
  integer, parameter :: ncol = 16, nwarm = 500, ncalls = 10000
  ! 2 MiB over 10^4 calls: a leak of ~200 bytes per call (one small tensor) fails.
  integer(int64), parameter :: max_growth_kib = 2048
  type(paramlib_model) :: m
  real(real32) :: x(4, ncol), xnan(4, ncol), y(3, ncol)
  real(real64) :: x64(4, ncol), y64(3, ncol)
  integer(int64) :: rss0, rss1
  integer :: status, i, fails
  character(len=100) :: line

  call random_number(x)
  x64 = x
  xnan = x
  xnan(1, 5) = ieee_value(xnan(1, 5), ieee_quiet_nan)
  call paramlib_set_num_threads(1, status)
  call load_ok(m, 'simple.pt')
  fails = 0
  do i = 1, nwarm
    call one_call(i, status)
    if (status /= PARAMLIB_OK) fails = fails + 1
  end do
  call check(fails == 0, 'warm-up calls succeed')
  rss0 = rss_kib()
  do i = 1, ncalls
    call one_call(i, status)
    if (status /= PARAMLIB_OK) fails = fails + 1
  end do
  rss1 = rss_kib()
  write (line, '(i0,a)') ncalls, ' calls succeed'
  call check(fails == 0, trim(line))
  write (line, '(a,i0,a,i0,a,i0,a)') 'RSS ', rss0, ' KiB -> ', rss1, ' KiB (growth ', rss1 - rss0, ' KiB)'
  print '(2x,a)', trim(line)
  call check(rss0 > 0 .and. rss1 - rss0 <= max_growth_kib, 'RSS grew by at most 2 MiB')
  call m%free(status)
  print '(a)', 'test_memory: all checks passed'

contains

  !> Call i: in-place float32, real64 (converted copy) or one NaN column (screened copy).
  subroutine one_call(i, status)
    integer, intent(in) :: i
    integer, intent(out) :: status
    integer :: n_bad
    select case (mod(i, 3))
    case (0)
      call m%set_input('x', x, status)
    case (1)
      call m%set_input('x', x64, status)
    case default
      call m%set_input('x', xnan, status)
    end select
    if (status /= PARAMLIB_OK) return
    call m%forward(status, n_bad=n_bad)
    if (status == PARAMLIB_WARN_BAD_INPUT .and. n_bad == 1) status = PARAMLIB_OK
    if (status /= PARAMLIB_OK) return
    if (mod(i, 2) == 0) then
      call m%get_output('y', y, status)
    else
      call m%get_output('y', y64, status)
    end if
  end subroutine one_call

end program test_memory
