"""``paramlib export``: model files from training checkpoints, checked against the trained
model in memory (Python) and through the Fortran bridge (paramlib.fortran.bridge)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from train_stores import bilstm_store, feature_store, run_config, write_config

from paramlib import cli
from paramlib.export import load_metadata
from paramlib.models.bilstm import BiLSTMExport
from paramlib.train import checkpoint
from paramlib.train.config import config_from_dict, load_config
from paramlib.train.distributed import Placement
from paramlib.train.loop import MODEL_FILE, train, trained_network
from paramlib.train.tasks import FeatureTask, task_from_spec

TOLERANCE = 1e-5  # relative to each output's largest magnitude


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained RPN (3 members) and a trained Bi-LSTM: their run directories."""
    root = tmp_path_factory.mktemp("export_cli")
    stores = {
        "hf": feature_store(root / "hf.zarr", "hf"),
        "bilstm": bilstm_store(root / "bilstm.zarr"),
    }
    dirs = {}
    for kind in ("rpn", "bilstm"):
        path = write_config(root / f"{kind}.yaml", run_config(kind, stores, steps=12))
        assert train(load_config(path), root / kind, placement=Placement()) == 0
        dirs[kind] = root / kind
    return dirs


def store_inputs(run_dir: Path, names: list[str], nlev: list[int]) -> list[torch.Tensor]:
    """The validation columns of the run's store, physical units, as (ncol, nlev) inputs."""
    state = checkpoint.load(run_dir)
    group = zarr.open_group(state["config"]["data"]["store"], mode="r")["val"]
    columns = [np.asarray(group[n][:], np.float32) for n in names]
    return [
        torch.from_numpy(c.reshape(len(c), -1)[:, :k]) for c, k in zip(columns, nlev, strict=True)
    ]


def export(*args: str) -> int:
    return cli.main(["export", *args])


