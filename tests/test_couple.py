"""The column host paramlib_scm run through paramlib.couple: 1 rank, 2 MPI ranks and 2 OpenMP
threads give the same numbers; stochastic runs are reproducible from their seed; the budgets of a
coupled run close and precipitation is the water removed; a bad model path or mismatched metadata
is an error in ml and hybrid (physics everywhere only when hybrid is told allow_missing_model and
the file is absent, said loudly); NaN/Inf model outputs are an error in ml and physics in those
columns in hybrid, counted; a host with more levels than the model is warned about once; the
Emanuel reference is written in the host's layout; `paramlib couple run | reference | report`
from the command line. The column interface's own unit tests (modes, fallback, constraints) are
Fortran, under ctest (label scm)."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from paramlib.cli import main
from paramlib.couple import inputs, scm
from paramlib.couple.inputs import CoupleError, Coupling, RunSetup
from paramlib.couple.reference import reference
from paramlib.couple.report import report
from paramlib.couple.synthetic import synthetic_model

REPO = Path(__file__).resolve().parents[1]
SETUP = RunSetup(ncol=12, days=0.5, dt_s=1200.0, output_every=3)
CHUNK = 4  # 3 chunks: 2 ranks get 1 and 2 of them
T1_MAX = 298.0  # K, the RPN's "training range" of the lowest level's temperature


@pytest.fixture(scope="session")
def scm_built() -> None:
    try:
        scm.executable()
    except CoupleError as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def host_testbed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the host reads of a testbed: its summary (the small testbed's values, seed 0)."""
    path = tmp_path_factory.mktemp("testbed")
    summary = {
        "bm_tau_s": 28800.0,
        "bm_rh": 0.55,
        "spin_up_days": 0.25,
        "wtg_sst_ref_K": {"historical": 299.0, "plus4k": 303.0},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture(scope="session")
def rpn_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An untrained 4-member RPN (real batched matmuls) with the testbed models' fields,
    exported with its members and as mean and spread. Its training ranges hold every state the
    host reaches except a lowest-level temperature above T1_MAX: the warm columns'."""
    path = tmp_path_factory.mktemp("rpn")
    t_max = [T1_MAX] + [350.0] * 25
    ranges = {
        "t": (150.0, t_max),
        "q": (0.0, 0.05),
        "ps": (5e4, 1.1e5),
        "solin": (0.0, 600.0),
        "shflx": (-200.0, 400.0),
        "lhflx": (-200.0, 1500.0),
    }
    files = {}
    for output in ("members", "mean_spread"):
        files[output] = synthetic_model(
            path / f"{output}.pt",
            members=4,
            hidden=[32, 32],
            output=output,
            valid_range=ranges,
            seed=3,
        )
    return files


@pytest.fixture(scope="session")
def coupling_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ctest fixture's models (fortran_bridge/host/scm/tests/make_coupling_models.py)."""
    path = tmp_path_factory.mktemp("coupling_models")
    script = REPO / "fortran_bridge/host/scm/tests/make_coupling_models.py"
    # As a script, as ctest runs it: TorchScript names the classes by their module.
    subprocess.run(
        [sys.executable, str(script), str(path)],
        check=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    return path


Run = Callable[..., xr.Dataset]


@pytest.fixture
def run(scm_built: None, host_testbed: Path, tmp_path: Path) -> Run:
    """run(name, coupling, ranks=1, threads=1, scenario='historical') -> the output."""

    def go(
        name: str,
        coupling: Coupling,
        ranks: int = 1,
        threads: int = 1,
        scenario: str = "historical",
    ) -> xr.Dataset:
        result = scm.run_coupled(
            tmp_path / name,
            scenario,
            coupling,
            setup=SETUP,
            testbed=host_testbed,
            ranks=ranks,
            threads=threads,
            chunk_size=CHUNK,
        )
        return result.open()

    return go


def assert_same_run(a: xr.Dataset, b: xr.Dataset) -> None:
    for name in a.data_vars:
        assert np.array_equal(a[name].values, b[name].values, equal_nan=True), name


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs mpirun (openmpi-bin)")
@pytest.mark.parametrize("mode", ["stochastic", "hybrid"])
def test_two_ranks_and_two_threads_equal_one(
    run: Run, rpn_models: dict[str, Path], mode: str
) -> None:
    model = rpn_models["members"]
    coupling = Coupling(mode=mode, model=model, seed=11, spread_max=1e9)
    serial = run("serial", coupling)
    assert serial.attrs["run_status"] == "completed"
    if mode == "hybrid":  # some columns fall back, so both paths are compared
        assert 0.0 < float(serial["fallback_fraction"].mean()) < 1.0
    ranks = run("ranks", coupling, ranks=2)
    assert ranks.attrs["ranks"] == 2
    assert_same_run(serial, ranks)
    assert_same_run(serial, run("threads", coupling, threads=2))


def test_stochastic_runs_reproduce_from_their_seed(run: Run, rpn_models: dict[str, Path]) -> None:
    model = rpn_models["members"]
    first = run("a", Coupling(mode="stochastic", model=model, seed=5))
    assert (first["path"] == 2).all()  # PATH_MEMBER
    assert_same_run(first, run("b", Coupling(mode="stochastic", model=model, seed=5)))
    other = run("c", Coupling(mode="stochastic", model=model, seed=6))
    assert not np.array_equal(first["t"].values, other["t"].values)
    mean = run("d", Coupling(mode="ml", model=model))
    assert not np.array_equal(first["t"].values, mean["t"].values)


def test_budgets_close_and_precipitation_is_the_water_removed(
    run: Run, rpn_models: dict[str, Path]
) -> None:
    model = rpn_models["mean_spread"]
    fixed = run("fixed", Coupling(mode="ml", model=model))
    assert float(fixed["energy_residual"].max()) < 1e-6  # W m-2
    assert float(fixed["water_residual"].max()) < 1e-12  # kg m-2 s-1
    # Convection's water term, int dq/dt dp / g + P, vanishes when P is the water removed.
    scale = float(np.abs(fixed["precip"]).max())
    assert float(np.abs(fixed["water_convection"]).max()) <= 1e-9 * scale
    assert (fixed["precip"] >= 0).all()
    raw = run("raw", Coupling(mode="ml", model=model, fix_precip=False))
    assert float(np.abs(raw["water_convection"]).max()) > 1e-3 * scale
    assert float(raw["energy_residual"].max()) < 1e-6


def test_bad_model_path_and_mismatched_metadata(
    run: Run, coupling_models: Path, host_testbed: Path, tmp_path: Path
) -> None:
    physics = run("physics", Coupling(mode="physics"))
    missing = coupling_models / "missing.pt"
    with pytest.raises(CoupleError, match="missing.pt"):
        run("ml", Coupling(mode="ml", model=missing))
    # Hybrid no longer "completes" as a pure Betts-Miller run with exit 0 ...
    with pytest.raises(CoupleError, match="missing.pt.*allow_missing_model"):
        run("hybrid-missing", Coupling(mode="hybrid", model=missing))
    for allow in (False, True):  # ... nor with a mismatched file, whatever the switch
        with pytest.raises(CoupleError, match="K s-1"):
            model = coupling_models / "bad_units.pt"
            run(f"hybrid-units-{allow}", Coupling("hybrid", model, allow_missing_model=allow))
    # unless told to, and then it says so.
    allowed = scm.run_coupled(
        tmp_path / "hybrid-allowed",
        "historical",
        Coupling(mode="hybrid", model=missing, allow_missing_model=True),
        setup=SETUP,
        testbed=host_testbed,
        chunk_size=CHUNK,
    )
    assert "warning: column physics: PHYSICS ONLY: hybrid runs Betts-Miller" in allowed.stderr
    hybrid = allowed.open()
    assert float(hybrid["fallback_fraction"].min()) == 1.0
    assert (hybrid["fallback_reason"] == 8).all()  # FALLBACK_NO_MODEL
    for name in ("t", "q", "precip"):
        assert np.array_equal(hybrid[name].values, physics[name].values), name
    with pytest.raises(CoupleError, match="K s-1"):
        run("ml-units", Coupling(mode="ml", model=coupling_models / "bad_units.pt"))
    with pytest.raises(CoupleError, match="--output members"):
        run("stochastic", Coupling(mode="stochastic", model=coupling_models / "mean_spread.pt"))


def test_nonfinite_model_outputs_fall_back_and_are_counted(
    run: Run,
    coupling_models: Path,
    host_testbed: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """nan_members.pt gives NaN heating (mean and spread) in column 1 (0-based) of every chunk
    of 4: before, hybrid ran the model there (a NaN spread is never above spread_max) and ml
    returned NaN heating with status OK."""
    model = coupling_models / "nan_members.pt"
    with pytest.raises(CoupleError, match=r"step 1 \(.*NaN/Inf outputs in 1 of 4 columns"):
        run("ml", Coupling(mode="ml", model=model))
    result = scm.run_coupled(
        tmp_path / "hybrid",
        "historical",
        Coupling(mode="hybrid", model=model, spread_max=1e9),
        setup=SETUP,
        testbed=host_testbed,
        chunk_size=CHUNK,
    )
    out = result.open()
    assert out.attrs["run_status"] == "completed"
    per_step = SETUP.ncol // CHUNK  # one column per chunk
    assert (out["nonfinite_step"] == per_step).all()
    assert f"{per_step * SETUP.nsteps} column steps had NaN/Inf model outputs" in result.stderr
    nan_columns = np.arange(SETUP.ncol) % CHUNK == 1
    flagged = (out["fallback_reason"] & 32) != 0  # FALLBACK_NONFINITE
    assert bool((flagged == nan_columns).all())
    assert bool((out["fallback"].isel(col=nan_columns) == 1.0).all())
    for name in ("t", "q", "dtdt_conv", "precip"):
        assert bool(np.isfinite(out[name]).all()), name
    # `paramlib couple run` says how many: 4 columns (one chunk), 18 steps.
    size = ["--columns", "4", "--days", "0.25", "--testbed", str(host_testbed)]
    command = ["couple", "run", str(model), "--scenario", "historical", "--mode", "hybrid", *size]
    assert main([*command, "--out", str(tmp_path / "cli")]) == 0
    assert "18 column steps with NaN/Inf model outputs, completed" in capsys.readouterr().out


def test_more_host_levels_than_the_model_warn_once(
    scm_built: None, coupling_models: Path, host_testbed: Path, tmp_path: Path
) -> None:
    """A 30-level host with a 26-level model: the lowest 26 levels are fed, said once."""
    coupling = Coupling(mode="ml", model=coupling_models / "members.pt")
    scm.run_coupled(tmp_path, "historical", coupling, setup=SETUP, testbed=host_testbed)
    namelist = tmp_path / scm.NAMELIST_FILE
    namelist.write_text(namelist.read_text().replace("nlev = 26", "nlev = 30"))
    result = scm.run_scm(namelist)
    assert result.open().sizes["lev"] == 30
    warning = "covers the lowest 26 of the host's 30 levels"
    assert result.stderr.count(warning) == 1, result.stderr
    assert "t 1-26, q 1-22, heating 1-26, moistening 1-22" in result.stderr


def test_a_run_that_blows_up_keeps_its_records(
    run: Run, coupling_models: Path, host_testbed: Path, tmp_path: Path
) -> None:
    coupling = Coupling(mode="ml", model=coupling_models / "runaway.pt")
    with pytest.raises(CoupleError, match=r"run: step \d+ \(step: column \d+ left the physical"):
        run("strict", coupling)
    ref = reference(tmp_path / "ref", "historical", SETUP, inputs.TestbedClimate.read(host_testbed))
    result = scm.run_coupled(
        tmp_path / "kept", "historical", coupling, reference=ref, testbed=host_testbed, check=False
    )
    assert not result.completed and "left the physical range" in result.error
    out = result.open()
    assert 0 < out.sizes["time"] < SETUP.nsteps // SETUP.output_every
    assert out.attrs["run_status"].startswith("failed: paramlib_scm: rank 0: run: step ")
    row = report([tmp_path / "kept"], tmp_path / "report", [ref])[0]
    assert not row["completed"] and row["finite"] and 0 < row["days"] < SETUP.days
    assert row["t_bias"] > 0  # it ran away warm, as far as it got
    assert (tmp_path / "report" / "bias_profiles.png").is_file()


def test_out_of_range_columns_fall_back_in_the_host(run: Run, rpn_models: dict[str, Path]) -> None:
    coupling = Coupling(mode="hybrid", model=rpn_models["mean_spread"], spread_max=1e9)
    for scenario in ("historical", "plus4k"):
        out = run(scenario, coupling, scenario=scenario)
        warm = out["t"].isel(lev=0) > T1_MAX  # at the end of each record's interval
        ood = out["n_ood"] > 0
        assert bool(ood.any()) and not bool(ood.all())
        assert bool((((out["fallback_reason"] & 1) != 0) == ood).all())
        assert bool((out["path"] == 0).where(warm, True).all())  # the last step fell back
        assert bool((out["path"] == 1).where(out["t"].isel(lev=0) < T1_MAX - 1, True).all())
    assert float(out["fallback_fraction"].mean()) > 0.0


def test_cli_reference_run_and_report(
    scm_built: None, host_testbed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = tmp_path / "ref"
    size = ["--columns", "4", "--days", "0.25", "--output-every", "3"]
    common = ["--scenario", "historical", "--testbed", str(host_testbed)]
    assert main(["couple", "reference", *common, *size, "--out", str(ref)]) == 0
    data = xr.open_dataset(ref / "reference.nc")
    assert data.sizes == {"time": 6, "col": 4, "lev": 26}
    assert data["t"].attrs["standard_name"] == "air_temperature"
    with xr.open_dataset(ref / "columns.nc") as columns:
        assert "t" in columns and columns.attrs["scenario"] == "historical"

    out = tmp_path / "physics"
    assert (
        main(
            [
                "couple",
                "run",
                *common,
                "--mode",
                "physics",
                "--reference",
                str(ref),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "fallback fraction 0.000" in capsys.readouterr().out
    coupled = xr.open_dataset(out / "scm.nc")
    assert coupled.sizes["time"] == data.sizes["time"] and coupled.attrs["Conventions"] == "CF-1.8"
    assert coupled["t"].attrs["standard_name"] == "air_temperature"

    assert (
        main(
            [
                "couple",
                "report",
                str(out),
                str(ref),
                "--reference",
                str(ref),
                "--out",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    table = json.loads((tmp_path / "report" / "table.json").read_text())
    assert [row["run"] for row in table] == ["Betts-Miller physics", "Emanuel (reference)"]
    assert table[1]["t_bias"] == 0.0 and table[1]["precip_drift"] == 0.0
    assert table[0]["finite"] and table[0]["completed"]
    for png in ("timeseries.png", "bias_profiles.png"):
        assert (tmp_path / "report" / png).stat().st_size > 10_000
    assert "| Betts-Miller physics | historical |" in (tmp_path / "report" / "table.md").read_text()

    assert main(["couple", "run", *common, "--mode", "ml", "--out", str(tmp_path / "x")]) == 2
    assert "needs a model" in capsys.readouterr().err


def test_reference_state_starts_the_coupled_run(
    scm_built: None, host_testbed: Path, tmp_path: Path
) -> None:
    """The coupled run starts from the reference's spun-up state: Betts-Miller and Emanuel
    runs from it differ at the end but share the first step's forcing start."""
    setup = RunSetup(ncol=4, days=0.25, output_every=1)
    climate = inputs.TestbedClimate.read(host_testbed)
    ref = reference(tmp_path / "ref", "plus4k", setup, climate)
    assert reference(tmp_path / "ref", "plus4k", setup, climate) == ref  # up to date
    with xr.open_dataset(ref / "columns.nc") as columns:
        start_t, sst = columns["t"].values, float(columns["sst"].mean())
    result = scm.run_coupled(
        tmp_path / "bm", "plus4k", Coupling(), reference=ref, testbed=host_testbed
    )
    coupled = result.open()
    # one step of 20 minutes moves the temperature by well under a kelvin
    assert float(np.abs(coupled["t"].isel(time=0).values - start_t).max()) < 1.0
    assert float(coupled["sst"].mean()) == pytest.approx(sst + 4.0)
    rows = report([tmp_path / "bm"], tmp_path / "report", [ref])
    assert rows[0]["scenario"] == "plus4k" and rows[0]["t_bias"] is not None
    with pytest.raises(CoupleError, match="plus4k reference"):
        scm.run_coupled(
            tmp_path / "x", "historical", Coupling(), reference=ref, testbed=host_testbed
        )


def test_online_experiment_of_the_demo(
    scm_built: None, small_testbed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo stage on the small testbed: its stores, the two models' small variants trained
    on them, and a one-day experiment of 8 columns."""
    import dask

    from paramlib.couple.demo_stage import MODELS, ExperimentSize, online_experiment
    from paramlib.data.pipeline import build_store
    from paramlib.data.recipe import load_recipe
    from paramlib.demo import Demo

    demo = Demo(tmp_path, seed=0)
    demo.testbed.symlink_to(small_testbed)
    monkeypatch.setenv("PARAMLIB_TESTBED", str(small_testbed))
    with dask.config.set(scheduler="threads"):
        for name in ("mfrpn_lf_testbed", "mfrpn_hf_testbed"):
            recipe = load_recipe(REPO / "training" / "recipes" / f"{name}.yaml")
            build_store(recipe, demo.stores / f"{name}.zarr")
    lines: list[str] = []
    rows = online_experiment(demo, ExperimentSize(ncol=8, days=1.0), log=lines.append)

    for config in MODELS.values():
        assert (tmp_path / "runs" / config / "model.pt").is_file()
    assert len(rows) == 2 + 2 * 2 * len(MODELS)  # physics, then ml and hybrid per model
    for row in rows:
        assert row["completed"] and row["finite"], row
        assert row["t_bias"] is not None and row["days"] == 1.0
        if row["mode"] == "ml":
            assert row["fallback"] == 0.0
    assert {row["scenario"] for row in rows} == {"historical", "plus4k"}
    # hybrid: the model's ood_score, its threshold set on the historical ml run
    assert any("hybrid threshold on its historical ml run" in line for line in lines)
    for config in MODELS.values():
        host = json.loads(
            (tmp_path / "couple" / "custom" / "ood" / "host" / config / "ood.json").read_text()
        )
        assert host["host"]["fallback"] <= 0.05
    assert "| run | scenario |" in lines[-1] and "rpn_hf_only hybrid" in lines[-1]
    assert (tmp_path / "couple" / "custom" / "report" / "timeseries.png").is_file()


def test_ood_score_decides_the_fallback_in_the_host(run: Run, coupling_models: Path) -> None:
    """A model with ood_score ((t at the lowest level - 250 K) / 50 K, make_coupling_models):
    physics exactly where it is above 1, spread_max (0 here: every column) unused."""
    coupling = Coupling(mode="hybrid", model=coupling_models / "ood_score.pt", spread_max=0.0)
    out = run("ood", coupling, scenario="plus4k")
    score, fallback = out["ood_score"], out["fallback"]  # means over each record's 3 steps
    np.testing.assert_allclose(score, (out["t"].isel(lev=0) - 250.0) / 50.0, atol=0.05)
    assert bool((fallback > 0).any()) and bool((fallback < 1).any())
    assert bool((score > 1).where(fallback == 1, True).all())
    assert bool((score <= 1).where(fallback == 0, True).all())
    assert set(np.unique(out["fallback_reason"])) <= {0, 1}  # FALLBACK_OOD alone
    assert float(out["fallback_fraction"].mean()) == pytest.approx(float(fallback.mean()))


def test_cli_line_of_a_failed_run_counts_no_fill_values(
    scm_built: None, coupling_models: Path, host_testbed: Path, tmp_path: Path, capsys
) -> None:
    """Steps a run never reached hold the integer fill value: not NaN/Inf counts (it printed
    -824633720448 column steps with NaN/Inf model outputs)."""
    size = ["--columns", "4", "--days", "1", "--testbed", str(host_testbed)]
    model = str(coupling_models / "runaway.pt")
    command = ["couple", "run", model, "--scenario", "historical", "--mode", "ml", *size]
    assert main([*command, "--out", str(tmp_path / "runaway")]) == 1
    line = capsys.readouterr().out.splitlines()[-1]
    assert "left the physical range" in line and "NaN/Inf" not in line


def test_an_exported_ood_score_runs_in_the_host(run: Run, tmp_path: Path) -> None:
    """A real export (ExportedEnsemble with OodScore) through the bridge: its score is twice
    the number of features beyond the range, here only the lowest level's temperature above
    T1_MAX, so the warm columns fall back and the others run the model."""
    from paramlib.couple.synthetic import STATE, inputs, normaliser
    from paramlib.models.ood import InputStatistics, OodScore

    norm = normaliser(inputs(with_bm=False))
    n = len(norm.mean)
    high = np.full(n, np.inf)
    high[0] = float((T1_MAX - norm.mean[0]) / norm.std[0])  # t, level 1: first feature
    stats = InputStatistics(np.zeros(n), np.eye(n), np.full(n, -np.inf), high, 2, 0)
    # beyond_range is 1 / n per feature beyond: a scale of 0.5 / n makes that a score of 2.
    score = OodScore(stats, tolerance=0.0, scales=np.array([np.inf, 0.5 / n, np.inf]))
    assert STATE[0][0] == "t"
    model = synthetic_model(tmp_path / "ood.pt", output="mean_spread", seed=3, ood=score)
    out = run("exported-ood", Coupling(mode="hybrid", model=model, spread_max=0.0))
    warm = out["t"].isel(lev=0) > T1_MAX
    assert bool((out["path"] == 0).where(warm, True).all())  # the last step fell back
    assert bool((out["path"] == 1).where(out["t"].isel(lev=0) < T1_MAX - 1, True).all())
    assert bool((out["fallback"] > 0).any()) and bool((out["fallback"] < 1).any())
    assert set(np.unique(out["fallback_reason"])) <= {0, 1}  # FALLBACK_OOD alone
