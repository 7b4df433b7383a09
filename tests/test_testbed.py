"""The testbed generator (`paramlib data testbed`): the column datasets and their CAM layout, the
summary's figures, the WRF-format set, determinism for a seed, atomic writing; and the pure
pieces it is built from (omega from SST, agreement and out-of-range figures, periodic fields,
convective time scale)."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from paramlib import cli
from paramlib.constants import CP, RD
from paramlib.data.cli import TESTBED_SIZES
from paramlib.guards import OWNED_MARKER, UserInputError
from paramlib.testbed import generate, runs, summary, tuning
from paramlib.testbed.runs import SchemeOutput, Timing
from paramlib.testbed.wrf_set import PeriodicField, WrfSetConfig, convective_timescale

SETS = ("lf_historical", "lf_plus4k", "hf_historical", "hf_plus4k")
# A few columns for a few hours: enough to exercise every stage.
TINY = generate.TestbedSize(
    lf_columns=12,
    hf_columns=6,
    no_wtg_columns=4,
    timing=Timing(spin_up_days=0.25, save_days=0.25, save_every=9),
    wrf=WrfSetConfig(nx=4, ny=5, spin_up_days=0.05, hours=0.25, frames_per_file=2),
)


pytestmark = pytest.mark.usefixtures("column_bindings")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`paramlib data testbed --size small`, run once through the command line."""
    out = tmp_path_factory.mktemp("testbed") / "small"
    assert cli.main(["data", "testbed", "--out", str(out), "--size", "small", "--seed", "0"]) == 0
    return out


@pytest.fixture(scope="module")
def report(small: Path) -> dict:
    return json.loads((small / "summary.json").read_text())


def open_set(small: Path, name: str) -> xr.Dataset:
    return xr.load_dataset(small / f"{name}.nc")


# --- the column datasets ------------------------------------------------------------------


