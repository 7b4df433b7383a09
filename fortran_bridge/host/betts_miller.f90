!> Simplified Betts-Miller convection (Frierson 2007, J. Atmos. Sci. 64, 1959-1976),
!> with his "shallower" shallow-convection branch.
!>
!> Per column: a parcel from the lowest level rises dry to its LCL, then pseudo-
!> adiabatically (thermodynamics: rising_parcel). CAPE = sum R_d (T_vp - T_v) dln p over
!> the first buoyant layer above the LCL (below it the parcel only meets inhibition, as in
!> Frierson's capecalcnew, so a superadiabatic surface layer under a stable sub-cloud
!> layer does not end the search); its top is the level of neutral buoyancy (LNB, level kt). With
!> CAPE > 0, levels 1..kt relax over tau to T_ref = parcel temperature T_p and
!> q_ref = RH_BM q_s(T_p) (the humidity reference is not shifted):
!>   dT/dt = (T_ref - T) / tau,   dq/dt = (q_ref - q) / tau,
!>   P_q = -sum(dq/dt dp) / g,    P_T = cp / L sum(dT/dt dp) / g.
!> Deep (P_q > 0, P_T > 0): T_ref is shifted by one uniform dT over 1..kt so that
!>   sum(cp dT/dt dp) / g = L P_q     (enthalpy cp T + L q conserved, the condensate rains out),
!> i.e. dT/dt += (L P_q g / cp - sum(dT/dt dp)) / sum(dp); precipitation P = P_q.
!> Shallow (P_T > 0, P_q <= 0): the relaxation is made shallower. With P_j the
!> precipitation of levels 1..j, the top is the highest j < kt with P_j > 0; level j+1 keeps
!> the fraction P_j / (P_j - P_{j+1}) of its tendencies so that P = 0 exactly, levels above
!> are left alone, and T_ref is shifted so that sum(dT/dt dp) = 0 over the new depth. No
!> such level, or P_T <= 0: no convection. Precipitation is never negative.
!> The tendencies are rates: the model, not the scheme, multiplies them by its timestep.
module betts_miller
  use physical_constants, only: wp, GRAVITY, RD, CP, LV
  use thermodynamics, only: virtual_temperature, rising_parcel
  use column_fields, only: column_state, mass_integral
  use column_status, only: COLUMN_OK, COLUMN_ERR_ARGUMENT
  use convection_slot, only: convection_scheme
  implicit none
  private
  public :: betts_miller_scheme, bm_column, BM_NONE, BM_SHALLOW, BM_DEEP
  public :: BM_DEFAULT_TAU, BM_DEFAULT_RH, BM_PARCEL_MAX_DLNP

  integer, parameter :: BM_NONE = 0, BM_SHALLOW = 1, BM_DEEP = 2
  real(wp), parameter :: BM_DEFAULT_TAU = 7200.0_wp   !< s
  real(wp), parameter :: BM_DEFAULT_RH = 0.8_wp
  !> Longest ln p step of the parcel's moist ascent (an RK2 step; finer where layers are
  !> thicker, near the top).
  real(wp), parameter :: BM_PARCEL_MAX_DLNP = 0.1_wp

  type, extends(convection_scheme) :: betts_miller_scheme
    real(wp) :: tau = BM_DEFAULT_TAU   !< relaxation time, s
    real(wp) :: rh = BM_DEFAULT_RH     !< relative humidity of the reference profile
    ! Diagnostics of the last compute, per column.
    real(wp), allocatable :: cape(:)   !< J kg-1
    integer, allocatable :: kind(:)    !< BM_NONE, BM_SHALLOW or BM_DEEP
    integer, allocatable :: top(:)     !< highest level relaxed (0: none)
  contains
    procedure :: set_parameters
    procedure :: compute => bm_compute
  end type betts_miller_scheme

