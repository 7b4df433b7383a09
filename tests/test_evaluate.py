"""paramlib.evaluate: scores against hand-computed values, streaming, reports, the comparison."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
import zarr
from train_stores import NLEV, bilstm_store, feature_store, run_config, write_config

from paramlib import cli
from paramlib.constants import CP, GRAVITY, LV
from paramlib.evaluate import metrics
from paramlib.evaluate.compare import (
    BAND_COLUMNS,
    COLUMNS,
    compare_models,
    gap_closed,
)
from paramlib.evaluate.engine import evaluate
from paramlib.evaluate.report import write_report
from paramlib.evaluate.sources import layer_mass, load_model, resolve_store
from paramlib.train.config import load_config
from paramlib.train.distributed import Placement
from paramlib.train.loop import train

# Sigma interfaces (surface first) and the mid-levels between them, as the testbed writes them.
SIGMA_INTERFACES = np.array([1.0, 0.85, 0.6, 0.35, 0.15, 0.04])
SIGMA = (SIGMA_INTERFACES[:-1] + SIGMA_INTERFACES[1:]) / 2
RUNS = ["hist", "warm"]

# --- scores by hand --------------------------------------------------------------------------


def scores(pred, true) -> dict:
    return metrics.deterministic_scores(metrics.deterministic_sums(pred, true))


def test_deterministic_scores_by_hand() -> None:
    true = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0]])
    pred = np.array([[1.0, 5.0], [2.0, 6.0], [4.0, 5.0], [3.0, 4.0]])
    s = scores(pred, true)
    # Level 0: SSE 2, SST 5; level 1: the target is constant, R^2 undefined.
    assert s["r2"][0] == pytest.approx(0.6)
    assert math.isnan(s["r2"][1])
    assert s["mae"].tolist() == [0.5, 0.5]
    assert s["rmse"] == pytest.approx([math.sqrt(0.5)] * 2)
    assert s["bias"].tolist() == [0.0, 0.0]
    # Over all levels only the varying one counts.
    sums = metrics.deterministic_sums(pred, true)
    assert metrics.r2_all_levels(sums) == pytest.approx(0.6)
    # A band of levels: level 1 alone never varies, so its R^2 is undefined.
    assert metrics.r2_all_levels(sums, slice(0, 1)) == pytest.approx(0.6)
    assert math.isnan(metrics.r2_all_levels(sums, slice(1, 2)))
    # Sums of chunks add up to the sums of the whole.
    halves = metrics.add(
        metrics.deterministic_sums(pred[:1], true[:1]),
        metrics.deterministic_sums(pred[1:], true[1:]),
    )
    for key, value in sums.items():
        np.testing.assert_allclose(halves[key], value)


def test_crps_of_known_ensembles() -> None:
    # Members 0 and 2, target 1: mean |x - y| = 1, sum_ij |x_i - x_j| = 4 -> 1 - 4 / (2*2*1).
    assert metrics.crps_ensemble(np.array([0.0, 2.0]), np.array(1.0)) == pytest.approx(0.0)
    # Members 1, 2, 3, target 0: 2 - 8 / (2*3*2).
    assert metrics.crps_ensemble(np.array([1.0, 2.0, 3.0]), np.array(0.0)) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.crps_ensemble(np.ones((1, 3)), np.ones(3))
    # Unbiased: 4-member draws from N(0, 1) average the CRPS of N(0, 1) itself at 0,
    # 2 phi(0) - 1 / sqrt(pi) = sqrt(2 / pi) - 1 / sqrt(pi).
    draws = np.random.default_rng(0).standard_normal((4, 200_000))
    exact = math.sqrt(2 / math.pi) - 1 / math.sqrt(math.pi)
    assert metrics.crps_ensemble(draws, np.zeros(200_000)).mean() == pytest.approx(exact, rel=0.01)


def test_coverage_and_rank_histogram_by_hand() -> None:
    members = np.broadcast_to(np.arange(20.0)[:, None, None], (20, 6, 1))
    # Mean 9.5, spread sqrt(35); t quantiles (19 dof) 1.729 and 0.688 x sqrt(1.05): the
    # intervals are 9.5 +- 10.48 and 9.5 +- 4.17.
    assert metrics.interval_factor(20, 0.9) == pytest.approx(1.7291 * math.sqrt(1.05), rel=1e-4)
    true = np.array([[-2.0], [0.0], [5.0], [10.0], [14.0], [21.0]])
    sums = metrics.ensemble_sums(members, true)
    s = metrics.ensemble_scores(sums)
    assert s["coverage90"][0] == pytest.approx(4 / 6)
    assert s["coverage50"][0] == pytest.approx(1 / 6)
    # Members 1, 2, 3: targets below, between and above take ranks 0, 1, 2, 3.
    members = np.broadcast_to(np.array([1.0, 2.0, 3.0])[:, None, None], (3, 4, 1))
    ranks = metrics.ensemble_scores(
        metrics.ensemble_sums(members, np.array([[0], [1.5], [2.5], [4]]))
    )
    assert ranks["rank_histogram"].tolist() == [0.25] * 4


def test_a_calibrated_small_ensemble_covers_its_nominal_intervals() -> None:
    # Targets and 8 members drawn from the same distribution: the members' own 0.05-0.95
    # quantiles would hold only about 0.72 of the targets; the prediction interval holds 0.9.
    draws = np.random.default_rng(1).standard_normal((9, 40_000, 1)) * 3.0 + 2.0
    s = metrics.ensemble_scores(metrics.ensemble_sums(draws[:8], draws[8]))
    assert s["coverage90"][0] == pytest.approx(0.9, abs=0.01)
    assert s["coverage50"][0] == pytest.approx(0.5, abs=0.01)


def test_spread_skill_by_hand() -> None:
    # Sample i: the mean misses by i and the two members sit at mean -+ i, so the spread
    # (std, ddof 1) is i sqrt(2): perfectly correlated with the error, ratio sqrt(3/2) sqrt(2).
    i = np.arange(1.0, 6.0)[:, None]
    true = np.zeros_like(i)
    members = np.stack([true + i - i, true + i + i])
    s = metrics.ensemble_scores(metrics.ensemble_sums(members, true))
    assert s["spread_skill_corr"][0] == pytest.approx(1.0)
    assert s["spread_skill_ratio"][0] == pytest.approx(math.sqrt(3))
    assert s["spread"][0] == pytest.approx(math.sqrt(np.mean(2 * i**2)))


def test_trigger_scores_by_hand() -> None:
    pred = np.array([True, True, False, False, True])
    true = np.array([True, False, True, False, True])
    s = metrics.trigger_scores(metrics.trigger_sums(pred, true))
    assert float(s["accuracy"]) == pytest.approx(3 / 5)
    assert float(s["precision"]) == pytest.approx(2 / 3)
    assert float(s["recall"]) == pytest.approx(2 / 3)
    assert float(s["f1"]) == pytest.approx(2 / 3)


def test_energy_units_and_layer_thickness() -> None:
    assert metrics.energy_factor("K s-1") == (CP, True)
    assert metrics.energy_factor("kg kg-1 s-1") == (LV, True)
    assert metrics.energy_factor("mm s-1") == (pytest.approx(LV), False)  # 1 mm s-1 = 1 kg m-2 s-1
    assert metrics.energy_factor("s") == (1.0, False)
    assert metrics.energy_units("K s-1", True) == "W m-2"
    assert metrics.energy_units("K s-1", False) == "W kg-1"
    np.testing.assert_allclose(metrics.sigma_thickness(SIGMA), -np.diff(SIGMA_INTERFACES))
    with pytest.raises(ValueError, match="interface means"):
        metrics.sigma_thickness(np.array([0.9, 0.2, 0.1]))


# --- stores, models, streaming -----------------------------------------------------------------


def with_levels_and_runs(path: Path) -> Path:
    """A tiny training store given what the pipeline writes: sigma levels in hPa and a run per
    sample (val: "hist", test: "warm")."""
    lev = xr.DataArray(
        1000.0 * SIGMA,
        dims="lev",
        attrs={"units": "hPa", "standard_name": "atmosphere_hybrid_sigma_pressure_coordinate"},
    )
    for group in ("train", "val", "test"):
        n = zarr.open_group(str(path), mode="r")[group]["heating"].shape[0]
        run = np.full(n, 1 if group == "test" else 0)
        coords = xr.Dataset(coords={"lev": lev, "run": ("sample", run)})
        coords.to_zarr(path, group=group, mode="a", consolidated=False)
    zarr.open_group(str(path), mode="a").attrs["runs"] = RUNS
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate_stores")
    return {
        "hf": with_levels_and_runs(feature_store(root / "hf.zarr", "hf")),
        "lf": feature_store(root / "lf.zarr", "lf", seed=1),
        "bilstm": bilstm_store(root / "bilstm.zarr"),
    }


def trained(folder: Path, stores: dict[str, Path], kind: str, seed: int = 0) -> Path:
    config_file = write_config(folder.with_suffix(".yaml"), run_config(kind, stores))
    config = load_config(config_file, [f"train.seed={seed}"])
    assert train(config, folder, resume=True, placement=Placement()) == 0
    return folder


@pytest.fixture(scope="module")
def runs(stores: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate_runs")
    return {kind: trained(root / kind, stores, kind) for kind in ("rpn", "bilstm")}


def test_layer_mass_from_sigma_levels(stores: dict[str, Path]) -> None:
    ds = xr.open_zarr(stores["hf"], group="test", consolidated=False)
    mass, how = layer_mass(ds)
    assert "sigma" in how
    expected = ds["ps"].values[:, None] * -np.diff(SIGMA_INTERFACES) / GRAVITY
    np.testing.assert_allclose(mass.values, expected, rtol=1e-6)
    # Without levels, a store gives no layer mass.
    assert layer_mass(xr.open_zarr(stores["lf"], group="test", consolidated=False))[0] is None


def test_streamed_chunks_give_the_scores_of_the_whole(
    stores: dict[str, Path], runs: dict[str, Path]
) -> None:
    models = [load_model(runs["rpn"])]
    whole, chunked = (
        evaluate(models, stores["hf"], ["test"], chunk_samples=n, progress=False) for n in (1000, 7)
    )
    a, b = (r["scores"]["rpn"]["test"]["all"] for r in (whole, chunked))
    # Equal up to the float32 forward, whose last bits depend on the batch size.
    for field in ("heating", "heating_column", "moistening", "precip"):
        for key in ("r2", "rmse", "crps", "coverage90", "spread_skill_corr"):
            np.testing.assert_allclose(
                np.array(a[field][key], float), np.array(b[field][key], float), rtol=1e-5
            )


def test_run_directory_gives_members_and_a_model_file_its_mean(
    stores: dict[str, Path], runs: dict[str, Path]
) -> None:
    members = load_model(runs["rpn"])
    mean_spread = load_model(runs["rpn"] / "model.pt", "file")
    assert (members.label, members.members, mean_spread.members) == ("rpn", 3, 1)
    assert [s["name"] for s in mean_spread.outputs] == ["heating", "moistening", "precip"]
    result = evaluate([members, mean_spread], stores["hf"], ["test"], progress=False)
    scores = result["scores"]
    assert "crps" in scores["rpn"]["test"]["all"]["heating"]
    assert "crps" not in scores["file"]["test"]["all"]["heating"]
    # The same network: the members' mean is the file's mean output.
    assert scores["rpn"]["test"]["all"]["heating"]["r2"] == pytest.approx(
        scores["file"]["test"]["all"]["heating"]["r2"], rel=1e-5
    )
    # Per-level heating in W m-2 (cp x dp/g); its column integral is their sum.
    assert result["fields"]["heating"]["units"] == "W m-2"
    assert result["splits"]["test"]["label"] == "test (warm)"
    assert list(scores["rpn"]["test"]["runs"]) == ["warm"]


def test_report_of_an_ensemble_and_a_bilstm(
    stores: dict[str, Path], runs: dict[str, Path], tmp_path: Path
) -> None:
    status = cli.main(
        [
            "evaluate",
            str(runs["rpn"]),
            "--dataset",
            str(stores["hf"]),
            "--label",
            f"tiny={runs['rpn']}",
            "--out",
            str(tmp_path / "rpn"),
        ]
    )
    assert status == 0
    out = tmp_path / "rpn"
    for name in ("metrics.json", "report.md", "report.html", "r2_levels.png", "rank_histogram.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "metrics.json").read_text())
    assert list(data["scores"]["tiny"]) == ["val", "test"]  # historical and +4K
    assert len(data["scores"]["tiny"]["test"]["all"]["heating"]["r2"]) == NLEV
    markdown = (out / "report.md").read_text()
    assert "val (hist)" in markdown and "test (warm)" in markdown
    assert "![" in markdown and "<img" in (out / "report.html").read_text()

    result = evaluate([load_model(runs["bilstm"])], stores["bilstm"], ["test"], progress=False)
    scores = result["scores"]["bilstm"]["test"]["all"]
    assert set(scores["trigger"]) >= {"accuracy", "precision", "recall", "f1"}
    assert "rthcuten_triggered" in scores
    assert result["fields"]["pratec"]["units"] == "W m-2"
    write_report(result, tmp_path / "bilstm")
    assert "Convection trigger" in (tmp_path / "bilstm" / "report.md").read_text()


def test_cli_errors_name_the_problem(stores: dict[str, Path], tmp_path: Path) -> None:
    assert cli.main(["evaluate", "nowhere", "--dataset", "nowhere", "--out", str(tmp_path)]) == 2
    with pytest.raises(FileNotFoundError, match="no training store"):
        resolve_store("no_such_store")


# --- the comparison ---------------------------------------------------------------------------


def test_comparison_table_structure(
    stores: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARAMLIB_STORES", str(tmp_path))  # compare_models sets it
    configs = [
        write_config(tmp_path / f"{kind}.yaml", run_config(kind, stores)) for kind in ("mlp", "rpn")
    ]
    report = compare_models(
        stores["hf"].parent,
        tmp_path / "runs",
        [0, 1],
        tmp_path / "compare",
        configs=configs,
        variant=None,
        dataset="hf",
        log=lambda text: None,
        jobs=2,  # two training processes (spawned)
        overrides=["train.steps=20"],
    )
    assert report == tmp_path / "compare" / "report.html"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "tiny_mlp",
        "tiny_mlp-seed1",
        "tiny_rpn",
        "tiny_rpn-seed1",
    ]
    comparison = json.loads((tmp_path / "compare" / "metrics.json").read_text())["comparison"]
    table = comparison["table"]
    assert list(table) == ["tiny_mlp", "tiny_rpn"]
    assert list(table["tiny_rpn"]) == [title for title, *_ in (*COLUMNS, *BAND_COLUMNS)]
    run_config_file = tmp_path / "runs" / "tiny_rpn-seed1" / "config.yaml"
    assert yaml.safe_load(run_config_file.read_text())["train"]["steps"] == 20
    cell = table["tiny_rpn"]["R² +4K"]
    assert len(cell["seeds"]) == 2
    assert cell["mean"] == pytest.approx(np.mean(cell["seeds"]))
    assert cell["std"] == pytest.approx(np.std(cell["seeds"], ddof=1))
    assert table["tiny_mlp"]["CRPS +4K (W m-2)"]["mean"] is None  # deterministic
    assert (tmp_path / "compare" / "compare.png").is_file()
    assert "gap closed" in (tmp_path / "compare" / "report.md").read_text()
    # R² per third of the levels, and the gap closed per band (empty: no oracle here)
    bands = table["tiny_rpn"]["R² +4K lower"]
    assert len(bands["seeds"]) == 2 and all(np.isfinite(bands["seeds"]))
    assert list(comparison["gap_closed_bands"]) == ["lower", "mid", "upper"]


def test_gap_closed_by_hand() -> None:
    title = "R² column +4K"
    table = {
        name: {title: {"mean": value}} for name, value in [("hf", -2.0), ("mf", 0.0), ("or", 0.5)]
    }
    assert gap_closed(table, "hf", "or") == {"mf": pytest.approx(0.8)}
    assert gap_closed(table, "hf", "absent") == {}
