!> Times one model call through the Fortran bridge, as a host would make it:
!> set_input per named field, forward, get_output per output field.
!>
!> usage: bridge_bench MODEL DATA_DIR NCOL SECONDS MIN_ITERS WARMUP_S OUT_DIR [SCREENING]
!>   DATA_DIR/fields.txt   "n_in n_out" then one "name nlev" line per input, then per output
!>   DATA_DIR/in_<i>.bin   input i (1-based), raw float32, Fortran (nlev, ncol) order
!>   OUT_DIR/out_<o>.bin   output o of the last call, written after timing
!>   WARMUP_S              untimed calls first, for this many seconds and at least 3 calls
!>   SCREENING             1 (default, the bridge's default) or 0: NaN/Inf input screening
!> Prints one JSON line: {"impl": "bridge", "ncol", "n", "median_us", "min_us", "mean_us",
!> "minflt_per_call"} (minor page faults per timed call: libtorch's temporaries come from glibc
!> malloc, so heap trimming and regrowth show up here).
!> Fields with one level are passed as rank-1 (ncol) arrays, others as (nlev, ncol).
program bridge_bench
  use, intrinsic :: iso_c_binding, only: c_int, c_long
  use, intrinsic :: iso_fortran_env, only: real32, real64, int64, error_unit
  use paramlib_bridge
  implicit none

  type :: field_t
    character(len=:), allocatable :: name
    integer :: nlev = 0
    real(real32), allocatable :: a1(:)    ! (ncol), when nlev == 1
    real(real32), allocatable :: a2(:,:)  ! (nlev, ncol)
  end type field_t

  type, bind(c) :: timespec_t
    integer(c_long) :: sec, nsec
  end type timespec_t

  type, bind(c) :: rusage_t  ! struct rusage: 2 timevals, then 14 longs; ru_minflt is f(9)
    integer(c_long) :: f(18)
  end type rusage_t

  interface
    integer(c_int) function clock_gettime(clk, ts) bind(c, name='clock_gettime')
      import :: c_int, timespec_t
      implicit none
      integer(c_int), value :: clk
      type(timespec_t), intent(out) :: ts
    end function clock_gettime
    integer(c_int) function getrusage(who, r) bind(c, name='getrusage')
      import :: c_int, rusage_t
      implicit none
      integer(c_int), value :: who
      type(rusage_t), intent(out) :: r
    end function getrusage
  end interface

  integer(c_int), parameter :: CLOCK_MONOTONIC = 1
  integer, parameter :: MAX_ITERS = 2000000

  type(paramlib_model) :: model
  type(field_t), allocatable :: fin(:), fout(:)
  character(len=4096) :: model_path, data_dir, out_dir, arg
  integer :: ncol, min_iters, screening, n_in, n_out, status, i, n, u
  real(real64) :: seconds, warmup, elapsed
  integer(int64) :: t_start, t0, t1, flt0
  integer(int64), allocatable :: times(:)

  if (command_argument_count() < 7) call die('usage: bridge_bench MODEL DATA_DIR NCOL SECONDS ' // &
                                             'MIN_ITERS WARMUP_S OUT_DIR [SCREENING]')
  call get_command_argument(1, model_path)
  call get_command_argument(2, data_dir)
  call get_command_argument(3, arg)
  read (arg, *) ncol
  call get_command_argument(4, arg)
  read (arg, *) seconds
  call get_command_argument(5, arg)
  read (arg, *) min_iters
  call get_command_argument(6, arg)
  read (arg, *) warmup
  call get_command_argument(7, out_dir)
  screening = 1
  if (command_argument_count() >= 8) then
    call get_command_argument(8, arg)
    read (arg, *) screening
  end if

  ! Before anything else, so this buffer (mmapped) never sits among libtorch's heap
  ! temporaries; touched now, so the timed loop takes no page faults for it.
  allocate (times(MAX_ITERS))
  times = 0
  call read_fields()

  call paramlib_set_num_threads(1, status)
  call check(status, 'set_num_threads')
  call model%load(trim(model_path), status)
  call check(status, 'load')
  call model%set_screening(screening /= 0, status)
  call check(status, 'set_screening')

  i = 0
  elapsed = 0
  t_start = now_ns()
  do while (i < 3 .or. elapsed < warmup)
    call one_call()
    i = i + 1
    elapsed = real(now_ns() - t_start, real64) * 1.0e-9_real64
  end do

  n = 0
  flt0 = minor_faults()
  t_start = now_ns()
  elapsed = 0
  do while ((elapsed < seconds .or. n < min_iters) .and. n < MAX_ITERS)
    t0 = now_ns()
    call one_call()
    t1 = now_ns()
    n = n + 1
    times(n) = t1 - t0
    elapsed = real(t1 - t_start, real64) * 1.0e-9_real64
  end do
  flt0 = minor_faults() - flt0

  do i = 1, n_out
    open (newunit=u, file=trim(out_dir) // '/out_' // itoa(i) // '.bin', access='stream', &
          form='unformatted', status='replace', action='write')
    if (fout(i)%nlev == 1) then
      write (u) fout(i)%a1
    else
      write (u) fout(i)%a2
    end if
    close (u)
  end do

  call sort(times(1:n))
  write (*, '(a,i0,a,i0,4(a,es15.8),a)') '{"impl": "bridge", "ncol": ', ncol, ', "n": ', n, &
    ', "median_us": ', median_us(times(1:n)), ', "min_us": ', real(times(1), real64) * 1.0e-3_real64, &
    ', "mean_us": ', real(sum(times(1:n)), real64) * 1.0e-3_real64 / n, &
    ', "minflt_per_call": ', real(flt0, real64) / n, '}'

  call model%free(status)

contains

  !> One host call: every input, forward, every output; any failure stops the benchmark.
  subroutine one_call()
    integer :: k, st
    do k = 1, n_in
      if (fin(k)%nlev == 1) then
        call model%set_input(fin(k)%name, fin(k)%a1, st)
      else
        call model%set_input(fin(k)%name, fin(k)%a2, st)
      end if
      if (st /= PARAMLIB_OK) call check(st, 'set_input ' // fin(k)%name)
    end do
    call model%forward(st)
    if (st /= PARAMLIB_OK) call check(st, 'forward')
    do k = 1, n_out
      if (fout(k)%nlev == 1) then
        call model%get_output(fout(k)%name, fout(k)%a1, st)
      else
        call model%get_output(fout(k)%name, fout(k)%a2, st)
      end if
      if (st /= PARAMLIB_OK) call check(st, 'get_output ' // fout(k)%name)
    end do
  end subroutine one_call

  subroutine read_fields()
    integer :: k
    character(len=256) :: name
    open (newunit=u, file=trim(data_dir) // '/fields.txt', status='old', action='read')
    read (u, *) n_in, n_out
    allocate (fin(n_in), fout(n_out))
    do k = 1, n_in
      read (u, *) name, fin(k)%nlev
      fin(k)%name = trim(name)
    end do
    do k = 1, n_out
      read (u, *) name, fout(k)%nlev
      fout(k)%name = trim(name)
    end do
    close (u)
    do k = 1, n_in
      call alloc(fin(k))
      open (newunit=u, file=trim(data_dir) // '/in_' // itoa(k) // '.bin', access='stream', &
            form='unformatted', status='old', action='read')
      if (fin(k)%nlev == 1) then
        read (u) fin(k)%a1
      else
        read (u) fin(k)%a2
      end if
      close (u)
    end do
    do k = 1, n_out
      call alloc(fout(k))
    end do
  end subroutine read_fields

  subroutine alloc(f)
    type(field_t), intent(inout) :: f
    if (f%nlev == 1) then
      allocate (f%a1(ncol))
      f%a1 = 0
    else
      allocate (f%a2(f%nlev, ncol))
      f%a2 = 0
    end if
  end subroutine alloc

  integer(int64) function now_ns()
    type(timespec_t) :: ts
    integer(c_int) :: rc
    rc = clock_gettime(CLOCK_MONOTONIC, ts)
    now_ns = int(ts%sec, int64) * 1000000000_int64 + int(ts%nsec, int64)
  end function now_ns

  !> Minor page faults of this process so far (getrusage RUSAGE_SELF).
  integer(int64) function minor_faults()
    type(rusage_t) :: r
    r%f = 0
    if (getrusage(0_c_int, r) /= 0) r%f(9) = 0
    minor_faults = int(r%f(9), int64)
  end function minor_faults

  real(real64) function median_us(sorted)
    integer(int64), intent(in) :: sorted(:)
    integer :: m
    m = size(sorted)
    if (mod(m, 2) == 1) then
      median_us = real(sorted(m / 2 + 1), real64)
    else
      median_us = 0.5_real64 * real(sorted(m / 2) + sorted(m / 2 + 1), real64)
    end if
    median_us = median_us * 1.0e-3_real64
  end function median_us

  !> In-place heapsort (ascending).
  subroutine sort(a)
    integer(int64), intent(inout) :: a(:)
    integer :: m, k
    integer(int64) :: tmp
    m = size(a)
    do k = m / 2, 1, -1
      call sift(a, k, m)
    end do
    do k = m, 2, -1
      tmp = a(1)
      a(1) = a(k)
      a(k) = tmp
      call sift(a, 1, k - 1)
    end do
  end subroutine sort

  subroutine sift(a, first, last)
    integer(int64), intent(inout) :: a(:)
    integer, intent(in) :: first, last
    integer :: root, child
    integer(int64) :: tmp
    root = first
    do while (2 * root <= last)
      child = 2 * root
      if (child < last) then
        if (a(child) < a(child + 1)) child = child + 1
      end if
      if (a(root) >= a(child)) return
      tmp = a(root)
      a(root) = a(child)
      a(child) = tmp
      root = child
    end do
  end subroutine sift

  function itoa(k) result(s)
    integer, intent(in) :: k
    character(len=:), allocatable :: s
    character(len=16) :: buf
    write (buf, '(i0)') k
    s = trim(buf)
  end function itoa

  subroutine check(st, what)
    integer, intent(in) :: st
    character(*), intent(in) :: what
    if (st /= PARAMLIB_OK) call die(what // ' failed (status ' // itoa(st) // '): ' // paramlib_last_error())
  end subroutine check

  subroutine die(msg)
    character(*), intent(in) :: msg
    write (error_unit, '(a)') 'bridge_bench: ' // msg
    error stop 2
  end subroutine die

end program bridge_bench
