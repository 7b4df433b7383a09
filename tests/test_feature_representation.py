"""The feature kinds' input representations (model.representation raw | invariant,
model.scaling level | field; paramlib.models.represent) on the small testbed's stores: the
derived fields against numpy, training and the model file agreeing, raw unchanged."""

import csv
from pathlib import Path

import dask
import numpy as np
import pytest
import torch
import xarray as xr
from train_stores import feature_store, run_config, write_config

from paramlib import constants
from paramlib.data.pipeline import build_store
from paramlib.data.recipe import load_recipe
from paramlib.export import FieldSpec, load_metadata
from paramlib.models import thermo
from paramlib.models.normalise import FieldLayout, Normaliser
from paramlib.models.represent import InputTransform, store_sigma
from paramlib.paths import REPO_ROOT
from paramlib.train import checkpoint
from paramlib.train.config import ConfigError, config_from_dict, load_config
from paramlib.train.data import DataError, open_store
from paramlib.train.distributed import Placement
from paramlib.train.loop import METRICS_FILE, MODEL_FILE, train, trained_network
from paramlib.train.tasks import FeatureTask, task_from_spec, task_from_stores

CONFIGS = REPO_ROOT / "training" / "configs"
TINY = [  # the small variant, shorter
    "model.hidden=[16, 16]",
    "model.members=3",
    "train.steps=30",
    "train.val_every=10",
    "train.checkpoint_every=30",
    "train.progress=false",
]


