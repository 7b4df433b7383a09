"""paramlib.models: vectorized ensembles, RPN prior and bootstrap, MF-RPN compositions and
loss, normalisation by field names, and export as model files (small widths: fast)."""

from pathlib import Path

import pytest
import torch
from torch import nn

from paramlib.export import FieldSpec, load_metadata, save
from paramlib.models import (
    MFRPN,
    RPN,
    BootstrapSampler,
    EnsembleMLP,
    FieldLayout,
    Normaliser,
    ensemble_mse,
    export_module,
    mf_loss,
    mf_statistics,
    store_fields,
    store_normalisation,
)
from paramlib.models.mfrpn import COMPOSITIONS
from paramlib.models.mlp import LEAKY_SLOPE

M, B = 4, 6


def member_stack(net: EnsembleMLP, m: int) -> nn.Sequential:
    """Member m as separate nn.Linear layers with copied weights."""
    layers: list[nn.Module] = []
    for layer in net.layers:
        linear = nn.Linear(*layer.weight.shape[1:])
        with torch.no_grad():
            linear.weight.copy_(layer.weight[m].T)
            linear.bias.copy_(layer.bias[m, 0])
        layers += [linear, nn.LeakyReLU(LEAKY_SLOPE)]
    return nn.Sequential(*layers[:-1])


