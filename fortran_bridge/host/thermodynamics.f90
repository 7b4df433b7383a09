!> Moist thermodynamics of the column model (SI units, saturation over liquid water).
!>
!>   e_s(T)    = 611.2 exp(17.67 (T - T0) / (T - 29.65))            Pa (Bolton 1980, eq. 10)
!>   q_s(T, p) = eps e_s / (p - (1 - eps) e_s)                       saturation specific humidity
!>   T_v       = T (1 + (1/eps - 1) q)                               virtual temperature
!>   T_LCL     = 55 + 1 / (1 / (T - 55) - ln(RH) / 2840)             Bolton (1980, eq. 22)
!>   p_LCL     = p (T_LCL / T)^(1/kappa)                             dry adiabat up to the LCL
!>   dT/dln p  = (kappa T + L r_s / cp) / (1 + L^2 r_s / (cp R_v T^2))   pseudo-adiabat
!> with r_s = eps e_s / (p - e_s) the saturation mixing ratio: condensate leaves the parcel
!> at once (pseudo-adiabatic ascent), the heat capacity of vapour is neglected.
!> e_s is capped at p/2 so q_s stays finite where a warm temperature meets a low pressure;
!> no state of the column model gets there, the cap only keeps the functions total.
module thermodynamics
  use physical_constants, only: wp, RV, CP, LV, KAPPA, EPSILON, T0
  implicit none
  private
  public :: saturation_vapour_pressure, saturation_humidity, virtual_temperature
  public :: lcl_temperature, pseudo_adiabatic_lapse, rising_parcel, parcel_profile

  !> A parcel lifted level by level (start, then lift to each level in turn): dry adiabat
  !> up to its LCL, pseudo-adiabat above. Lifting one level at a time lets a caller stop
  !> where it likes, e.g. at the level of neutral buoyancy.
  type :: rising_parcel
    real(wp) :: t = 0.0_wp, p = 0.0_wp  !< temperature and pressure where it is now
    real(wp) :: q = 0.0_wp              !< its humidity: q0 below the LCL, q_s(t, p) above
    real(wp) :: qs = 0.0_wp             !< saturation humidity at (t, p)
    logical :: saturated = .false.      !< above the LCL
    real(wp), private :: t0 = 0.0_wp, q0 = 0.0_wp, lnp = 0.0_wp, es = 0.0_wp
    real(wp), private :: t_lcl = 0.0_wp, p_lcl = 0.0_wp, lnp_lcl = 0.0_wp
  contains
    procedure :: start => parcel_start
    procedure :: lift => parcel_lift
  end type rising_parcel