def as_tuple(result: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    assert scale > 0, "the reference output is all zeros: the comparison would prove nothing"
    assert float((actual - expected).abs().max()) <= TOLERANCE * scale


def rpn_reference(run_dir: Path) -> tuple[FeatureTask, list[torch.Tensor], torch.Tensor]:
    """(task, physical inputs, every member's physical prediction) from the checkpoint."""
    state = checkpoint.load(run_dir)
    task = task_from_spec(config_from_dict(state["config"]), state["spec"])
    assert isinstance(task, FeatureTask)
    inputs = store_inputs(run_dir, task.inputs.names, task.inputs.nlevs)
    net = trained_network(task, state)
    with torch.no_grad():
        members = task.out_norm.denormalise(net(task.in_norm(torch.cat(inputs, dim=1))))
    return task, inputs, members


@pytest.mark.parametrize("output", ["mean_spread", "members", "mean", "member"])
def test_exported_rpn_equals_the_trained_model(
    runs: dict[str, Path], tmp_path: Path, output: str
) -> None:
    path = tmp_path / f"{output}.pt"
    member = ["--member", "1"] if output == "member" else []
    assert export(str(runs["rpn"]), "--out", str(path), "--output", output, *member) == 0
    task, inputs, members = rpn_reference(runs["rpn"])

    def fields(y: torch.Tensor) -> list[torch.Tensor]:
        return list(task.outputs.split(y).values())

    expected = {
        "members": fields(members),
        "mean": fields(members.mean(0)),
        "member": fields(members[1]),
        "mean_spread": fields(members.mean(0)) + fields(members.std(0)),
    }[output]
    with torch.no_grad():
        result = as_tuple(torch.jit.load(str(path))(*inputs))
    assert len(result) == len(expected)
    for got, want in zip(result, expected, strict=True):
        assert_close(got, want)


def test_model_file_metadata_ranges_and_provenance(runs: dict[str, Path]) -> None:
    meta = load_metadata(runs["rpn"] / MODEL_FILE)  # written at the end of training
    state = checkpoint.load(runs["rpn"])
    assert meta["model_kind"] == "rpn" and meta["ensemble_size"] == 1
    assert [f["name"] for f in meta["inputs"]] == ["t", "q", "ps"]
    assert [f["nlev"] for f in meta["inputs"]] == [5, 4, 1]  # data.nlev: {q: 4}
    assert [f["name"] for f in meta["outputs"]][3:] == [
        "heating_spread",
        "moistening_spread",
        "precip_spread",
    ]
    train = zarr.open_group(state["config"]["data"]["store"], mode="r")["train"]
    q = np.asarray(train["q"][:])[:, :4]
    np.testing.assert_allclose(meta["valid_range"]["q"]["min"], q.min(0), rtol=1e-6)
    np.testing.assert_allclose(meta["valid_range"]["ps"]["max"], [train["ps"][:].max()], rtol=1e-6)
    provenance = meta["provenance"]
    assert provenance["config"]["model"]["members"] == 3
    assert provenance["stores"]["train"]["fingerprint"] == "tiny-hf"
    assert provenance["steps"] == 12 and provenance["output"] == "mean_spread"
    assert "git_commit" in provenance and provenance["seed"] == 0


def bilstm_reference(run_dir: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    state = checkpoint.load(run_dir)
    task = task_from_spec(config_from_dict(state["config"]), state["spec"])
    specs = task.bilstm.inputs  # type: ignore[attr-defined]
    inputs = store_inputs(run_dir, [s.name for s in specs], [s.nlev for s in specs])
    # The in-memory emulator with its post-processing, run eagerly.
    with torch.no_grad():
        expected = BiLSTMExport(trained_network(task, state)).forward_fields(inputs)
    return inputs, expected


def test_exported_bilstm_equals_the_trained_emulator(runs: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "bilstm.pt"
    assert export(str(runs["bilstm"] / "checkpoint.pt"), "--out", str(path)) == 0
    meta = load_metadata(path)
    assert meta["model_kind"] == "bilstm_mskf"
    assert [f["name"] for f in meta["outputs"]] == ["rthcuten", "pratec", "nca"]
    assert meta["provenance"]["stores"]["train"]["fingerprint"] == "tiny-bilstm"
    inputs, expected = bilstm_reference(runs["bilstm"])
    with torch.no_grad():
        result = torch.jit.load(str(path))(*inputs)
    assert float(expected[2].abs().max()) > 0  # some columns triggered: nca non-zero
    for got, want in zip(result, expected, strict=True):
        if float(want.abs().max()) > 0:
            assert_close(got, want)
        else:
            assert torch.equal(got, want)


def test_export_refuses_bad_requests(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x.pt")
    assert export(str(tmp_path / "nothing"), "--out", out) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert export(str(runs["rpn"]), "--out", out, "--output", "mean", "--member", "1") == 2
    assert "--member goes with --output member" in capsys.readouterr().err
    assert export(str(runs["rpn"]), "--out", out, "--member", "3") == 2  # 3 members: 0 .. 2
    assert "member" in capsys.readouterr().err
    assert export(str(runs["bilstm"]), "--out", out, "--output", "members") == 2
    assert "Bi-LSTM exports one model" in capsys.readouterr().err
    assert not Path(out).exists()


@pytest.mark.usefixtures("bindings")
@pytest.mark.parametrize("kind", ["rpn", "bilstm"])
def test_exported_files_through_the_fortran_bridge(
    runs: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    from paramlib.fortran.bridge import FortranModel

    path = runs[kind] / MODEL_FILE
    names = [f["name"] for f in load_metadata(path)["inputs"]]
    if kind == "rpn":
        _, inputs, _ = rpn_reference(runs[kind])
    else:
        inputs, _ = bilstm_reference(runs[kind])
    with torch.no_grad():
        expected = as_tuple(torch.jit.load(str(path))(*inputs))
    with FortranModel(path) as model:
        for name, value in zip(names, inputs, strict=True):
            array = value.numpy()
            model.set_input(name, array[:, 0] if array.shape[1] == 1 else array)
        assert model.forward() == 0
        for field, want in zip(model.outputs, expected, strict=True):
            got = torch.from_numpy(model.get_output(field.name))
            if float(want.abs().max()) > 0:
                assert_close(got, want)
            else:
                assert torch.equal(got, want)
