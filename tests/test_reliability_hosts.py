"""Issue 12, the hosts: bad input to paramlib_scm, `paramlib couple` and the WRF cumulus plugin
gets one clear line naming what was wrong and a non-zero exit, never a traceback, a silently
truncated path or a NaN passed on as a result. (The coupled runs' NaN, missing-model and
level-count cases are in tests/test_couple.py, beside the fixtures they share.)"""

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from paramlib.cli import main
from paramlib.couple import inputs, scm
from paramlib.couple.inputs import CoupleError, Coupling, RunSetup
from paramlib.couple.synthetic import synthetic_model

CLIMATE = inputs.TestbedClimate(bm_tau=28800.0, bm_rh=0.55, sst_ref=299.0, spin_up_days=0.25)
SETUP = RunSetup(ncol=4, days=0.25, dt_s=1200.0, output_every=3)
PATH_LEN = 1024  # scm_config.f90: paths of at most PATH_LEN - 1 characters


@pytest.fixture
def namelist(tmp_path: Path) -> Path:
    """A physics run's namelist and columns file (the run itself done once)."""
    try:
        scm.executable()
    except CoupleError as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))
    scm.run_coupled(tmp_path, "historical", Coupling(), setup=SETUP, climate=CLIMATE)
    return tmp_path / scm.NAMELIST_FILE


def with_entry(namelist: Path, key: str, value: str) -> Path:
    """The namelist with ``key = 'value'`` (every key is in the one run_coupled writes)."""
    text = namelist.read_text()
    assert f"  {key} = " in text, key
    lines = [
        f"  {key} = '{value}'" if line.strip().startswith(f"{key} =") else line
        for line in text.splitlines()
    ]
    namelist.write_text("\n".join(lines) + "\n")
    return namelist


def run_program(namelist: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(scm.executable()), namelist],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


@pytest.mark.parametrize("command", ["run", "reference", "report"])
def test_couple_out_that_cannot_be_a_folder_is_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `couple run --out FILE` ended in a FileExistsError traceback."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    arguments = {
        "run": ["--scenario", "historical", "--mode", "physics"],
        "reference": ["--scenario", "historical"],
        "report": [str(tmp_path / "some_run")],
    }[command]
    for out, expected in ((a_file, "is not a folder"), (a_file / "run", "is a file, so")):
        assert main(["couple", command, *arguments, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"paramlib couple {command}: --out {out}") and expected in err
        assert "\n" not in err and "Traceback" not in err
    assert a_file.read_text() == "mine"


def test_scm_output_in_a_missing_folder_says_so(namelist: Path, tmp_path: Path) -> None:
    """Before: netCDF's "Permission denied" for a folder that does not exist."""
    output = tmp_path / "no_such_folder" / "scm.nc"
    with pytest.raises(CoupleError) as error:
        scm.run_scm(with_entry(namelist, "output_file", str(output)))
    message = str(error.value)
    assert f"output_file {output}: its folder does not exist" in message
    assert "Permission denied" not in message


@pytest.mark.parametrize(
    ("key", "group"),
    [("output_file", "&scm_run"), ("columns_file", "&scm_run"), ("model_path", "&scm_coupling")],
)
def test_scm_paths_longer_than_their_buffer_are_refused(
    namelist: Path, tmp_path: Path, key: str, group: str
) -> None:
    """Before: a path of 1024 characters or more was cut to 1024 and used (another file)."""
    folder = tmp_path.joinpath(*["d" * 200] * 4)
    folder.mkdir(parents=True)
    long_path = str(folder / ("f" * (PATH_LEN + 10 - len(str(folder)))))
    result = run_program(str(with_entry(namelist, key, long_path)))
    assert result.returncode == 1
    assert f"{group}: {key} is longer than {PATH_LEN - 1} characters" in result.stderr
    assert not any(folder.iterdir())  # nothing written under a cut name


def test_scm_namelist_path_longer_than_its_buffer_is_refused(namelist: Path) -> None:
    # The same file through a path of 1100 characters ("/./" repeated).
    long_path = str(namelist.parent) + "/." * 550 + "/" + namelist.name
    assert Path(long_path).is_file()
    result = run_program(long_path)
    assert result.returncode == 1
    assert f"the namelist path is longer than {PATH_LEN} characters" in result.stderr


def test_scm_model_pinned_by_sha256(namelist: Path, tmp_path: Path) -> None:
    """&scm_coupling model_sha256: a file that differs from the pinned hash is never loaded."""
    model = synthetic_model(tmp_path / "rpn.pt", members=2, hidden=[8])
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    with_entry(namelist, "mode", "ml")
    with_entry(namelist, "model_path", str(model))
    with_entry(namelist, "model_sha256", "0" * 64)
    with pytest.raises(CoupleError, match=r"set-up: .*rpn\.pt.*" + "0" * 64):
        scm.run_scm(namelist)
    result = scm.run_scm(with_entry(namelist, "model_sha256", digest.upper()))
    assert result.open().attrs["run_status"] == "completed"
