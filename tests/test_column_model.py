"""The Fortran column model driven from Python (paramlib.testbed.column): it agrees bit for
bit with the pure-Fortran driver column_run, its layout and constants match the Python side, the
supplied-tendency path is the Betts-Miller path when given Betts-Miller's own tendencies, its
budgets close, and its errors surface as ColumnError. The Fortran unit tests (ctest -L column)
run here too."""

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from paramlib import constants, paths
from paramlib.testbed import column
from paramlib.testbed.column import ColumnConfig, ColumnError, ColumnModel, Status

NCOL = 8
BUDGET_RTOL = 1e-10


pytestmark = pytest.mark.usefixtures("column_bindings")


def config(**overrides: object) -> ColumnConfig:
    """NCOL columns from subsidence over a cool SST to strong ascent over a warm one."""
    base: dict[str, object] = {
        "sst": np.linspace(298.0, 303.0, NCOL),
        "omega0": np.linspace(0.04, -0.1, NCOL),
        "ps": 1.0e5 + 1.5e3 * np.arange(NCOL) / NCOL,
        "wtg": True,
    }
    base.update(overrides)
    return ColumnConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def model() -> Iterator[ColumnModel]:
    with ColumnModel(config()) as m:
        yield m


def test_constants_agree_with_the_fortran_model() -> None:
    compiled = column.fortran_constants()
    for name, value in compiled.items():
        assert getattr(constants, name) == pytest.approx(value, rel=1e-15), name


def test_status_codes_match_the_fortran_module(repo_root: Path) -> None:
    source = (repo_root / "fortran_bridge/host/column_status.f90").read_text()
    codes = dict(re.findall(r"COLUMN_(\w+) = (\d+)", source))
    codes.pop("MESSAGE_LEN")
    assert {name: int(v) for name, v in codes.items()} == {s.name: s.value for s in Status}


def test_config_defaults_are_the_fortran_defaults() -> None:
    """A model whose parameters were never set from Python (set-up skipped) has the defaults
    ColumnConfig declares."""
    api = column._api()
    ps, sst, omega0 = config().columns()
    handle, status = api.create(26, ps, sst, omega0)
    assert status == Status.OK
    try:
        defaults = ColumnConfig(sst=sst)
        for name in column.MODEL_PARAMETERS:
            value, status = api.get_parameter(handle, name)
            assert status == Status.OK
            assert value == pytest.approx(getattr(defaults, name), rel=1e-15), name
        tau, rh, status = api.get_bm(handle)
        assert (tau, rh) == (defaults.bm_tau, defaults.bm_rh)
    finally:
        api.free(handle)


def test_layout_is_columns_by_levels_surface_first(model: ColumnModel) -> None:
    p, p_int = model.pressure()
    ps, _, _ = model.columns()
    assert p.shape == (NCOL, 26) and p_int.shape == (NCOL, 27)
    np.testing.assert_array_equal(p_int[:, 0], ps)
    assert np.all(np.diff(p, axis=1) < 0) and np.all(p_int[:, -1] < 5.0e3)
    assert np.all((p_int[:, :-1] > p) & (p > p_int[:, 1:]))

    # a pattern that tells columns from levels survives the round trip
    t = 250.0 + np.arange(NCOL)[:, None] + 0.01 * np.arange(26)[None, :]
    q = 1e-3 * (1.0 + np.arange(NCOL)[:, None] / 10.0) * np.exp(-np.arange(26) / 5.0)[None, :]
    model.set_state(t, q)
    got_t, got_q = model.state()
    np.testing.assert_array_equal(got_t, t)
    np.testing.assert_array_equal(got_q, q)
    # non-contiguous input (a transposed copy's transpose) is accepted the same way
    model.set_state(np.asfortranarray(t), q)
    np.testing.assert_array_equal(model.t, t)


def test_initial_state_is_physical(model: ColumnModel) -> None:
    t, q = model.state()
    p, _ = model.pressure()
    assert 295.0 < t[:, 0].min() and t[:, 0].max() < 305.0
    assert np.all(np.abs(t[:, -1] - 200.0) < 1.0)  # the stratosphere at t_strat
    assert np.all(np.diff(t[:, : np.argmax(p[0] < 2.5e4)], axis=1) < 0)
    assert np.all(q > 0) and np.all(q[:, 0] > 0.01)


