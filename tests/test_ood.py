"""The out-of-distribution score (paramlib.models.ood) and `paramlib ood calibrate` on a tiny
trained ensemble: calibration meets its false-fallback rate on validation, the exported
ood_score equals an independent numpy computation, warmer inputs score higher, bad arguments
give one line. The hybrid host's rule (fallback exactly where ood_score > 1) is tested in
fortran_bridge/host/scm/tests/test_column_physics.f90 (ctest)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from train_stores import _columns, bilstm_store, run_config, write_config, write_store

from paramlib.cli import main
from paramlib.couple.ood import calibrate
from paramlib.export import load_metadata
from paramlib.guards import UserInputError
from paramlib.models.ood import Moments, calibrate_scales, roc_auc
from paramlib.ood_settings import COMPONENTS
from paramlib.train.config import load_config
from paramlib.train.distributed import Placement
from paramlib.train.loop import train

RATE = 0.05
SPLITS = {"train": 400, "val": 400, "test": 200}
WARMING = 4.0  # K on every level of the test split: the "+4K" climate


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-member RPN trained briefly on a store whose test split is 4 K warmer."""
    root = tmp_path_factory.mktemp("ood")
    rng = np.random.default_rng(0)
    groups = {group: _columns(rng, n, "hf") for group, n in SPLITS.items()}
    groups["test"]["t"] = groups["test"]["t"] + WARMING
    store = write_store(root / "hf.zarr", groups, ["t", "q", "ps"], ["heating", "moistening"])
    config = run_config("rpn", {"hf": store}, steps=60)
    config["model"]["members"] = 4
    train(load_config(write_config(root / "rpn.yaml", config)), root / "run", placement=Placement())
    return root / "run"


@pytest.fixture(scope="module")
def calibrated(run: Path) -> tuple[Path, dict]:
    out = run.parent / "calibrated"
    return out, calibrate(run, out, rate=RATE, chunk=128, components=COMPONENTS)


def split_fields(store: Path, split: str, names: dict[str, int]) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(str(store), group=split, consolidated=False)
    return {n: ds[n].values.reshape(ds.sizes["sample"], -1)[:, :k] for n, k in names.items()}


def test_calibration_meets_the_rate_and_warming_falls_back_more(calibrated) -> None:
    out, report = calibrated
    val, test = report["splits"]["val"], report["splits"]["test"]
    assert val["columns"] == SPLITS["val"] and test["columns"] == SPLITS["test"]
    assert abs(val["fallback"]["combined"] - RATE) <= 1.0 / SPLITS["val"]
    assert test["fallback"]["combined"] > 3 * RATE  # +4 K is out of distribution
    # Each component alone falls back no more often than the combined score.
    for name in COMPONENTS:
        assert val["fallback"][name] <= val["fallback"]["combined"]
        assert 0.0 <= val["auc"][name] <= 1.0
    assert json.loads((out / "ood.json").read_text()) == report
    # The store has Betts-Miller's heating: the hybrid's alternative is scored too.
    assert 0.0 <= val["ml_worse_than_bm_fraction"] <= 1.0
    assert set(val["mean_error"]) == {"model", "betts_miller", "hybrid"}
    assert sorted(report["pooled_auc_ml_worse_than_bm"]) == sorted(
        ["splits", "combined", *COMPONENTS]
    )
    markdown = (out / "ood.md").read_text()
    assert "| val | 0.050 |" in markdown and "exceeds Betts-Miller's" in markdown
    meta = load_metadata(out / "model.pt")
    assert meta["outputs"][-1] == {
        "name": "ood_score",
        "units": "1",
        "nlev": 1,
        "level_order": "surface_to_top",
        "long_name": "out-of-distribution score, > 1: fall back",
    }
    assert [o["name"] for o in meta["outputs"][:2]] == ["heating", "moistening"]
    assert meta["provenance"]["ood"]["rate"] == RATE
    assert sorted(meta["provenance"]["ood"]["thresholds"]) == sorted(COMPONENTS)
    assert (out / "model.pt.sha256").is_file()


