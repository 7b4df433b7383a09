"""Bi-LSTM MSKF emulator: config from a store, network, loss, post-processing, export."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from paramlib.constants import CP, EPSILON, GRAVITY, LV, T0
from paramlib.export import load_metadata
from paramlib.models.bilstm import (
    MODEL_KIND,
    BiLSTMConfig,
    BiLSTMEmulator,
    BiLSTMExport,
    MSKFPostprocess,
    bilstm_loss,
    config_from_store,
    derived_inputs,
    export_bilstm,
    invariant_inputs,
    saturation_mixing_ratio,
)

NLEV, NSAMPLE = 6, 40
# Deliberately not in any sorted order: the config must follow the store's attrs.
INPUTS = [
    "hfx",
    "u",
    "t",
    "p",
    "qv",
    "dz8w",
    "rthcuten_prev",
    "rqvcuten_prev",
    "pratec_prev",
    "nca_prev",
]
TARGETS = ["rthcuten", "rqvcuten", "pratec", "nca"]
UNITS = {
    "hfx": "W m-2",
    "u": "m s-1",
    "t": "K",
    "p": "Pa",
    "qv": "kg kg-1",
    "dz8w": "m",
    "rthcuten": "K s-1",
    "rqvcuten": "kg kg-1 s-1",
    "pratec": "mm s-1",
    "nca": "s",
}


def _columns(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Plausible WRF-like columns: every other one convecting (tendencies, nca > 0)."""
    z = np.linspace(100.0, 9000.0, NLEV)
    p = 1.0e5 * np.exp(-z / 8000.0) * (1 + 0.01 * rng.standard_normal((NSAMPLE, 1)))
    t = 300.0 - 6.5e-3 * z + rng.standard_normal((NSAMPLE, NLEV))
    qv = (
        rng.uniform(0.3, 0.9, (NSAMPLE, NLEV))
        * saturation_mixing_ratio(torch.from_numpy(t), torch.from_numpy(p)).numpy()
    )
    convecting = np.arange(NSAMPLE) % 2 == 0
    data = {"hfx": rng.normal(50.0, 20.0, NSAMPLE), "u": rng.normal(5.0, 3.0, (NSAMPLE, NLEV))}
    data.update(t=t, p=p, qv=qv, dz8w=np.gradient(z) * rng.uniform(0.99, 1.01, (NSAMPLE, 1)))
    for suffix, active in (("", convecting), ("_prev", rng.random(NSAMPLE) < 0.5)):
        mask = active[:, None]
        data["rthcuten" + suffix] = mask * rng.normal(0.0, 1e-4, (NSAMPLE, NLEV))
        data["rqvcuten" + suffix] = mask * rng.normal(0.0, 1e-7, (NSAMPLE, NLEV))
        data["pratec" + suffix] = active * rng.uniform(0.0, 1e-3, NSAMPLE)
    data["nca"] = np.where(convecting, 600.0, rng.choice([0.0, -100.0], NSAMPLE))
    data["nca_prev"] = rng.choice([-100.0, 0.0, 120.0, 270.0], NSAMPLE)
    return {name: value.astype(np.float32) for name, value in data.items()}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small store in the pipeline's layout: group train, (sample, lev) / (sample,) arrays
    with units, root attrs inputs, targets, normalisation."""
    path = tmp_path_factory.mktemp("bilstm") / "store.zarr"
    data = _columns(np.random.default_rng(0))
    ds = xr.Dataset(
        {
            name: (
                ("sample", "lev")[: value.ndim],
                value,
                {"units": UNITS[name.removesuffix("_prev")], "long_name": name},
            )
            for name, value in data.items()
        }
    )
    ds.to_zarr(path, group="train", mode="w", consolidated=False)
    stats = {
        name: {
            "mean": np.atleast_1d(value.mean(0)).astype(float).tolist(),
            "std": np.atleast_1d(value.std(0)).astype(float).tolist(),
        }
        for name, value in data.items()
    }
    zarr.open_group(str(path), mode="a").attrs.update(
        {"name": "tiny", "inputs": INPUTS, "targets": TARGETS, "normalisation": stats}
    )
    return path


@pytest.fixture(scope="module")
def config(store: Path) -> BiLSTMConfig:
    return config_from_store(store, hidden=8, layers=2)


@pytest.fixture
def model(config: BiLSTMConfig) -> BiLSTMEmulator:
    torch.manual_seed(0)
    return BiLSTMEmulator(config)


@pytest.fixture(scope="module")
def batch(store: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The store's train columns as the model's (inputs, targets), physical units."""
    ds = xr.open_zarr(store, group="train", consolidated=False).load()
    fields = [torch.from_numpy(ds[name].values).reshape(NSAMPLE, -1) for name in INPUTS]
    return fields, [torch.from_numpy(ds[name].values).reshape(NSAMPLE, -1) for name in TARGETS]


