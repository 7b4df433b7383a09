!> One output record of paramlib_scm: what the run accumulates between two writes, per column.
!> Each rank accumulates its own columns; rank 0 gathers them in column order (ranks hold
!> consecutive blocks of columns) and writes them (scm_io).
module scm_record
  use, intrinsic :: ieee_arithmetic, only: ieee_is_nan
  use mpi_f08, only: MPI_Comm, MPI_Gatherv, MPI_DOUBLE_PRECISION, MPI_INTEGER
  use physical_constants, only: wp
  use column_fields, only: mass_integral
  use column_host, only: column_model, PROC_CONVECTION, E_CONVECTION, E_RESIDUAL, W_CONVECTION, &
                         W_RESIDUAL
  use paramlib_column_physics, only: PATH_PHYSICS, CP_PHYSICS
  use scm_coupled, only: coupled_convection
  implicit none
  private
  public :: output_record

  type :: output_record
    integer :: nsteps = 0   !< steps accumulated since the last reset
    ! the state at the end of the interval
    real(wp), allocatable :: t(:, :), q(:, :), pw(:)
    ! means over the interval
    real(wp), allocatable :: dtdt(:, :), dqdt(:, :), precip(:), precip_ls(:), spread(:), &
                             n_ood(:), ood_score(:), fallback(:), precip_change(:), water_moved(:), &
                             top_removed(:), energy_convection(:), water_convection(:)
    ! largest (magnitude) over the interval
    real(wp), allocatable :: energy_residual(:), water_residual(:), ood_score_max(:)
    ! path of the last step; reasons and fixes seen in the interval (bitwise or)
    integer, allocatable :: path(:), reason(:), fixes(:)
  contains
    procedure :: init => record_init
    procedure :: reset => record_reset
    procedure :: add_step
    procedure :: finish
    procedure :: gather
  end type output_record

