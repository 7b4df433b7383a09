!> NaN/Inf screening: bad columns are counted, flagged and given zero outputs while
!> the good columns still match PyTorch; the host's arrays are not touched; with
!> screening off a NaN goes through to the output.
program test_screening
  use, intrinsic :: iso_fortran_env, only: real32, real64
  use, intrinsic :: ieee_arithmetic, only: ieee_value, ieee_quiet_nan, ieee_positive_inf, &
                                           ieee_negative_inf, ieee_is_finite, ieee_is_nan
  use paramlib_bridge
  use paramlib_test_utils
  implicit none
  real(real64), parameter :: rtol = 1e-6_real64
  integer, parameter :: bad_cols(3) = [3, 7, 10]
  type(paramlib_model) :: m
  real(real32), allocatable :: t(:, :), q(:, :), ps(:, :), ref(:, :)
  real(real32), allocatable :: heating(:, :), moistening(:, :), precip(:)
  logical, allocatable :: bad(:), good(:)
  integer :: status, n_bad, ncol, c

  call read_field(model_path('named_in_T.bin'), t)
  call read_field(model_path('named_in_q.bin'), q)
  call read_field(model_path('named_in_ps.bin'), ps)
  call read_field(model_path('named_out_heating_mean.bin'), ref)
  ncol = size(t, 2)
  allocate (heating(8, ncol), moistening(8, ncol), precip(ncol), bad(ncol), good(ncol))
  good = .true.
  good(bad_cols) = .false.

  ! One bad value per bad column, in a different field each time.
  t(5, bad_cols(1)) = ieee_value(t(1, 1), ieee_quiet_nan)
  q(1, bad_cols(2)) = ieee_value(q(1, 1), ieee_positive_inf)
  ps(1, bad_cols(3)) = ieee_value(ps(1, 1), ieee_negative_inf)

  call load_ok(m, 'named.pt')
  print '(a)', 'screening on (default)'
  call set_inputs()
  call m%forward(status, n_bad=n_bad)
  call assert_status(status, PARAMLIB_WARN_BAD_INPUT, 'forward warns about bad columns', &
                     '3 of 12 columns')
  call check(n_bad == size(bad_cols), 'n_bad counts the 3 bad columns')
  call m%bad_columns(bad, status)
  call assert_ok(status, 'bad_columns')
  call check(all(bad .eqv. .not. good), 'bad_columns flags exactly columns 3, 7, 10')
  call get_outputs()
  call check(all(heating(:, bad_cols) == 0) .and. all(moistening(:, bad_cols) == 0) .and. &
             all(precip(bad_cols) == 0), 'outputs of bad columns are zero')
  call assert_close(heating(:, pack([(c, c=1, ncol)], good)), ref(:, pack([(c, c=1, ncol)], good)), &
                    'good columns still match PyTorch', rtol)
  call check(ieee_is_nan(t(5, bad_cols(1))) .and. .not. ieee_is_finite(q(1, bad_cols(2))), &
             'host input arrays are left as they were')
  call m%bad_columns(bad(2:), status)
  call assert_status(status, PARAMLIB_ERR_SHAPE, 'bad_columns with a wrong-sized array', 'entries')

  print '(a)', 'a clean call after a bad one'
  t(5, bad_cols(1)) = 250.0
  q(1, bad_cols(2)) = 0.01
  ps(1, bad_cols(3)) = 9.0e4
  call set_inputs()
  call m%forward(status, n_bad=n_bad)
  call assert_ok(status, 'forward on finite inputs')
  call check(n_bad == 0, 'n_bad is 0')
  call m%bad_columns(bad, status)
  call check(status == PARAMLIB_OK .and. .not. any(bad), 'no column flagged')

  print '(a)', 'screening off'
  t(5, bad_cols(1)) = ieee_value(t(1, 1), ieee_quiet_nan)
  call m%set_screening(.false., status)
  call assert_ok(status, 'set_screening(.false.)')
  call set_inputs()
  call m%forward(status, n_bad=n_bad)
  call assert_ok(status, 'forward does not screen')
  call check(n_bad == 0, 'n_bad is 0')
  call get_outputs()
  call check(.not. all(ieee_is_finite(heating(:, bad_cols(1)))), 'the NaN reaches the output')
  call check(all(ieee_is_finite(heating(:, 1:bad_cols(1) - 1))), 'other columns stay finite')
  call m%free(status)
  print '(a)', 'test_screening: all checks passed'

contains

  subroutine set_inputs()
    call set_named_inputs(m, t, q, ps(1, :))
  end subroutine set_inputs

  subroutine get_outputs()
    call m%get_output('heating', heating, status)
    call assert_ok(status, 'get_output heating')
    call m%get_output('moistening', moistening, status)
    call assert_ok(status, 'get_output moistening')
    call m%get_output('precip', precip, status)
    call assert_ok(status, 'get_output precip')
  end subroutine get_outputs

end program test_screening
