"""paramlib evaluate's baselines (persistence, climatology) and out-of-distribution report,
against direct numpy computations on small MSKF-style stores and a real exported Bi-LSTM."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from train_stores import bilstm_store, feature_store, run_config, write_config

from paramlib import cli
from paramlib.constants import CP
from paramlib.evaluate import metrics
from paramlib.evaluate.baselines import climatology, persistence
from paramlib.export import load_metadata
from paramlib.train.config import load_config
from paramlib.train.distributed import Placement
from paramlib.train.loop import train

TARGETS = ("rthcuten", "pratec", "nca")
SHIFT_K = 2.0  # the warm store's test temperatures, against the model's training range


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("baseline_stores")
    warm = bilstm_store(root / "warm.zarr", seed=1)
    t = zarr.open_group(str(warm), mode="a")["test"]["t"]
    t[:] = t[:] + SHIFT_K
    return {
        "bilstm": bilstm_store(root / "bilstm.zarr"),
        "warm": warm,
        "hf": feature_store(root / "hf.zarr", "hf"),
    }


@pytest.fixture(scope="module")
def model(stores: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Bi-LSTM trained and exported on the bilstm store (its valid_range: that train split)."""
    folder = tmp_path_factory.mktemp("baseline_runs") / "bilstm"
    config = load_config(write_config(folder.with_suffix(".yaml"), run_config("bilstm", stores)))
    assert train(config, folder, resume=True, placement=Placement()) == 0
    return folder / "model.pt"


def split(store: Path, group: str) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(store, group=group, consolidated=False)
    return {name: ds[name].values.astype(np.float64) for name in ds.data_vars}


def triggered(nca: np.ndarray, heating: np.ndarray) -> np.ndarray:
    return (nca > 0) | (heating != 0).any(axis=1)


def f1(pred: np.ndarray, true: np.ndarray) -> float:
    tp, fp, fn = (pred & true).sum(), (pred & ~true).sum(), (~pred & true).sum()
    return 2 * tp / (2 * tp + fp + fn)