def test_config_takes_names_levels_units_from_store(store: Path, config: BiLSTMConfig) -> None:
    assert config.input_names == INPUTS and config.target_names == TARGETS
    assert config.nlev == NLEV
    levels = {s.name: s.nlev for s in (*config.inputs, *config.targets)}
    assert levels["hfx"] == levels["pratec"] == levels["nca_prev"] == 1
    assert levels["t"] == levels["rthcuten"] == NLEV
    assert {s.name: s.units for s in config.targets}["rthcuten"] == "K s-1"
    for name in ("qv_sat", "rh", "dp"):  # the derived fields' statistics from the train group
        assert len(config.stats[name]["mean"]) == NLEV
        assert all(s > 0 for s in config.stats[name]["std"])
    t = xr.open_zarr(store, group="train", consolidated=False)["t"].values
    assert config.valid_range["t"]["min"] == pytest.approx(t.min(0).tolist())
    assert config.provenance["store_name"] == "tiny"
    assert BiLSTMConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_config_names_the_missing_role(store: Path) -> None:
    with pytest.raises(ValueError, match="temperature: input 'tk'"):
        config_from_store(store, temperature="tk")


def test_shapes(model: BiLSTMEmulator, batch: tuple) -> None:
    fields, _ = batch
    logit, profiles, scalars = model(fields)
    assert logit.shape == (NSAMPLE,)
    assert profiles.shape == (NSAMPLE, 2, NLEV) and scalars.shape == (NSAMPLE, 2)
    # One-level fields as the store holds them, (sample,), work as well as (sample, 1).
    flat = [f.squeeze(1) if f.shape[1] == 1 else f for f in fields]
    torch.testing.assert_close(model(flat)[1], profiles)
    outputs = BiLSTMExport(model).forward_fields(fields)
    assert [tuple(y.shape) for y in outputs] == [(NSAMPLE, NLEV)] * 2 + [(NSAMPLE, 1)] * 2


def test_bidirectional_surface_output_sees_the_top(model: BiLSTMEmulator, batch: tuple) -> None:
    fields, _ = batch
    warmer = [f.clone() for f in fields]
    warmer[INPUTS.index("t")][0, -1] += 5.0  # top level of column 0 only
    with torch.no_grad():
        before, after = model(fields)[1], model(warmer)[1]
    assert (after[0, :, 0] - before[0, :, 0]).abs().min() > 0  # surface level, every target
    torch.testing.assert_close(after[1:], before[1:], rtol=0, atol=0)  # other columns alike


def test_derived_fields_by_hand() -> None:
    es = 611.2 * math.exp(17.67 * (300.0 - T0) / (300.0 - 29.65))  # Bolton: 3534.52 Pa
    qs = EPSILON * es / (1.0e5 - es)  # eps from paramlib.constants
    assert qs == pytest.approx(0.0227892, rel=1e-6)
    t = torch.tensor([[300.0, 250.0]], dtype=torch.float64)
    p = torch.tensor([[1.0e5, 5.0e4]], dtype=torch.float64)
    qv = torch.tensor([[0.0113946, 0.0]], dtype=torch.float64)
    qv_sat, rh, dp = derived_inputs(t, p, qv)
    torch.testing.assert_close(qv_sat[0, 0].item(), qs, rtol=1e-12, atol=0.0)
    assert qv_sat[0, 1].item() == pytest.approx(0.001190103, rel=1e-7)  # 250 K, 500 hPa
    assert rh[0, 0].item() == pytest.approx(0.5, rel=1e-6) and rh[0, 1].item() == 0.0
    torch.testing.assert_close(dp, torch.tensor([[5.0e4, 5.0e4]]).double())


def test_trigger_from_targets(model: BiLSTMEmulator) -> None:
    zero = torch.zeros(4, NLEV)
    heating = zero.clone()
    heating[1, 3] = 1e-5  # a tendency alone triggers
    nca = torch.tensor([[0.0], [0.0], [270.0], [-100.0]])  # NCA > 0 alone triggers
    targets = [heating, zero, torch.zeros(4, 1), nca]
    assert model.trigger(targets).tolist() == [False, True, True, False]


def test_loss_ignores_regression_errors_of_untriggered_columns(
    model: BiLSTMEmulator, batch: tuple
) -> None:
    fields, targets = batch
    triggered = model.trigger(targets)
    assert 0 < triggered.sum() < NSAMPLE
    logit, profiles, scalars = model(fields)
    loss, parts = bilstm_loss(model, (logit, profiles, scalars), targets)
    off = ~triggered
    wrong_profiles, wrong_scalars = profiles.clone(), scalars.clone()
    wrong_profiles[off] += 10.0
    wrong_scalars[off] -= 10.0
    torch.testing.assert_close(
        bilstm_loss(model, (logit, wrong_profiles, wrong_scalars), targets)[0], loss
    )
    wrong_profiles[triggered] += 10.0  # errors of triggered columns count
    assert bilstm_loss(model, (logit, wrong_profiles, scalars), targets)[0] > loss + 1.0
    assert parts["bce"] > 0
    mae_only = bilstm_loss(model, (logit, profiles, scalars), targets, trigger_weight=0.0)[0]
    torch.testing.assert_close(mae_only, parts["mae"])


