"""The Emanuel wrapper: shapes, units, budgets, the carried mass flux, determinism."""

import ctypes

import climt
import numpy as np
import pytest
from climt._components.emanuel import _emanuel_convection
from climt._components.emanuel.pure_python import EmanuelConvectionPython
from sympl import get_constant

from paramlib.constants import CP, EPSILON, GRAVITY, LV, RD
from paramlib.testbed import emanuel
from paramlib.testbed.emanuel import MAX_LEVELS, EmanuelColumns

NLEV = 30
DT = 300.0


def _qsat(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    es = 611.2 * np.exp(17.67 * (T - 273.15) / (T - 29.65))
    return EPSILON * es / (p - (1 - EPSILON) * es)


def _levels(nlev: int = NLEV) -> tuple[np.ndarray, np.ndarray]:
    p_int = np.linspace(101500.0, 2000.0, nlev + 1)
    return 0.5 * (p_int[1:] + p_int[:-1]), p_int


def _tropical(ts: float = 300.0, rh_surface: float = 0.8, cooler: float = 2.0):
    """A well-mixed boundary layer under a moist adiabat made `cooler` K colder: unstable."""
    p, p_int = _levels()
    q0 = rh_surface * _qsat(np.array(ts), p_int[0])
    fine = np.linspace(p_int[0], p[-1], 20000)
    parcel = np.empty_like(fine)
    parcel[0] = ts
    for i in range(1, fine.size):  # dry adiabat to saturation, then the pseudo-adiabat
        t, pc = parcel[i - 1], fine[i - 1]
        qs = _qsat(t, pc)
        if qs > q0:
            dtdp = RD * t / (CP * pc)
        else:
            dtdp = (RD * t + LV * qs) / pc / (CP + LV**2 * qs * EPSILON / (RD * t * t))
        parcel[i] = t + dtdp * (fine[i] - fine[i - 1])
    tp = np.interp(-p, -fine, parcel)
    cloudy = _qsat(tp, p) <= q0
    T = np.maximum(np.where(cloudy, tp - cooler, tp), 200.0)
    q = np.minimum(np.where(cloudy, 0.8 * _qsat(T, p), q0), q0)
    return p, p_int, T, q


def _columns(profile, ncol: int) -> tuple[np.ndarray, ...]:
    return tuple(np.tile(a, (ncol, 1)) for a in profile)


def _spin_up(em: EmanuelColumns, p, p_int, T, q, steps: int = 2):
    for _ in range(steps):
        res = em.step(p, p_int, T, q)
    return res


def test_shapes_units_and_budgets_on_unstable_sounding():
    ncol = 3
    p, p_int, T, q = _columns(_tropical(), ncol)
    em = EmanuelColumns(ncol, NLEV, DT)
    res = em.step(p, p_int, T, q)
    assert res.dTdt.shape == res.dqdt.shape == res.dudt.shape == (ncol, NLEV)
    for a in (res.precip, res.cloud_base_mass_flux, res.triggered, res.cape):
        assert a.shape == (ncol,)
    assert res.triggered.all() and (res.cloud_base_mass_flux > 0).all()
    # Precipitation of a few mm per hour, not per day or per second (unit conversion).
    assert 0.02 < res.precip[0] * 3600 < 20.0
    dp = p_int[:, :-1] - p_int[:, 1:]
    heating = (CP * res.dTdt * dp).sum(axis=1) / GRAVITY  # W m-2
    drying = -(res.dqdt * dp).sum(axis=1) / GRAVITY  # kg m-2 s-1
    # Emanuel conserves enthalpy: column heating balances latent heat of the rain.
    np.testing.assert_allclose(heating, LV * res.precip, rtol=0.1)
    np.testing.assert_allclose(drying, res.precip, rtol=0.05)
    # It heats the free troposphere (500 hPa) and dries the column.
    k500 = np.argmin(abs(p[0] - 5e4))
    assert (res.dTdt[:, k500] > 0).all()
    assert (drying > 0).all()
    # Heating in K/day is of order 1-100, i.e. dTdt is in K s-1.
    assert 1e-6 < np.abs(res.dTdt).max() < 1e-3
    base, top = res.cloud_base_level[0], res.cloud_top_level[0]
    assert 1 <= base < top < NLEV - 2
    assert res.dTdt[0, top + 1 :].max() == 0 and res.dTdt[0, top] != 0
    # The cloud base is the first level above the surface parcel's LCL (~960 hPa here).
    assert 90000 < p[0, base] < 99000
    assert (res.cape > 0).all() and (res.cape < 5000).all()  # J kg-1


@pytest.mark.parametrize(
    "profile",
    [
        "isothermal",
        "dry_stable",
    ],
)
def test_stable_soundings_do_nothing(profile):
    p, p_int = _levels()
    if profile == "isothermal":
        T = np.full(NLEV, 280.0)
        q = 0.5 * _qsat(T, p)
    else:  # potential temperature rising 8 K per 100 hPa, dry aloft
        T = 300.0 * (p / 1e5) ** (RD / CP) + 8.0 * (1e5 - p) / 1e4
        q = 0.3 * _qsat(T, p)
    em = EmanuelColumns(2, NLEV, DT)
    for _ in range(3):
        res = em.step(*_columns((p, p_int, T, q), 2))
        assert not res.triggered.any()
        assert (res.precip == 0).all() and (res.dTdt == 0).all() and (res.dqdt == 0).all()
        assert (res.cloud_base_level == -1).all() and (res.cloud_top_level == -1).all()
    assert (em.cloud_base_mass_flux == 0).all()


def test_carried_mass_flux_step_versus_diagnose():
    p, p_int, T, q = _columns(_tropical(), 2)
    em = EmanuelColumns(2, NLEV, DT)
    first = em.step(p, p_int, T, q)
    carried = em.cloud_base_mass_flux.copy()
    np.testing.assert_array_equal(carried, first.cloud_base_mass_flux)
    diag = em.diagnose(p, p_int, T, q)
    np.testing.assert_array_equal(em.cloud_base_mass_flux, carried)  # untouched
    second = em.step(p, p_int, T, q)
    # The closure builds the flux up from the carried value: the same state gives more.
    assert (second.cloud_base_mass_flux > carried).all()
    np.testing.assert_array_equal(diag.cloud_base_mass_flux, second.cloud_base_mass_flux)
    np.testing.assert_array_equal(diag.dTdt, second.dTdt)
    # An explicit flux to start from: zero gives the first step's answer again.
    again = em.diagnose(p, p_int, T, q, cloud_base_mass_flux=np.zeros(2))
    np.testing.assert_array_equal(again.dTdt, first.dTdt)
    np.testing.assert_array_equal(em.cloud_base_mass_flux, second.cloud_base_mass_flux)


def test_columns_are_independent_and_deterministic():
    unstable = _tropical()
    p, p_int = _levels()
    T_stable = np.full(NLEV, 280.0)
    mixed = [
        np.stack([a, b])
        for a, b in zip(unstable, (p, p_int, T_stable, 0.5 * _qsat(T_stable, p)), strict=True)
    ]
    runs = []
    for _ in range(2):
        em = EmanuelColumns(2, NLEV, DT)
        runs.append(_spin_up(em, *mixed, steps=3))
    np.testing.assert_array_equal(runs[0].dTdt, runs[1].dTdt)
    np.testing.assert_array_equal(runs[0].precip, runs[1].precip)
    assert runs[0].triggered.tolist() == [True, False]
    single = _spin_up(EmanuelColumns(1, NLEV, DT), *_columns(unstable, 1), steps=3)
    np.testing.assert_array_equal(single.dTdt[0], runs[0].dTdt[0])


def test_instances_with_different_parameters_do_not_mix():
    cols = _columns(_tropical(), 1)
    default = EmanuelColumns(1, NLEV, DT)
    reference = default.diagnose(*cols).dTdt
    other = EmanuelColumns(1, NLEV, DT, convection_bouyancy_threshold=1.5).diagnose(*cols).dTdt
    assert not np.array_equal(other, reference)
    np.testing.assert_array_equal(default.diagnose(*cols).dTdt, reference)


def _fortran_value(name: str) -> float:
    lib = ctypes.CDLL(_emanuel_convection.__file__)
    return ctypes.c_double.in_dll(lib, f"__emanuel_MOD_{name}").value


def test_constants_convect_really_uses():
    """climt's Fortran initialiser drops alpha, beta, Cpd, Cpv, Cl (see emanuel.py)."""
    climt.EmanuelConvection(
        mass_flux_relaxation_rate=0.3, downdraft_surface_velocity_coefficient=5.0
    )
    assert _fortran_value("alpha") == pytest.approx(0.1)
    assert _fortran_value("beta") == 10.0
    assert _fortran_value("cpd") == pytest.approx(emanuel.CONVECT_CPD)
    assert _fortran_value("cpv") == emanuel.CONVECT_CPV
    assert _fortran_value("cl") == emanuel.CONVECT_CL
    assert _fortran_value("rd") == get_constant("gas_constant_of_dry_air", "J/kg/degK")
    assert _fortran_value("lv0") == get_constant("latent_heat_of_condensation", "J/kg")
    with pytest.raises(ValueError, match="ignores mass_flux_relaxation_rate"):
        EmanuelColumns(1, NLEV, DT, mass_flux_relaxation_rate=0.3)
    EmanuelColumns(1, NLEV, DT, mass_flux_relaxation_rate=0.1)  # the value it keeps is fine


class _RecordingPort(EmanuelConvectionPython):
    """climt's pure-Python port of CONVECT, recording the cloud-base level it lifts from."""

    def _tlift(self, P, T, Q, QS, GZ, ICB, NK, *args):
        self.icb = getattr(self, "icb", ICB)
        return super()._tlift(P, T, Q, QS, GZ, ICB, NK, *args)


@pytest.mark.parametrize(
    "ts, rh, cooler", [(300.0, 0.8, 2.0), (296.0, 0.7, 1.0), (303.0, 0.9, 3.0), (299.0, 0.6, 2.0)]
)
def test_cloud_base_level_matches_convect(ts, rh, cooler):
    p, p_int, T, q = _tropical(ts, rh, cooler)
    port = _RecordingPort(
        CPD=emanuel.CONVECT_CPD,
        RD=get_constant("gas_constant_of_dry_air", "J/kg/degK"),
        LV0=get_constant("latent_heat_of_condensation", "J/kg"),
        G=GRAVITY,
    )
    qs = _qsat(T, p)
    port._convect(
        T,
        q,
        qs,
        0 * T,
        0 * T,
        p / 100,
        p_int / 100,
        NLEV,
        NLEV - 3,
        0,
        DT,
        0.0,
        np.zeros((NLEV, 1)),
    )
    res = EmanuelColumns(1, NLEV, DT).step(*_columns((p, p_int, T, q), 1))
    assert res.triggered[0]
    assert res.cloud_base_level[0] == port.icb


def test_input_errors_name_the_argument():
    p, p_int, T, q = _columns(_tropical(), 2)
    em = EmanuelColumns(2, NLEV, DT)
    with pytest.raises(ValueError, match="p_int must have shape"):
        em.step(p, p_int[:, :-1], T, q)
    with pytest.raises(ValueError, match="decrease upward"):
        em.step(p[:, ::-1], p_int[:, ::-1], T, q)
    with pytest.raises(ValueError, match="hPa"):
        em.step(p / 100, p_int / 100, T, q)
    with pytest.raises(ValueError, match="nlev"):
        EmanuelColumns(2, MAX_LEVELS + 1, DT)