def test_exported_score_equals_numpy(run: Path, calibrated) -> None:
    """ood_score from the model file = the module docstring's formula in numpy, from the
    store's own statistics and the training split (nothing read from the module)."""
    out, report = calibrated
    meta = load_metadata(out / "model.pt")
    store = Path(report["store"])
    nlev = {spec["name"]: spec["nlev"] for spec in meta["inputs"]}
    stats = zarr.open_group(str(store), mode="r").attrs["normalisation"]

    def features(fields: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate(
            [
                (fields[n] - np.asarray(stats[n]["mean"][:k])) / np.asarray(stats[n]["std"][:k])
                for n, k in nlev.items()
            ],
            axis=1,
        )

    x_train = features(split_fields(store, "train", nlev))
    mean = x_train.mean(0)
    eigenvalues, vectors = np.linalg.eigh(np.cov(x_train, rowvar=False))
    floored = np.maximum(eigenvalues, report["eig_floor"] * eigenvalues.mean())
    fields = split_fields(store, "val", nlev)
    x = features(fields)[:12]
    mahalanobis = np.sqrt((((x - mean) @ vectors / np.sqrt(floored)) ** 2).mean(1))
    tol = report["tolerance"]
    beyond = ((x < x_train.min(0) - tol) | (x > x_train.max(0) + tol)).mean(1)

    module = torch.jit.load(str(out / "model.pt"))
    inputs = [torch.from_numpy(fields[n][:12].astype(np.float32)) for n in nlev]
    with torch.inference_mode():
        outputs = module(*inputs)
    result = dict(zip([o["name"] for o in meta["outputs"]], outputs, strict=True))
    # The members' std of the normalised outputs = the exported spread / the target's std.
    out_nlev = {o["name"]: o["nlev"] for o in meta["outputs"][:2]}
    spread = np.concatenate(
        [
            result[f"{n}_spread"].numpy() / np.asarray(stats[n]["std"][:k])
            for n, k in out_nlev.items()
        ],
        axis=1,
    )
    spread = np.sqrt((spread**2).mean(1))
    thresholds = np.array([report["thresholds"][c] for c in COMPONENTS])
    expected = (np.stack([mahalanobis, beyond, spread], 1) / thresholds).max(1)
    np.testing.assert_allclose(result["ood_score"].numpy()[:, 0], expected, rtol=2e-4)
    assert result["ood_score"].shape == (12, 1)


def test_warmer_columns_score_higher(calibrated) -> None:
    out, report = calibrated
    meta = load_metadata(out / "model.pt")
    nlev = {spec["name"]: spec["nlev"] for spec in meta["inputs"]}
    fields = split_fields(Path(report["store"]), "val", nlev)
    module = torch.jit.load(str(out / "model.pt"))

    def score(shift: float) -> np.ndarray:
        inputs = [
            torch.from_numpy((fields[n] + (shift if n == "t" else 0.0)).astype(np.float32))
            for n in nlev
        ]
        with torch.inference_mode():
            return module(*inputs)[-1].numpy()[:, 0]

    historical, warm = score(0.0), score(WARMING)
    assert np.mean(historical > 1) == pytest.approx(RATE, abs=1.0 / len(historical))
    assert np.median(warm) > np.median(historical)
    assert np.mean(warm > 1) > 3 * RATE


def test_calibrate_scales_and_auc() -> None:
    rng = np.random.default_rng(1)
    components = np.stack([rng.gamma(2.0, 1.0, 1000), np.zeros(1000), rng.random(1000)], 1)
    components[:10, 1] = 0.5  # a few columns with half their features beyond the range
    scales = calibrate_scales(components, 0.1, n_features=4)
    combined = (components / scales).max(1)
    assert np.mean(combined > 1) == pytest.approx(0.1, abs=1e-3)
    spreadless = calibrate_scales(components * [1, 1, 0], 0.1, 4)
    assert np.isinf(spreadless[2]) and np.isfinite(spreadless[:2]).all()
    # No validation column beyond the range: one feature of 4 beyond it still counts (floor).
    inside = calibrate_scales(components * [1, 0, 1], 0.1, 4)
    assert 0.25 <= inside[1] < np.inf
    assert roc_auc(np.arange(10.0), np.arange(10) >= 5) == 1.0
    assert roc_auc(np.ones(10), np.arange(10) >= 5) == 0.5
    assert np.isnan(roc_auc(np.arange(3.0), np.zeros(3, bool)))
    with pytest.raises(ValueError, match="rate"):
        calibrate_scales(components, 1.5, 4)
    moments = Moments()
    moments.add(np.ones((5, 3)))
    stats = moments.statistics()
    assert stats.floored == 3 and np.isfinite(stats.whiten).all()  # constant: all floored


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--rate", "1.5"], "--rate: expected a fraction between 0 and 1, got 1.5"),
        (["--error-quantile", "0"], "--error-quantile: expected a fraction"),
        (["--tolerance", "-1"], "--tolerance: expected >= 0"),
        (["--split", "nosuch"], "no split 'nosuch'"),
        (["--components", "mahalanobis,wind"], "--components: expected some of"),
        (["--host-output", "/nonexistent/scm.nc"], "--host-output /nonexistent/scm.nc: no such"),
    ],
)
def test_bad_arguments_one_line(run: Path, tmp_path: Path, capsys, arguments, expected) -> None:
    code = main(["ood", "calibrate", str(run), "--out", str(tmp_path / "o"), *arguments])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1
    assert err.startswith("paramlib ood calibrate: ")
    assert not (tmp_path / "o" / "model.pt").exists()