def write_run_config(path: Path, cfg: ColumnConfig, nsteps: int) -> None:
    """column_run's CONFIG file (see fortran_bridge/host/column_run.f90)."""
    ps, sst, omega0 = cfg.columns()
    with path.open("wb") as f:
        f.write(np.array([cfg.ncol, cfg.nlev, nsteps, int(cfg.wtg)], dtype=np.int32).tobytes())
        f.write(np.array([cfg.dt, cfg.reference_sst(), cfg.bm_tau, cfg.bm_rh]).tobytes())
        for a in (ps, sst, omega0):
            f.write(a.tobytes())


@pytest.mark.parametrize("nlev, wtg", [(26, True), (44, False)])
def test_f90wrap_stepping_equals_a_pure_fortran_run(tmp_path: Path, nlev: int, wtg: bool) -> None:
    column_run = paths.build_dir() / "bin" / "column_run"
    if not column_run.is_file():
        pytest.skip(f"needs {column_run}: run `make build`")
    cfg = config(nlev=nlev, wtg=wtg, bm_tau=5400.0, bm_rh=0.75)
    nsteps = 2 * 144
    write_run_config(tmp_path / "config.bin", cfg, nsteps)
    result = subprocess.run(
        [str(column_run), str(tmp_path / "config.bin"), str(tmp_path / "out.bin")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    raw = np.fromfile(tmp_path / "out.bin", dtype=np.float64)
    n = cfg.ncol * nlev
    assert raw.size == 2 * n + cfg.ncol
    t_fortran = raw[:n].reshape(cfg.ncol, nlev)  # Fortran (nlev, ncol) = C (ncol, nlev)
    q_fortran = raw[n : 2 * n].reshape(cfg.ncol, nlev)

    with ColumnModel(cfg) as m:
        t0 = m.t
        for _ in range(nsteps // 48):  # several calls, so that stepping in pieces is covered
            m.step(48)
        assert m.nstep == nsteps
        t, q = m.state()
        precip, _ = m.precipitation()
    assert not np.array_equal(t, t0), "the run did not change the state: the test would be void"
    assert precip.max() > 0.0
    np.testing.assert_array_equal(t, t_fortran)
    np.testing.assert_array_equal(q, q_fortran)
    np.testing.assert_array_equal(precip, raw[2 * n :])


def test_supplied_betts_miller_tendencies_reproduce_a_betts_miller_step() -> None:
    with ColumnModel(config()) as bm_run, ColumnModel(config()) as supplied_run:
        bm_run.step(144)  # a day of spin-up, after which columns convect deeply
        supplied_run.step(144)
        for _ in range(12):
            bm_run.step()
            diagnosed = supplied_run.diagnose_bm(*supplied_run.state())
            supplied_run.step_supplied(diagnosed.dtdt, diagnosed.dqdt, diagnosed.precip)
        np.testing.assert_array_equal(supplied_run.t, bm_run.t)
        np.testing.assert_array_equal(supplied_run.q, bm_run.q)
        dtdt, dqdt = supplied_run.tendencies("convection")
        np.testing.assert_array_equal(dtdt, diagnosed.dtdt)
        np.testing.assert_array_equal(supplied_run.precipitation()[0], diagnosed.precip)
        assert np.any(diagnosed.kind == column.BM_DEEP), "no column convects: the test is void"


def test_supplied_tendencies_enter_the_state_as_dt_times_their_sum(model: ColumnModel) -> None:
    model.step(6)
    t0, q0 = model.state()
    dtdt = np.zeros((NCOL, 26))
    dtdt[:, 5:15] = 3.0 / 86400.0
    dqdt = np.zeros((NCOL, 26))
    dqdt[:, 2:6] = -1e-3 / 86400.0
    model.step_supplied(dtdt, dqdt, np.full(NCOL, 1e-5))
    total_t = sum(model.tendencies(p)[0] for p in model.processes)
    np.testing.assert_allclose(model.t - t0, 600.0 * total_t, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(model.tendencies("convection")[0], dtdt)
    water = model.budgets().water
    np.testing.assert_allclose(water["precip_convective"], -1e-5)
    assert np.all(np.abs(water["convection"]) > 0)  # these tendencies do not conserve water
    with pytest.raises(ColumnError) as info:
        model.step_supplied(dtdt, dqdt, np.full(NCOL, -1.0))
    assert info.value.status == Status.ERR_ARGUMENT and "precip" in info.value.message


def test_budgets_close_and_betts_miller_conserves(model: ColumnModel) -> None:
    for _ in range(6):
        model.step(24)
        budgets = model.budgets()
        for terms in (budgets.energy, budgets.water):
            largest = np.max([np.abs(v) for k, v in terms.items() if k != "residual"], axis=0)
            assert np.all(np.abs(terms["residual"]) <= BUDGET_RTOL * largest)
        assert np.all(np.abs(budgets.energy["convection"]) <= 1e-10 * 100.0)
        assert np.all(np.abs(budgets.water["convection"]) <= 1e-10 * 1e-4)
    shflx, lhflx = model.surface_fluxes()
    np.testing.assert_allclose(model.budgets().energy["sensible"], shflx, rtol=1e-12)
    np.testing.assert_allclose(model.budgets().energy["latent"], lhflx, rtol=1e-12)
    assert np.all(lhflx > 0)


def test_diagnose_bm_does_not_step(model: ColumnModel) -> None:
    model.step(144)
    t, q = model.state()
    out = model.diagnose_bm(t, q)
    np.testing.assert_array_equal(model.t, t)
    assert model.nstep == 144
    assert out.dtdt.shape == (NCOL, 26) and out.precip.shape == (NCOL,)
    assert np.all(out.precip >= 0)
    deep = out.kind == column.BM_DEEP
    assert deep.any()
    _, p_int = model.pressure()
    dp = p_int[:, :-1] - p_int[:, 1:]
    np.testing.assert_allclose(
        constants.CP * (out.dtdt * dp).sum(axis=1) / constants.GRAVITY,
        constants.LV * out.precip,
        rtol=1e-10,
        atol=1e-9,
    )
    # a stable, isothermal state does nothing
    calm = model.diagnose_bm(np.full((NCOL, 26), 250.0), np.full((NCOL, 26), 1e-4))
    assert np.all(calm.kind == column.BM_NONE) and not calm.dtdt.any() and not calm.precip.any()


def test_changing_bm_parameters_changes_the_tendencies(model: ColumnModel) -> None:
    model.step(144)
    t, q = model.state()
    base = model.diagnose_bm(t, q)
    assert np.abs(base.dtdt).max() > 1e-6  # K s-1: something to halve
    model.set_bm(2 * 7200.0, 0.8)
    assert model.get_bm() == (14400.0, 0.8)
    slower = model.diagnose_bm(t, q)
    np.testing.assert_allclose(slower.dtdt, base.dtdt / 2, rtol=1e-12, atol=1e-20)


def test_errors_are_reported(model: ColumnModel) -> None:
    with pytest.raises(ColumnError) as info:
        model.set_state(np.zeros((NCOL, 25)), np.zeros((NCOL, 25)))
    assert info.value.status == Status.ERR_ARGUMENT
    with pytest.raises(ColumnError, match="no parameter"):
        model.set_parameter("nonsense", 1.0)
    with pytest.raises(ColumnError, match="dt"):
        model.set_parameter("dt", 0.0)
    with pytest.raises(ColumnError, match="sst"):
        model.set_columns(sst=np.full(NCOL, 400.0))
    with pytest.raises(ValueError, match="process"):
        model.tendencies("nonsense")
    with pytest.raises(ColumnError, match="nlev"):
        ColumnModel(config(nlev=2))
    model.free()
    with pytest.raises(ColumnError) as info:
        model.step()
    assert info.value.status == Status.ERR_HANDLE


def test_set_columns_moves_the_pressures(model: ColumnModel) -> None:
    model.set_columns(ps=np.full(NCOL, 9.5e4))
    p, p_int = model.pressure()
    np.testing.assert_array_equal(p_int[:, 0], 9.5e4)
    _, sst, omega0 = model.columns()
    np.testing.assert_array_equal(sst, config().columns()[1])
    np.testing.assert_array_equal(omega0, config().columns()[2])


def test_fortran_column_tests_pass_under_ctest() -> None:
    build = paths.build_dir()
    built = subprocess.run(
        ["cmake", "--build", str(build), "--target", "column_tests"],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    result = subprocess.run(
        ["ctest", "--test-dir", str(build), "-L", "column", "--output-on-failure"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "column_test_betts_miller" in output and "tests passed" in output, output