def test_gradients_reach_every_parameter(model: BiLSTMEmulator, batch: tuple) -> None:
    fields, targets = batch
    loss, _ = bilstm_loss(model, model(fields), targets)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def _postprocess_case(config: BiLSTMConfig, logit: list[float], nca_prev: list[float]) -> tuple:
    """Negative predictions everywhere, distinct *_prev inputs, the given logits and nca_prev."""
    ncol = len(logit)
    outputs = [-torch.ones(ncol, s.nlev) * (i + 1) for i, s in enumerate(config.targets)]
    fields = [torch.full((ncol, s.nlev), 7.0 + i) for i, s in enumerate(config.inputs)]
    fields[INPUTS.index("nca_prev")] = torch.tensor(nca_prev).reshape(ncol, 1)
    result = torch.jit.script(MSKFPostprocess(config))(torch.tensor(logit), outputs, fields)
    return dict(zip(TARGETS, result, strict=True)), dict(zip(INPUTS, fields, strict=True))


def test_postprocess_zeroes_untriggered_columns(config: BiLSTMConfig) -> None:
    out, _ = _postprocess_case(config, logit=[-3.0, 3.0], nca_prev=[0.0, 0.0])
    for name in TARGETS:
        assert (out[name][0] == 0).all(), name
    assert (out["rqvcuten"][1] == -2.0).all()  # triggered: the prediction, sign kept


def test_postprocess_clips_pratec_and_nca(config: BiLSTMConfig) -> None:
    out, _ = _postprocess_case(config, logit=[3.0], nca_prev=[0.0])
    assert out["pratec"].item() == 0.0 and out["nca"].item() == 0.0
    assert (out["rthcuten"] == -1.0).all()  # tendencies may be negative


def test_postprocess_holds_columns_still_convecting(config: BiLSTMConfig) -> None:
    # nca_prev 330 s: MSKF skips the column (held); 300 s ended at the call and 270 s is
    # free again, so both are the model's, not the previous values.
    out, fields = _postprocess_case(config, logit=[-3.0, 3.0, 3.0], nca_prev=[330.0, 300.0, 270.0])
    for name in TARGETS:
        torch.testing.assert_close(out[name][0], fields[name + "_prev"][0])
        assert (out[name][1:] != fields[name + "_prev"][1:]).all(), name
    assert out["nca"][0].item() == 330.0  # the host's NCA, which the host counts down


def test_export_round_trip(model: BiLSTMEmulator, batch: tuple, tmp_path: Path) -> None:
    fields, _ = batch
    with torch.no_grad():  # an untrained trigger head would zero every output
        model.trigger_head[-1].bias.fill_(5.0)
    path = export_bilstm(model, tmp_path / "bilstm.pt", provenance={"epochs": 0})
    metadata = load_metadata(path)
    assert metadata["model_kind"] == MODEL_KIND
    assert [f["name"] for f in metadata["inputs"]] == INPUTS
    assert [(f["name"], f["nlev"]) for f in metadata["outputs"]] == [
        ("rthcuten", NLEV),
        ("rqvcuten", NLEV),
        ("pratec", 1),
        ("nca", 1),
    ]
    assert metadata["provenance"]["epochs"] == 0 and "t" in metadata["valid_range"]
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        expected = BiLSTMExport(model).eval().forward_fields(fields)
        got = loaded(*fields)
    assert len(got) == len(TARGETS)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0.0)
    assert any(bool((y != 0).any()) for y in got)  # not everything post-processed away


INVARIANT = {"representation": "invariant", "scaling": "field", "drop_inputs": ("t", "qv", "p")}


def test_invariant_fields_by_hand() -> None:
    t = torch.tensor([[300.0, 250.0]], dtype=torch.float64)
    p = torch.tensor([[1.0e5, 5.0e4]], dtype=torch.float64)
    qv = torch.tensor([[0.0113946, 0.0]], dtype=torch.float64)
    dz = torch.tensor([[200.0, 5000.0]], dtype=torch.float64)  # mass levels at 100 m, 2700 m
    rh, sigma, dsigma, buoyancy = invariant_inputs(t, p, qv, dz)
    qs = saturation_mixing_ratio(t, p)
    torch.testing.assert_close(rh, qv / qs)
    torch.testing.assert_close(sigma, torch.tensor([[1.0, 0.5]]).double())
    torch.testing.assert_close(dsigma, torch.tensor([[0.5, 0.5]]).double())
    parcel = CP * 300.0 + GRAVITY * 100.0 + LV * 0.0113946
    expected = [parcel - (CP * 300.0 + GRAVITY * 100.0 + LV * qs[0, 0].item())]
    expected.append(parcel - (CP * 250.0 + GRAVITY * 2700.0 + LV * qs[0, 1].item()))
    assert buoyancy[0].tolist() == pytest.approx([e / CP for e in expected], rel=1e-9)


