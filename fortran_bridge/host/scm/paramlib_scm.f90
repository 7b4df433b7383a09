!> paramlib_scm: the testbed's column model (fortran_bridge/host, the same modules the testbed
!> steps from Python) run as a standalone program, its convection slot on the generic column
!> interface (paramlib_column_physics): Betts-Miller, an ML model through the bridge, or both.
!>
!>   paramlib_scm NAMELIST                   one process (OMP_NUM_THREADS threads over chunks)
!>   mpirun -n N paramlib_scm NAMELIST       N ranks, each with consecutive whole chunks of columns
!>
!> NAMELIST: scm_config.f90. Output: one netCDF file (scm_io.f90) written by rank 0. Each rank
!> loads its own model (on GPU: device local rank mod the node's device count). Ranks and
!> threads split the columns at chunk boundaries, so every layout gives the same numbers.
!> Exit status: 0 completed; 1 a set-up or step failure (the message names the rank, the step
!> and what failed; the output file keeps the records written and says so in run_status);
!> 2 usage. Rank 0 prints a summary and one line "timing {json}": seconds per step of the whole
!> step, inside the column interface, in its bridge calls and in Betts-Miller, the slowest rank's,
!> over the steps after the first WARMUP_STEPS (libtorch's TorchScript executor optimises the
!> model during its first calls); timed_steps says how many. Columns whose model outputs held
!> NaN/Inf (Betts-Miller ran there in hybrid and stochastic modes) are counted per step in the
!> output (nonfinite_step) and, when there were any, in a warning line at the end.
program paramlib_scm
  use, intrinsic :: iso_fortran_env, only: int64, output_unit, error_unit
  use mpi_f08
  use physical_constants, only: wp
  use column_status, only: COLUMN_OK
  use column_host, only: column_model
  use paramlib_bridge, only: paramlib_set_num_threads, paramlib_cuda_device_count, &
                             paramlib_last_error, PARAMLIB_OK, PARAMLIB_CUDA
  use paramlib_column_physics, only: CP_OK, CP_ERR_ARGUMENT
  use scm_config, only: scm_settings, read_settings
  use scm_coupled, only: coupled_convection
  use scm_record, only: output_record
  use scm_io, only: column_count, read_columns, scm_output
  !$ use omp_lib, only: omp_get_max_threads
  implicit none

  type(scm_settings) :: s
  type(column_model) :: model
  type(coupled_convection) :: scheme
  type(output_record) :: local, global
  type(scm_output) :: out
  type(MPI_Comm) :: comm, node
  character(len=1024) :: message, namelist_path, detail
  integer :: rank, nranks, local_rank, status, ncol_global, nchunks, i0, i1, ncol, r, n, k
  integer :: first_step, nthreads, n_fallback, n_nonfinite, sums(3), ndevices
  integer(int64) :: nonfinite_total
  integer, allocatable :: counts(:), displs(:)
  integer(int64), allocatable :: column_id(:)
  real(wp), allocatable :: ps(:), sst(:), omega0(:), solin(:), t(:, :), q(:, :)
  real(wp), allocatable :: g_p(:, :), g_dp(:, :), g_ps(:), g_sst(:), g_omega0(:), g_solin(:), step_fraction(:)
  integer, allocatable :: step_nonfinite(:)
  integer, parameter :: WARMUP_STEPS = 2
  real(wp) :: dt, seconds(4), warm(4), worst(4)
  integer(int64) :: tick0, tick1, rate, step_ticks
  integer :: timed_steps
  logical :: has_state, warned

  call MPI_Init()
  comm = MPI_COMM_WORLD
  call MPI_Comm_rank(comm, rank)
  call MPI_Comm_size(comm, nranks)
  call MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, node)
  call MPI_Comm_rank(node, local_rank)
  message = ''
  nthreads = 1
  !$ nthreads = omp_get_max_threads()

  if (command_argument_count() /= 1) then
    if (rank == 0) write (error_unit, '(a)') 'usage: [mpirun -n N] paramlib_scm NAMELIST'
    call MPI_Finalize()
    stop 2, quiet=.true.
  end if
  call get_command_argument(1, namelist_path, status=status)
  if (status /= 0) then   ! -1: cut to the buffer
    write (message, '(a,i0,a)') 'the namelist path is longer than ', len(namelist_path), &
      ' characters: use a shorter path'
  else
    call read_settings(namelist_path, s, status, message)
  end if
  call agree(status /= 0, 'settings')

  ! Whole chunks per rank, consecutive: rank r has chunks r*nchunks/nranks .. (r+1)*nchunks/nranks-1.
  call column_count(s%columns_file, ncol_global, status, message)
  call agree(status /= 0, 'columns file')
  nchunks = (ncol_global + s%chunk_size - 1) / s%chunk_size
  if (nranks > nchunks) write (message, '(i0,a,i0,a,i0,a)') nranks, ' ranks for ', nchunks, &
    ' chunks of ', s%chunk_size, ' columns: use fewer ranks or a smaller chunk_size'
  call agree(nranks > nchunks, 'decomposition')
  allocate (counts(nranks), displs(nranks))
  do r = 0, nranks - 1
    displs(r + 1) = (r * nchunks / nranks) * s%chunk_size
    counts(r + 1) = min(((r + 1) * nchunks / nranks) * s%chunk_size, ncol_global) - displs(r + 1)
  end do
  i0 = displs(rank + 1) + 1
  i1 = displs(rank + 1) + counts(rank + 1)
  ncol = counts(rank + 1)
  allocate (ps(ncol), sst(ncol), omega0(ncol), solin(ncol), t(s%nlev, ncol), q(s%nlev, ncol))
  call read_columns(s%columns_file, i0, i1, s%nlev, ps, sst, omega0, solin, t, q, has_state, &
                    status, message)
  call agree(status /= 0, 'columns file')

  ! The set-up order of paramlib.testbed.column.ColumnModel: columns, parameters, WTG,
  ! initial state.
  sst = sst + s%sst_shift
  call model%init(s%nlev, ps, sst, omega0, status, message)
  do k = 1, s%n_parameters
    if (status == COLUMN_OK) call model%set_parameter(trim(s%parameter_names(k)), &
                                                      s%parameter_values(k), status, message)
  end do
  if (status == COLUMN_OK) call model%set_parameter('sst_ref', model%params%sst_ref + s%sst_shift, &
                                                    status, message)
  call model%set_wtg(s%wtg)
  call model%reset_state()
  if (status == COLUMN_OK .and. has_state) call model%set_state(t, q, status, message)
  call agree(status /= COLUMN_OK, 'column model')
  dt = model%params%dt

  if (s%device == 'cuda') then
    ndevices = paramlib_cuda_device_count()
    if (ndevices < 1) message = 'device = ''cuda'' but the bridge sees no CUDA device'
    call agree(ndevices < 1, 'device')
    s%coupling%device = PARAMLIB_CUDA
    s%coupling%device_index = mod(local_rank, ndevices)
  end if
  call paramlib_set_num_threads(s%torch_threads, status)
  if (status /= PARAMLIB_OK) message = paramlib_last_error()
  call agree(status /= PARAMLIB_OK, 'torch threads')
  column_id = [(int(k, int64), k = i0, i1)]
  call scheme%setup(s%coupling, s%nlev, s%chunk_size, dt, solin, column_id, status, message)
  if (status /= CP_OK .and. status < CP_ERR_ARGUMENT .and. rank == 0) then
    write (error_unit, '(a)') 'paramlib_scm: warning: ' // trim(message)
  end if
  call agree(status >= CP_ERR_ARGUMENT, 'set-up')

  ! The output file, with every column's fixed fields.
  allocate (g_p(s%nlev, merge(ncol_global, 0, rank == 0)))
  allocate (g_dp, mold=g_p)
  allocate (g_ps, g_sst, g_omega0, g_solin, mold=g_p(1, :))
  call gather_levels(model%state%p, g_p)
  call gather_levels(model%state%dp, g_dp)
  call gather_columns(model%state%ps, g_ps)
  call gather_columns(model%state%sst, g_sst)
  call gather_columns(omega0, g_omega0)
  call gather_columns(solin, g_solin)
  status = 0
  if (rank == 0) call out%create(s, nranks, ncol_global, model%state%grid%sigma, g_p, g_dp, g_ps, &
                                 g_sst, g_omega0, g_solin, status, message)
  call agree(status /= 0, 'output')

  call local%init(s%nlev, ncol)
  call global%init(s%nlev, merge(ncol_global, 0, rank == 0))
  allocate (step_fraction(s%output_every), step_nonfinite(s%output_every))
  nonfinite_total = 0
  first_step = 1
  step_ticks = 0
  call system_clock(count_rate=rate)
  warned = .false.
  warm = 0.0_wp
  do n = 1, s%nsteps
    call system_clock(tick0)
    call model%step(scheme, status, message)
    call system_clock(tick1)
    step_ticks = step_ticks + (tick1 - tick0)
    if (n == min(WARMUP_STEPS, s%nsteps - 1)) call timers(warm)
    if (status /= COLUMN_OK) then
      detail = message   ! (an internal write may not read its own output variable)
      write (message, '(a,i0,a)') 'step ', n, ' (' // trim(detail) // ')'
    end if
    if (scheme%last_status /= CP_OK .and. scheme%last_status < CP_ERR_ARGUMENT &
        .and. .not. warned) then
      write (error_unit, '(a,i0,a,i0,a)') 'paramlib_scm: rank ', rank, ', step ', n, &
        ': warning (shown once): ' // trim(scheme%last_message)
      warned = .true.
    end if
    call local%add_step(model, scheme, s%coupling%mode, n_fallback, n_nonfinite)
    ! One reduction a step: the fallback and non-finite counts and whether any rank failed.
    call MPI_Allreduce([n_fallback, n_nonfinite, merge(1, 0, status /= COLUMN_OK)], sums, 3, &
                       MPI_INTEGER, MPI_SUM, comm)
    if (sums(3) > 0) call stop_run(status /= COLUMN_OK, 'run')
    step_fraction(n - first_step + 1) = real(sums(1), wp) / ncol_global
    step_nonfinite(n - first_step + 1) = sums(2)
    nonfinite_total = nonfinite_total + sums(2)
    if (mod(n, s%output_every) == 0 .or. n == s%nsteps) then
      call local%finish(model)
      call local%gather(global, counts, displs, 0, comm)
      status = 0
      if (rank == 0) then
        call out%write_record(global, n * dt, sum(global%fallback) / ncol_global, status, &
                              message)
        call out%write_steps(first_step, step_fraction(:n - first_step + 1), &
                             step_nonfinite(:n - first_step + 1))
      end if
      call agree(status /= 0, 'output')
      call local%reset()
      first_step = n + 1
    end if
  end do

  ! Timings: the slowest rank's seconds per step after the warm-up.
  call timers(seconds)
  timed_steps = s%nsteps - min(WARMUP_STEPS, s%nsteps - 1)
  call MPI_Reduce((seconds - warm) / timed_steps, worst, 4, MPI_DOUBLE_PRECISION, MPI_MAX, 0, &
                  comm)
  call scheme%release()
  status = 0
  if (rank == 0) then
    call out%close('completed', status, message)
    write (output_unit, '(a,i0,a,i0,a,i0,a,i0,a)') 'paramlib_scm: ', s%nsteps, ' steps of ', &
      ncol_global, ' columns on ', nranks, ' rank(s) x ', nthreads, ' thread(s), mode ' // &
      trim(s%mode_name)
    write (output_unit, '(a)') '  output ' // trim(s%output_file)
    if (nonfinite_total > 0) write (error_unit, '(a,i0,a)') 'paramlib_scm: warning: ', &
      nonfinite_total, ' column steps had NaN/Inf model outputs; Betts-Miller ran there ' // &
      '(nonfinite_step in the output)'
    write (output_unit, '(a,i0,a,i0,a,i0,a,i0,a,i0,4(a,es12.5),a)') 'timing {"steps": ', &
      s%nsteps, ', "timed_steps": ', timed_steps, ', "columns": ', ncol_global, ', "ranks": ', &
      nranks, ', "threads": ', nthreads, ', "step_s": ', worst(1), &
      ', "convection_s": ', worst(2), ', "bridge_s": ', worst(3), ', "physics_s": ', worst(4), '}'
  end if
  call agree(status /= 0, 'output')
  call MPI_Finalize()

