!> The column model's convection slot wired to the generic column interface.
!>
!> The model's columns are cut into chunks of chunk_size consecutive columns (the last one may
!> be shorter); each chunk is one call of paramlib_column_physics, as a GCM calls its column
!> physics once per chunk. Chunks are spread over OpenMP threads, each thread with its own
!> interface instance (a clone: own model handle, shared weights). A chunk's result depends on
!> its columns alone, and ranks split the columns at chunk boundaries (paramlib_scm), so a run
!> gives the same numbers for any number of threads or ranks with the same chunk_size.
module scm_coupled
  use, intrinsic :: iso_fortran_env, only: int64
  use physical_constants, only: wp
  use column_fields, only: column_state
  use column_status, only: COLUMN_OK, COLUMN_ERR_ARGUMENT
  use convection_slot, only: convection_scheme
  use paramlib_column_physics, only: column_physics, column_physics_config, column_diagnostics, &
                                     CP_OK, CP_ERR_ARGUMENT
  !$ use omp_lib, only: omp_get_max_threads, omp_get_thread_num
  implicit none
  private
  public :: coupled_convection

  type, extends(convection_scheme) :: coupled_convection
    type(column_physics), allocatable :: physics(:)       !< one per OpenMP thread
    type(column_diagnostics), allocatable :: diag(:)      !< one per chunk, of the last call
    integer :: chunk_size = 16, nchunks = 0, ncol = 0
    real(wp) :: dt = 600.0_wp
    real(wp), allocatable :: solin(:)                     !< (ncol) W m-2
    integer(int64), allocatable :: column_id(:)           !< (ncol) global column numbers
    integer(int64) :: step = 0                            !< calls so far (the host's step)
    integer :: last_status = CP_OK                        !< worst interface status, last call
    character(len=512) :: last_message = ''               !< its message
  contains
    procedure :: setup
    procedure :: compute => coupled_compute
    procedure :: chunk_bounds
    procedure :: release
  end type coupled_convection

contains

  !> ncol columns (global numbers column_id) with daily-mean insolation solin, in chunks of
  !> chunk_size; one interface per OpenMP thread. status: the interface's init status (warnings
  !> < CP_ERR_ARGUMENT leave the scheme usable).
  subroutine setup(self, config, nlev, chunk_size, dt, solin, column_id, status, message)
    class(coupled_convection), intent(inout) :: self
    type(column_physics_config), intent(in) :: config
    integer, intent(in) :: nlev, chunk_size
    real(wp), intent(in) :: dt, solin(:)
    integer(int64), intent(in) :: column_id(:)
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    integer :: nthreads, i, st
    nthreads = 1
    !$ nthreads = omp_get_max_threads()
    self%ncol = size(solin)
    self%chunk_size = chunk_size
    self%nchunks = (self%ncol + chunk_size - 1) / chunk_size
    self%dt = dt
    self%solin = solin
    self%column_id = column_id
    self%step = 0
    allocate (self%physics(nthreads), self%diag(self%nchunks))
    call self%physics(1)%init(config, nlev, status, message)
    if (status >= CP_ERR_ARGUMENT) return
    do i = 2, nthreads
      call self%physics(1)%clone(self%physics(i), st, message)
      if (st /= CP_OK) then
        status = st
        return
      end if
    end do
  end subroutine setup

  !> Columns i0..i1 of chunk c.
  subroutine chunk_bounds(self, c, i0, i1)
    class(coupled_convection), intent(in) :: self
    integer, intent(in) :: c
    integer, intent(out) :: i0, i1
    i0 = (c - 1) * self%chunk_size + 1
    i1 = min(c * self%chunk_size, self%ncol)
  end subroutine chunk_bounds

  subroutine coupled_compute(self, state, dtdt, dqdt, precip, status, message)
    class(coupled_convection), intent(inout) :: self
    type(column_state), intent(in) :: state
    real(wp), intent(out) :: dtdt(:, :), dqdt(:, :), precip(:)
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    integer :: chunk_status(self%nchunks)
    character(len=512) :: chunk_message(self%nchunks)
    integer :: c, i0, i1, thread, worst

    self%step = self%step + 1
    chunk_status = CP_OK
    chunk_message = ''
    !$omp parallel do schedule(static) private(c, i0, i1, thread)
    do c = 1, self%nchunks
      thread = 1
      !$ thread = omp_get_thread_num() + 1
      call self%chunk_bounds(c, i0, i1)
      call self%physics(thread)%compute(state%t(:, i0:i1), state%q(:, i0:i1), &
        state%p(:, i0:i1), state%p_int(:, i0:i1), state%ps(i0:i1), self%dt, dtdt(:, i0:i1), &
        dqdt(:, i0:i1), precip(i0:i1), self%diag(c), chunk_status(c), chunk_message(c), &
        solin=self%solin(i0:i1), shflx=state%shflx(i0:i1), lhflx=state%lhflx(i0:i1), &
        column_id=self%column_id(i0:i1), step=self%step)
    end do
    !$omp end parallel do
    worst = maxloc(chunk_status, 1)
    self%last_status = chunk_status(worst)
    self%last_message = chunk_message(worst)
    status = COLUMN_OK
    if (self%last_status >= CP_ERR_ARGUMENT) then
      status = COLUMN_ERR_ARGUMENT
      message = trim(self%last_message)
    end if
  end subroutine coupled_compute

  subroutine release(self)
    class(coupled_convection), intent(inout) :: self
    integer :: i
    if (.not. allocated(self%physics)) return
    do i = 1, size(self%physics)
      call self%physics(i)%free()
    end do
  end subroutine release

end module scm_coupled
