!> Large-scale forcings of the column model, one column at a time (tendencies in K s-1
!> and kg kg-1 s-1, fluxes in W m-2, pressures in Pa).
!>
!> Radiation: a fixed cooling in the troposphere and Newtonian relaxation to an
!> isothermal stratosphere, joined by a tanh of pressure:
!>   dT/dt = -Q w + (T_strat - T) (1 - w) / tau_strat,   w = (1 + tanh((p - p_trop)/dp_trop)) / 2.
!> Vertical motion: omega(p) = omega0 sin(pi (ps - p) / (ps - p_w)) for p > p_w, zero above
!> (p_w: top of the large-scale circulation, the tropopause) and at the surface; < 0 ascent.
!> Dry static energy s = cp T + g z (z hydrostatic from T_v) and q are advected upwind in flux
!> form,
!>   d(phi)_k/dt = (F_{k+1/2} - F_{k-1/2} + phi_k (omega_{k-1/2} - omega_{k+1/2})) / dp_k,
!>   F = omega phi_upwind,
!> the flux divergence plus the lateral inflow/outflow that mass continuity implies. The
!> fluxes vanish at the ends, so the column integral is the lateral export
!> sum(phi_k (omega_{k-1/2} - omega_{k+1/2})) / g; the scheme keeps q >= 0 for
!> |omega| dt < dp. The temperature tendency is ds/dt / cp (z follows T diagnostically).
!> Surface fluxes, bulk formulae into the lowest layer, rho = p_1 / (R_d T_v1):
!>   SH = rho cp C U (SST - T_1 (ps/p_1)^kappa),   LH = rho L C U (q_s(SST, ps) - q_1).
!> Weak temperature gradient: in the free troposphere, dT/dt = w_wtg (T_ref - T) / tau_wtg
!> with w_wtg = (1 - tanh((p - p_bl)/dp_wtg)) / 2 * w (zero in the boundary layer and the
!> stratosphere). T_ref is one profile for all columns: a parcel at SST_ref - dT_ref and
!> relative humidity rh_ref at 1000 hPa, lifted dry to its LCL and pseudo-adiabatically above.
!> Large-scale condensation: supersaturation is condensed within the step and rains out. The
!> latent heat raises q_s, so the amount is (q - q_s) / (1 + L^2 q_s / (cp R_v T^2)), one
!> Newton step of the saturation adjustment: dq/dt = -amount / dt, dT/dt = -L/cp dq/dt.
module column_forcings
  use physical_constants, only: wp, GRAVITY, RD, RV, CP, LV, KAPPA
  use thermodynamics, only: saturation_humidity, virtual_temperature, parcel_profile
  implicit none
  private
  public :: troposphere_weight, radiative_heating, wtg_weight, wtg_heating, wtg_reference
  public :: omega_profile, vertical_advection, surface_fluxes, large_scale_condensation

  !> Pressure the WTG reference parcel starts from, and the ln p step of its ascent.
  real(wp), parameter :: P_REFERENCE_PARCEL = 1.0e5_wp
  real(wp), parameter :: REFERENCE_MAX_DLNP = 0.02_wp

