!> Bridge outputs against PyTorch references written by make_test_models.py, for
!> every host layout: rank 2 (nlev, ncol), rank 1 (ncol), a strided rank-2
!> section, a rank-3 WRF tile slice with halo, real64 arrays, and ensemble
!> statistics. Tolerance 1e-6 relative to each field's largest value.
program test_correctness
  use, intrinsic :: iso_fortran_env, only: real32, real64
  use, intrinsic :: ieee_arithmetic, only: ieee_value, ieee_quiet_nan
  use paramlib_bridge
  use paramlib_test_utils
  implicit none
  real(real64), parameter :: rtol = 1e-6_real64
  real(real32), allocatable :: t(:, :), q(:, :), ps(:, :)
  real(real32), allocatable :: ref_h(:, :), ref_m(:, :), ref_p(:, :)
  integer :: ncol

  call read_field(model_path('named_in_T.bin'), t)
  call read_field(model_path('named_in_q.bin'), q)
  call read_field(model_path('named_in_ps.bin'), ps)
  call read_field(model_path('named_out_heating_mean.bin'), ref_h)
  call read_field(model_path('named_out_moistening_mean.bin'), ref_m)
  call read_field(model_path('named_out_precip_mean.bin'), ref_p)
  ncol = size(t, 2)

  call single_input_model()
  call rank2_and_rank1()
  call strided_rank2()
  call real64_arrays()
  call wrf_tile()
  call ensemble_statistics()
  call metadata_queries()
  print '(a)', 'test_correctness: all checks passed'