def test_bad_run_one_line(tmp_path: Path, capsys) -> None:
    assert main(["ood", "calibrate", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint at" in err and err.count("\n") == 1
    store = bilstm_store(tmp_path / "b.zarr")
    config = run_config("bilstm", {"bilstm": store}, steps=2)
    train(
        load_config(write_config(tmp_path / "b.yaml", config)),
        tmp_path / "b",
        placement=Placement(),
    )
    capsys.readouterr()  # the training's own lines
    assert main(["ood", "calibrate", str(tmp_path / "b"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "model kind bilstm has no OOD score" in err and err.count("\n") == 1


def test_cli_writes_the_files(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["ood", "calibrate", str(run), "--out", str(out), "--rate", "0.1"]) == 0
    assert "fallback fraction val 0.100" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"model.pt", "model.pt.sha256", "ood.json", "ood.md"}
    report = json.loads((out / "ood.json").read_text())
    assert report["components"] == ["mahalanobis", "beyond_range"]  # the default: no spread
    assert report["thresholds"]["spread"] is None and "spread" not in report["splits"]["val"]["auc"]


def test_test_split_of_another_store(run: Path, tmp_path: Path) -> None:
    """--test-dataset: the +4K split may come from another store (a run trained with +4K
    data has none of its own); here one 8 K warmer than the training store's."""
    rng = np.random.default_rng(2)
    groups = {"train": _columns(rng, 10, "hf"), "test": _columns(rng, 100, "hf")}
    groups["test"]["t"] += 2 * WARMING
    other = write_store(tmp_path / "warm.zarr", groups, ["t", "q", "ps"], ["heating", "moistening"])
    report = calibrate(run, tmp_path / "out", test_dataset=str(other), chunk=128)
    assert report["test_store"] == str(other) and report["splits"]["test"]["columns"] == 100
    assert report["splits"]["test"]["fallback"]["combined"] > 0.9


def test_ood_needs_one_value_per_column(run: Path) -> None:
    from paramlib.models.ood import InputStatistics, OodScore
    from paramlib.train import checkpoint
    from paramlib.train.config import config_from_dict
    from paramlib.train.loop import trained_network
    from paramlib.train.tasks import task_from_spec

    state = checkpoint.load(run)
    task = task_from_spec(config_from_dict(state["config"]), state["spec"])
    n = 10
    stats = InputStatistics(np.zeros(n), np.eye(n), -np.ones(n), np.ones(n), 2, 0)
    with pytest.raises(ValueError, match="ood: an OOD score goes with output mean or mean_spread"):
        task.export(
            trained_network(task, state),
            run / "x.pt",
            "members",
            0,
            {},
            OodScore(stats, 0.5, np.ones(3)),
        )
    assert not (run / "x.pt").exists()


def host_output(path: Path, model: Path, scores: np.ndarray, mode: str = "ml") -> Path:
    """A column host output as paramlib_scm writes it, as far as --host-output reads it."""
    ds = xr.Dataset({"ood_score_max": (("time", "col"), scores)})
    ds.attrs.update(mode=mode, model_path=str(model))
    ds.to_netcdf(path)
    return path


def test_threshold_set_on_the_hosts_scores(run: Path, calibrated, tmp_path: Path) -> None:
    """--host-output: every scale times the (1 - rate) quantile of the host's record maxima,
    so that a fraction rate of them stays above 1; refused for another model or mode."""
    folder, report = calibrated
    scores = np.linspace(0.0, 4.0, 400).reshape(100, 4)  # 95 % quantile 3.8
    host = host_output(tmp_path / "ml.nc", folder / "model.pt", scores)
    out = tmp_path / "host"
    rescaled = calibrate(run, out, rate=RATE, chunk=128, components=COMPONENTS, host_outputs=[host])
    factor = rescaled["host"]["factor"]
    assert factor == pytest.approx(np.quantile(scores, 1 - RATE, method="higher"))
    assert rescaled["host"]["fallback"] <= RATE < rescaled["host"]["fallback_before"]
    for name, value in report["thresholds"].items():
        assert rescaled["thresholds"][name] == pytest.approx(value * factor, rel=1e-6)
    # A larger threshold: fewer validation columns fall back than the validation calibration's.
    assert rescaled["splits"]["val"]["fallback"]["combined"] < RATE
    assert "Threshold set on the host's own climate" in (out / "ood.md").read_text()
    # The host must have run the validation-calibrated file (this one's thresholds differ).
    other = host_output(tmp_path / "other.nc", out / "model.pt", scores)
    hybrid = host_output(tmp_path / "hybrid.nc", folder / "model.pt", scores, mode="hybrid")
    for path, expected in ((other, "has ood thresholds"), (hybrid, "run in mode ml")):
        with pytest.raises(UserInputError, match=expected):
            calibrate(run, tmp_path / "x", chunk=128, components=COMPONENTS, host_outputs=[path])
    assert not (tmp_path / "x").exists()