contains

  subroutine set_parameters(self, tau, rh, status, message)
    class(betts_miller_scheme), intent(inout) :: self
    real(wp), intent(in) :: tau, rh
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    status = COLUMN_ERR_ARGUMENT
    if (.not. (tau > 0.0_wp .and. tau < huge(tau))) then
      message = 'Betts-Miller: tau must be a positive number of seconds'
      return
    end if
    if (.not. (rh > 0.0_wp .and. rh <= 1.0_wp)) then
      message = 'Betts-Miller: the reference relative humidity must lie in (0, 1]'
      return
    end if
    self%tau = tau
    self%rh = rh
    status = COLUMN_OK
  end subroutine set_parameters

  subroutine bm_compute(self, state, dtdt, dqdt, precip, status, message)
    class(betts_miller_scheme), intent(inout) :: self
    type(column_state), intent(in) :: state
    real(wp), intent(out) :: dtdt(:, :), dqdt(:, :), precip(:)
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    integer :: i
    if (any(shape(dtdt) /= [state%nlev, state%ncol]) .or. &
        any(shape(dqdt) /= [state%nlev, state%ncol]) .or. size(precip) /= state%ncol) then
      status = COLUMN_ERR_ARGUMENT
      message = 'Betts-Miller: tendency arrays must be (nlev, ncol) and precip (ncol)'
      return
    end if
    if (allocated(self%cape)) then
      if (size(self%cape) /= state%ncol) deallocate (self%cape, self%kind, self%top)
    end if
    if (.not. allocated(self%cape)) allocate (self%cape(state%ncol), self%kind(state%ncol), &
                                              self%top(state%ncol))
    do i = 1, state%ncol
      call bm_column(state%t(:, i), state%q(:, i), state%p(:, i), state%dp(:, i), &
                     state%grid%dlnp_layer, state%grid%dlnp_level, self%tau, self%rh, &
                     dtdt(:, i), dqdt(:, i), precip(i), self%cape(i), self%kind(i), self%top(i))
    end do
    status = COLUMN_OK
  end subroutine bm_compute

  !> One column: t, q, p, dp (nlev) and the grid's dlnp_layer = ln(p_int(k)/p_int(k+1))
  !> and dlnp_level = ln(p(k)/p(k-1)).
  !> Returns dtdt, dqdt (rates), precip (kg m-2 s-1), CAPE, the branch taken and the
  !> highest level relaxed.
  pure subroutine bm_column(t, q, p, dp, dlnp_layer, dlnp_level, tau, rh, dtdt, dqdt, precip, &
                            cape, kind, top)
    real(wp), intent(in) :: t(:), q(:), p(:), dp(:), dlnp_layer(:), dlnp_level(:), tau, rh
    real(wp), intent(out) :: dtdt(:), dqdt(:), precip, cape
    integer, intent(out) :: kind, top
    real(wp) :: tp(size(t)), qsp(size(t)), buoyancy, p_q, p_t
    type(rising_parcel) :: parcel
    integer :: k, kt

    dtdt = 0.0_wp
    dqdt = 0.0_wp
    precip = 0.0_wp
    cape = 0.0_wp
    kind = BM_NONE
    top = 0

    ! The parcel rises from the lowest level until it is no longer buoyant.
    call parcel%start(t(1), q(1), p(1))
    tp(1) = t(1)
    qsp(1) = parcel%qs
    kt = 0
    do k = 2, size(t)
      call parcel%lift(p(k), dlnp_level(k), BM_PARCEL_MAX_DLNP)
      tp(k) = parcel%t
      qsp(k) = parcel%qs
      buoyancy = virtual_temperature(parcel%t, parcel%q) - virtual_temperature(t(k), q(k))
      if (buoyancy > 0.0_wp .and. parcel%saturated) then
        cape = cape + RD * buoyancy * dlnp_layer(k)
        kt = k
      else if (kt > 0) then
        exit
      end if
    end do
    if (kt == 0) return

    dtdt(:kt) = (tp(:kt) - t(:kt)) / tau
    dqdt(:kt) = (rh * qsp(:kt) - q(:kt)) / tau
    p_q = -mass_integral(dqdt(:kt), dp(:kt))
    p_t = CP / LV * mass_integral(dtdt(:kt), dp(:kt))

    if (p_t <= 0.0_wp) then
      dtdt = 0.0_wp
      dqdt = 0.0_wp
    else if (p_q > 0.0_wp) then
      call shift_temperature(dtdt(:kt), dp(:kt), LV * p_q * GRAVITY / CP)
      precip = p_q
      kind = BM_DEEP
      top = kt
    else
      call make_shallower(dtdt, dqdt, dp, kt, top)
      if (top > 0) then
        call shift_temperature(dtdt(:top), dp(:top), 0.0_wp)
        kind = BM_SHALLOW
      end if
    end if
  end subroutine bm_column

  !> Add one uniform temperature tendency so that sum(dtdt dp) = target.
  pure subroutine shift_temperature(dtdt, dp, target)
    real(wp), intent(inout) :: dtdt(:)
    real(wp), intent(in) :: dp(:), target
    dtdt = dtdt + (target - sum(dtdt * dp)) / sum(dp)
  end subroutine shift_temperature

  !> Frierson's shallower convection: cut the relaxation depth (levels 1..kt) to where
  !> the precipitation of the levels below is zero; top = 0 where no depth gives P = 0.
  pure subroutine make_shallower(dtdt, dqdt, dp, kt, top)
    real(wp), intent(inout) :: dtdt(:), dqdt(:)
    real(wp), intent(in) :: dp(:)
    integer, intent(in) :: kt
    integer, intent(out) :: top
    real(wp) :: p_below(kt), fraction
    integer :: j
    p_below(1) = -dqdt(1) * dp(1) / GRAVITY
    do j = 2, kt
      p_below(j) = p_below(j - 1) - dqdt(j) * dp(j) / GRAVITY
    end do
    top = 0
    do j = kt - 1, 1, -1
      if (p_below(j) > 0.0_wp) then
        top = j + 1
        exit
      end if
    end do
    if (top == 0) then
      dtdt = 0.0_wp
      dqdt = 0.0_wp
      return
    end if
    fraction = p_below(top - 1) / (p_below(top - 1) - p_below(top))
    dtdt(top) = fraction * dtdt(top)
    dqdt(top) = fraction * dqdt(top)
    dtdt(top + 1:) = 0.0_wp
    dqdt(top + 1:) = 0.0_wp
  end subroutine make_shallower

end module betts_miller
