"""``paramlib wrf check`` (paramlib/wrf/check.py, sounding.py, cli.py) without a WRF build:
the soundings it makes, its namelist against the shared runs' own attributes, its report on
real WRF output (../shared/data/wrf_mskf) and its refusals of bad input. The WRF runs themselves
are the check's job (docs/wrf-coupling.md); they take a WRF build."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy.integrate import solve_ivp
from wrf_data import CTL, WRF_DIR

from paramlib.cli import main
from paramlib.constants import EPSILON, GRAVITY, RD
from paramlib.wrf import check, cli, sounding

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "fortran_bridge" / "wrf" / "tests" / "fake_wrf"
QV110 = WRF_DIR / "wrfout_d01_qv110.nc"


@pytest.fixture
def control() -> sounding.Sounding:
    """A Weisman-Klemp (1982) sounding, em_quarter_ss's origin, at its heights: theta 300 K at
    the surface to 343 K at the 12 km tropopause, then isothermal at 213 K; relative humidity
    1 - 0.75 (z / 12 km)^1.25 and qv at most 14 g/kg (the moist layer near the ground)."""
    z = np.concatenate([[0.0, 10.0, 35.0], np.arange(100.0, 20001.0, 100.0)])
    ratio = np.minimum(z / 12000.0, 1.0) ** 1.25
    theta = np.where(
        z <= 12000.0,
        300.0 + 43.0 * ratio,
        343.0 * np.exp(GRAVITY / (1004.0 * 213.0) * (z - 12000.0)),
    )
    dry = sounding.Sounding(1000.0, z, theta, np.zeros_like(z), -8.0 + z / 1000.0, 0.0 * z)
    p, t = sounding.pressure(dry), sounding.temperature(dry)
    qv = np.minimum((1.0 - 0.75 * ratio) * sounding.saturation_mixing_ratio(t, p), 0.014)
    return sounding.Sounding(1000.0, z, theta, qv * 1e3, dry.u, dry.v)


def round_trip(s: sounding.Sounding, tmp_path: Path) -> sounding.Sounding:
    path = sounding.write_sounding(s, tmp_path / "input_sounding")
    first = path.read_text().splitlines()[0].split()
    assert len(first) == 3 and all(
        len(line.split()) == 5 for line in path.read_text().splitlines()[1:]
    )
    return sounding.read_sounding(path)


def independent_pressure(s: sounding.Sounding) -> np.ndarray:
    """dp/dz = -g p / (Rd Tv), Tv the virtual temperature of moist air, integrated on a fine
    grid with theta and qv linear between the sounding's heights (not sounding.exner's rule)."""

    def slope(z: float, p: np.ndarray) -> np.ndarray:
        theta, qv = np.interp(z, s.z, s.theta), np.interp(z, s.z, s.qv_gkg) * 1e-3
        t = theta * (p / 1e5) ** (RD / 1004.64)
        return -GRAVITY * p / (RD * t * (1 + qv / EPSILON) / (1 + qv))

    solution = solve_ivp(slope, (0.0, s.z[-1]), [s.p_surface_hpa * 100], t_eval=s.z, rtol=1e-10)
    return solution.y[0]


@pytest.mark.parametrize("name,kelvin", [("plus2k", 2.0), ("plus4k", 4.0)])
def test_warm_soundings_hold_relative_humidity_and_are_hydrostatic(
    control: sounding.Sounding, tmp_path: Path, name: str, kelvin: float
) -> None:
    warm = round_trip(sounding.variant(control, name), tmp_path)
    assert warm.p_surface_hpa == 1000.0
    t_difference = sounding.temperature(warm) - sounding.temperature(control)
    np.testing.assert_allclose(t_difference, kelvin, atol=1e-5)
    # Relative humidity to the rounding of the file (9 significant digits).
    rh, rh_warm = sounding.relative_humidity(control), sounding.relative_humidity(warm)
    np.testing.assert_allclose(rh_warm, rh, rtol=1e-7)
    assert (warm.qv_gkg > control.qv_gkg).all()  # warmer air holds more at the same RH
    # Pressure: hydrostatic from 1000 hPa, to 0.05 % against an independent integration.
    np.testing.assert_allclose(sounding.pressure(warm), independent_pressure(warm), rtol=5e-4)
    assert sounding.pressure(warm)[-1] > sounding.pressure(control)[-1]  # a warmer column is deeper
    np.testing.assert_allclose(warm.u[1:], control.u[1:], rtol=1e-12)  # winds unchanged


def test_moist_sounding_is_capped_at_98_percent(control: sounding.Sounding, tmp_path: Path) -> None:
    moist = round_trip(sounding.variant(control, "qv110"), tmp_path)
    ratio, rh = moist.qv_gkg / control.qv_gkg, sounding.relative_humidity(moist)
    rh_before = sounding.relative_humidity(control)
    np.testing.assert_allclose(moist.theta, control.theta, rtol=1e-8)
    assert (ratio >= 1 - 1e-8).all()  # never drier (to the file's 9 digits)
    np.testing.assert_allclose(ratio[control.z >= 4000.0], 1.0, rtol=1e-8)
    increased = ratio > 1 + 1e-8
    assert (rh[increased] <= sounding.RH_CAP + 1e-7).all()
    free = (control.z < 3000.0) & (rh_before * 1.1 < sounding.RH_CAP)
    assert free.sum() > 3
    np.testing.assert_allclose(ratio[free], 1.1, rtol=1e-8)
    capped = (control.z < 3000.0) & (rh_before * 1.1 > sounding.RH_CAP) & (rh_before < 0.98)
    assert capped.sum() > 3
    np.testing.assert_allclose(rh[capped], sounding.RH_CAP, rtol=1e-7)
    at = np.flatnonzero(control.z == 3500.0)
    if rh_before[at] * 1.05 < sounding.RH_CAP:
        np.testing.assert_allclose(ratio[at], 1.05, rtol=1e-8)  # halfway down the ramp


def test_ctl_is_the_sounding_itself_and_unknown_names_fail(control: sounding.Sounding) -> None:
    assert sounding.variant(control, "ctl") is control
    with pytest.raises(ValueError, match="unknown sounding 'plus8k'"):
        sounding.variant(control, "plus8k")
    assert cli.SOUNDINGS == sounding.VARIANTS


def parse_namelist(text: str) -> dict[str, str]:
    options = {}
    for line in text.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            options[key.strip()] = value.strip().rstrip(",").strip("'")
    return options


# Global attribute of the shared runs -> the namelist option that sets it.
ATTRIBUTE_OPTIONS = {
    "DT": "time_step",
    "CUDT": "cudt",
    "DX": "dx",
    "DY": "dy",
    "WEST-EAST_GRID_DIMENSION": "e_we",
    "SOUTH-NORTH_GRID_DIMENSION": "e_sn",
    "BOTTOM-TOP_GRID_DIMENSION": "e_vert",
    "MP_PHYSICS": "mp_physics",
    "CU_PHYSICS": "cu_physics",
    "BL_PBL_PHYSICS": "bl_pbl_physics",
    "SF_SFCLAY_PHYSICS": "sf_sfclay_physics",
    "SF_SURFACE_PHYSICS": "sf_surface_physics",
    "RA_LW_PHYSICS": "ra_lw_physics",
    "RA_SW_PHYSICS": "ra_sw_physics",
    "RADT": "radt",
    "BLDT": "bldt",
    "ISFFLX": "isfflx",
    "ICLOUD": "icloud",
    "DIFF_OPT": "diff_opt",
    "KM_OPT": "km_opt",
    "DAMP_OPT": "damp_opt",
    "DAMPCOEF": "dampcoef",
    "KHDIF": "khdif",
    "KVDIF": "kvdif",
    "W_DAMPING": "w_damping",
    "MOIST_ADV_OPT": "moist_adv_opt",
    "SCALAR_ADV_OPT": "scalar_adv_opt",
    "TKE_ADV_OPT": "tke_adv_opt",
    "USE_THETA_M": "use_theta_m",
    "HYBRID_OPT": "hybrid_opt",
    "FEEDBACK": "feedback",
    "SMOOTH_OPTION": "smooth_option",
}


def test_namelist_agrees_with_the_shared_runs_attributes() -> None:
    with xr.open_dataset(CTL) as ds:
        attributes = dict(ds.attrs)
    mskf = parse_namelist(check.namelist_text())
    for attribute, option in ATTRIBUTE_OPTIONS.items():
        assert np.float32(mskf[option]) == np.float32(attributes[attribute]), attribute
    assert mskf["history_interval"] == "5" and mskf["run_hours"] == "3"
    assert mskf["iofields_filename"] == check.IOFIELDS_FILE
    assert "paramlib_cu_model" not in mskf
    plugin = parse_namelist(check.namelist_text(check.PLUGIN, check.PluginOptions(model="m.pt")))
    assert plugin.pop("cu_physics") == "97" and mskf.pop("cu_physics") == "11"
    assert plugin.pop("paramlib_cu_model") == "m.pt" and plugin.pop("paramlib_cu_threads") == "1"
    assert {k: v for k, v in plugin.items() if not k.startswith("paramlib_cu_")} == mskf


def test_report_of_a_run_against_itself_meets_every_target(tmp_path: Path) -> None:
    result = check.summarize("ctl", CTL, [CTL, CTL], {"mskf_1thread": 30.0}, tmp_path)
    comparison = result["comparison"]
    assert comparison["rainc_ratio"] == 1.0 and comparison["active_ratio"] == 1.0
    assert comparison["heating_correlation"] == pytest.approx(1.0, abs=1e-12)
    assert all(t["met"] for t in comparison["targets"].values())
    assert result["reference"]["identical"]  # the shared ctl run is its own reference
    assert len(result["reference"]["max_abs_diff"]) > 20
    numbers = result["mskf"]
    assert numbers["minutes"][0] == 90 and numbers["minutes"][-1] == 180
    assert numbers["rainc_total_mm"] == pytest.approx(692.18, abs=0.01)  # issue 13's 692 mm
    assert 0.1 < numbers["active_fraction"] < 0.4
    assert numbers["peak_mean_heating_level"] == 11  # issue 13: MSKF's peak at level 11
    assert numbers["nan"] == 0 and numbers["negative_qvapor"] == 0
    assert (tmp_path / "rainc_ctl.png").stat().st_size > 1000


def test_report_of_two_different_runs(tmp_path: Path) -> None:
    """ctl as 'MSKF' of the qv110 sounding, qv110 as 'plugin' and as its 2-thread run, ctl as
    a 3-thread run."""
    result = check.summarize("qv110", CTL, [QV110, QV110, CTL], {"mskf_1thread": 1.0}, tmp_path)
    comparison = result["comparison"]
    assert comparison["rainc_ratio"] == pytest.approx(1011.14 / 692.18, rel=1e-4)
    assert not comparison["targets"]["rainc_ratio"]["met"]
    assert comparison["active_ratio"] != 1.0
    assert 0.9 < comparison["heating_correlation"] < 1.0  # the same storm, moister
    assert comparison["threads_max_abs_diff"] > 0
    assert not comparison["targets"]["threads_max_abs_diff"]["met"]
    reference = result["reference"]  # 'MSKF' (ctl) against the shared qv110 run
    assert not reference["identical"] and reference["max_abs_diff"]["RAINC"] > 0
    assert reference["shared_rainc_total_mm"] == pytest.approx(1011.14, abs=0.01)

    report = {"wrf_dir": "WRF", "model": "m.pt", "threads": [1, 2], "soundings": {"qv110": result}}
    check.write_report(report, tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["soundings"]["qv110"]["comparison"]["rainc_ratio"] == comparison["rainc_ratio"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| qv110 | 692.2 | 1011.1 | 1.46 |" in markdown
    assert "NOT MET" in markdown and "profiles_qv110.png" in markdown
    assert "differs (RAINC domain total 692.2 mm, shared 1011.1 mm" in markdown
    tables = "\n".join(line if line.startswith("|") else "" for line in markdown.splitlines())
    for table in filter(None, tables.split("\n\n")):
        rows = table.strip().splitlines()  # no cell's text may add a column
        assert {row.count("|") for row in rows} == {rows[0].count("|")}, rows[0]
    assert "<table>" in (tmp_path / "report.html").read_text()
    assert not list(tmp_path.glob(".*.tmp"))  # written through temporary files, renamed


def test_the_build_is_current_only_when_newer_than_the_patch(tmp_path: Path) -> None:
    wrf = Path(shutil.copytree(FAKE, tmp_path / "WRF"))
    kit = [sys.executable, str(check.KIT)]
    subprocess.run([*kit, "apply", "--wrf", wrf], check=True, capture_output=True)
    (wrf / "configure.wrf").write_text("# paramlib cumulus plugin: linked\n")
    assert not check.build_is_current(wrf)  # no executables
    (wrf / "main").mkdir(exist_ok=True)
    for name in check.EXECUTABLES:
        (wrf / "main" / name).write_text("")
    later = (wrf / "configure.wrf").stat().st_mtime + 10
    for name in check.EXECUTABLES:
        os.utime(wrf / "main" / name, (later, later))
    assert check.build_is_current(wrf)
    os.utime(wrf / "phys" / "module_cu_paramlib.F", (later + 1, later + 1))
    assert not check.build_is_current(wrf)  # the module changed after the build


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    status = main(["wrf", "check", *map(str, args)])
    return status, capsys.readouterr().err


@pytest.fixture
def wrf_tree(tmp_path: Path) -> Path:
    """The stand-in tree with em_quarter_ss's folder: a v4.7.1 tree, never built."""
    wrf = Path(shutil.copytree(FAKE, tmp_path / "WRF"))
    (wrf / check.CASE).mkdir(parents=True)
    return wrf