contains

  !> metadata_json gives the stored JSON whole; valid_range the training range per level.
  subroutine metadata_queries()
    type(paramlib_model) :: m
    real(real32), allocatable :: ref(:, :)
    real(real64), allocatable :: lo(:), hi(:)
    character(len=:), allocatable :: json, stored
    integer :: status, unit, nbytes
    print '(a)', 'metadata queries: metadata_json and valid_range'
    call m%load(model_path('named.pt'), status)
    call assert_ok(status, 'load named.pt')
    call m%metadata_json(json, status)
    call assert_ok(status, 'metadata_json')
    open (newunit=unit, file=model_path('named.json'), access='stream', form='unformatted', &
          status='old', action='read')
    inquire (unit=unit, size=nbytes)
    allocate (character(len=nbytes) :: stored)
    read (unit) stored
    close (unit)
    call check(json == stored, 'metadata_json is the stored paramlib.json, whole')
    call read_field(model_path('named_valid_range_T.bin'), ref)
    call m%valid_range('T', lo, hi, status)
    call assert_ok(status, 'valid_range of T')
    call assert_close(reshape(lo, [size(lo), 1]), ref(:, 1:1), 'valid_range T min', rtol)
    call assert_close(reshape(hi, [size(hi), 1]), ref(:, 2:2), 'valid_range T max', rtol)
    call m%valid_range('ps', lo, hi, status)
    call assert_ok(status, 'valid_range of ps')
    call check(size(lo) == 1 .and. size(hi) == 1 .and. lo(1) < hi(1), &
                'a one-level input has a range of one value')
    call m%free(status)
  end subroutine metadata_queries

  subroutine single_input_model()
    type(paramlib_model) :: m
    real(real32), allocatable :: x(:, :), ref(:, :), y(:, :)
    integer :: status, n_in, n_out, n_ens, nlev
    character(len=:), allocatable :: name, units
    print '(a)', 'simple model: metadata and one rank-2 call'
    call read_field(model_path('simple_in_x.bin'), x)
    call read_field(model_path('simple_out_y_mean.bin'), ref)
    call load_ok(m, 'simple.pt')
    call m%info(n_in, n_out, n_ens, status)
    call check(status == PARAMLIB_OK .and. n_in == 1 .and. n_out == 1 .and. n_ens == 1, &
               'info: 1 input, 1 output, deterministic')
    call m%field_info(PARAMLIB_INPUT, 1, name, units, nlev, status)
    call check(status == PARAMLIB_OK .and. name == 'x' .and. nlev == size(x, 1), &
               'field_info input 1 is x [' // units // '] with the reference level count')
    call m%field_info(PARAMLIB_OUTPUT, 1, name, units, nlev, status)
    call check(status == PARAMLIB_OK .and. name == 'y' .and. nlev == size(ref, 1), &
               'field_info output 1 is y')
    allocate (y(nlev, size(x, 2)))
    call m%set_input('x', x, status)
    call assert_ok(status, 'set_input x')
    call m%forward(status)
    call assert_ok(status, 'forward')
    call m%get_output('y', y, status)
    call assert_ok(status, 'get_output y')
    call assert_close(y, ref, 'y matches PyTorch', rtol)
    call m%free(status)
  end subroutine single_input_model

  subroutine rank2_and_rank1()
    type(paramlib_model) :: m, c
    real(real32) :: h(8, ncol), mo(8, ncol), p(ncol), h2(8, ncol), mo2(8, ncol), p2(ncol)
    integer :: status
    print '(a)', 'named model: T, q as (nlev, ncol), ps and precip as (ncol)'
    call load_ok(m, 'named.pt')
    call run_named(m, t, q, ps(1, :), h, mo, p, status)
    call assert_ok(status, 'one call with units given')
    call assert_close(h, ref_h, 'heating matches PyTorch', rtol)
    call assert_close(mo, ref_m, 'moistening matches PyTorch', rtol)
    call assert_close(reshape(p, [1, ncol]), ref_p, 'precip (rank 1) matches PyTorch', rtol)
    call m%clone(c, status)
    call assert_ok(status, 'clone')
    call run_named(c, t, q, ps(1, :), h2, mo2, p2, status)
    call assert_ok(status, 'call on the clone')
    call check(all(h2 == h) .and. all(mo2 == mo) .and. all(p2 == p), 'clone gives identical outputs')
    call c%free(status)
    call m%free(status)
  end subroutine rank2_and_rank1

  !> Columns every second column of a wider array, levels inside a taller one:
  !> strides on both dimensions, gaps full of NaN that the bridge must not read.
  subroutine strided_rank2()
    type(paramlib_model) :: m
    real(real32), allocatable :: tw(:, :), qw(:, :), hw(:, :)
    real(real32) :: mo(8, ncol), p(ncol)
    integer :: status, n_bad
    print '(a)', 'strided (non-contiguous) rank-2 sections'
    allocate (tw(10, 2 * ncol), qw(10, 2 * ncol), hw(10, 2 * ncol))
    tw = ieee_value(1.0_real32, ieee_quiet_nan)
    qw = tw
    hw = -999
    tw(2:9, 1::2) = t
    qw(2:9, 1::2) = q
    call load_ok(m, 'named.pt')
    call m%set_input('T', tw(2:9, 1::2), status)
    call assert_ok(status, 'set_input T(2:9, 1::2)')
    call m%set_input('q', qw(2:9, 1::2), status)
    call assert_ok(status, 'set_input q(2:9, 1::2)')
    call m%set_input('ps', ps(1, :), status)
    call assert_ok(status, 'set_input ps')
    call m%forward(status, n_bad=n_bad)
    call assert_ok(status, 'forward (no NaN from the gaps was read)')
    call m%get_output('heating', hw(2:9, 1::2), status)
    call assert_ok(status, 'get_output heating into hw(2:9, 1::2)')
    call m%get_output('moistening', mo, status)
    call m%get_output('precip', p, status)
    call assert_close(hw(2:9, 1::2), ref_h, 'strided heating matches PyTorch', rtol)
    call check(all(hw(1, :) == -999) .and. all(hw(10, :) == -999) .and. all(hw(:, 2::2) == -999), &
               'nothing written outside the section')
    call m%free(status)
  end subroutine strided_rank2

  subroutine real64_arrays()
    type(paramlib_model) :: m
    real(real64) :: t64(8, ncol), h64(8, ncol), ps64(ncol), p64(ncol)
    integer :: status
    print '(a)', 'real64 host arrays (converted to float32 on the way in, back on the way out)'
    t64 = real(t, real64)
    ps64 = real(ps(1, :), real64)
    call load_ok(m, 'named.pt')
    call m%set_input('T', t64, status, units='K')
    call assert_ok(status, 'set_input T as real64')
    call m%set_input('q', q, status)
    call assert_ok(status, 'set_input q as real32 in the same call')
    call m%set_input('ps', ps64, status)
    call assert_ok(status, 'set_input ps as real64 rank 1')
    call m%forward(status)
    call assert_ok(status, 'forward')
    call m%get_output('heating', h64, status)
    call assert_ok(status, 'get_output heating into real64')
    call m%get_output('precip', p64, status)
    call assert_ok(status, 'get_output precip into real64 rank 1')
    call assert_close(h64, ref_h, 'real64 heating matches PyTorch', rtol)
    call assert_close(reshape(p64, [1, ncol]), ref_p, 'real64 precip matches PyTorch', rtol)
    call m%free(status)
  end subroutine real64_arrays

  !> WRF memory (ims:ime, kms:kme, jms:jme) with a halo of NaN; the tile
  !> (its:ite, kts:kte, jts:jte) holds the reference columns, i fastest then j.
  subroutine wrf_tile()
    integer, parameter :: ims = 0, ime = 7, kms = 1, kme = 9, jms = 1, jme = 7
    integer, parameter :: its = 2, ite = 5, kts = 1, kte = 8, jts = 3, jte = 5
    real(real32) :: t3(ims:ime, kms:kme, jms:jme), q3(ims:ime, kms:kme, jms:jme)
    real(real32) :: ps3(ims:ime, 1, jms:jme), h3(ims:ime, kms:kme, jms:jme)
    real(real32) :: p3(ims:ime, 1, jms:jme), h(8, ncol), p(1, ncol)
    type(paramlib_model) :: m
    logical :: tile(ims:ime, kms:kme, jms:jme)
    integer :: status, i, j, col
    print '(a)', 'rank-3 WRF tile slices a(its:ite, kts:kte, jts:jte) with halo'
    call check((ite - its + 1) * (jte - jts + 1) == ncol, 'tile has as many columns as the reference')
    t3 = ieee_value(1.0_real32, ieee_quiet_nan)
    q3 = t3
    ps3 = t3(:, 1:1, :)
    h3 = -999
    p3 = -999
    do j = jts, jte
      do i = its, ite
        col = (i - its) + (j - jts) * (ite - its + 1) + 1
        t3(i, kts:kte, j) = t(:, col)
        q3(i, kts:kte, j) = q(:, col)
        ps3(i, 1, j) = ps(1, col)
      end do
    end do
    call load_ok(m, 'named.pt')
    call m%set_input('T', t3(its:ite, kts:kte, jts:jte), status, units='K')
    call assert_ok(status, 'set_input T tile')
    call m%set_input('q', q3(its:ite, kts:kte, jts:jte), status, units='kg kg-1')
    call assert_ok(status, 'set_input q tile')
    call m%set_input('ps', ps3(its:ite, :, jts:jte), status, units='Pa')
    call assert_ok(status, 'set_input ps as (i, 1, j) tile')
    call m%forward(status)
    call assert_ok(status, 'forward (no NaN from the halo was read)')
    call m%get_output('heating', h3(its:ite, kts:kte, jts:jte), status)
    call assert_ok(status, 'get_output heating tile')
    call m%get_output('precip', p3(its:ite, :, jts:jte), status)
    call assert_ok(status, 'get_output precip tile')
    do j = jts, jte
      do i = its, ite
        col = (i - its) + (j - jts) * (ite - its + 1) + 1
        h(:, col) = h3(i, kts:kte, j)
        p(1, col) = p3(i, 1, j)
      end do
    end do
    call assert_close(h, ref_h, 'tile heating matches PyTorch', rtol)
    call assert_close(p, ref_p, 'tile precip matches PyTorch', rtol)
    tile = .false.
    tile(its:ite, kts:kte, jts:jte) = .true.
    call check(all(pack(h3, .not. tile) == -999) .and. count(p3 == -999) == size(p3) - ncol, &
               'halo and levels above kte untouched')
    call m%free(status)
  end subroutine wrf_tile

  subroutine ensemble_statistics()
    type(paramlib_model) :: m
    real(real32) :: h(8, ncol), mo(8, ncol), p(ncol)
    character(len=16) :: label
    integer :: status, n_in, n_out, n_ens, k
    print '(a)', 'ensemble model: mean, spread, members'
    call load_ok(m, 'ensemble.pt')
    call m%info(n_in, n_out, n_ens, status)
    call check(status == PARAMLIB_OK .and. n_ens == 4, 'info: ensemble of 4')
    call run_named(m, t, q, ps(1, :), h, mo, p, status)
    call assert_ok(status, 'one call (mean by default)')
    call assert_matches_file(h, 'ensemble_out_heating_mean.bin', 'mean heating matches PyTorch')
    call assert_matches_file(reshape(p, [1, ncol]), 'ensemble_out_precip_mean.bin', &
                             'mean precip matches PyTorch')
    call m%get_output('heating', h, status, statistic=PARAMLIB_SPREAD)
    call assert_ok(status, 'get_output spread')
    call assert_matches_file(h, 'ensemble_out_heating_spread.bin', &
                             'spread (population std) matches PyTorch')
    do k = 1, n_ens
      write (label, '(a,i0)') 'member', k
      call m%get_output('moistening', mo, status, statistic=PARAMLIB_MEMBER, member=k)
      call assert_ok(status, 'get_output ' // trim(label))
      call assert_matches_file(mo, 'ensemble_out_moistening_' // trim(label) // '.bin', &
                               trim(label) // ' moistening matches PyTorch')
    end do
    call m%free(status)
  end subroutine ensemble_statistics

end program test_correctness