def test_the_sets_are_written_and_nothing_else(small: Path) -> None:
    names = sorted(p.name for p in small.iterdir())
    expected = [*(f"{s}.nc" for s in SETS), "summary.json", "wrf", "wrf_plus4k", OWNED_MARKER]
    assert names == sorted(expected)
    assert not [p for p in small.parent.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("name", SETS)
def test_cam_layout_and_cf_attributes(small: Path, report: dict, name: str) -> None:
    ds = open_set(small, name)
    fidelity, scenario = name.split("_")
    ncol = report["sizes"][f"{fidelity}_columns"]
    assert dict(ds.sizes) == {
        "time": report["sizes"]["times_per_run"],
        "lev": 26,
        "ilev": 27,
        "ncol": ncol,
    }
    for var in ("T", "Q", "OMEGA", "CONVDT", "CONVDQ"):
        assert ds[var].dims == ("time", "lev", "ncol"), var
    for var in ("PS", "TS", "SOLIN", "SHFLX", "LHFLX", "PRECC", "PRECL"):
        assert ds[var].dims == ("time", "ncol"), var
    other = "BM" if fidelity == "hf" else "EM"
    units = {
        "T": "K", "Q": "kg/kg", "OMEGA": "Pa/s", "PS": "Pa", "TS": "K", "SOLIN": "W/m2",
        "SHFLX": "W/m2", "LHFLX": "W/m2", "CONVDT": "K/s", "CONVDQ": "kg/kg/s", "PRECC": "m/s",
        "PRECL": "m/s", f"{other}_DT": "K/s", f"{other}_DQ": "kg/kg/s", f"{other}_PREC": "m/s",
    }  # fmt: skip
    for var, expected in units.items():
        assert ds[var].attrs["units"] == expected, var
        assert ds[var].attrs["long_name"], var
    assert ds["T"].attrs["standard_name"] == "air_temperature"
    assert ds["TS"].attrs["standard_name"] == "sea_surface_temperature"
    assert "diagnostic" in ds[f"{other}_DT"].attrs["long_name"]
    assert (
        ds["lat"].attrs["units"] == "degrees_north" and ds["lon"].attrs["units"] == "degrees_east"
    )
    assert ds.attrs["fidelity"] == {"hf": "high", "lf": "low"}[fidelity]
    assert ds.attrs["scenario"] == scenario
    assert ds.attrs["scheme"].startswith(
        "Emanuel" if fidelity == "hf" else "simplified Betts-Miller"
    )
    assert ds.attrs["seed"] == 0 and ds.attrs["wtg"] == 1
    assert (ds.attrs["bm_tau_s"], ds.attrs["bm_rh"]) == (report["bm_tau_s"], report["bm_rh"])
    assert (ds.attrs["usage"] == "test only") == (name == "hf_plus4k")


def test_sigma_levels_in_cams_hybrid_coordinate(small: Path) -> None:
    ds = open_set(small, "hf_historical")
    assert np.all(ds.hyam == 0) and np.all(ds.hyai == 0) and float(ds.P0) == 1e5
    np.testing.assert_allclose(ds.lev, 1000 * (ds.hyam + ds.hybm))
    np.testing.assert_allclose(ds.ilev, 1000 * (ds.hyai + ds.hybi))
    assert np.all(np.diff(ds.lev) > 0), "lev runs from the top to the surface, as CAM writes it"
    assert float(ds.hybi[-1]) == pytest.approx(1.0)
    assert ds.lev.attrs["units"] == "hPa" and ds.lev.attrs["positive"] == "down"


def test_physical_values(small: Path) -> None:
    for name in SETS:
        ds = open_set(small, name)
        assert 150 < float(ds.T.min()) and float(ds.T.max()) < 320, name
        assert float(ds.Q.min()) >= 0 and float(ds.Q.max()) < 0.04, name
        assert float(ds.PRECC.min()) >= 0 and float(ds.PRECL.min()) >= 0, name
        assert 0 <= float(ds.SOLIN.min()) and float(ds.SOLIN.max()) < 600, name
        # the lowest level is warmest where the sea is warmest
        assert np.corrcoef(ds.TS[0], ds.T.isel(time=0, lev=-1))[0, 1] > 0.8, name
        # warm columns ascend (omega < 0)
        assert np.corrcoef(ds.TS[0], ds.OMEGA.isel(time=0, lev=13))[0, 1] < -0.8, name


def test_both_climates_share_the_columns(small: Path) -> None:
    for fidelity in ("lf", "hf"):
        hist, warm = (
            open_set(small, f"{fidelity}_historical"),
            open_set(small, f"{fidelity}_plus4k"),
        )
        np.testing.assert_allclose(warm.TS, hist.TS + 4.0, atol=1e-4)
        np.testing.assert_array_equal(warm.lat, hist.lat)
        np.testing.assert_array_equal(warm.OMEGA, hist.OMEGA)
        assert warm.attrs["wtg_sst_ref_K"] == pytest.approx(hist.attrs["wtg_sst_ref_K"] + 4.0)
    lf, hf = open_set(small, "lf_historical"), open_set(small, "hf_historical")
    np.testing.assert_array_equal(hf.TS, lf.TS.isel(ncol=slice(0, hf.sizes["ncol"])))


def test_each_set_carries_the_other_schemes_diagnosis(small: Path) -> None:
    for name, own, other in (("lf_historical", "BM", "EM"), ("hf_historical", "EM", "BM")):
        ds = open_set(small, name)
        assert f"{other}_DT" in ds and f"{own}_DT" not in ds
        assert float(np.abs(ds[f"{other}_DT"]).max()) > 0, name
        assert not ds[f"{other}_DT"].equals(ds.CONVDT), name


# --- summary.json -------------------------------------------------------------------------


def test_summary_keys_and_ranges(small: Path, report: dict) -> None:
    assert report["seed"] == 0 and report["size"] == "small"
    sizes = report["sizes"]
    assert sizes["hf_columns"] < sizes["lf_columns"]
    assert sizes["samples"]["hf_plus4k"] == sizes["hf_columns"] * sizes["times_per_run"]
    assert report["spin_up_days"] > 0
    assert set(report["lf_hf_correlation"]) == {"heating", "moistening"}
    for value in (
        *report["lf_hf_correlation"].values(),
        *report["lf_hf_correlation_convecting"].values(),
    ):
        assert -1.0 <= value <= 1.0
    # Betts-Miller and Emanuel agree on Emanuel's states (it was near zero before Betts-Miller
    # counted CAPE above the LCL only)
    assert report["lf_hf_correlation"]["heating"] > 0.4
    assert report["bm_tau_s"] in tuning.TAU_GRID_S and report["bm_rh"] in tuning.RH_GRID
    assert report["bm_tuning"]["heating_correlation"] == report["lf_hf_correlation"]["heating"]
    levels = [f"{lev:.1f}" for lev in open_set(small, "hf_historical").lev.values]
    for key in ("plus4k_out_of_range", "plus4k_out_of_range_no_wtg"):
        assert list(report[key]) == levels, key
        assert all(0.0 <= v <= 1.0 for v in report[key].values()), key
    free_troposphere = [
        v for lev, v in report["plus4k_out_of_range"].items() if 200 < float(lev) < 850
    ]
    assert min(free_troposphere) > 0.5, "with WTG, +4K states leave the historical range"
    assert report["files"] == {f"{s}.nc": (small / f"{s}.nc").stat().st_size for s in SETS}


def test_tuning_scores_every_grid_point_and_tau_only_rescales(report: dict) -> None:
    scores = report["bm_tuning"]["scores"]
    assert len(scores) == len(tuning.TAU_GRID_S) * len(tuning.RH_GRID)
    for rh in tuning.RH_GRID:
        same_rh = [s["correlation"] for s in scores if s["rh"] == rh]
        assert max(same_rh) - min(same_rh) < 1e-9, rh
    best = max(s["correlation"] for s in scores)
    assert report["bm_tuning"]["heating_correlation"] == pytest.approx(best, abs=1e-9)


# --- the WRF-format set -------------------------------------------------------------------


def test_wrf_files_open_with_wrf_dims_times_and_attributes(small: Path, report: dict) -> None:
    paths = sorted((small / "wrf").iterdir())
    assert [f"wrf/{p.name}" for p in paths] == sorted(report["wrf"]["files"])
    assert all(p.name.startswith("wrfout_d01_") for p in paths)
    ds = xr.open_mfdataset(paths, combine="nested", concat_dim="Time", decode_times=False)
    grid = report["wrf"]["grid"]
    assert ds.sizes["Time"] == report["wrf"]["frames"]
    assert (ds.sizes["west_east"], ds.sizes["south_north"], ds.sizes["bottom_top"]) == (
        grid["nx"], grid["ny"], grid["nz"],
    )  # fmt: skip
    assert (
        ds.sizes["west_east_stag"] == grid["nx"] + 1
        and ds.sizes["bottom_top_stag"] == grid["nz"] + 1
    )
    times = [t.decode() if isinstance(t, bytes) else str(t) for t in ds.Times.values]
    assert times[0] == paths[0].name.removeprefix("wrfout_d01_")
    minutes = np.diff([np.datetime64(t.replace("_", "T")) for t in times]).astype("timedelta64[m]")
    assert np.all(minutes == np.timedelta64(5, "m"))
    assert "SYNTHETIC" in ds.attrs["TITLE"] and "Emanuel" in ds.attrs["TITLE"]
    assert (ds.attrs["DT"], ds.attrs["CUDT"], ds.attrs["CU_PHYSICS"]) == (30.0, 5.0, 11)
    expected = "U V W T P PB PH PHB MU MUB QVAPOR RTHCUTEN RQVCUTEN PRATEC RAINCV NCA W0AVG CUTOP"
    for name in (*expected.split(), "CUBOT", "HFX", "QFX", "UST", "PBLH", "XLAND"):
        assert name in ds, name
    temperature = (ds["T"] + 300.0) * ((ds.P + ds.PB) / 1e5) ** (RD / CP)
    assert 180 < float(temperature.min()) and float(temperature.max()) < 320


def test_wrf_state_is_smooth_in_space_and_evolves_in_time(small: Path) -> None:
    paths = sorted((small / "wrf").iterdir())
    ds = xr.open_mfdataset(paths, combine="nested", concat_dim="Time", decode_times=False)
    qv = ds.QVAPOR.isel(bottom_top=0).values  # (Time, y, x)
    neighbour = np.abs(np.diff(qv, axis=-1)).mean()
    assert neighbour < 0.5 * qv[0].std(), "neighbouring columns are alike"
    assert not np.array_equal(ds["T"].isel(Time=0).values, ds["T"].isel(Time=-1).values)
    nca = ds.NCA.values
    counting = nca[nca > 0]
    assert np.all(counting % 30.0 == 0) and counting.max() <= 3600.0, "NCA counts in 30-s steps"
    held = nca[:-1] >= 330.0  # skipped by the next call: its tendencies are held
    assert held.any()


def test_the_wrfout_reader_reads_the_set(small: Path, report: dict) -> None:
    from paramlib.data.readers.wrfout import open_wrfout

    ds = open_wrfout(sorted((small / "wrf").iterdir()))
    grid = report["wrf"]["grid"]
    assert dict(ds.sizes) == {
        "time": report["wrf"]["frames"], "y": grid["ny"], "x": grid["nx"], "lev": grid["nz"],
    }  # fmt: skip
    assert float(ds.t.min()) > 180.0 and float(ds.rthcuten.count()) == ds.rthcuten.size


# --- determinism and atomic writing -------------------------------------------------------


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path: Path) -> None:
    quiet = {"log": lambda line: None}
    first = generate.generate(tmp_path / "a", TINY, seed=7, **quiet)
    again = generate.generate(tmp_path / "b", TINY, seed=7, **quiet)
    other = generate.generate(tmp_path / "c", TINY, seed=8, **quiet)
    assert first == again and first != other
    files = [
        p.relative_to(tmp_path / "a") for p in sorted((tmp_path / "a").rglob("*")) if p.is_file()
    ]
    for name in files:
        if name.suffix == ".json" or name.name == OWNED_MARKER:
            continue
        a, b = xr.load_dataset(tmp_path / "a" / name), xr.load_dataset(tmp_path / "b" / name)
        c = xr.load_dataset(tmp_path / "c" / name) if (tmp_path / "c" / name).exists() else None
        for var in a.data_vars:
            np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=f"{name}:{var}")
        if c is not None and "T" in a:
            assert not np.array_equal(a["T"].values, c["T"].values), name


