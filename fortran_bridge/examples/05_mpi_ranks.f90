!> Example 05: MPI ranks, each with its own model, each running its share of columns.
!>
!>   mpiexec -n 4 05_mpi_ranks MODEL.pt
!>
!> Every rank loads the model itself (a handle lives in one process). Ranks on a
!> node with GPUs spread over them: device index = node-local rank mod the number
!> of visible CUDA devices; without CUDA every rank runs on its CPU cores.
!> Model: the "named" test model (T, q on 8 levels, ps -> heating, moistening, precip).
program mpi_ranks
  use, intrinsic :: iso_fortran_env, only: real32, real64, error_unit
  use mpi_f08
  use paramlib_bridge
  use example_support, only: stop_on_error, idealized_column, set_column_inputs_and_forward, &
    get_column_outputs, argument
  implicit none
  integer, parameter :: nlev = 8, ncol_global = 1000
  type(MPI_Comm) :: node_comm
  type(paramlib_model) :: model
  character(len=:), allocatable :: model_file
  real(real32), allocatable :: t(:, :), q(:, :), ps(:), heating(:, :), moistening(:, :), precip(:)
  real(real64) :: local_sum, global_sum
  integer :: rank, nranks, local_rank, ndev, first, last, ncol, c, status

  call MPI_Init()
  call MPI_Comm_rank(MPI_COMM_WORLD, rank)
  call MPI_Comm_size(MPI_COMM_WORLD, nranks)
  call MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, node_comm)
  call MPI_Comm_rank(node_comm, local_rank)
  if (command_argument_count() /= 1) then
    if (rank == 0) write (error_unit, '(a)') 'usage: mpiexec -n N 05_mpi_ranks MODEL.pt'
    call MPI_Abort(MPI_COMM_WORLD, 2)
  end if
  model_file = argument(1)

  ndev = paramlib_cuda_device_count()
  if (ndev > 0) then
    call model%load(model_file, status, device=PARAMLIB_CUDA, device_index=mod(local_rank, ndev))
  else
    ! Ranks share the node's cores: one libtorch thread each.
    call paramlib_set_num_threads(1, status)
    call stop_on_error(status, 'set_num_threads')
    call model%load(model_file, status)
  end if
  call stop_on_error(status, 'load')
  if (ndev > 0) then
    print '(a,i0,a,i0)', 'rank ', rank, ' runs on cuda:', mod(local_rank, ndev)
  else
    print '(a,i0,a)', 'rank ', rank, ' runs on the CPU'
  end if

  ! This rank's block of the global columns.
  first = rank * ncol_global / nranks + 1
  last = (rank + 1) * ncol_global / nranks
  ncol = last - first + 1
  allocate (t(nlev, ncol), q(nlev, ncol), ps(ncol), heating(nlev, ncol), moistening(nlev, ncol), &
            precip(ncol))
  do c = 1, ncol
    call idealized_column(first + c - 1, t(:, c), q(:, c), ps(c))
  end do

  call set_column_inputs_and_forward(model, t, q, ps)
  call get_column_outputs(model, heating, moistening, precip)

  ! The global mean does not depend on how many ranks shared the columns.
  local_sum = sum(real(precip, real64))
  call MPI_Reduce(local_sum, global_sum, 1, MPI_DOUBLE_PRECISION, MPI_SUM, 0, MPI_COMM_WORLD)
  if (rank == 0) print '(a,i0,a,i0,a,es14.6,a)', 'mean precip over ', ncol_global, ' columns on ', &
    nranks, ' ranks: ', global_sum / ncol_global, ' mm s-1'

  call model%free(status)
  call MPI_Comm_free(node_comm)
  call MPI_Finalize()
end program mpi_ranks