contains

  elemental function saturation_vapour_pressure(t) result(es)
    real(wp), intent(in) :: t
    real(wp) :: es
    es = 611.2_wp * exp(17.67_wp * (t - T0) / (t - 29.65_wp))
  end function saturation_vapour_pressure

  elemental function saturation_humidity(t, p) result(qs)
    real(wp), intent(in) :: t, p
    real(wp) :: qs
    qs = humidity_at(saturation_vapour_pressure(t), p)
  end function saturation_humidity

  !> Specific humidity of vapour pressure e (capped at p/2) at pressure p.
  elemental function humidity_at(e, p) result(q)
    real(wp), intent(in) :: e, p
    real(wp) :: q, ec
    ec = min(e, 0.5_wp * p)
    q = EPSILON * ec / (p - (1.0_wp - EPSILON) * ec)
  end function humidity_at

  elemental function virtual_temperature(t, q) result(tv)
    real(wp), intent(in) :: t, q
    real(wp) :: tv
    tv = t * (1.0_wp + (1.0_wp / EPSILON - 1.0_wp) * q)
  end function virtual_temperature

  !> Temperature at the lifting condensation level of air (t, q) at pressure p; t itself
  !> when the air is saturated. Only for q > 0 (dry air never condenses).
  elemental function lcl_temperature(t, q, p) result(t_lcl)
    real(wp), intent(in) :: t, q, p
    real(wp) :: t_lcl, e, rh
    e = q * p / (EPSILON + (1.0_wp - EPSILON) * q)
    rh = e / saturation_vapour_pressure(t)
    if (rh >= 1.0_wp) then
      t_lcl = t
    else
      t_lcl = 55.0_wp + 1.0_wp / (1.0_wp / (t - 55.0_wp) - log(rh) / 2840.0_wp)
    end if
  end function lcl_temperature

  !> dT/dln p along the pseudo-adiabat through (t, p).
  elemental function pseudo_adiabatic_lapse(t, p) result(dtdlnp)
    real(wp), intent(in) :: t, p
    real(wp) :: dtdlnp
    dtdlnp = lapse_at(t, p, saturation_vapour_pressure(t))
  end function pseudo_adiabatic_lapse

  !> The pseudo-adiabatic lapse of the header given e_s(t), with r_s = eps e_s / d,
  !> d = p - e_s, multiplied through by R_v T^2 d so that one division remains (this is
  !> most of the cost of a Betts-Miller step).
  elemental function lapse_at(t, p, es_t) result(dtdlnp)
    real(wp), intent(in) :: t, p, es_t
    real(wp) :: dtdlnp, es, d, rvt2
    es = min(es_t, 0.5_wp * p)
    d = p - es
    rvt2 = RV * t**2
    dtdlnp = rvt2 * (KAPPA * CP * t * d + LV * EPSILON * es) &
             / (CP * rvt2 * d + LV**2 * EPSILON * es)
  end function lapse_at

  !> The parcel (t0, q0) at pressure p0, not yet lifted.
  pure subroutine parcel_start(self, t0, q0, p0)
    class(rising_parcel), intent(inout) :: self
    real(wp), intent(in) :: t0, q0, p0
    self%t0 = t0
    self%q0 = q0
    self%t = t0
    self%p = p0
    self%q = q0
    self%lnp = 0.0_wp
    self%saturated = .false.
    self%es = saturation_vapour_pressure(t0)
    self%qs = humidity_at(self%es, p0)
    if (q0 > 0.0_wp) then
      self%t_lcl = lcl_temperature(t0, q0, p0)
      self%lnp_lcl = log(self%t_lcl / t0) / KAPPA   ! ln(p_lcl / p0)
    else
      self%t_lcl = 0.0_wp
      self%lnp_lcl = -huge(1.0_wp)
    end if
    self%p_lcl = p0 * exp(self%lnp_lcl)
  end subroutine parcel_start

  !> Lift the parcel to p_to, dlnp = ln(p_to / p) above where it is (<= 0), in pseudo-
  !> adiabatic midpoint (RK2) steps of at most max_dlnp in ln p.
  pure subroutine parcel_lift(self, p_to, dlnp, max_dlnp)
    class(rising_parcel), intent(inout) :: self
    real(wp), intent(in) :: p_to, dlnp, max_dlnp
    real(wp) :: h, p_from, p_next, t_mid
    integer :: i, nsub
    self%lnp = self%lnp + dlnp
    if (p_to >= self%p_lcl) then
      self%t = self%t0 * exp(KAPPA * self%lnp)
      self%es = saturation_vapour_pressure(self%t)
    else
      if (.not. self%saturated) then   ! first level above the LCL: ascend from the LCL
        self%saturated = .true.
        self%t = self%t_lcl
        self%p = self%p_lcl
        self%es = saturation_vapour_pressure(self%t_lcl)
        h = self%lnp - self%lnp_lcl
      else
        h = dlnp
      end if
      nsub = max(1, ceiling(-h / max_dlnp))
      h = h / nsub
      p_from = self%p
      do i = 1, nsub
        p_next = p_to
        if (i < nsub) p_next = p_from * exp(i * h)
        t_mid = self%t + 0.5_wp * h * lapse_at(self%t, self%p, self%es)
        self%t = self%t + h * lapse_at(t_mid, sqrt(self%p * p_next), &
                                       saturation_vapour_pressure(t_mid))
        self%p = p_next
        self%es = saturation_vapour_pressure(self%t)
      end do
    end if
    self%p = p_to
    self%qs = humidity_at(self%es, p_to)
    self%q = merge(self%qs, self%q0, self%saturated)
  end subroutine parcel_lift

  !> A parcel (t0, q0) at pressure p0 lifted through all the pressures p(:) (decreasing),
  !> dlnp(k) = ln(p(k) / p(k-1)), dlnp(1) = ln(p(1) / p0). tp: parcel temperature; qsp:
  !> saturation humidity at (tp, p).
  pure subroutine parcel_profile(t0, q0, p0, p, dlnp, max_dlnp, tp, qsp)
    real(wp), intent(in) :: t0, q0, p0, p(:), dlnp(:), max_dlnp
    real(wp), intent(out) :: tp(:), qsp(:)
    type(rising_parcel) :: parcel
    integer :: k
    call parcel%start(t0, q0, p0)
    do k = 1, size(p)
      call parcel%lift(p(k), dlnp(k), max_dlnp)
      tp(k) = parcel%t
      qsp(k) = parcel%qs
    end do
  end subroutine parcel_profile

end module thermodynamics
