!> Error paths: every status the host can be given, with its message, and that a
!> handle keeps working after a refused call. Nothing here may stop the process
!> except this program's own failed checks.
program test_errors
  use, intrinsic :: iso_fortran_env, only: real32, real64
  use paramlib_bridge
  use paramlib_test_utils
  implicit none
  real(real32), allocatable :: t(:, :), q(:, :), ps(:, :)
  integer :: ncol

  call read_field(model_path('named_in_T.bin'), t)
  call read_field(model_path('named_in_q.bin'), q)
  call read_field(model_path('named_in_ps.bin'), ps)
  ncol = size(t, 2)

  call load_errors()
  call pinned_load()
  call field_errors()
  call required_units()
  call level_order()
  call call_order()
  call use_after_free()
  call statistic_errors()
  call thread_setter()
  call metadata_query_errors()
  print '(a)', 'test_errors: all checks passed'

contains

  !> valid_range without a recorded range warns with no bounds; a malformed range, an
  !> unknown input and a freed handle are errors; nothing is left half-filled.
  subroutine metadata_query_errors()
    type(paramlib_model) :: m
    real(real64), allocatable :: lo(:), hi(:)
    character(len=:), allocatable :: json
    integer :: status
    print '(a)', 'metadata query errors'
    call m%load(model_path('no_range.pt'), status)
    call assert_ok(status, 'load a model without valid_range')
    call m%valid_range('T', lo, hi, status)
    call assert_status(status, PARAMLIB_WARN_NO_RANGE, 'no range recorded', 'no valid range')
    call check(size(lo) == 8 .and. all(lo == -huge(1.0_real64)) .and. all(hi == huge(1.0_real64)), &
               'no range: lo = -huge, hi = huge on every level')
    call m%free(status)
    call m%load(model_path('bad_range.pt'), status)
    call assert_ok(status, 'a malformed valid_range does not stop the load')
    call m%valid_range('T', lo, hi, status)
    call assert_status(status, PARAMLIB_ERR_METADATA, 'range with a level too few', &
                       'valid_range.T.min: expected a list of 8 numbers')
    call m%valid_range('q', lo, hi, status)
    call assert_ok(status, 'the well-formed ranges of that file still read')
    call m%valid_range('heating', lo, hi, status)
    call assert_status(status, PARAMLIB_ERR_NAME, 'an output has no valid range', &
                       "no input named 'heating'")
    call m%free(status)
    call m%valid_range('T', lo, hi, status)
    call assert_status(status, PARAMLIB_ERR_HANDLE, 'valid_range after free')
    call m%metadata_json(json, status)
    call assert_status(status, PARAMLIB_ERR_HANDLE, 'metadata_json after free')
    call check(len(json) == 0, 'metadata_json after free gives ""')
  end subroutine metadata_query_errors

  subroutine load_errors()
    type(paramlib_model) :: m
    integer :: status, ndev
    print '(a)', 'load errors'
    call m%load(model_path('missing.pt'), status)
    call assert_status(status, PARAMLIB_ERR_FILE, 'missing file', 'missing.pt')
    call m%load(model_path('corrupt.pt'), status)
    call assert_status(status, PARAMLIB_ERR_LOAD, 'truncated file', 'not a loadable TorchScript')
    call m%load(model_path('no_metadata.pt'), status)
    call assert_status(status, PARAMLIB_ERR_METADATA, 'TorchScript file without metadata', &
                       'paramlib.json')
    call m%load(model_path('bad_level_order.pt'), status)
    call assert_status(status, PARAMLIB_ERR_METADATA, 'metadata with an unknown level order', &
                       '"sideways" is not one this bridge knows')
    call m%forward(status)
    call assert_status(status, PARAMLIB_ERR_HANDLE, 'handle of a failed load is not usable')
    call m%load(model_path('named.pt'), status, device=7)
    call assert_status(status, PARAMLIB_ERR_DEVICE, 'unknown device kind', 'device 7')
    ndev = paramlib_cuda_device_count()
    call m%load(model_path('named.pt'), status, device=PARAMLIB_CUDA, device_index=ndev)
    call assert_status(status, PARAMLIB_ERR_DEVICE, 'CUDA device index past the last one', 'cuda:')
    if (ndev == 0) then
      call m%load(model_path('named.pt'), status, device=PARAMLIB_CUDA)
      call assert_status(status, PARAMLIB_ERR_DEVICE, 'CUDA on a machine without CUDA', &
                         'no CUDA device')
    else
      print '(a,i0,a)', '  skip  CUDA-less check: ', ndev, ' CUDA device(s) visible'
    end if
  end subroutine load_errors

  !> A file pinned by its SHA-256 (named.pt.sha256 from the generator) loads; any other
  !> hash is refused before the file is loaded.
  subroutine pinned_load()
    type(paramlib_model) :: m
    character(len=64) :: pin, upper, wrong
    integer :: status, u, i
    print '(a)', 'pinned load (SHA-256)'
    open (newunit=u, file=model_path('named.pt.sha256'), action='read')
    read (u, '(a)') pin
    close (u)
    call m%load(model_path('named.pt'), status, sha256=pin)
    call assert_ok(status, 'load with the right pin')
    call m%free(status)
    ! Hex digits are compared without regard to case.
    upper = pin
    do i = 1, len(upper)
      if (upper(i:i) >= 'a' .and. upper(i:i) <= 'f') upper(i:i) = achar(iachar(upper(i:i)) - 32)
    end do
    call m%load(model_path('named.pt'), status, sha256=upper)
    call assert_ok(status, 'load with the pin in upper case')
    call m%free(status)
    call m%load(model_path('named.pt'), status, sha256='   ')
    call assert_ok(status, 'a blank pin is no check')
    call m%free(status)
    wrong = pin
    wrong(64:64) = merge('1', '0', pin(64:64) == '0')
    call m%load(model_path('named.pt'), status, sha256=wrong)
    call assert_status(status, PARAMLIB_ERR_HASH, 'load with another pin', 'named.pt')
    call assert_status(status, PARAMLIB_ERR_HASH, 'the message names the expected hash', &
                       'expected ' // wrong)
    call assert_status(status, PARAMLIB_ERR_HASH, 'the message names the actual hash', 'SHA-256 ' // pin)
    call m%forward(status)
    call assert_status(status, PARAMLIB_ERR_HANDLE, 'a refused pin leaves no model')
    call m%load(model_path('named.pt'), status, sha256='abc123')
    call assert_status(status, PARAMLIB_ERR_ARGUMENT, 'malformed pin', '64 hexadecimal')
    ! Checked before loading: a truncated file gives the hash error, not the load error.
    call m%load(model_path('corrupt.pt'), status, sha256=wrong)
    call assert_status(status, PARAMLIB_ERR_HASH, 'pin of a broken file is checked before loading it')
  end subroutine pinned_load

  subroutine field_errors()
    type(paramlib_model) :: m
    real(real32) :: heating(8, ncol), precip(ncol)
    integer :: status
    print '(a)', 'field name, levels, units and shape errors'
    call load_ok(m, 'named.pt')
    call m%check_field(PARAMLIB_INPUT, 'T', 8, status, units='K')
    call assert_ok(status, 'check_field T(8) K')
    call m%check_field(PARAMLIB_INPUT, 'q', 8, status, units=' kg  kg-1 ')
    call assert_ok(status, 'check_field units compared with spaces collapsed')
    call m%check_field(PARAMLIB_INPUT, 'temperature', 8, status)
    call assert_status(status, PARAMLIB_ERR_NAME, 'check_field unknown input', 'T, q, ps')
    call m%check_field(PARAMLIB_OUTPUT, 'T', 8, status)
    call assert_status(status, PARAMLIB_ERR_NAME, 'check_field input name as output', &
                       'heating, moistening, precip')
    call m%check_field(PARAMLIB_INPUT, 'T', 7, status)
    call assert_status(status, PARAMLIB_ERR_LEVELS, 'check_field wrong level count', 'expects 8')
    call m%check_field(PARAMLIB_INPUT, 'T', 8, status, units='degC')
    call assert_status(status, PARAMLIB_ERR_UNITS, 'check_field wrong units', "expects 'K'")

    call m%set_input('temperature', t, status)
    call assert_status(status, PARAMLIB_ERR_NAME, 'set_input unknown name', "no input named 'temperature'")
    call m%set_input('T', t(1:7, :), status)
    call assert_status(status, PARAMLIB_ERR_LEVELS, 'set_input 7 of 8 levels', 'has 7 levels')
    call m%set_input('T', t, status, units='degC')
    call assert_status(status, PARAMLIB_ERR_UNITS, 'set_input wrong units', "'degC'")
    ! A rank-1 array is a one-level field, so for T the level count is what is wrong.
    call m%set_input('T', t(1, :), status)
    call assert_status(status, PARAMLIB_ERR_LEVELS, 'set_input rank-1 array for an 8-level field', &
                       'has 1 levels')
    call m%set_input('T', t, status)
    call assert_ok(status, 'set_input T with all columns')
    call m%set_input('q', q(:, 2:), status)
    call assert_status(status, PARAMLIB_ERR_SHAPE, 'set_input q with one column fewer than T', &
                       'columns')
    ! The refused call left the handle usable: complete the call.
    call m%set_input('q', q, status)
    call assert_ok(status, 'set_input q after the refused one')
    call m%set_input('ps', ps(1, :), status)
    call assert_ok(status, 'set_input ps (rank 1)')
    call m%forward(status)
    call assert_ok(status, 'forward after refused calls')

    call m%get_output('rain', precip, status)
    call assert_status(status, PARAMLIB_ERR_NAME, 'get_output unknown name', "no output named 'rain'")
    call m%get_output('heating', heating(:, 2:), status)
    call assert_status(status, PARAMLIB_ERR_SHAPE, 'get_output array with ncol-1 columns', 'columns')
    call m%get_output('heating', heating(2:, :), status)
    call assert_status(status, PARAMLIB_ERR_LEVELS, 'get_output array with 7 levels', 'expects 8')
    call m%get_output('heating', heating, status, units='K day-1')
    call assert_status(status, PARAMLIB_ERR_UNITS, 'get_output wrong units', "expects 'K s-1'")
    call m%get_output('heating', heating, status, units='K s-1')
    call assert_ok(status, 'get_output after refused calls')
    call m%free(status)
    call assert_ok(status, 'free')
  end subroutine field_errors

  !> require_units: a field without units is refused on check_field, set_input and
  !> get_output, and clones inherit the switch.
  subroutine required_units()
    type(paramlib_model) :: m, clone
    real(real32) :: heating(8, ncol), moistening(8, ncol), precip(ncol)
    integer :: status
    print '(a)', 'required units'
    call load_ok(m, 'named.pt')
    call m%check_field(PARAMLIB_INPUT, 'T', 8, status)
    call assert_ok(status, 'units not required by default')
    call m%require_units(.true., status)
    call assert_ok(status, 'require_units on')
    call m%check_field(PARAMLIB_INPUT, 'T', 8, status)
    call assert_status(status, PARAMLIB_ERR_UNITS, 'check_field without units', "'T'")
    call assert_status(status, PARAMLIB_ERR_UNITS, 'the message names the units expected', "expects 'K'")
    call m%check_field(PARAMLIB_OUTPUT, 'heating', 8, status, units=' ')
    call assert_status(status, PARAMLIB_ERR_UNITS, 'blank units count as none', "'K s-1'")
    call m%set_input('T', t, status)
    call assert_status(status, PARAMLIB_ERR_UNITS, 'set_input without units', "'T'")
    call m%clone(clone, status)
    call assert_ok(status, 'clone')
    call clone%set_input('q', q, status)
    call assert_status(status, PARAMLIB_ERR_UNITS, 'the clone inherits require_units', "'kg kg-1'")
    ! run_named gives units for T, q and ps, heating and precip but not moistening.
    call run_named(m, t, q, ps(1, :), heating, moistening, precip, status)
    call assert_status(status, PARAMLIB_ERR_UNITS, 'get_output without units', "'moistening'")
    call m%get_output('moistening', moistening, status, units='kg kg-1 s-1')
    call assert_ok(status, 'get_output with units')
    call m%require_units(.false., status)
    call assert_ok(status, 'require_units off')
    call m%check_field(PARAMLIB_INPUT, 'T', 8, status)
    call assert_ok(status, 'check_field without units once off')
    call clone%free(status)
    call m%free(status)
  end subroutine required_units

  subroutine level_order()
    type(paramlib_model) :: m
    integer :: status
    print '(a)', 'level order'
    call load_ok(m, 'named.pt')
    call m%check_field(PARAMLIB_INPUT, 'T', 8, status, units='K', level_order='surface_to_top')
    call assert_ok(status, 'check_field in the metadata''s level order')
    call m%check_field(PARAMLIB_INPUT, 'T', 8, status, level_order='top_to_surface')
    call assert_status(status, PARAMLIB_ERR_LEVELS, 'check_field with levels top first', &
                       'ordered top_to_surface, model expects surface_to_top')
    call m%check_field(PARAMLIB_INPUT, 'T', 8, status, level_order='upside_down')
    call assert_status(status, PARAMLIB_ERR_ARGUMENT, 'unknown level order', 'upside_down')
    call m%free(status)
  end subroutine level_order

  subroutine call_order()
    type(paramlib_model) :: m
    real(real32) :: heating(8, ncol)
    logical :: bad(ncol)
    integer :: status
    print '(a)', 'call order'
    call load_ok(m, 'named.pt')
    call m%get_output('heating', heating, status)
    call assert_status(status, PARAMLIB_ERR_NOT_READY, 'get_output before any forward', 'forward')
    call m%bad_columns(bad, status)
    call assert_status(status, PARAMLIB_ERR_NOT_READY, 'bad_columns before any forward')
    call m%forward(status)
    call assert_status(status, PARAMLIB_ERR_NOT_READY, 'forward with no input set', "input 'T'")
    call m%set_input('T', t, status)
    call assert_ok(status, 'set_input T')
    call m%forward(status)
    call assert_status(status, PARAMLIB_ERR_NOT_READY, 'forward with q and ps missing', "input 'q'")
    call m%set_input('q', q, status)
    call assert_ok(status, 'set_input q')
    call m%set_input('ps', ps(1, :), status)
    call assert_ok(status, 'set_input ps')
    call m%forward(status)
    call assert_ok(status, 'forward once every input is set')
    ! Inputs are released by forward: a stale host array is never reused silently.
    call m%forward(status)
    call assert_status(status, PARAMLIB_ERR_NOT_READY, 'second forward without new inputs', &
                       'since the last forward')
    call m%free(status)
  end subroutine call_order

  subroutine use_after_free()
    type(paramlib_model) :: m, copy, clone
    integer :: status
    print '(a)', 'use after free'
    call load_ok(m, 'simple.pt')
    copy = m  ! a copy of the variable shares the handle
    call m%clone(clone, status)
    call assert_ok(status, 'clone')
    call m%free(status)
    call assert_ok(status, 'free the original')
    call m%forward(status)
    call assert_status(status, PARAMLIB_ERR_HANDLE, 'forward on the freed variable', 'not a loaded model')
    call copy%forward(status)
    call assert_status(status, PARAMLIB_ERR_HANDLE, 'forward on a copy of the freed handle', &
                       'already freed')
    call copy%set_input('x', t(1:4, :), status)
    call assert_status(status, PARAMLIB_ERR_HANDLE, 'set_input on the freed copy')
    call copy%check_field(PARAMLIB_INPUT, 'x', 4, status)
    call assert_status(status, PARAMLIB_ERR_HANDLE, 'check_field on the freed copy')
    call copy%free(status)
    call assert_status(status, PARAMLIB_ERR_HANDLE, 'double free through the copy')
    call m%free(status)
    call assert_status(status, PARAMLIB_ERR_HANDLE, 'free of the freed variable')
    ! The clone shares the weights, so it outlives the handle it was cloned from.
    call clone%check_field(PARAMLIB_INPUT, 'x', 4, status)
    call assert_ok(status, 'clone still usable after the original is freed')
    call clone%free(status)
    call assert_ok(status, 'free the clone')
  end subroutine use_after_free

  subroutine statistic_errors()
    type(paramlib_model) :: det, ens
    real(real32) :: heating(8, ncol), moistening(8, ncol), precip(ncol)
    integer :: status
    print '(a)', 'ensemble statistics'
    call load_ok(det, 'named.pt')
    call run_named(det, t, q, ps(1, :), heating, moistening, precip, status)
    call assert_ok(status, 'deterministic model runs')
    call det%get_output('heating', heating, status, statistic=PARAMLIB_SPREAD)
    call assert_status(status, PARAMLIB_ERR_ARGUMENT, 'spread of a deterministic model', 'no spread')
    call det%get_output('heating', heating, status, statistic=PARAMLIB_MEMBER, member=2)
    call assert_status(status, PARAMLIB_ERR_ARGUMENT, 'member 2 of a deterministic model', &
                       'out of range')
    call load_ok(ens, 'ensemble.pt')
    call run_named(ens, t, q, ps(1, :), heating, moistening, precip, status)
    call assert_ok(status, 'ensemble model runs')
    call ens%get_output('heating', heating, status, statistic=PARAMLIB_MEMBER, member=0)
    call assert_status(status, PARAMLIB_ERR_ARGUMENT, 'member 0 (members are 1-based)', 'out of range')
    call ens%get_output('heating', heating, status, statistic=PARAMLIB_MEMBER, member=5)
    call assert_status(status, PARAMLIB_ERR_ARGUMENT, 'member 5 of 4', 'out of range')
    call ens%get_output('heating', heating, status, statistic=9)
    call assert_status(status, PARAMLIB_ERR_ARGUMENT, 'unknown statistic', 'statistic 9')
    call ens%get_output('heating', heating, status, statistic=PARAMLIB_MEMBER, member=4)
    call assert_ok(status, 'member 4 of 4')
    call det%free(status)
    call ens%free(status)
  end subroutine statistic_errors

  subroutine thread_setter()
    integer :: status
    print '(a)', 'intra-op thread count'
    call paramlib_set_num_threads(0, status)
    call assert_status(status, PARAMLIB_ERR_ARGUMENT, 'set_num_threads(0)', '>= 1')
    call paramlib_set_num_threads(-3, status)
    call assert_status(status, PARAMLIB_ERR_ARGUMENT, 'set_num_threads(-3)', '>= 1')
    call paramlib_set_num_threads(2, status)
    call assert_ok(status, 'set_num_threads(2)')
    call paramlib_set_num_threads(1, status)
    call assert_ok(status, 'set_num_threads(1)')
  end subroutine thread_setter

end program test_errors
