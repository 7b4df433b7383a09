!> Cost of the cumulus plugin per call on one WRF tile (benchmarks/wrf_plugin_cost.py runs it).
!>
!>   wrf_plugin_bench MODEL POOL NX NY CALLS [DEVICE [TILES_X TILES_Y]]
!>
!> POOL: columns to fill the NX x NY tile with (cycled): int32 nlev, npool, then float32
!> arrays (npool, nlev) in C order for u, v, w (nlev+1 levels), th, t, qv, p, pi, rho, dz8w,
!> w0avg, rthcuten, rqvcuten, rqccuten, rqrcuten, rqicuten, rqscuten, then (npool) for hfx,
!> ust, pblh, xland, pratec, nca. DEVICE: 0 CPU (default), 1 CUDA. TILES_X x TILES_Y (default
!> 1 x 1): the NX x NY patch split into WRF tiles, called one after another (one thread).
!> One warm-up call, then CALLS timed cumulus steps (per tile one cu_paramlib call: gather,
!> model, scatter), NCA reset before each so every call does the same work. Prints one JSON
!> line: tile_columns (the patch), levels, calls, median_s, min_s, per_column_us (median /
!> columns).
program wrf_plugin_bench
  use, intrinsic :: iso_fortran_env, only: error_unit, int32, int64, real32
  use module_cu_paramlib, only: cu_paramlib_init, cu_paramlib_finalize
  use wrf_domain
  implicit none
  integer, parameter :: N3 = 16, N1 = 6   ! profiles besides w; one-level fields
  character(len=4096) :: model, pool_file, arg
  integer :: nx, ny, calls, device, unit, n, i, j, c, tiles_x, tiles_y
  integer(int32) :: header(2)
  real(real32), allocatable :: pool3(:, :, :), pool1(:, :), w(:, :), nca0(:, :)
  real, allocatable :: seconds(:)
  integer(int64) :: t0, t1, rate
  type(domain) :: d
  type(tile_set) :: tiles

  if (command_argument_count() < 5) then
    write (error_unit, '(a)') 'usage: wrf_plugin_bench MODEL POOL NX NY CALLS [DEVICE [TILES_X TILES_Y]]'
    error stop 2
  end if
  call get_command_argument(1, model)
  call get_command_argument(2, pool_file)
  nx = int_arg(3)
  ny = int_arg(4)
  calls = int_arg(5)
  device = 0
  if (command_argument_count() >= 6) device = int_arg(6)
  tiles_x = 1
  tiles_y = 1
  if (command_argument_count() >= 8) then
    tiles_x = int_arg(7)
    tiles_y = int_arg(8)
  end if

  open (newunit=unit, file=trim(pool_file), access='stream', form='unformatted', status='old', &
        action='read')
  read (unit) header
  associate (nlev => header(1), npool => header(2))
    allocate (pool3(nlev, npool, N3), pool1(npool, N1), w(nlev + 1, npool))
    read (unit) pool3(:, :, 1:2), w, pool3(:, :, 3:N3), pool1
    close (unit)
    d = new_domain(nx, ny, nlev, 3, 30.0, 10)
    do j = 1, ny
      do i = 1, nx
        c = mod((j - 1) * nx + i - 1, npool) + 1
        d%u(i, 1:nlev, j) = pool3(:, c, 1)
        d%v(i, 1:nlev, j) = pool3(:, c, 2)
        d%w(i, 1:nlev + 1, j) = w(:, c)
        d%th(i, 1:nlev, j) = pool3(:, c, 3)
        d%t(i, 1:nlev, j) = pool3(:, c, 4)
        d%qv(i, 1:nlev, j) = pool3(:, c, 5)
        d%p(i, 1:nlev, j) = pool3(:, c, 6)
        d%pi(i, 1:nlev, j) = pool3(:, c, 7)
        d%rho(i, 1:nlev, j) = pool3(:, c, 8)
        d%dz8w(i, 1:nlev, j) = pool3(:, c, 9)
        d%w0avg(i, 1:nlev, j) = pool3(:, c, 10)
        d%rthcuten(i, 1:nlev, j) = pool3(:, c, 11)
        d%rqvcuten(i, 1:nlev, j) = pool3(:, c, 12)
        d%rqccuten(i, 1:nlev, j) = pool3(:, c, 13)
        d%rqrcuten(i, 1:nlev, j) = pool3(:, c, 14)
        d%rqicuten(i, 1:nlev, j) = pool3(:, c, 15)
        d%rqscuten(i, 1:nlev, j) = pool3(:, c, 16)
        d%hfx(i, j) = pool1(c, 1)
        d%ust(i, j) = pool1(c, 2)
        d%pblh(i, j) = pool1(c, 3)
        d%xland(i, j) = pool1(c, 4)
        d%pratec(i, j) = pool1(c, 5)
        d%nca(i, j) = pool1(c, 6)
      end do
    end do
    call keep_as_previous(d)
    nca0 = d%nca

    call cu_paramlib_init(model, device, 0, 0, 1, 1, nlev + 1)  ! untrimmed, as WRF passes it
    tiles = make_tiles(d, tiles_x, tiles_y)
    allocate (seconds(calls))
    call system_clock(count_rate=rate)
    do n = 0, calls
      d%nca = nca0
      call system_clock(t0)
      call cumulus_step(d, tiles, d%stepcu * (n + 1), .false.)
      call system_clock(t1)
      if (n > 0) seconds(n) = real(t1 - t0) / real(rate)
    end do
    call cu_paramlib_finalize()
    print '(a,i0,a,i0,a,i0,a,i0,a,es12.5,a,es12.5,a,f12.4,a)', '{"tile_columns": ', nx * ny, &
      ', "tiles": ', size(tiles%i_start), ', "levels": ', nlev, ', "calls": ', calls, &
      ', "median_s": ', median(seconds), &
      ', "min_s": ', minval(seconds), ', "per_column_us": ', median(seconds) / (nx * ny) * 1e6, '}'
  end associate

contains

  integer function int_arg(k)
    integer, intent(in) :: k
    integer :: ios
    call get_command_argument(k, arg)
    read (arg, *, iostat=ios) int_arg
    if (ios /= 0) then
      write (error_unit, '(a,i0,a)') 'argument ', k, ' is not an integer: ' // trim(arg)
      error stop 2
    end if
  end function int_arg

  real function median(x)
    real, intent(in) :: x(:)
    real :: s(size(x)), v
    integer :: a, b
    s = x
    do a = 2, size(s)   ! insertion sort: a handful of values
      v = s(a)
      b = a - 1
      do while (b >= 1)
        if (s(b) <= v) exit
        s(b + 1) = s(b)
        b = b - 1
      end do
      s(b + 1) = v
    end do
    median = 0.5 * (s((size(s) + 1) / 2) + s(size(s) / 2 + 1))
  end function median

end program wrf_plugin_bench