contains

  !> Seconds so far: in steps, and summed over this rank's interface instances (threads) in the
  !> interface, its bridge calls and Betts-Miller.
  subroutine timers(t)
    real(wp), intent(out) :: t(4)
    real(wp) :: total, bridge, physics
    integer :: i
    t = [real(step_ticks, wp) / rate, 0.0_wp, 0.0_wp, 0.0_wp]
    do i = 1, size(scheme%physics)
      call scheme%physics(i)%timings(total, bridge, physics)
      t(2:) = t(2:) + [total, bridge, physics]
    end do
  end subroutine timers

  !> Every rank learns whether any rank failed (what: the stage); then all stop together.
  subroutine agree(failed, what)
    logical, intent(in) :: failed
    character(len=*), intent(in) :: what
    logical :: any_failed
    call MPI_Allreduce(failed, any_failed, 1, MPI_LOGICAL, MPI_LOR, comm)
    if (any_failed) call stop_run(failed, what)
  end subroutine agree

  !> Print the failure (on the ranks that failed), close the output saying why, exit 1.
  subroutine stop_run(failed, what)
    logical, intent(in) :: failed
    character(len=*), intent(in) :: what
    integer :: ignored
    character(len=1100) :: line
    write (line, '(a,i0,a)') 'paramlib_scm: rank ', rank, ': ' // what // ': ' // trim(message)
    if (failed) write (error_unit, '(a)') trim(line)
    if (rank == 0 .and. .not. failed) line = 'another rank failed'
    if (rank == 0) call out%close('failed: ' // trim(line), ignored, message)
    call MPI_Finalize()
    stop 1, quiet=.true.   ! the message is out; no backtrace
  end subroutine stop_run

  subroutine gather_levels(a, all)
    real(wp), intent(in) :: a(:, :)
    real(wp), intent(inout) :: all(:, :)
    call MPI_Gatherv(a, size(a), MPI_DOUBLE_PRECISION, all, s%nlev * counts, s%nlev * displs, &
                     MPI_DOUBLE_PRECISION, 0, comm)
  end subroutine gather_levels

  subroutine gather_columns(a, all)
    real(wp), intent(in) :: a(:)
    real(wp), intent(inout) :: all(:)
    call MPI_Gatherv(a, size(a), MPI_DOUBLE_PRECISION, all, counts, displs, &
                     MPI_DOUBLE_PRECISION, 0, comm)
  end subroutine gather_columns

end program paramlib_scm