def test_cli_refuses_bad_input_in_one_line(
    wrf_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"not read before the runs")
    out = tmp_path / "out"
    cases = [
        ((tmp_path / "nope", model), "--wrf-dir", "no such folder"),
        ((FAKE / "phys", model), "--wrf-dir", "not a WRF v4.7.1 source tree"),
        ((wrf_tree, tmp_path / "none.pt"), "--model", "no such file"),
    ]
    for (wrf, model_path), argument, expected in cases:
        status, err = run_cli(capsys, "--wrf-dir", wrf, "--model", model_path, "--out", out)
        assert status == 2, err
        assert err.count("\n") == 1 and argument in err and expected in err
    given = ("--wrf-dir", wrf_tree, "--model", model)
    status, err = run_cli(capsys, *given, "--out", out, "--soundings", "ctl,hot")
    assert status == 2 and "--soundings: unknown 'hot'" in err
    status, err = run_cli(capsys, *given, "--out", out, "--skip-build")
    assert status == 2 and "--skip-build" in err and "ideal.exe" in err
    status, err = run_cli(capsys, *given, "--out", out)  # to build, configure.wrf needs linking
    assert status == 2 and "--prefix: needed to link the bridge" in err
    assert not (wrf_tree / "phys" / "module_cu_paramlib.F").exists()  # refused before any edit
    with pytest.raises(SystemExit):
        run_cli(capsys, *given, "--out", out, "--threads", "1,x")
    assert "--threads" in capsys.readouterr().err
    occupied = tmp_path / "mine"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("a user's file")
    status, err = run_cli(capsys, *given, "--out", occupied)
    assert status == 2 and "--out" in err and "did not create" in err
    assert sorted(p.name for p in occupied.iterdir()) == ["notes.txt"]