def test_vectorized_ensemble_equals_a_loop_over_members() -> None:
    net = EnsembleMLP.create(5, 3, [7, 6], M, seed=3)
    with torch.no_grad():  # non-zero biases, so that the bias path is checked too
        for layer in net.layers:
            layer.bias.normal_()
    shared, own = torch.randn(B, 5), torch.randn(M, B, 5)
    out_shared, out_own = net(shared), net(own)
    assert out_shared.shape == out_own.shape == (M, B, 3)
    for m in range(M):
        reference = member_stack(net, m)
        torch.testing.assert_close(out_shared[m], reference(shared), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(out_own[m], reference(own[m]), atol=1e-6, rtol=1e-6)


def test_rpn_is_trainable_plus_scaled_prior() -> None:
    rpn = RPN.create(5, 3, [8], M, prior_scale=0.5)
    x = torch.randn(B, 5)
    expected = torch.stack(
        [member_stack(rpn.trainable, m)(x) + 0.5 * member_stack(rpn.prior, m)(x) for m in range(M)]
    )
    torch.testing.assert_close(rpn(x), expected, atol=1e-6, rtol=1e-6)


def test_prior_gets_no_gradient_and_stays_fixed_through_an_optimizer_step() -> None:
    rpn = RPN.create(5, 3, [8, 8], M)
    prior = {k: v.clone() for k, v in rpn.prior.state_dict().items()}
    trainable = {k: v.clone() for k, v in rpn.trainable.state_dict().items()}
    assert not list(rpn.prior.parameters())  # buffers: no optimizer can pick them up
    assert {id(p) for p in rpn.parameters()} == {id(p) for p in rpn.trainable.parameters()}
    optimizer = torch.optim.Adam(rpn.parameters(), lr=1e-2)
    loss = ensemble_mse(rpn(torch.randn(M, B, 5)), torch.randn(M, B, 3))
    loss.backward()
    optimizer.step()
    assert all(not b.requires_grad and b.grad is None for b in rpn.prior.buffers())
    for key, value in rpn.prior.state_dict().items():
        assert torch.equal(value, prior[key]), key
    assert any(not torch.equal(v, trainable[k]) for k, v in rpn.trainable.state_dict().items())


def test_members_differ_at_init_and_slices_join_into_the_whole() -> None:
    rpn = RPN.create(5, 3, [8, 8], M, seed=1)
    for net in (rpn.trainable, rpn.prior):
        for layer in net.layers:
            w = layer.weight
            assert all(not torch.equal(w[i], w[j]) for i in range(M) for j in range(i))
    assert not torch.equal(rpn.trainable.layers[1].weight, rpn.prior.layers[1].weight)
    other_seed = RPN.create(5, 3, [8, 8], M, seed=2)
    assert not torch.equal(rpn.trainable.layers[0].weight, other_seed.trainable.layers[0].weight)
    # Member-parallel ranks build slices that join into the ensemble one process builds.
    parts = [RPN.create(5, 3, [8, 8], 2, seed=1, first_member=f) for f in (0, 2)]
    joined = RPN.cat(parts)
    for key, value in rpn.state_dict().items():
        assert torch.equal(joined.state_dict()[key], value), key


def test_bootstrap_subsets_are_80_percent_distinct_and_deterministic() -> None:
    n, batch = 50, 8
    sampler = BootstrapSampler(n, M, seed=7)
    subsets = sampler.subsets
    assert subsets.shape == (M, 40)
    for m in range(M):
        assert len(set(subsets[m].tolist())) == 40  # without replacement
        assert 0 <= int(subsets[m].min()) and int(subsets[m].max()) < n
    assert len({tuple(sorted(s.tolist())) for s in subsets}) == M  # one subset per member
    assert BootstrapSampler(n, M, fraction=0.5, seed=7).subsets.shape == (M, 25)

    steps = sampler.steps_per_epoch(batch)
    epoch = torch.cat([sampler.batch(step, batch) for step in range(steps)], dim=1)
    assert epoch.shape == (M, steps * batch)
    for m in range(M):
        drawn = epoch[m].tolist()
        assert len(set(drawn)) == len(drawn)  # no repeat within an epoch
        assert set(drawn) <= set(subsets[m].tolist())  # only the member's own rows
    # The next epoch is another order of the same subsets.
    assert not torch.equal(sampler.batch(steps, batch), sampler.batch(0, batch))

    # Same seed, same batches, whatever came before (a resumed run needs only the step).
    fresh = BootstrapSampler(n, M, seed=7)
    assert torch.equal(fresh.batch(steps + 2, batch), sampler.batch(steps + 2, batch))
    assert torch.equal(fresh.batch(1, batch), sampler.batch(1, batch))
    assert not torch.equal(BootstrapSampler(n, M, seed=8).subsets, subsets)
    # A member-parallel rank's slice draws what the whole ensemble draws for its members.
    part = BootstrapSampler(n, 2, seed=7, first_member=2)
    assert torch.equal(part.subsets, subsets[2:])
    assert torch.equal(part.batch(steps + 1, batch), sampler.batch(steps + 1, batch)[2:])
    with pytest.raises(ValueError, match="batch_size"):
        sampler.batch(0, 41)


N_X, N_BM, N_Y = 5, 3, 4


def make_mfrpn(composition: str) -> MFRPN:
    n_bm = N_BM if composition == "hf_of_bm_and_x" else 0
    return MFRPN.create(composition, N_X, N_Y, n_bm=n_bm, hidden=[8, 8], members=M, seed=0)


def gradients(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_mf_compositions_shapes_and_gradients(composition: str) -> None:
    model = make_mfrpn(composition)
    n_in = N_X + (N_BM if composition == "hf_of_bm_and_x" else 0)
    x_hf, y_hf = torch.randn(M, B, n_in), torch.randn(M, B, N_Y)
    x_lf, y_lf = torch.randn(M, 2 * B, N_X), torch.randn(M, 2 * B, N_Y)
    assert model(x_hf).shape == (M, B, N_Y)
    assert model(x_hf[0]).shape == (M, B, N_Y)  # one batch for every member

    if model.lf is None:  # physics in the loop: no LF network, the loss is MSE_HF
        loss = mf_loss(model, x_hf, y_hf)
        assert loss.lf is None and torch.equal(loss.total, loss.hf)
        with pytest.raises(ValueError, match="no LF-RPN"):
            mf_loss(model, x_hf, y_hf, x_lf, y_lf)
        loss.total.backward()
        assert all(g.abs().sum() > 0 for g in gradients(model.hf))
        return

    grads = {}
    for alpha in (0.0, 0.5):
        model.zero_grad()
        loss = mf_loss(model, x_hf, y_hf, x_lf, y_lf, alpha=alpha)
        loss.total.backward()
        grads[alpha] = (gradients(model.lf), gradients(model.hf))
    model.zero_grad()
    ensemble_mse(model.lf(x_lf), y_lf).backward()
    lf_alone = gradients(model.lf)
    # MSE_HF reaches the LF-RPN through its prediction; alpha adds alpha x the LF term's.
    assert all(g.abs().sum() > 0 for g in grads[0.0][0] + grads[0.0][1])
    for g0, g1, gl in zip(grads[0.0][0], grads[0.5][0], lf_alone, strict=True):
        torch.testing.assert_close(g1 - g0, 0.5 * gl, atol=1e-6, rtol=1e-4)
    for g0, g1 in zip(grads[0.0][1], grads[0.5][1], strict=True):
        torch.testing.assert_close(g0, g1)  # the LF term does not touch the HF-RPN


@pytest.mark.parametrize("composition", ["hf_of_lf", "hf_of_lf_and_x"])
def test_hf_member_i_takes_lf_member_i(composition: str) -> None:
    model = make_mfrpn(composition)
    x = torch.randn(B, N_X)
    before = model(x).detach()
    with torch.no_grad():
        model.lf.trainable.layers[0].weight[1] += 1.0  # change LF member 1 only
    changed = (model(x).detach() - before).abs().amax(dim=(1, 2))
    assert changed[1] > 0 and torch.all(changed[[0, 2, 3]] == 0)


def test_mf_member_counts_must_pair() -> None:
    lf = RPN.create(N_X, N_Y, [8], 3)
    hf = RPN.create(N_Y, N_Y, [8], 4)
    with pytest.raises(ValueError, match="pair"):
        MFRPN(hf, lf, "hf_of_lf", N_X)


def test_mf_statistics_normalise_with_lf_by_default() -> None:
    lf = {"t": {"mean": [1.0], "std": [2.0]}, "heating": {"mean": [3.0], "std": [4.0]}}
    hf = {"t": {"mean": [5.0], "std": [6.0]}, "bm_heating": {"mean": [7.0], "std": [8.0]}}
    table = mf_statistics(lf, hf)
    assert table["t"] == lf["t"] and table["bm_heating"] == lf["heating"]
    assert mf_statistics(lf, hf, source="hf") == hf


LAYOUT = FieldLayout(
    (FieldSpec("t", "K", 3), FieldSpec("q", "kg kg-1", 2), FieldSpec("ps", "Pa", 1))
)


def test_layout_flattens_by_name_and_splits_back() -> None:
    data = {"ps": torch.tensor([1e5, 9e4]), "t": torch.rand(2, 3), "q": torch.rand(2, 4)}
    flat = LAYOUT.flatten(data, crop_top=True)  # q held on 4 levels, the layout keeps 2
    assert flat.shape == (2, 6)
    assert torch.equal(flat[:, LAYOUT.slices["q"]], data["q"][:, :2])
    assert torch.equal(flat[:, 5], data["ps"])
    parts = LAYOUT.split(flat)
    assert list(parts) == ["t", "q", "ps"] and torch.equal(parts["t"], data["t"])
    with pytest.raises(ValueError, match="expected 2 levels"):
        LAYOUT.flatten(data)
    with pytest.raises(KeyError, match="'ps' missing"):
        LAYOUT.flatten({"t": data["t"], "q": data["q"][:, :2]})


def test_normaliser_round_trip_and_std_floor() -> None:
    stats = {
        "t": {"mean": [280.0, 270.0, 260.0, 250.0], "std": [10.0, 5.0, 0.0, 1.0]},
        "q": {"mean": [1e-2, 1e-3], "std": [1e-3, 1e-4]},
        "ps": {"mean": [1e5], "std": [0.0]},
    }
    norm = Normaliser.from_stats(LAYOUT, stats, std_floor=1e-3)
    # The layout's 3 levels of t are the lowest 3 of the statistics' 4.
    torch.testing.assert_close(norm.mean[:3], torch.tensor([280.0, 270.0, 260.0]))
    assert norm.std[2] == pytest.approx(1e-2)  # floored to 1e-3 x the field's largest std
    assert norm.std[5] == 1.0  # a constant field
    x = torch.tensor([[290.0, 260.0, 255.0, 1.1e-2, 1.2e-3, 1.01e5]])
    torch.testing.assert_close(norm.denormalise(norm(x)), x)
    torch.testing.assert_close(norm(x)[0, 0], torch.tensor(1.0))


def test_store_fields_and_statistics_come_from_the_store(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    train = root.create_group("train")
    for name, shape, units in (
        ("t", (4, 3), "K"),
        ("ps", (4,), "Pa"),
        ("heating", (4, 3), "K s-1"),
    ):
        array = train.create_array(name, shape=shape, dtype="float32")
        array.attrs.update({"units": units, "long_name": f"the {name}"})
    stats = {"t": {"mean": [1, 2, 3], "std": [1, 1, 1]}}
    root.attrs.update({"inputs": ["t", "ps"], "targets": ["heating"], "normalisation": stats})

    inputs = store_fields(root, "inputs", nlev={"t": 2})
    assert [(f.name, f.units, f.nlev, f.long_name) for f in inputs.fields] == [
        ("t", "K", 2, "the t"),
        ("ps", "Pa", 1, "the ps"),
    ]
    assert store_fields(tmp_path / "s.zarr", "targets").names == ["heating"]
    assert store_normalisation(root) == stats
    with pytest.raises(ValueError, match="nlev 4"):
        store_fields(root, ["t"], nlev={"t": 4})


IN_STATS = {
    "t": {"mean": [280.0] * 3, "std": [10.0] * 3},
    "q": {"mean": [1e-2] * 2, "std": [1e-3] * 2},
    "ps": {"mean": [1e5], "std": [1e3]},
    "bm_heating": {"mean": [0.0] * 2, "std": [2e-5] * 2},
}
OUTPUTS = FieldLayout((FieldSpec("heating", "K s-1", 2), FieldSpec("precip", "mm s-1", 1)))
OUT_STATS = {
    "heating": {"mean": [0.0] * 2, "std": [1e-5] * 2},
    "precip": {"mean": [1e-4], "std": [1e-4]},
}


def physical_inputs(layout: FieldLayout, ncol: int) -> list[torch.Tensor]:
    return [
        torch.tensor(IN_STATS[f.name]["mean"])
        + torch.tensor(IN_STATS[f.name]["std"]) * torch.randn(ncol, f.nlev)
        for f in layout.fields
    ]


@pytest.mark.parametrize("output", ["members", "mean", "mean_spread", "member"])
def test_exported_rpn_round_trips_through_a_model_file(tmp_path: Path, output: str) -> None:
    rpn = RPN.create(LAYOUT.size, OUTPUTS.size, [8, 8], M, seed=5)
    in_norm = Normaliser.from_stats(LAYOUT, IN_STATS)
    out_norm = Normaliser.from_stats(OUTPUTS, OUT_STATS)
    columns = physical_inputs(LAYOUT, 7)
    seen = LAYOUT.value_range(torch.cat(columns, dim=1))
    module, metadata = export_module(
        rpn,
        LAYOUT,
        OUTPUTS,
        in_norm,
        out_norm,
        output=output,
        member=2,
        valid_range=seen,
        provenance={"seed": 5},
    )
    path = save(module, tmp_path / "rpn.pt", metadata)
    loaded = torch.jit.load(str(path))
    written = load_metadata(path)
    # One member exported is one member's weights and work, not M.
    weight = loaded.state_dict()["net.trainable.layers.0.weight"]
    assert weight.shape[0] == (1 if output == "member" else M)
    assert written["valid_range"]["ps"]["min"] == [float(columns[2].min())]
    with torch.no_grad():
        members = out_norm.denormalise(rpn(in_norm(torch.cat(columns, dim=1))))
    expected = {
        "members": members,
        "mean": members.mean(0),
        "member": members[2],
        "mean_spread": torch.cat([members.mean(0), members.std(0)], dim=-1),
    }[output]
    result = loaded(*columns)
    result = torch.cat(result, dim=-1) if isinstance(result, tuple) else result
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))

    names = [f["name"] for f in written["outputs"]]
    assert [f["name"] for f in written["inputs"]] == ["t", "q", "ps"]
    assert written["ensemble_size"] == (M if output == "members" else 1)
    assert names == (
        ["heating", "precip", "heating_spread", "precip_spread"]
        if output == "mean_spread"
        else ["heating", "precip"]
    )
    assert written["provenance"]["seed"] == 5 and written["provenance"]["output"] == output


def test_exported_mfrpn_takes_bm_fields_as_named_inputs(tmp_path: Path) -> None:
    inputs = LAYOUT + FieldLayout((FieldSpec("bm_heating", "K s-1", 2),))
    model = MFRPN.create("hf_of_bm_and_x", LAYOUT.size, OUTPUTS.size, n_bm=2, hidden=[8], members=M)
    in_norm, out_norm = (
        Normaliser.from_stats(inputs, IN_STATS),
        Normaliser.from_stats(OUTPUTS, OUT_STATS),
    )
    module, metadata = export_module(
        model, inputs, OUTPUTS, in_norm, out_norm, output="mean", model_kind="mfrpn"
    )
    loaded = torch.jit.load(str(save(module, tmp_path / "mf.pt", metadata)))
    columns = physical_inputs(inputs, 5)
    with torch.no_grad():
        expected = out_norm.denormalise(model(in_norm(torch.cat(columns, dim=1)))).mean(0)
    heating, precip = loaded(*columns)
    torch.testing.assert_close(torch.cat([heating, precip], dim=-1), expected)
    assert [f["name"] for f in load_metadata(tmp_path / "mf.pt")["inputs"]][-1] == "bm_heating"


def test_export_leaves_the_trained_model_alone_and_checks_its_arguments() -> None:
    rpn = RPN.create(LAYOUT.size, OUTPUTS.size, [8], M).train()
    in_norm, out_norm = (
        Normaliser.from_stats(LAYOUT, IN_STATS),
        Normaliser.from_stats(OUTPUTS, OUT_STATS),
    )
    weight = rpn.trainable.layers[0].weight
    export_module(rpn, LAYOUT, OUTPUTS, in_norm, out_norm, compute_dtype=torch.bfloat16)
    assert rpn.training and weight.dtype == torch.float32 and weight.requires_grad
    with pytest.raises(ValueError, match="member"):
        export_module(rpn, LAYOUT, OUTPUTS, in_norm, out_norm, output="member", member=M)
    with pytest.raises(ValueError, match="features"):
        export_module(rpn, LAYOUT, OUTPUTS, out_norm, in_norm)
    deterministic = EnsembleMLP.create(LAYOUT.size, OUTPUTS.size, [8], members=1)
    _, metadata = export_module(deterministic, LAYOUT, OUTPUTS, in_norm, out_norm, model_kind="mlp")
    assert metadata.ensemble_size == 1
    with pytest.raises(ValueError, match="at least 2"):
        export_module(deterministic, LAYOUT, OUTPUTS, in_norm, out_norm, output="mean_spread")
