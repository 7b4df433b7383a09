!> Thread safety: OpenMP threads, each with its own cloned handle, run many tiles
!> at once and must give bitwise the results of serial calls; a single shared
!> handle used under !$omp critical must too, and so must one handle shared by
!> all threads without any critical section. Every tile has different inputs,
!> so outputs crossing between threads would be noticed.
program test_threads
  use, intrinsic :: iso_fortran_env, only: real32
  use omp_lib, only: omp_get_thread_num, omp_get_num_threads
  use paramlib_bridge
  use paramlib_test_utils
  implicit none
  integer, parameter :: nthreads = 4, ntiles = 16, niter = 200
  type(paramlib_model) :: base, clones(0:nthreads - 1)
  real(real32), allocatable :: t(:, :), q(:, :), ps(:, :)
  real(real32), allocatable :: tt(:, :, :), qt(:, :, :), pst(:, :)
  real(real32), allocatable :: h_ser(:, :, :), m_ser(:, :, :), p_ser(:, :)
  integer :: ncol, tile, status, k, it, mismatches, failures, team

  call read_field(model_path('named_in_T.bin'), t)
  call read_field(model_path('named_in_q.bin'), q)
  call read_field(model_path('named_in_ps.bin'), ps)
  ncol = size(t, 2)
  allocate (tt(8, ncol, ntiles), qt(8, ncol, ntiles), pst(ncol, ntiles))
  allocate (h_ser(8, ncol, ntiles), m_ser(8, ncol, ntiles), p_ser(ncol, ntiles))
  do tile = 1, ntiles
    tt(:, :, tile) = t + 0.5 * tile
    qt(:, :, tile) = q * (1 + 0.01 * tile)
    pst(:, tile) = ps(1, :) - 100.0 * tile
  end do

  ! One intra-op thread: the threading under test is the host's, and the serial
  ! reference must use the same kernels to be bitwise comparable.
  call paramlib_set_num_threads(1, status)
  call assert_ok(status, 'set_num_threads(1)')
  call load_ok(base, 'named.pt')
  failures = 0
  do tile = 1, ntiles
    call run_named(base, tt(:, :, tile), qt(:, :, tile), pst(:, tile), h_ser(:, :, tile), &
                   m_ser(:, :, tile), p_ser(:, tile), status)
    if (status /= PARAMLIB_OK) failures = failures + 1
  end do
  call check(failures == 0, 'serial reference calls, one per tile')
  do k = 0, nthreads - 1
    call base%clone(clones(k), status)
    if (status /= PARAMLIB_OK) failures = failures + 1
  end do
  call check(failures == 0, 'one clone per thread')

  print '(a,i0,a,i0,a)', 'cloned handles: ', nthreads, ' threads, ', niter * ntiles, ' tile calls'
  mismatches = 0
  failures = 0
  team = 0
  !$omp parallel num_threads(nthreads) private(tile, status) reduction(+:mismatches, failures)
  !$omp single
  team = omp_get_num_threads()
  !$omp end single
  !$omp do schedule(dynamic)
  do it = 1, niter * ntiles
    tile = mod(it - 1, ntiles) + 1
    call run_tile(clones(omp_get_thread_num()), tile, status, mismatches)
    if (status /= PARAMLIB_OK) failures = failures + 1
  end do
  !$omp end do
  !$omp end parallel
  call check(team == nthreads, 'the parallel region really ran with several threads')
  call report(failures, mismatches)

  print '(a)', 'one shared handle under !$omp critical'
  mismatches = 0
  failures = 0
  !$omp parallel do num_threads(nthreads) private(tile, status) reduction(+:mismatches, failures)
  do it = 1, niter * ntiles
    tile = mod(it - 1, ntiles) + 1
    !$omp critical (shared_handle)
    call run_tile(base, tile, status, mismatches)
    !$omp end critical (shared_handle)
    if (status /= PARAMLIB_OK) failures = failures + 1
  end do
  !$omp end parallel do
  call report(failures, mismatches)

  ! The misuse the header warns about: one handle, no critical section. Each thread's
  ! set_input -> forward -> get_output sequence interleaves with the others'; every
  ! thread must still get the outputs of its own inputs.
  print '(a)', 'one shared handle, no critical section'
  mismatches = 0
  failures = 0
  !$omp parallel do num_threads(nthreads) schedule(dynamic) private(tile, status) &
  !$omp reduction(+:mismatches, failures)
  do it = 1, niter * ntiles
    tile = mod(it - 1, ntiles) + 1
    call run_tile(base, tile, status, mismatches)
    if (status /= PARAMLIB_OK) failures = failures + 1
  end do
  !$omp end parallel do
  call report(failures, mismatches)

  do k = 0, nthreads - 1
    call clones(k)%free(status)
    if (status /= PARAMLIB_OK) failures = failures + 1
  end do
  call base%free(status)
  call check(failures == 0 .and. status == PARAMLIB_OK, 'free the clones and the model')
  print '(a)', 'test_threads: all checks passed'

contains

  !> One tile on one handle; counts a mismatch unless bitwise equal to serial.
  subroutine run_tile(m, tile, status, mismatches)
    type(paramlib_model), intent(in) :: m
    integer, intent(in) :: tile
    integer, intent(out) :: status
    integer, intent(inout) :: mismatches
    real(real32) :: h(8, ncol), mo(8, ncol), p(ncol)
    call run_named(m, tt(:, :, tile), qt(:, :, tile), pst(:, tile), h, mo, p, status)
    if (status /= PARAMLIB_OK) return
    if (any(h /= h_ser(:, :, tile)) .or. any(mo /= m_ser(:, :, tile)) .or. &
        any(p /= p_ser(:, tile))) mismatches = mismatches + 1
  end subroutine run_tile

  subroutine report(failures, mismatches)
    integer, intent(in) :: failures, mismatches
    character(len=80) :: line
    write (line, '(i0,a,i0,a)') failures, ' failed calls, ', mismatches, ' tiles differing from serial'
    call check(failures == 0 .and. mismatches == 0, trim(line))
  end subroutine report

end program test_threads
