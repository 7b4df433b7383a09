"""The medium study's commands at the small size: `paramlib evaluate --compare --work DIR` from
the testbed to the report, then `paramlib couple study --work DIR` coupling its runs online."""

import json
import shutil
from pathlib import Path

import pytest

from paramlib import cli
from paramlib.evaluate.compare import COMPARED


@pytest.fixture(scope="module")
def study(small_testbed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small study for seed 0: the session's small testbed copied in (the study keeps a
    testbed of its size and seed), stores, every compared config trained, the report."""
    work = tmp_path_factory.mktemp("study") / "work"
    shutil.copytree(small_testbed, work / "testbed")
    argv = ["evaluate", "--compare", "--variant", "small", "--work", str(work), "--seeds", "0"]
    assert cli.main(argv) == 0
    return work


def test_offline_study_from_nothing(study: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in (study / "stores").glob("*.zarr")) == [
        "mfrpn_hf_oracle_testbed.zarr",
        "mfrpn_hf_testbed.zarr",
        "mfrpn_lf_testbed.zarr",
    ]
    assert sorted(p.name for p in (study / "runs").iterdir()) == sorted(dict(COMPARED))
    comparison = json.loads((study / "report" / "metrics.json").read_text())["comparison"]
    assert set(comparison["gap_closed"]) == set(dict(COMPARED)) - {"rpn_hf_only", "rpn_oracle"}
    timings = json.loads((study / "timings.json").read_text())
    assert set(timings) == {"testbed", "stores", "training and evaluation", "total"}
    # --out belongs to the study's folder with --work
    argv = ["evaluate", "--compare", "--work", str(study), "--out", str(tmp_path / "elsewhere")]
    assert cli.main(argv) == 2


def test_online_study_of_its_runs(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every mode of the HF-only RPN, with its OOD-calibrated file in hybrid and its members
    file in stochastic, beside Betts-Miller, in both climates; the summary over seeds."""
    argv = ["couple", "study", "--work", str(study), "--seeds", "0", "--models", "rpn_hf_only"]
    assert cli.main([*argv, "--columns", "4", "--days", "1"]) == 0
    online = study / "online"
    assert (online / "ood" / "rpn_hf_only-seed0" / "model.pt").is_file()
    # The hybrid's threshold was set on the historical ml run's own scores (--ood host).
    host = json.loads((online / "ood" / "rpn_hf_only-seed0-host" / "ood.json").read_text())["host"]
    assert host["outputs"] == [str(online / "seed0" / "rpn_hf_only-historical-ml" / "scm.nc")]
    # 4 columns x 24 records (72 steps of 20 minutes in the day, a record every 3)
    assert host["fallback"] <= 0.05 and host["records"] == 4 * 24
    assert (online / "members" / "rpn_hf_only-seed0.pt").is_file()
    summary = json.loads((online / "summary.json").read_text())
    runs = {(entry["run"], entry["scenario"]) for entry in summary}
    expected = {"Betts-Miller physics"} | {
        f"rpn_hf_only {m}" for m in ("ml", "hybrid", "stochastic")
    }
    assert runs == {(r, sc) for r in expected for sc in ("historical", "plus4k")}
    for entry in summary:
        assert entry["seeds"] == [0] and entry["days"]["mean"] > 0
        fallback = entry["fallback"]["mean"]
        assert fallback == 0 if entry["run"].endswith(("ml", "physics")) else fallback is not None
    assert "| rpn_hf_only hybrid | plus4k |" in capsys.readouterr().out
    # No trained runs there: one line naming what is missing
    assert cli.main(["couple", "study", "--work", str(study / "nothing")]) == 2