@pytest.fixture(scope="module")
def stores(small_testbed: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The MF-RPN HF and LF stores of the small testbed."""
    root = tmp_path_factory.mktemp("representation_stores")
    paths = {}
    with pytest.MonkeyPatch.context() as patch, dask.config.set(scheduler="synchronous"):
        patch.setenv("PARAMLIB_TESTBED", str(small_testbed))
        for fidelity in ("hf", "lf"):
            recipe = load_recipe(
                REPO_ROOT / "training" / "recipes" / f"mfrpn_{fidelity}_testbed.yaml"
            )
            build_store(recipe, root / f"{fidelity}.zarr")
            paths[fidelity] = root / f"{fidelity}.zarr"
    return paths


def trained(config_name: str, stores: dict[str, Path], out: Path, *overrides: str) -> Path:
    config = load_config(
        CONFIGS / f"{config_name}.yaml",
        [
            f"data.store={stores['hf']}",
            f"data.lf_store={stores['lf']}",
            *TINY,
            *overrides,
        ],
        variant="small",
    )
    assert train(config, out, placement=Placement()) == 0
    return out


def train_split(store: Path, group: str = "train") -> xr.Dataset:
    return xr.open_zarr(store, group=group, consolidated=False).load()


# --- the derived fields ----------------------------------------------------------------------


def numpy_invariant(
    t: np.ndarray, q: np.ndarray, ps: np.ndarray, sigma: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """rh and plume buoyancy written out level by level in float64, independently of torch."""
    eps, c = constants.EPSILON, constants
    p = ps[:, None] * sigma[None, :]
    es = np.minimum(611.2 * np.exp(17.67 * (t - c.T0) / (t - 29.65)), 0.5 * p)
    qs = eps * es / (p - (1.0 - eps) * es)
    z = np.zeros_like(t)
    for k in range(t.shape[1]):  # hydrostatic: dz = Rd T_layer / g ln(p_below / p)
        below, t_layer = (1.0, t[:, 0]) if k == 0 else (sigma[k - 1], 0.5 * (t[:, k - 1] + t[:, k]))
        z[:, k] = (z[:, k - 1] if k else 0.0) + c.RD * t_layer / c.GRAVITY * np.log(
            below / sigma[k]
        )
    h_parcel = c.CP * t[:, 0] + c.GRAVITY * z[:, 0] + c.LV * q[:, 0]
    h_sat = c.CP * t + c.GRAVITY * z + c.LV * qs
    return q / qs[:, : q.shape[1]], (h_parcel[:, None] - h_sat) / c.CP


def test_thermodynamics_literals_are_paramlib_constants() -> None:
    t = torch.tensor([[300.0, 250.0]], dtype=torch.float64)
    p = torch.tensor([[1.0e5, 5.0e4]], dtype=torch.float64)
    es = 611.2 * np.exp(17.67 * (t.numpy() - constants.T0) / (t.numpy() - 29.65))
    eps = constants.EPSILON
    np.testing.assert_allclose(
        thermo.saturation_mixing_ratio(t, p).numpy(), eps * es / (p.numpy() - es), rtol=1e-12
    )
    np.testing.assert_allclose(
        thermo.saturation_specific_humidity(t, p).numpy(),
        eps * es / (p.numpy() - (1 - eps) * es),
        rtol=1e-12,
    )
    sigma = torch.tensor([0.5], dtype=torch.float64)
    z = thermo.hydrostatic_height(t[:, :1], sigma)
    assert z.item() == pytest.approx(constants.RD * 300.0 / constants.GRAVITY * np.log(2.0))


def test_invariant_fields_equal_numpy_on_testbed_columns(
    stores: dict[str, Path], small_testbed: Path
) -> None:
    split = train_split(stores["hf"])
    sigma = np.array(store_sigma(open_store(stores["hf"]), "train", split.sizes["lev"]))
    # The store's lev is the testbed's own vertical coordinate: p = hybm ps, hyam = 0.
    with xr.open_dataset(small_testbed / "hf_historical.nc") as raw:
        assert np.all(raw["hyam"].values == 0.0)
        np.testing.assert_allclose(raw["hybm"].values[::-1], sigma, rtol=1e-12)
    rows = [0, 1, 100, 200, split.sizes["sample"] - 1]
    t, q, ps = (split[n].values[rows].astype(np.float64) for n in ("t", "q", "ps"))
    nq = 22  # q on fewer levels than T, as the shipped configs have it
    layout = FieldLayout(
        (FieldSpec("t", "K", len(sigma)), FieldSpec("q", "kg kg-1", nq), FieldSpec("ps", "Pa", 1))
    )
    norm = Normaliser(torch.zeros(layout.size), torch.ones(layout.size))
    transform = InputTransform.create("invariant", layout, norm, sigma.tolist())
    assert transform.features(layout).names == ["buoyancy", "rh", "ps"]
    got = layout.split(transform(layout.flatten({"t": t, "q": q[:, :nq], "ps": ps})))
    rh, buoyancy = numpy_invariant(t, q[:, :nq], ps, sigma)
    assert 0.0 < rh.min() and 0.5 < rh.max() < 1.2  # plausible: the check means something
    np.testing.assert_allclose(got["q"].numpy(), rh, rtol=2e-5)
    np.testing.assert_allclose(got["t"].numpy(), buoyancy, rtol=1e-4, atol=2e-2)
    np.testing.assert_array_equal(got["ps"].numpy()[:, 0], ps.astype(np.float32))


# --- training and the model file --------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(stores: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("representation_runs")
    return {
        "rpn": trained("rpn_hf_only", stores, root / "rpn", "model.representation=invariant"),
        "mfrpn": trained(
            "mfrpn_hf_of_lf",
            stores,
            root / "mfrpn",
            "model.representation=invariant",
            "model.scaling=field",
        ),
    }


def raw_inputs(task: FeatureTask, store: Path, group: str) -> list[torch.Tensor]:
    split = train_split(store, group)
    return [
        torch.from_numpy(split[s.name].values.reshape(split.sizes["sample"], -1)[:, : s.nlev])
        for s in task.inputs.fields
    ]


@pytest.mark.parametrize("kind", ["rpn", "mfrpn"])
def test_model_file_equals_the_trained_network_on_raw_inputs(
    runs: dict[str, Path], stores: dict[str, Path], kind: str
) -> None:
    state = checkpoint.load(runs[kind])
    config = config_from_dict(state["config"])
    assert config.model.representation == "invariant"
    net = trained_network(task_from_spec(config, state["spec"]), state)
    # What the network saw in training: the validation features the trainer made.
    task = task_from_stores(config)
    assert isinstance(task, FeatureTask)
    x_val, _ = task.data["val"]
    with torch.no_grad():
        members = task.out_norm.denormalise(net(x_val))
    path = runs[kind] / MODEL_FILE
    metadata = load_metadata(path)
    # The host still passes the raw fields.
    assert [s["name"] for s in metadata["inputs"]] == task.inputs.names
    assert metadata["provenance"]["config"]["model"]["representation"] == "invariant"
    module = torch.jit.load(str(path))
    with torch.no_grad():
        outputs = module(*raw_inputs(task, stores["hf"], "val"))
    n = len(task.outputs.fields)
    mean, spread = outputs[:n], outputs[n : 2 * n]
    for i, expected in enumerate(torch.split(members, task.outputs.nlevs, dim=-1)):
        scale = float(expected.abs().max())
        assert scale > 0
        torch.testing.assert_close(mean[i], expected.mean(0), rtol=0, atol=1e-5 * scale)
        torch.testing.assert_close(spread[i], expected.std(0), rtol=0, atol=1e-5 * scale)


def test_derived_statistics_come_from_the_training_split(
    runs: dict[str, Path], stores: dict[str, Path]
) -> None:
    """rpn (normalisation train, scaling level): per level, the HF train split's; mfrpn
    (normalisation lf, scaling field): one per field, the LF train split's."""
    for kind, store, scaling in (("rpn", "hf", "level"), ("mfrpn", "lf", "field")):
        spec = checkpoint.load(runs[kind])["spec"]
        task = task_from_spec(config_from_dict(checkpoint.load(runs[kind])["config"]), spec)
        split = train_split(stores[store])
        sigma = np.array(spec["transform"]["sigma"])
        t, q, ps = (split[n].values.astype(np.float64) for n in ("t", "q", "ps"))
        nq = task.inputs.select(["q"]).size
        rh, buoyancy = numpy_invariant(t, q[:, :nq], ps, sigma)
        norm = task.transform.features(task.inputs).split(task.in_norm.mean)
        std = task.transform.features(task.inputs).split(task.in_norm.std)
        for name, values in (("rh", rh), ("buoyancy", buoyancy)):
            if scaling == "level":
                mean, spread = values.mean(0), values.std(0)
            else:
                mean, spread = (
                    np.full(values.shape[1], values.mean()),
                    np.full(values.shape[1], values.std()),
                )
            np.testing.assert_allclose(norm[name].numpy(), mean, rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(std[name].numpy(), spread, rtol=1e-3)


def test_mfrpn_lf_and_hf_see_the_same_representation(
    runs: dict[str, Path], stores: dict[str, Path]
) -> None:
    """The LF-RPN's data (LF store) and the HF data go through the same transform and
    normalisation: buoyancy and rh at T's and q's places in both."""
    state = checkpoint.load(runs["mfrpn"])
    task = task_from_stores(config_from_dict(state["config"]))
    assert isinstance(task, FeatureTask)
    assert task.inputs.names == ["t", "q", "ps", "solin", "shflx", "lhflx"]  # HF(LF(x)): x only
    for split, store in (("lf_val", "lf"), ("val", "hf")):
        x_raw = torch.cat(raw_inputs(task, stores[store], "val"), dim=1)
        features = task.transform(x_raw)
        t_place = task.inputs.slices["t"]
        assert float(features[:, t_place].max()) < 50.0  # buoyancy in K, not T
        torch.testing.assert_close(task.data[split][0], task.in_norm(features))


# --- raw unchanged, field scaling, errors (tiny synthetic stores) -------------------------------

# The last metrics row of each tiny run (train_stores.run_config, 20 steps, seed 0) as the
# trainer wrote it before representations existed (commit 066acc3): raw must not move them.
BEFORE = {
    "mlp": {"loss": 1.21077335, "val_loss": 0.958244145},
    "rpn": {"loss": 1.56594451, "val_loss": 1.16623179},
    "mfrpn": {
        "loss": 3.91781171,
        "loss_hf": 2.4722538,
        "loss_lf": 1.44555759,
        "val_loss": 1.71138175,
        "val_lf": 1.45158704,
    },
    "mfrpn_bm": {"loss": 2.90658633, "val_loss": 1.94012928},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_stores")
    return {
        "hf": feature_store(root / "hf.zarr", "hf"),
        "lf": feature_store(root / "lf.zarr", "lf", seed=1),
    }


def tiny_config(tmp_path: Path, tiny: dict[str, Path], kind: str, *overrides: str):
    path = write_config(tmp_path / f"{kind}.yaml", run_config(kind, tiny))
    return load_config(path, overrides)


@pytest.mark.parametrize("kind", list(BEFORE))
def test_raw_trains_as_before(tmp_path: Path, tiny: dict[str, Path], kind: str) -> None:
    config = tiny_config(tmp_path, tiny, kind, "model.representation=raw", "model.scaling=level")
    assert train(config, tmp_path / "run", placement=Placement()) == 0
    with (tmp_path / "run" / METRICS_FILE).open() as handle:
        last = list(csv.DictReader(handle))[-1]
    assert int(last["step"]) == 20
    for key, value in BEFORE[kind].items():
        assert float(last[key]) == pytest.approx(value, rel=1e-4), key


def test_field_scaling_pools_each_input_over_its_kept_levels(
    tmp_path: Path, tiny: dict[str, Path]
) -> None:
    task = task_from_stores(tiny_config(tmp_path, tiny, "rpn", "model.scaling=field"))
    assert isinstance(task, FeatureTask)
    split = train_split(tiny["hf"])
    mean, std = (task.inputs.split(v) for v in (task.in_norm.mean, task.in_norm.std))
    for name in ("t", "q", "ps"):
        values = split[name].values.reshape(split.sizes["sample"], -1)
        values = values[:, : task.inputs.select([name]).size].astype(np.float64)
        np.testing.assert_allclose(mean[name].numpy(), values.mean(), rtol=1e-5)
        np.testing.assert_allclose(std[name].numpy(), values.std(), rtol=1e-4)
    # The model file's order check still sees the raw per-level statistics.
    np.testing.assert_allclose(
        task.transform.raw_norm.std[: split.sizes["lev"]].numpy(),
        split["t"].values.std(0),
        rtol=1e-4,
    )


@pytest.mark.parametrize("kind", ["mlp", "rpn", "mfrpn"])
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.representation=warm", "model.representation: expected one of raw, invariant"),
        ("model.scaling=column", "model.scaling: expected one of level, field"),
    ],
)
def test_bad_option_values_name_the_key(
    tmp_path: Path, tiny: dict[str, Path], kind: str, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, tiny, kind, override)


def with_sigma_levels(store: Path, sigma: np.ndarray) -> Path:
    """The store with a lev coordinate as the pipeline writes it (hPa, hybrid sigma)."""
    lev = xr.DataArray(
        1000.0 * sigma,
        dims="lev",
        attrs={"units": "hPa", "standard_name": "atmosphere_hybrid_sigma_pressure_coordinate"},
    )
    for group in ("train", "val", "test"):
        xr.Dataset(coords={"lev": lev}).to_zarr(store, group=group, mode="a", consolidated=False)
    return store


def test_invariant_refuses_what_it_cannot_transform(tmp_path: Path, tiny: dict[str, Path]) -> None:
    invariant = "model.representation=invariant"
    # No lev coordinate: nothing says where the levels are.
    with pytest.raises(
        DataError, match=r"invariant needs each level's pressure: data.store .*'lev'"
    ):
        task_from_stores(tiny_config(tmp_path, tiny, "rpn", invariant))
    leveled = {
        "hf": with_sigma_levels(feature_store(tmp_path / "hf.zarr"), np.linspace(0.95, 0.3, 5)),
        "lf": tiny["lf"],
    }
    # ps is one of the fields p = ps x sigma needs.
    with pytest.raises(DataError, match="model.representation: invariant: .*missing ps"):
        task_from_stores(tiny_config(tmp_path, leveled, "rpn", invariant, "data.inputs=[t, q]"))
    # The LF store's T and q are transformed too: it needs the same levels.
    with pytest.raises(DataError, match=r"data.lf_store .*lf.zarr: group 'train' has no 'lev'"):
        task_from_stores(tiny_config(tmp_path, leveled, "mfrpn", invariant))
    with_sigma_levels(feature_store(tmp_path / "lf.zarr", "lf", seed=1), np.linspace(0.9, 0.3, 5))
    leveled["lf"] = tmp_path / "lf.zarr"
    with pytest.raises(DataError, match="its lev differs from data.store's"):
        task_from_stores(tiny_config(tmp_path, leveled, "mfrpn", invariant))
    # Where they agree, the tiny MF-RPN builds with buoyancy and rh in place of T and q.
    with_sigma_levels(leveled["lf"], np.linspace(0.95, 0.3, 5))
    task = task_from_stores(tiny_config(tmp_path, leveled, "mfrpn", invariant))
    assert isinstance(task, FeatureTask)
    assert task.transform.features(task.inputs).names == ["buoyancy", "rh", "ps"]


def test_streamed_batches_are_transformed_as_in_memory(
    runs: dict[str, Path], stores: dict[str, Path]
) -> None:
    config = config_from_dict(checkpoint.load(runs["rpn"])["config"])
    memory = task_from_stores(config)
    streamed = task_from_stores(config, "streaming")
    assert isinstance(memory, FeatureTask) and isinstance(streamed, FeatureTask)
    assert streamed.spec["transform"] == memory.spec["transform"]
    assert streamed.spec["in_norm"] == memory.spec["in_norm"]
    streamed.prepare(torch.device("cpu"), 0, config.members, 0, 1)
    try:
        rows, x, _ = streamed.streams["train"].batch(0)
    finally:
        streamed.close()
    raw = torch.cat(raw_inputs(memory, stores["hf"], "train"), dim=1)[rows]
    torch.testing.assert_close(x, memory.in_norm(memory.transform(raw)))


@pytest.mark.usefixtures("bindings")
def test_invariant_file_through_the_fortran_bridge(
    runs: dict[str, Path], stores: dict[str, Path]
) -> None:
    """The host passes the raw fields through the bridge as before; the file transforms them."""
    from paramlib.fortran.bridge import FortranModel

    path = runs["rpn"] / MODEL_FILE
    state = checkpoint.load(runs["rpn"])
    task = task_from_spec(config_from_dict(state["config"]), state["spec"])
    inputs = raw_inputs(task, stores["hf"], "test")  # +4K columns
    with torch.no_grad():
        expected = torch.jit.load(str(path))(*inputs)
    with FortranModel(path) as model:
        for name, value in zip(task.inputs.names, inputs, strict=True):
            array = value.numpy()
            model.set_input(name, array[:, 0] if array.shape[1] == 1 else array)
        assert model.forward() == 0
        for field, want in zip(model.outputs, expected, strict=True):
            got = torch.from_numpy(model.get_output(field.name))
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