contains

  subroutine record_init(self, nlev, ncol)
    class(output_record), intent(out) :: self
    integer, intent(in) :: nlev, ncol
    allocate (self%t(nlev, ncol), self%q(nlev, ncol), self%dtdt(nlev, ncol), &
              self%dqdt(nlev, ncol), self%pw(ncol), self%precip(ncol), self%precip_ls(ncol), &
              self%spread(ncol), self%n_ood(ncol), self%ood_score(ncol), self%fallback(ncol), &
              self%precip_change(ncol), self%water_moved(ncol), self%top_removed(ncol), &
              self%energy_convection(ncol), self%water_convection(ncol), &
              self%energy_residual(ncol), self%water_residual(ncol), &
              self%ood_score_max(ncol), self%path(ncol), &
              self%reason(ncol), self%fixes(ncol))
    call self%reset()
  end subroutine record_init

  subroutine record_reset(self)
    class(output_record), intent(inout) :: self
    self%nsteps = 0
    self%t = 0.0_wp
    self%q = 0.0_wp
    self%pw = 0.0_wp
    self%dtdt = 0.0_wp
    self%dqdt = 0.0_wp
    self%precip = 0.0_wp
    self%precip_ls = 0.0_wp
    self%spread = 0.0_wp
    self%n_ood = 0.0_wp
    self%ood_score = 0.0_wp
    self%fallback = 0.0_wp
    self%precip_change = 0.0_wp
    self%water_moved = 0.0_wp
    self%top_removed = 0.0_wp
    self%energy_convection = 0.0_wp
    self%water_convection = 0.0_wp
    self%energy_residual = 0.0_wp
    self%water_residual = 0.0_wp
    self%ood_score_max = 0.0_wp
    self%path = PATH_PHYSICS
    self%reason = 0
    self%fixes = 0
  end subroutine record_reset

  !> Add the step the model just took; n_fallback: its columns that ran physics in an ML mode,
  !> n_nonfinite: those among them whose model outputs held NaN/Inf.
  subroutine add_step(self, model, scheme, mode, n_fallback, n_nonfinite)
    class(output_record), intent(inout) :: self
    type(column_model), intent(in) :: model
    type(coupled_convection), intent(in) :: scheme
    integer, intent(in) :: mode
    integer, intent(out) :: n_fallback, n_nonfinite
    integer :: c, i0, i1
    self%nsteps = self%nsteps + 1
    self%dtdt = self%dtdt + model%tend_t(:, :, PROC_CONVECTION)
    self%dqdt = self%dqdt + model%tend_q(:, :, PROC_CONVECTION)
    self%precip = self%precip + model%precip
    self%precip_ls = self%precip_ls + model%precip_ls
    self%energy_convection = self%energy_convection + model%energy_budget(E_CONVECTION, :)
    self%water_convection = self%water_convection + model%water_budget(W_CONVECTION, :)
    self%energy_residual = max(self%energy_residual, abs(model%energy_budget(E_RESIDUAL, :)))
    self%water_residual = max(self%water_residual, abs(model%water_budget(W_RESIDUAL, :)))
    n_fallback = 0
    n_nonfinite = 0
    do c = 1, scheme%nchunks
      call scheme%chunk_bounds(c, i0, i1)
      associate (d => scheme%diag(c))
        self%spread(i0:i1) = self%spread(i0:i1) + d%spread
        self%n_ood(i0:i1) = self%n_ood(i0:i1) + d%n_ood
        self%ood_score(i0:i1) = self%ood_score(i0:i1) + d%ood_score
        ! A NaN score falls back in the hybrid: it counts as the largest possible.
        self%ood_score_max(i0:i1) = max(self%ood_score_max(i0:i1), &
                                        merge(huge(1.0_wp), d%ood_score, ieee_is_nan(d%ood_score)))
        self%precip_change(i0:i1) = self%precip_change(i0:i1) + d%precip_change
        self%water_moved(i0:i1) = self%water_moved(i0:i1) + d%water_moved
        self%top_removed(i0:i1) = self%top_removed(i0:i1) + d%top_removed
        self%path(i0:i1) = d%path
        self%reason(i0:i1) = ior(self%reason(i0:i1), d%reason)
        self%fixes(i0:i1) = ior(self%fixes(i0:i1), d%fixes)
        if (mode /= CP_PHYSICS) then
          where (d%path == PATH_PHYSICS) self%fallback(i0:i1) = self%fallback(i0:i1) + 1.0_wp
          n_fallback = n_fallback + count(d%path == PATH_PHYSICS)
          n_nonfinite = n_nonfinite + d%n_nonfinite
        end if
      end associate
    end do
  end subroutine add_step

  !> Means from sums, and the state at the end of the interval.
  subroutine finish(self, model)
    class(output_record), intent(inout) :: self
    type(column_model), intent(in) :: model
    real(wp) :: n
    integer :: i
    n = real(max(self%nsteps, 1), wp)
    self%dtdt = self%dtdt / n
    self%dqdt = self%dqdt / n
    self%precip = self%precip / n
    self%precip_ls = self%precip_ls / n
    self%spread = self%spread / n
    self%n_ood = self%n_ood / n
    self%ood_score = self%ood_score / n
    self%fallback = self%fallback / n
    self%precip_change = self%precip_change / n
    self%water_moved = self%water_moved / n
    self%top_removed = self%top_removed / n
    self%energy_convection = self%energy_convection / n
    self%water_convection = self%water_convection / n
    self%t = model%state%t
    self%q = model%state%q
    do i = 1, model%state%ncol
      self%pw(i) = mass_integral(model%state%q(:, i), model%state%dp(:, i))
    end do
  end subroutine finish

  !> Rank root's global gets every rank's columns in rank order; counts(r) and displs(r) are
  !> rank r's column count and first column (0-based); global is only used on root.
  subroutine gather(self, global, counts, displs, root, comm)
    class(output_record), intent(in) :: self
    type(output_record), intent(inout) :: global
    integer, intent(in) :: counts(:), displs(:), root
    type(MPI_Comm), intent(in) :: comm
    integer :: nlev
    nlev = size(self%t, 1)
    call levels(self%t, global%t)
    call levels(self%q, global%q)
    call levels(self%dtdt, global%dtdt)
    call levels(self%dqdt, global%dqdt)
    call columns(self%pw, global%pw)
    call columns(self%precip, global%precip)
    call columns(self%precip_ls, global%precip_ls)
    call columns(self%spread, global%spread)
    call columns(self%n_ood, global%n_ood)
    call columns(self%ood_score, global%ood_score)
    call columns(self%ood_score_max, global%ood_score_max)
    call columns(self%fallback, global%fallback)
    call columns(self%precip_change, global%precip_change)
    call columns(self%water_moved, global%water_moved)
    call columns(self%top_removed, global%top_removed)
    call columns(self%energy_convection, global%energy_convection)
    call columns(self%water_convection, global%water_convection)
    call columns(self%energy_residual, global%energy_residual)
    call columns(self%water_residual, global%water_residual)
    call flags(self%path, global%path)
    call flags(self%reason, global%reason)
    call flags(self%fixes, global%fixes)

  contains

    subroutine levels(local, all)
      real(wp), intent(in) :: local(:, :)
      real(wp), intent(inout) :: all(:, :)
      call MPI_Gatherv(local, size(local), MPI_DOUBLE_PRECISION, all, nlev * counts, &
                       nlev * displs, MPI_DOUBLE_PRECISION, root, comm)
    end subroutine levels

    subroutine columns(local, all)
      real(wp), intent(in) :: local(:)
      real(wp), intent(inout) :: all(:)
      call MPI_Gatherv(local, size(local), MPI_DOUBLE_PRECISION, all, counts, displs, &
                       MPI_DOUBLE_PRECISION, root, comm)
    end subroutine columns

    subroutine flags(local, all)
      integer, intent(in) :: local(:)
      integer, intent(inout) :: all(:)
      call MPI_Gatherv(local, size(local), MPI_INTEGER, all, counts, displs, MPI_INTEGER, &
                       root, comm)
    end subroutine flags

  end subroutine gather

end module scm_record
