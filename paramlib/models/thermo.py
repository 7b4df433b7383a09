"""Moist thermodynamics of the models' derived inputs, in torch, for the model files.

The Bi-LSTM (`paramlib.models.bilstm`) and the feature kinds' climate-invariant inputs
(`paramlib.models.represent`) compute their derived fields with these functions inside the
exported module and, identically, in training. Saturation is over liquid water as in the
column model (fortran_bridge/host/thermodynamics.f90): Bolton's (1980, eq. 10) e_s, capped at
p/2 so that q_s stays finite where a warm temperature meets a low pressure.

Constants are literals: TorchScript cannot read module globals. They are paramlib.constants'
(T0, eps = Rd / Rv, c_p, g, L_v, Rd); tests check that they agree.
"""

import torch
from torch import Tensor


def saturation_vapour_pressure(t: Tensor, p: Tensor) -> Tensor:
    """e_s in Pa from temperature (K), capped at p / 2 (pressure in Pa)."""
    return torch.minimum(611.2 * torch.exp(17.67 * (t - 273.15) / (t - 29.65)), 0.5 * p)


def saturation_mixing_ratio(t: Tensor, p: Tensor) -> Tensor:
    """eps e_s / (p - e_s) in kg kg-1: for a mixing ratio (WRF's qv)."""
    es = saturation_vapour_pressure(t, p)
    return (287.04 / 461.50) * es / (p - es)


def saturation_specific_humidity(t: Tensor, p: Tensor) -> Tensor:
    """eps e_s / (p - (1 - eps) e_s) in kg kg-1: for a specific humidity (CAM's and the
    testbed's q; the column model's saturation_humidity)."""
    es = saturation_vapour_pressure(t, p)
    eps = 287.04 / 461.50
    return eps * es / (p - (1.0 - eps) * es)


def plume_buoyancy(t: Tensor, z: Tensor, q_sat: Tensor, q: Tensor) -> Tensor:
    """(h_parcel - h_sat(k)) / c_p in K, (ncol, nlev) from (ncol, nlev) temperature (K),
    height above the ground (m), saturation humidity and humidity (kg kg-1; only q's lowest
    level is read).

    h_parcel = c_p T + g z + L_v q of the lowest level, h_sat(k) = c_p T + g z + L_v q_sat
    of level k: the buoyancy of a plume lifted from the lowest level, conserving its moist
    static energy. Zero where the profile is the moist adiabat of the lowest level's air, so
    it stays in place when a climate warms along a moist adiabat, where T itself shifts.
    """
    h_sat = 1004.64 * t + 9.80665 * z + 2.501e6 * q_sat
    h_parcel = 1004.64 * t[:, :1] + 9.80665 * z[:, :1] + 2.501e6 * q[:, :1]
    return (h_parcel - h_sat) / 1004.64


def hydrostatic_height(t: Tensor, sigma: Tensor) -> Tensor:
    """(ncol, nlev) heights of the full levels above the surface (m) from their temperature
    (K) and sigma = p / p_s (nlev,), surface first: dz = (R_d T / g) d ln p with the layer's
    mean temperature (the lowest level's from the surface up). Dry T: the virtual correction
    moves a level by well under 1 %, far less than a warming does."""
    log_sigma = torch.log(sigma)
    dlnp = torch.cat([-log_sigma[:1], log_sigma[:-1] - log_sigma[1:]])
    t_layer = torch.cat([t[:, :1], 0.5 * (t[:, :-1] + t[:, 1:])], dim=1)
    return torch.cumsum((287.04 / 9.80665) * t_layer * dlnp, dim=1)
