!> column_run: the column model with Betts-Miller, stepped in pure Fortran.
!>
!>   column_run CONFIG OUT   run the configuration in CONFIG, write the final state to OUT
!>   column_run              a demo: 2000 columns for one day; prints a summary and the time
!>                           per step
!>
!> CONFIG (raw, native byte order; tests/test_column_model.py writes it):
!>   int32 ncol, nlev, nsteps, wtg (0/1); real64 dt, sst_ref, bm_tau, bm_rh;
!>   real64 ps(ncol), sst(ncol), omega0(ncol)
!> OUT: real64 t(nlev, ncol), q(nlev, ncol), precip(ncol) of the last step (column-major).
!> The set-up order (init, parameters, reset_state, steps) is the one of
!> paramlib.testbed.column.ColumnModel, so the two runs must agree bit for bit.
program column_run
  use, intrinsic :: iso_fortran_env, only: int32, int64, error_unit, output_unit
  use physical_constants, only: wp
  use column_status, only: COLUMN_OK, COLUMN_MESSAGE_LEN
  use column_host, only: column_model
  use betts_miller, only: betts_miller_scheme, BM_DEEP, BM_SHALLOW
  implicit none

  type(column_model) :: model
  type(betts_miller_scheme) :: bm
  character(len=COLUMN_MESSAGE_LEN) :: message
  character(len=4096) :: config_path, out_path
  integer(int32) :: ncol, nlev, nsteps, wtg
  real(wp) :: dt, sst_ref, bm_tau, bm_rh
  real(wp), allocatable :: ps(:), sst(:), omega0(:)
  integer :: status, unit, n, i
  integer(int64) :: clock_start, clock_end, clock_rate

  message = ''
  if (command_argument_count() == 2) then
    call get_command_argument(1, config_path)
    call get_command_argument(2, out_path)
    open (newunit=unit, file=config_path, access='stream', form='unformatted', status='old', &
          action='read')
    read (unit) ncol, nlev, nsteps, wtg, dt, sst_ref, bm_tau, bm_rh
    allocate (ps(ncol), sst(ncol), omega0(ncol))
    read (unit) ps, sst, omega0
    close (unit)
  else if (command_argument_count() == 0) then
    ncol = 2000
    nlev = 26
    nsteps = 144
    wtg = 1
    dt = 600.0_wp
    bm_tau = 7200.0_wp
    bm_rh = 0.8_wp
    allocate (ps(ncol), sst(ncol), omega0(ncol))
    do i = 1, ncol
      ps(i) = 1.0e5_wp + 1.5e3_wp * real(mod(i, 7), wp) / 6.0_wp
      sst(i) = 297.0_wp + 6.0_wp * real(mod(i * 37, ncol), wp) / ncol
      omega0(i) = -0.1_wp + 0.15_wp * real(i - 1, wp) / (ncol - 1)
    end do
    sst_ref = sum(sst) / ncol
  else
    write (error_unit, '(a)') 'usage: column_run [CONFIG OUT]'
    error stop 2
  end if

  call model%init(nlev, ps, sst, omega0, status, message)
  if (status == COLUMN_OK) call model%set_parameter('dt', dt, status, message)
  if (status == COLUMN_OK) call model%set_parameter('sst_ref', sst_ref, status, message)
  if (status == COLUMN_OK) call bm%set_parameters(bm_tau, bm_rh, status, message)
  call fail_on(status)
  call model%set_wtg(wtg /= 0)
  call model%reset_state()

  call system_clock(clock_start, clock_rate)
  do n = 1, nsteps
    call model%step(bm, status, message)
    call fail_on(status)
  end do
  call system_clock(clock_end)

  if (command_argument_count() == 2) then
    open (newunit=unit, file=out_path, access='stream', form='unformatted', status='replace', &
          action='write')
    write (unit) model%state%t, model%state%q, model%precip
    close (unit)
  else
    write (output_unit, '(a,i0,a,i0,a,i0,a)') 'column_run: ', ncol, ' columns x ', nlev, &
      ' levels, ', nsteps, ' steps of Betts-Miller with WTG'
    write (output_unit, '(a,f8.3,a)') '  time per step     ', &
      1.0e3_wp * real(clock_end - clock_start, wp) / real(clock_rate, wp) / nsteps, ' ms'
    write (output_unit, '(a,f8.3,a)') '  mean precipitation', &
      86400.0_wp * sum(model%precip) / ncol, ' mm day-1'
    write (output_unit, '(a,2i6)') '  deep, shallow     ', count(bm%kind == BM_DEEP), &
      count(bm%kind == BM_SHALLOW)
    write (output_unit, '(a,2f8.2,a)') '  T range           ', minval(model%state%t), &
      maxval(model%state%t), ' K'
  end if

contains

  subroutine fail_on(code)
    integer, intent(in) :: code
    if (code /= COLUMN_OK) then
      write (error_unit, '(a,i0,a)') 'column_run: status ', code, ': ' // trim(message)
      error stop 1
    end if
  end subroutine fail_on

end program column_run