def test_invariant_representation(store: Path, batch: tuple, tmp_path: Path) -> None:
    config = config_from_store(store, hidden=8, layers=2, **INVARIANT)
    for name in ("rh", "sigma", "dsigma", "buoyancy"):  # statistics from the train group
        assert len(config.stats[name]["mean"]) == NLEV
    assert [s.name for s in config.features] == [n for n in INPUTS if n not in ("t", "qv", "p")]
    torch.manual_seed(0)
    model = BiLSTMEmulator(config)
    assert model.lstm.input_size == len(INPUTS) - 3 + 4
    u = slice(1, 1 + NLEV)  # u's levels among the features (after hfx)
    assert model.feature_norm.std[u].unique().numel() == 1  # one scale per field
    u_levels = xr.open_zarr(store, group="train", consolidated=False)["u"].values
    assert model.feature_norm.std[u][0].item() == pytest.approx(u_levels.std(), rel=1e-4)
    fields, _ = batch
    with torch.no_grad():
        model.trigger_head[-1].bias.fill_(5.0)
        expected = BiLSTMExport(model).eval().forward_fields(fields)
    path = export_bilstm(model, tmp_path / "invariant.pt")  # the input-order check passes
    with torch.no_grad():
        got = torch.jit.load(str(path))(*fields)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"representation": "warm"}, "representation: expected one of"),
        ({"scaling": "column"}, "scaling: expected one of"),
        ({"target_scaling": "column"}, "target_scaling: expected one of"),
        ({"drop_inputs": ("t", "tk")}, r"drop_inputs: \['tk'\] cannot be dropped"),
        ({"drop_inputs": tuple(INPUTS)}, "drop_inputs: every input cannot be dropped"),
        ({"representation": "invariant", "thickness": "dz"}, "thickness: input 'dz'"),
    ],
)
def test_representation_options_are_checked(store: Path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_store(store, **options)


def test_a_target_constant_in_training_is_predicted_exactly_zero(
    config: BiLSTMConfig, batch: tuple
) -> None:
    # The testbed's condensate tendencies are 0 everywhere: std 0 must not mean scale 1.
    still = {"mean": [0.0] * NLEV, "std": [0.0] * NLEV}
    torch.manual_seed(0)
    model = BiLSTMEmulator(replace(config, stats={**config.stats, "rqvcuten": still}))
    fields, targets = batch
    with torch.no_grad():
        model.trigger_head[-1].bias.fill_(5.0)
        outputs = BiLSTMExport(model).eval().forward_fields(fields)
    assert bool((outputs[TARGETS.index("rqvcuten")] == 0).all())
    assert bool((outputs[TARGETS.index("rthcuten")] != 0).any())
    zeroed = [
        torch.zeros_like(y) if n == "rqvcuten" else y for n, y in zip(TARGETS, targets, strict=True)
    ]
    loss, _ = bilstm_loss(model, model(fields), zeroed)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("constant", [False, True])
def test_target_scaling_per_level_uses_each_levels_floored_std(
    config: BiLSTMConfig, batch: tuple, constant: bool
) -> None:
    """Per level: the level's std, at least std_floor x the field's RMS std; a field constant in
    training keeps scale 0 (exact zeros); physical -> normalised -> physical is the identity."""
    std = [0.0 if constant else 1e-7 * (k + 1) for k in range(NLEV)]
    std[-1] = 0.0
    stats = {**config.stats, "rthcuten": {"mean": [0.0] * NLEV, "std": std}}
    model = BiLSTMEmulator(replace(config, stats=stats, target_scaling="level"))
    scale = model.profile_scale[TARGETS.index("rthcuten")]
    rms = float(np.sqrt(np.mean(np.square(std))))
    expected = np.maximum(std, config.std_floor * rms)
    assert np.allclose(scale.numpy(), expected, rtol=1e-6) and bool((scale == 0).all()) == constant
    _, targets = batch
    profiles, scalars = model.normalise_targets(targets)
    back = model.to_physical(profiles, scalars)
    for name, want, got in zip(TARGETS, targets, back, strict=True):
        if not (constant and name == "rthcuten"):
            assert torch.allclose(got, want.reshape(got.shape), rtol=1e-5, atol=0), name