def r2_levels(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    return 1 - ((pred - true) ** 2).sum(0) / ((true - true.mean(0)) ** 2).sum(0)


def evaluate_cli(out: Path, *args: str) -> dict:
    assert cli.main(["evaluate", *args, "--out", str(out), "--chunk-samples", "7"]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_persistence_predicts_the_prev_fields(stores: dict[str, Path]) -> None:
    baseline = persistence(stores["bilstm"], "test")
    data = split(stores["bilstm"], "test")
    preds = baseline.predict(data)
    # The tiny store has no pratec_prev: persistence predicts the targets it can.
    assert sorted(preds) == ["nca", "rthcuten"]
    np.testing.assert_array_equal(preds["rthcuten"], data["rthcuten_prev"])
    np.testing.assert_array_equal(preds["nca"][:, 0], data["nca_prev"])


def test_baselines_alone_score_as_numpy_does(stores: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "baselines"
    result = evaluate_cli(
        out,
        "--dataset",
        str(stores["bilstm"]),
        "--baseline",
        "persistence",
        "--baseline",
        "climatology",
    )
    test, train_split = split(stores["bilstm"], "test"), split(stores["bilstm"], "train")
    truth = triggered(test["nca"], test["rthcuten"])
    heating = CP * test["rthcuten"][truth]  # no layer mass in the store: W kg-1

    scores = result["scores"]["persistence"]["test"]["all"]
    held = triggered(test["nca_prev"], test["rthcuten_prev"])
    assert scores["trigger"]["f1"][0] == pytest.approx(f1(held, truth))
    expected = r2_levels(CP * test["rthcuten_prev"][truth], heating)
    np.testing.assert_allclose(scores["rthcuten_triggered"]["r2"], expected, rtol=1e-9)
    assert "pratec" not in scores

    # Climatology: the train split's mean over its triggered columns, everywhere.
    mask = triggered(train_split["nca"], train_split["rthcuten"])
    mean = {name: train_split[name][mask].mean(0) for name in TARGETS}
    assert climatology(stores["bilstm"]).constants["rthcuten"] == pytest.approx(mean["rthcuten"])
    scores = result["scores"]["climatology"]["test"]["all"]
    f = truth.mean()
    assert scores["trigger"]["f1"][0] == pytest.approx(2 * f / (1 + f))
    assert scores["trigger"]["recall"][0] == pytest.approx(1.0)
    expected = r2_levels(np.broadcast_to(CP * mean["rthcuten"], heating.shape), heating)
    np.testing.assert_allclose(scores["rthcuten_triggered"]["r2"], expected, rtol=1e-9)
    pratec = test["pratec"]
    expected_r2 = 1 - ((mean["pratec"] - pratec) ** 2).sum() / ((pratec - pratec.mean()) ** 2).sum()
    assert scores["pratec"]["r2"][0] == pytest.approx(expected_r2, rel=1e-9)

    assert list(result["models"]) == ["persistence", "climatology"]
    assert result["models"]["climatology"]["kind"] == "climatology"
    markdown = (out / "report.md").read_text()
    trigger_table = markdown.split("## Convection trigger")[1]
    assert "| persistence | test | all |" in trigger_table
    assert "| climatology | test | all |" in trigger_table
    assert "paramlib/evaluate/metrics.py" in markdown


def test_mskf_models_get_both_baselines_by_default(
    stores: dict[str, Path], model: Path, tmp_path: Path
) -> None:
    store = str(stores["bilstm"])
    result = evaluate_cli(tmp_path / "default", str(model), "--dataset", store)
    assert list(result["scores"]) == ["bilstm", "persistence", "climatology"]
    # The same columns and trigger truth for every label.
    counts = {
        label: scores["test"]["all"]["trigger"]["triggered"]
        for label, scores in result["scores"].items()
    }
    assert len(set(map(tuple, counts.values()))) == 1
    result = evaluate_cli(tmp_path / "off", str(model), "--dataset", store, "--no-baselines")
    assert list(result["scores"]) == ["bilstm"]


def test_baseline_errors_are_one_line(
    stores: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "refused"
    args = ["evaluate", "--dataset", str(stores["hf"]), "--baseline", "persistence"]
    assert cli.main([*args, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "no 'nca' target" in error and str(stores["hf"]) in error
    assert cli.main(["evaluate", "--dataset", str(stores["bilstm"]), "--out", str(out)]) == 2
    assert "give MODEL(s) or --baseline" in capsys.readouterr().err
    bilstm = ["evaluate", "--dataset", str(stores["bilstm"]), "--out", str(out)]
    assert cli.main([*bilstm, "--baseline", "climatology", "--no-baselines"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert cli.main([*bilstm, "--baseline", "climatology", "--ood-bands", "0"]) == 2
    assert "--ood-bands 0: expected at least 1" in capsys.readouterr().err
    assert not out.exists()  # nothing written
    taken = tmp_path / "a_file"
    taken.write_text("kept")
    assert cli.main([*bilstm[:3], "--baseline", "persistence", "--out", str(taken)]) == 2
    error = capsys.readouterr().err
    assert f"--out {taken} exists and is not a folder" in error and error.count("\n") == 1
    assert taken.read_text() == "kept"


def test_ood_bands_and_counts_by_hand() -> None:
    assert metrics.level_bands(40, 4) == [(0, 10), (10, 20), (20, 30), (30, 40)]
    assert metrics.level_bands(1, 4) == [(0, 1)]
    assert metrics.level_bands(5, 4) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    low, high, sigma = np.zeros(3), np.ones(3), np.array([0.5, 2.0, 0.0])
    values = np.array(
        [
            [0.5, 0.5, 0.5],  # inside
            [1.5, 0.5, 0.5],  # level 1: 0.5 / 0.5 = 1 sigma out
            [0.5, -4.0, 0.5],  # level 2: 4 / 2 = 2 sigma out
            [0.5, 0.5, 3.0],  # level 3 out, its training std is 0: counted, no excess
            [-1.5, 1.5, 0.5],  # level 1: 3 sigma out, level 2: 0.25; the column's excess 3
        ]
    )
    sums = metrics.ood_sums(values, low, high, sigma, [(0, 2), (2, 3)])
    scores = metrics.ood_scores(metrics.add(sums, sums))  # chunks add; max_* take the larger
    assert scores["outside"].tolist() == [6.0, 2.0]
    assert scores["fraction"].tolist() == [0.6, 0.2]
    assert scores["max_sigma"][0] == pytest.approx(3.0)
    assert np.isnan(scores["max_sigma"][1]) and np.isnan(scores["median_sigma"][1])
    assert scores["median_sigma"][0] == pytest.approx(2.0, rel=0.06)  # of 1, 1, 2, 2, 3, 3
    one = metrics.ood_scores(
        metrics.ood_sums(np.array([[2.0]]), low[:1], high[:1], sigma[:1], [(0, 1)])
    )
    assert one["median_sigma"][0] == one["max_sigma"][0] == 2.0  # one column: its excess


def test_ood_report_matches_a_direct_count(
    stores: dict[str, Path], model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ood"
    result = evaluate_cli(out, str(model), "--dataset", str(stores["warm"]), "--no-baselines")
    ranges = load_metadata(model)["valid_range"]
    stats = zarr.open_group(str(stores["warm"]), mode="r").attrs["normalisation"]
    table = result["ood"]["bilstm"]
    assert sorted(table) == ["test", "val"]
    for group, by_field in table.items():
        data = split(stores["warm"], group)
        assert sorted(by_field) == sorted(ranges)
        for name, bands in by_field.items():
            values = data[name].reshape(len(data[name]), -1)
            low, high = np.array(ranges[name]["min"]), np.array(ranges[name]["max"])
            sigma = np.array(stats[name]["std"])
            distance = np.maximum(np.maximum(low - values, values - high), 0)
            assert [b["levels"] for b in bands] == (
                [[1, 2], [3, 3], [4, 4], [5, 5]] if values.shape[1] == 5 else [[1, 1]]
            )
            for band in bands:
                lo, hi = band["levels"][0] - 1, band["levels"][1]
                outside = (distance[:, lo:hi] > 0).any(axis=1)
                assert band["n"] == len(values)
                assert band["outside"] == outside.sum(), (group, name, band)
                assert band["fraction"] == pytest.approx(outside.mean())
                excess = (distance[:, lo:hi] / sigma[lo:hi]).max(axis=1)[outside]
                if outside.any():
                    assert band["max_sigma"] == pytest.approx(excess.max(), rel=1e-6)
                    assert band["median_sigma"] == pytest.approx(np.median(excess), rel=0.06)
                else:
                    assert band["max_sigma"] is None
    # The shifted temperatures are out at every level, the unshifted far less.
    shifted = [band["fraction"] for band in table["test"]["t"]]
    assert min(shifted) > max(band["fraction"] for band in table["val"]["t"])
    markdown = (out / "report.md").read_text()
    assert "## Out of distribution" in markdown and "| bilstm | test | t | 1-2 |" in markdown
    assert "Out of distribution" in (out / "report.html").read_text()
