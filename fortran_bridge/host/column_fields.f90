!> The vertical grid and the state of the column model.
!>
!> ncol independent columns of nlev full levels, index 1 = lowest. Sigma coordinates,
!> p = sigma ps, with interfaces sigma_int(1) = 1 (surface) to sigma_int(nlev+1) =
!> SIGMA_TOP (about 40 hPa). Interfaces are spaced by the mean of a uniform and a cosine
!> stretching, so layers are thinner near the surface and the top (about 18 hPa at 26
!> levels) than in the mid troposphere (about 48 hPa). Full levels sit midway in pressure
!> between their interfaces. Arrays are (nlev, ncol): one column is contiguous.
module column_fields
  use physical_constants, only: wp, GRAVITY
  use column_status, only: COLUMN_OK, COLUMN_ERR_ARGUMENT
  implicit none
  private
  public :: column_grid, column_state, mass_integral, SIGMA_TOP, MIN_LEVELS

  real(wp), parameter :: SIGMA_TOP = 0.04_wp
  integer, parameter :: MIN_LEVELS = 4

  !> Sigma levels and the log-pressure ratios the physics needs, the same for every column.
  type :: column_grid
    integer :: nlev = 0
    real(wp), allocatable :: sigma(:)       !< (nlev) full levels
    real(wp), allocatable :: sigma_int(:)   !< (nlev+1) interfaces, 1 = surface
    real(wp), allocatable :: dlnp_layer(:)  !< (nlev) ln(p_int(k) / p_int(k+1))
    real(wp), allocatable :: dlnp_lower(:)  !< (nlev) ln(p_int(k) / p(k))
    real(wp), allocatable :: dlnp_level(:)  !< (nlev) ln(p(k) / p(k-1)), 0 at k = 1
  contains
    procedure :: init => grid_init
  end type column_grid

  !> Prognostic T and q with the pressures and surface fields a scheme may read.
  type :: column_state
    integer :: ncol = 0, nlev = 0
    type(column_grid) :: grid
    real(wp), allocatable :: t(:, :)      !< (nlev, ncol) temperature, K
    real(wp), allocatable :: q(:, :)      !< (nlev, ncol) specific humidity, kg kg-1
    real(wp), allocatable :: p(:, :)      !< (nlev, ncol) full-level pressure, Pa
    real(wp), allocatable :: p_int(:, :)  !< (nlev+1, ncol) interface pressure, Pa
    real(wp), allocatable :: dp(:, :)     !< (nlev, ncol) layer thickness p_int(k) - p_int(k+1), Pa
    real(wp), allocatable :: ps(:)        !< (ncol) surface pressure, Pa
    real(wp), allocatable :: sst(:)       !< (ncol) sea surface temperature, K
    real(wp), allocatable :: shflx(:)     !< (ncol) surface sensible heat flux, W m-2, upward
    real(wp), allocatable :: lhflx(:)     !< (ncol) surface latent heat flux, W m-2, upward
  contains
    procedure :: init => state_init
    procedure :: set_surface_pressure
  end type column_state

contains

  subroutine grid_init(self, nlev)
    class(column_grid), intent(out) :: self
    integer, intent(in) :: nlev
    real(wp), parameter :: PI = acos(-1.0_wp)
    real(wp) :: s, stretch
    integer :: k
    self%nlev = nlev
    allocate (self%sigma(nlev), self%sigma_int(nlev + 1), self%dlnp_layer(nlev), &
              self%dlnp_lower(nlev), self%dlnp_level(nlev))
    do k = 1, nlev + 1
      s = real(k - 1, wp) / nlev
      stretch = 0.5_wp * (1.0_wp - s) + 0.25_wp * (1.0_wp + cos(PI * s))
      self%sigma_int(k) = SIGMA_TOP + (1.0_wp - SIGMA_TOP) * stretch
    end do
    self%sigma_int(1) = 1.0_wp
    self%sigma_int(nlev + 1) = SIGMA_TOP
    self%sigma = 0.5_wp * (self%sigma_int(:nlev) + self%sigma_int(2:))
    self%dlnp_layer = log(self%sigma_int(:nlev) / self%sigma_int(2:))
    self%dlnp_lower = log(self%sigma_int(:nlev) / self%sigma)
    self%dlnp_level(1) = 0.0_wp
    self%dlnp_level(2:) = log(self%sigma(2:) / self%sigma(:nlev - 1))
  end subroutine grid_init

  !> ncol columns of nlev levels at surface pressure ps and sea surface temperature sst;
  !> T and q are zero until the caller sets them.
  subroutine state_init(self, nlev, ps, sst, status, message)
    class(column_state), intent(out) :: self
    integer, intent(in) :: nlev
    real(wp), intent(in) :: ps(:), sst(:)
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    integer :: ncol
    ncol = size(ps)
    status = COLUMN_ERR_ARGUMENT
    if (nlev < MIN_LEVELS) then
      write (message, '(a,i0,a,i0)') 'nlev must be at least ', MIN_LEVELS, ', got ', nlev
      return
    end if
    if (ncol < 1 .or. size(sst) /= ncol) then
      write (message, '(a,i0,a,i0,a)') 'need one sst per column and at least one column (', &
        ncol, ' ps, ', size(sst), ' sst)'
      return
    end if
    self%ncol = ncol
    self%nlev = nlev
    call self%grid%init(nlev)
    allocate (self%t(nlev, ncol), self%q(nlev, ncol), self%p(nlev, ncol), &
              self%p_int(nlev + 1, ncol), self%dp(nlev, ncol), self%ps(ncol), self%sst(ncol), &
              self%shflx(ncol), self%lhflx(ncol))
    self%t = 0.0_wp
    self%q = 0.0_wp
    self%sst = sst
    self%shflx = 0.0_wp
    self%lhflx = 0.0_wp
    call self%set_surface_pressure(ps, status, message)
  end subroutine state_init

  !> New surface pressures (one per column, 500 to 1100 hPa): pressures follow.
  subroutine set_surface_pressure(self, ps, status, message)
    class(column_state), intent(inout) :: self
    real(wp), intent(in) :: ps(:)
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    integer :: i
    status = COLUMN_ERR_ARGUMENT
    if (size(ps) /= self%ncol) then
      write (message, '(a,i0,a,i0)') 'ps: expected ', self%ncol, ' columns, got ', size(ps)
      return
    end if
    if (any(.not. (ps >= 5.0e4_wp .and. ps <= 1.1e5_wp))) then
      message = 'ps: surface pressures must lie between 5e4 and 1.1e5 Pa'
      return
    end if
    self%ps = ps
    do i = 1, self%ncol
      self%p(:, i) = self%grid%sigma * ps(i)
      self%p_int(:, i) = self%grid%sigma_int * ps(i)
      self%dp(:, i) = self%p_int(:self%nlev, i) - self%p_int(2:, i)
    end do
    status = COLUMN_OK
  end subroutine set_surface_pressure

  !> Mass-weighted column integral sum(a dp) / g: of a tendency in K s-1 times cp, W m-2.
  pure function mass_integral(a, dp) result(total)
    real(wp), intent(in) :: a(:), dp(:)
    real(wp) :: total
    total = sum(a * dp) / GRAVITY
  end function mass_integral

end module column_fields