def test_failed_run_leaves_nothing_and_foreign_folders_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(UserInputError, match="paramlib did not create"):
        generate.generate(foreign, TINY, log=lambda line: None)
    assert (foreign / "notes.txt").read_text() == "keep"

    def broken(*args: object) -> None:
        raise RuntimeError("WRF stage failed")

    monkeypatch.setattr(generate, "make_wrf_set", broken)
    with pytest.raises(RuntimeError, match="WRF stage failed"):
        generate.generate(tmp_path / "set", TINY, log=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_an_earlier_set_is_replaced_whole(tmp_path: Path) -> None:
    out = tmp_path / "set"
    generate.generate(out, TINY, seed=1, wrf=False, log=lambda line: None)
    (out / "lf_historical.nc").write_text("damaged")
    lines: list[str] = []
    generate.generate(out, TINY, seed=1, wrf=False, log=lines.append)
    assert xr.load_dataset(out / "lf_historical.nc").sizes and (out / "summary.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    assert len(lines) == 8 and all(line.startswith("testbed: ") for line in lines)


def test_cli_sizes_are_the_generators() -> None:
    assert set(TESTBED_SIZES) == set(generate.SIZES)
    args = cli.build_parser().parse_args(["data", "testbed", "--out", "x", "--no-wrf"])
    assert (args.size, args.seed, args.no_wrf) == ("small", 0, True)


# --- the pieces ---------------------------------------------------------------------------


def test_omega_follows_the_sst_anomaly_with_zero_mean() -> None:
    anomaly = np.linspace(-3.0, 3.0, 61)
    omega0 = runs.omega_amplitude(anomaly, np.zeros_like(anomaly))
    assert omega0.mean() == pytest.approx(0.0, abs=1e-15)
    assert np.all(np.diff(omega0) <= 0) and omega0[-1] < 0 < omega0[0]
    assert np.ptp(omega0) <= runs.OMEGA_MAX - runs.OMEGA_MIN


def test_omega_profile_is_the_column_models() -> None:
    p = np.array([[1.0e5, 5.5e4, 1.0e4, 5.0e3]])
    omega = runs.omega_profile(p, np.array([1.0e5]), np.array([-0.1]), 1.0e4)
    np.testing.assert_allclose(omega, [[0.0, -0.1, 0.0, 0.0]], atol=1e-15)


def test_agreement_and_out_of_range_by_hand() -> None:
    rng = np.random.default_rng(0)
    high = SchemeOutput(rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5)), rng.random((3, 4)))
    low = SchemeOutput(2.0 * high.dtdt + 1.0, -high.dqdt, high.precip)
    assert summary.agreement(low, high) == pytest.approx({"heating": 1.0, "moistening": -1.0})
    assert np.isnan(summary.pearson(np.ones(4), np.arange(4.0)))
    reference = np.array([[[0.0, 10.0], [1.0, 11.0]]])  # ranges [0, 1] and [10, 11]
    test = np.array([[[0.5, 12.0], [2.0, 10.5], [-1.0, 9.0], [1.0, 11.0]]])
    np.testing.assert_allclose(summary.out_of_range(reference, test), [0.5, 0.5])
    assert summary.by_level(np.array([0.1, 0.2]), np.array([900.0, 100.0])) == {
        "100.0": 0.2,
        "900.0": 0.1,
    }


def test_periodic_field_moves_by_whole_cells_and_is_smooth() -> None:
    field = PeriodicField.draw(np.random.default_rng(0), 16, 20, length_cells=3.0)
    base = field.at()
    assert base.std() == pytest.approx(1.0) and abs(base.mean()) < 1e-12
    np.testing.assert_allclose(field.at(1.0, 0.0), np.roll(base, 1, axis=1), atol=1e-12)
    np.testing.assert_allclose(field.at(20.0, 16.0), base, atol=1e-12)
    assert np.abs(np.diff(base, axis=1)).mean() < 0.5


def test_convective_timescale_from_cloud_depth() -> None:
    p = np.tile(np.linspace(1.0e5, 1.0e4, 10), (3, 1))
    t = np.full_like(p, 280.0)
    base, top = np.array([1, 1, -1]), np.array([8, 2, -1])
    tau = convective_timescale(p, t, base, top, updraft_speed=10.0, shortest_s=300.0)
    depth = RD * 280.0 / 9.80665 * np.log(p[0, 1] / p[0, 8])
    assert tau[0] == pytest.approx(min(depth / 10.0, 3600.0))
    assert tau[2] == 300.0 and 300.0 <= tau[1] < tau[0]