contains

  elemental function troposphere_weight(p, p_trop, dp_trop) result(w)
    real(wp), intent(in) :: p, p_trop, dp_trop
    real(wp) :: w
    w = 0.5_wp * (1.0_wp + tanh((p - p_trop) / dp_trop))
  end function troposphere_weight

  elemental function radiative_heating(t, w_trop, cooling, t_strat, tau_strat) result(dtdt)
    real(wp), intent(in) :: t, w_trop, cooling, t_strat, tau_strat
    real(wp) :: dtdt
    dtdt = -cooling * w_trop + (1.0_wp - w_trop) * (t_strat - t) / tau_strat
  end function radiative_heating

  elemental function wtg_weight(p, p_bl, dp_wtg, w_trop) result(w)
    real(wp), intent(in) :: p, p_bl, dp_wtg, w_trop
    real(wp) :: w
    w = 0.5_wp * (1.0_wp - tanh((p - p_bl) / dp_wtg)) * w_trop
  end function wtg_weight

  elemental function wtg_heating(t, t_ref, w, tau_wtg) result(dtdt)
    real(wp), intent(in) :: t, t_ref, w, tau_wtg
    real(wp) :: dtdt
    dtdt = w * (t_ref - t) / tau_wtg
  end function wtg_heating

  !> The WTG reference temperature at the pressures p(:) (decreasing).
  pure subroutine wtg_reference(sst_ref, dt_ref, rh_ref, p, t_ref)
    real(wp), intent(in) :: sst_ref, dt_ref, rh_ref, p(:)
    real(wp), intent(out) :: t_ref(:)
    real(wp) :: t0, qs(size(p)), dlnp(size(p))
    t0 = sst_ref - dt_ref
    dlnp(1) = log(p(1) / P_REFERENCE_PARCEL)
    dlnp(2:) = log(p(2:) / p(:size(p) - 1))
    call parcel_profile(t0, rh_ref * saturation_humidity(t0, P_REFERENCE_PARCEL), &
                        P_REFERENCE_PARCEL, p, dlnp, REFERENCE_MAX_DLNP, t_ref, qs)
  end subroutine wtg_reference

  !> omega at the interfaces p_int(:) of one column (first = surface), zero at and above
  !> p_omega_top.
  pure subroutine omega_profile(p_int, omega0, p_omega_top, omega_int)
    real(wp), intent(in) :: p_int(:), omega0, p_omega_top
    real(wp), intent(out) :: omega_int(:)
    real(wp), parameter :: PI = acos(-1.0_wp)
    real(wp) :: ps
    ps = p_int(1)
    where (p_int > p_omega_top)
      omega_int = omega0 * sin(PI * (ps - p_int) / (ps - p_omega_top))
    else where
      omega_int = 0.0_wp
    end where
    omega_int(1) = 0.0_wp
  end subroutine omega_profile

  !> Upwind vertical advection of s and q in one column; dlnp_lower and dlnp_layer are
  !> the grid's ln(p_int(k)/p(k)) and ln(p_int(k)/p_int(k+1)).
  pure subroutine vertical_advection(t, q, dp, omega_int, dlnp_lower, dlnp_layer, dtdt, dqdt)
    real(wp), intent(in) :: t(:), q(:), dp(:), omega_int(:), dlnp_lower(:), dlnp_layer(:)
    real(wp), intent(out) :: dtdt(:), dqdt(:)
    real(wp) :: s(size(t)), gz_int, rtv
    integer :: k
    gz_int = 0.0_wp
    do k = 1, size(t)
      rtv = RD * virtual_temperature(t(k), q(k))
      s(k) = CP * t(k) + gz_int + rtv * dlnp_lower(k)
      gz_int = gz_int + rtv * dlnp_layer(k)
    end do
    call upwind_flux_form(s, dp, omega_int, dtdt)
    dtdt = dtdt / CP
    call upwind_flux_form(q, dp, omega_int, dqdt)
  end subroutine vertical_advection

  pure subroutine upwind_flux_form(phi, dp, omega_int, tendency)
    real(wp), intent(in) :: phi(:), dp(:), omega_int(:)
    real(wp), intent(out) :: tendency(:)
    real(wp) :: flux_below, flux_above
    integer :: k, n
    n = size(phi)
    flux_below = 0.0_wp
    do k = 1, n
      flux_above = 0.0_wp
      if (k < n) flux_above = omega_int(k + 1) * merge(phi(k), phi(k + 1), omega_int(k + 1) < 0.0_wp)
      tendency(k) = (flux_above - flux_below + phi(k) * (omega_int(k) - omega_int(k + 1))) / dp(k)
      flux_below = flux_above
    end do
  end subroutine upwind_flux_form

  !> Bulk surface fluxes of one column (upward positive) and the tendencies they give the
  !> lowest layer; exchange_velocity = C U (m s-1).
  pure subroutine surface_fluxes(t1, q1, p1, ps, dp1, sst, exchange_velocity, shflx, lhflx, &
                                 dtdt1, dqdt1)
    real(wp), intent(in) :: t1, q1, p1, ps, dp1, sst, exchange_velocity
    real(wp), intent(out) :: shflx, lhflx, dtdt1, dqdt1
    real(wp) :: rho_cu
    rho_cu = p1 / (RD * virtual_temperature(t1, q1)) * exchange_velocity
    shflx = rho_cu * CP * (sst - t1 * (ps / p1)**KAPPA)
    lhflx = rho_cu * LV * (saturation_humidity(sst, ps) - q1)
    dtdt1 = shflx * GRAVITY / (CP * dp1)
    dqdt1 = lhflx / LV * GRAVITY / dp1
  end subroutine surface_fluxes

  elemental subroutine large_scale_condensation(t, q, p, dt, dtdt, dqdt)
    real(wp), intent(in) :: t, q, p, dt
    real(wp), intent(out) :: dtdt, dqdt
    real(wp) :: qs
    qs = saturation_humidity(t, p)
    if (q > qs) then
      dqdt = -(q - qs) / (1.0_wp + LV**2 * qs / (CP * RV * t**2)) / dt
    else
      dqdt = 0.0_wp
    end if
    dtdt = -LV / CP * dqdt
  end subroutine large_scale_condensation

end module column_forcings
