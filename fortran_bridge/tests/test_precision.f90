!> Reduced precision: bf16 within a tolerance it meets is kept and its error measured; one it
!> cannot meet sends the model back to float32 with a warning and the float32 outputs; TF32 on
!> a CPU model, an unknown precision and a tolerance <= 0 are refused; a clone starts in float32.
program test_precision
  use, intrinsic :: iso_fortran_env, only: real32, real64
  use paramlib_bridge
  use paramlib_test_utils
  implicit none
  type(paramlib_model) :: m, copy
  real(real32), allocatable, target :: t(:, :), q(:, :), ps(:, :)
  real(real32), allocatable :: reference(:, :), heating(:, :)
  real(real64) :: error
  integer :: status, precision

  call read_field(model_path('named_in_T.bin'), t)
  call read_field(model_path('named_in_q.bin'), q)
  call read_field(model_path('named_in_ps.bin'), ps)
  allocate (heating(8, size(t, 2)))
  call load_ok(m, 'named.pt')
  call run(status)
  call assert_ok(status, 'forward in float32')
  reference = heating

  print '(a)', 'bf16 within 0.5: kept'
  call m%set_precision(PARAMLIB_PRECISION_BF16, 0.5_real64, status)
  call assert_ok(status, 'set_precision bf16')
  call m%precision(precision, error, status)
  call check(status == PARAMLIB_OK .and. precision == PARAMLIB_PRECISION_BF16 .and. error == -1, &
             'asked for, not yet checked: error -1')
  call run(status)
  call assert_ok(status, 'the checking forward')
  call m%precision(precision, error, status)
  call check(precision == PARAMLIB_PRECISION_BF16 .and. error > 0 .and. error <= 0.5_real64, &
             'bf16 kept, its relative error measured')
  call check(any(heating /= reference), 'the outputs are the bf16 ones')
  call check(norm2(heating - reference) <= error * norm2(reference) * (1 + 1e-5), &
             'heating is within the measured error of float32')
  call run(status)
  call assert_ok(status, 'the next forward runs in bf16 without a check')

  print '(a)', 'bf16 within 1e-9: refused'
  call m%set_precision(PARAMLIB_PRECISION_BF16, 1e-9_real64, status)
  call assert_ok(status, 'set_precision bf16, tolerance 1e-9')
  call run(status)
  call assert_status(status, PARAMLIB_WARN_PRECISION, 'the checking forward warns', &
                     'tolerance 1e-09')
  call check(all(heating == reference), 'it gives the float32 outputs')
  call m%precision(precision, error, status)
  call check(precision == PARAMLIB_PRECISION_FP32 .and. error > 1e-9_real64, &
             'back to float32, the error measured kept')
  call run(status)
  call assert_ok(status, 'the next forward: float32, no warning')
  call check(all(heating == reference), 'float32 outputs again')

  print '(a)', 'refusals'
  call m%set_precision(PARAMLIB_PRECISION_TF32, 1e-2_real64, status)
  call assert_status(status, PARAMLIB_ERR_DEVICE, 'TF32 on a CPU model', 'CUDA matmul mode')
  call m%set_precision(7, 1e-2_real64, status)
  call assert_status(status, PARAMLIB_ERR_ARGUMENT, 'precision 7', 'precision 7')
  call m%set_precision(PARAMLIB_PRECISION_BF16, 0.0_real64, status)
  call assert_status(status, PARAMLIB_ERR_ARGUMENT, 'tolerance 0', 'tolerance')
  call m%set_precision(PARAMLIB_PRECISION_BF16, 0.5_real64, status)
  call assert_ok(status, 'set_precision bf16 again')
  call m%clone(copy, status)
  call assert_ok(status, 'clone')
  call copy%precision(precision, error, status)
  call check(status == PARAMLIB_OK .and. precision == PARAMLIB_PRECISION_FP32, &
             'a clone starts in float32')
  call copy%free(status)
  call m%free(status)
  print '(a)', 'test_precision: all checks passed'

contains

  !> set_input, forward (its status returned) and the heating output.
  subroutine run(forward_status)
    integer, intent(out) :: forward_status
    integer :: st
    call set_named_inputs(m, t, q, ps(1, :))
    call m%forward(forward_status)
    call m%get_output('heating', heating, st)
    call assert_ok(st, 'get_output heating')
  end subroutine run

end program test_precision
