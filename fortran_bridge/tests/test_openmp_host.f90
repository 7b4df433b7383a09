!> The bridge leaves the host's OpenMP settings alone. libtorch runs on the OpenMP
!> runtime it shares with an OpenMP host, and both paramlib_set_num_threads and
!> libtorch's first parallel kernel on a thread call omp_set_num_threads for that
!> thread: unguarded, a WRF-like host would find its tile loops on another thread count.
program test_openmp_host
  use, intrinsic :: iso_fortran_env, only: real32
  use omp_lib, only: omp_set_num_threads, omp_get_max_threads, omp_get_num_threads
  use paramlib_bridge
  use paramlib_test_utils
  implicit none
  integer, parameter :: host_threads = 3, ncol = 100000  ! large enough for parallel kernels
  type(paramlib_model) :: m
  real(real32), allocatable :: x(:, :), y(:, :)
  integer :: status, team

  allocate (x(4, ncol), y(3, ncol))
  call random_number(x)
  call omp_set_num_threads(host_threads)
  call load_ok(m, 'simple.pt')
  call run_simple('forward before any set_num_threads')
  call paramlib_set_num_threads(1, status)
  call assert_ok(status, 'set_num_threads(1)')
  call check(omp_get_max_threads() == host_threads, 'set_num_threads(1) keeps the host team size')
  call run_simple('forward with one intra-op thread')
  call paramlib_set_num_threads(2, status)
  call run_simple('forward with two intra-op threads')
  team = 0
  !$omp parallel
  !$omp single
  team = omp_get_num_threads()
  !$omp end single
  !$omp end parallel
  call check(team == host_threads, 'the host''s next parallel region has its own team size')
  call m%free(status)
  print '(a)', 'test_openmp_host: all checks passed'

contains

  subroutine run_simple(what)
    character(*), intent(in) :: what
    call m%set_input('x', x, status)
    if (status == PARAMLIB_OK) call m%forward(status)
    if (status == PARAMLIB_OK) call m%get_output('y', y, status)
    call assert_ok(status, what)
    call check(omp_get_max_threads() == host_threads, what // ' keeps the host team size')
  end subroutine run_simple

end program test_openmp_host
