"""The data catalog (schema, validation, paths under the data root), the reader registry and
`paramlib catalog list | show | validate`."""

import os
import subprocess
import sysconfig
import textwrap
from pathlib import Path

import pytest
import xarray as xr

from paramlib import catalog, paths
from paramlib.catalog import CatalogError, load_catalog, resolve_paths
from paramlib.data import readers
from paramlib.data.readers import SourceError, open_source, register_reader

SCRIPT = Path(sysconfig.get_path("scripts")) / "paramlib"
WRF_RUNS = ("wrf_mskf_ctl", "wrf_mskf_qv090", "wrf_mskf_qv110", "wrf_mskf_shear2x")

ENTRY = """\
entries:
  toy:
    description: a toy entry
    format: zarr
    fidelity: low
    scenario: historical
    paths: [toy/*.nc]
"""


def write_catalog(directory: Path, text: str, name: str = "toy.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data root holding toy/a.nc and toy/b.nc."""
    root = tmp_path / "data"
    (root / "toy").mkdir(parents=True)
    for name in ("b.nc", "a.nc"):
        (root / "toy" / name).write_bytes(b"")
    return root


# --- the shipped catalog --------------------------------------------------------------------


def test_shipped_catalog_loads_with_runs_and_templates() -> None:
    entries = load_catalog(check_paths=False)
    for name in WRF_RUNS:
        entry = entries[name]
        assert (entry.format, entry.fidelity, entry.template) == ("wrfout", "high", False)
        assert entry.levels is not None and entry.levels.count == 40
        assert entry.variables["rthcuten"].units == "K s-1"
    templates = {name for name, entry in entries.items() if entry.template}
    assert {"wrf_mskf_run", "cam5_historical", "spcam5_plus4k"} <= templates
    assert entries["cam5_plus4k"].levels.source_order == "top_to_surface"
    iofields = (catalog.CATALOG_DIR / "wrf_mskf_template.yaml").read_text()
    assert "iofields_filename" in iofields and "+:h:0:RTHCUTEN,RQVCUTEN" in iofields


def test_shipped_real_wrf_paths_resolve_in_place() -> None:
    root = catalog.data_root()
    if not (root / "wrf_mskf").is_dir():
        pytest.skip(f"real WRF MSKF output not found under {root} (set PARAMLIB_DATA_ROOT)")
    entries = load_catalog()  # checks the paths of every non-template entry
    files = resolve_paths(entries["wrf_mskf_ctl"])
    assert files == [root / "wrf_mskf" / "wrfout_d01_ctl.nc"]


# --- data root and paths --------------------------------------------------------------------


def test_data_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(catalog.DATA_ROOT_ENV, raising=False)
    assert catalog.data_root() == paths.REPO_ROOT.parent / "shared" / "data"
    monkeypatch.setenv(catalog.DATA_ROOT_ENV, str(tmp_path / "env"))
    assert catalog.data_root() == tmp_path / "env"
    assert catalog.data_root(tmp_path / "arg") == tmp_path / "arg"


def test_paths_globs_and_environment_variables(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOY_DIR", "toy")
    write_catalog(
        tmp_path / "cat",
        ENTRY.replace("[toy/*.nc]", f"[toy/*.nc, '${{TOY_DIR}}/a.nc', {data}/toy/b.nc]"),
    )
    entry = load_catalog(tmp_path / "cat", data)["toy"]
    # sorted glob matches, each file once
    assert resolve_paths(entry, data) == [data / "toy" / "a.nc", data / "toy" / "b.nc"]


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ("[toy/*.grib]", "'toy/\\*.grib' matches no file"),
        ("[toy/a.nc, toy/c.nc]", r"key 'paths\[1\]': 'toy/c.nc' does not exist"),
        ("['$NO_SUCH_VARIABLE/a.nc']", r"environment variable \$NO_SUCH_VARIABLE is not set"),
    ],
)
def test_missing_paths_are_named(data: Path, tmp_path: Path, paths: str, message: str) -> None:
    source = write_catalog(tmp_path / "cat", ENTRY.replace("[toy/*.nc]", paths))
    with pytest.raises(CatalogError, match=message) as info:
        load_catalog(tmp_path / "cat", data)
    assert f"{source}: entry 'toy'" in str(info.value)
    load_catalog(tmp_path / "cat", data, check_paths=False)  # the schema itself is valid


def test_template_paths_are_not_required(data: Path, tmp_path: Path) -> None:
    write_catalog(
        tmp_path / "cat", ENTRY.replace("[toy/*.nc]", "[nowhere/*.nc]\n    template: true")
    )
    assert load_catalog(tmp_path / "cat", data)["toy"].template


# --- schema errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("    scenario: historical\n", "    scenario: historical\n    colour: red\n"),
         "entry 'toy': unknown key 'colour'"),
        (("    fidelity: low\n", ""), "entry 'toy': missing required key 'fidelity'"),
        (("fidelity: low", "fidelity: medium"), "entry 'toy': key 'fidelity': expected one of low"),
        (("format: zarr", "format: grib"), "entry 'toy': key 'format': expected one of wrfout"),
        (("paths: [toy/*.nc]", "paths: []"), "entry 'toy': key 'paths': expected a non-empty list"),
        (("    scenario: historical\n", "    scenario: historical\n    variables: {T: t}\n"),
         r"entry 'toy': key 'variables.T': expected \{name: ..., units: ...\}"),
        (("    scenario: historical\n", "    scenario: historical\n    levels: {count: 3}\n"),
         "entry 'toy': key 'levels': expected a mapping with coordinate and units"),
        (("entries:", "colour: red\nentries:"), "unknown top-level key 'colour'"),
    ],
)  # fmt: skip
def test_schema_errors_name_file_entry_and_key(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    old, new = edit
    assert old in ENTRY
    source = write_catalog(tmp_path, ENTRY.replace(old, new))
    with pytest.raises(CatalogError, match=message) as info:
        load_catalog(tmp_path, check_paths=False)
    assert str(source) in str(info.value)


def test_defaults_apply_to_every_entry_and_entries_override_them(tmp_path: Path) -> None:
    write_catalog(
        tmp_path,
        """\
        defaults: {format: wrfout, fidelity: high, scenario: historical}
        entries:
          one: {description: first, paths: [a.nc]}
          two: {description: second, paths: [b.nc], fidelity: low}
        """,
    )
    entries = load_catalog(tmp_path, check_paths=False)
    assert (entries["one"].format, entries["one"].fidelity) == ("wrfout", "high")
    assert entries["two"].fidelity == "low"


def test_every_problem_is_reported_and_duplicates_are_refused(tmp_path: Path) -> None:
    write_catalog(tmp_path, ENTRY.replace("fidelity: low", "fidelity: medium"), "a.yaml")
    write_catalog(tmp_path, ENTRY.replace("format: zarr", "format: grib"), "b.yaml")
    write_catalog(tmp_path, ENTRY, "c.yaml")
    with pytest.raises(CatalogError) as info:
        load_catalog(tmp_path, check_paths=False)
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and "a.yaml" in lines[0] and "b.yaml" in lines[1]
    write_catalog(tmp_path, ENTRY, "a.yaml")
    with pytest.raises(CatalogError, match=r"c.yaml: entry 'toy': already defined in .*a.yaml"):
        load_catalog(tmp_path, check_paths=False)


# --- reader registry ------------------------------------------------------------------------


@pytest.fixture
def toy_reader(monkeypatch: pytest.MonkeyPatch):
    """A 'zarr' reader that records its calls and returns a one-variable dataset."""
    calls = []

    def reader(paths, **options):
        calls.append((paths, options))
        return xr.Dataset({"T": ("lev", [300.0, 290.0], {"units": "K", "long_name": "t"})})

    monkeypatch.setattr(readers, "_READERS", dict(readers._READERS))
    register_reader("zarr", reader, replace=True)
    return calls


def test_open_source_reads_an_entry_with_its_options_and_mapping(
    toy_reader, data: Path, tmp_path: Path
) -> None:
    text = ENTRY + "    options: {chunk: 4}\n    variables: {T: {name: ta, units: K}}\n"
    write_catalog(tmp_path / "cat", text)
    entry = load_catalog(tmp_path / "cat", data)["toy"]
    ds = open_source(entry, root=data, extra=1)
    assert toy_reader == [
        ([data / "toy" / "a.nc", data / "toy" / "b.nc"], {"chunk": 4, "extra": 1})
    ]
    assert list(ds.data_vars) == ["ta"] and ds.attrs["catalog_entry"] == "toy"
    assert open_source("zarr", ["x.zarr"])["T"].attrs["units"] == "K"


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ("{T: {name: ta, units: degC}}", "variables.T: units 'K' from the reader, .* 'degC'"),
        ("{Q: {name: q, units: kg kg-1}}", "variables.Q: the zarr reader gives no such variable"),
    ],
)  # fmt: skip
def test_open_source_checks_the_mapping(
    toy_reader, data: Path, tmp_path: Path, mapping: str, message: str
) -> None:
    write_catalog(tmp_path / "cat", ENTRY + f"    variables: {mapping}\n")
    entry = load_catalog(tmp_path / "cat", data)["toy"]
    with pytest.raises(SourceError, match=message):
        open_source(entry, root=data)


def test_registry_refuses_unknown_formats_and_silent_replacement(toy_reader) -> None:
    with pytest.raises(
        SourceError,
        match="no reader for format 'grib'; registered: cesm-history, srm-coarse, wrfout, zarr",
    ):
        open_source("grib", ["x.grb"])
    with pytest.raises(ValueError, match="already registered"):
        register_reader("zarr", lambda paths: xr.Dataset())


def test_readers_named_by_module_are_imported_on_first_use(toy_reader) -> None:
    register_reader("json", "json:loads")
    assert readers._READERS["json"] == "json:loads"
    assert readers.get_reader("json")("[1]") == [1]


# --- paramlib catalog -----------------------------------------------------------------------


def run_catalog(*args: str) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.is_file(), f"console script {SCRIPT} missing: run `make setup`"
    return subprocess.run(
        [str(SCRIPT), "catalog", *args], capture_output=True, text=True, timeout=60,
        check=False, env={**os.environ, catalog.CATALOG_DIR_ENV: ""},
    )  # fmt: skip


def test_cli_list_and_show() -> None:
    listed = run_catalog("list")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert set(WRF_RUNS) <= set(names) and "cam5_historical" in names
    shown = run_catalog("show", "wrf_mskf_ctl", "--root", "/nonexistent")
    assert shown.returncode == 0, shown.stderr
    assert "format: wrfout" in shown.stdout and "data root: /nonexistent" in shown.stdout
    assert "files: not available" in shown.stdout and "does not exist" in shown.stdout
    missing = run_catalog("show", "no_such_entry")
    assert missing.returncode == 1 and "no entry 'no_such_entry'" in missing.stderr


def test_cli_validate(data: Path, tmp_path: Path) -> None:
    write_catalog(tmp_path / "cat", ENTRY)
    broken = ENTRY.replace("toy:", "gone:").replace("toy/*.nc", "gone/*.nc")
    write_catalog(tmp_path / "cat", broken, "gone.yaml")
    template = broken.replace("gone:", "later:") + "    template: true\n"
    write_catalog(tmp_path / "cat", template, "later.yaml")
    done = run_catalog("validate", "--catalog-dir", str(tmp_path / "cat"), "--root", str(data))
    assert done.returncode == 1
    assert "ok    toy: 2 file(s)" in done.stdout
    assert "FAIL  gone:" in done.stdout and "'gone/*.nc' matches no file" in done.stdout
    assert "skip  later: template" in done.stdout
    (data / "gone").mkdir()
    (data / "gone" / "x.nc").write_bytes(b"")
    done = run_catalog("validate", "--catalog-dir", str(tmp_path / "cat"), "--root", str(data))
    assert done.returncode == 0, done.stdout
    assert "ok    later: 1 file(s)" in done.stdout  # a template whose files exist is checked


def test_cli_validate_reports_schema_errors(tmp_path: Path) -> None:
    source = write_catalog(tmp_path, ENTRY.replace("scenario", "senario"))
    done = run_catalog("validate", "--catalog-dir", str(tmp_path))
    assert done.returncode == 1
    assert f"{source}: entry 'toy': unknown key 'senario'" in done.stderr


def test_cli_validate_shipped_catalog() -> None:
    root = catalog.data_root()
    if not (root / "wrf_mskf").is_dir():
        pytest.skip(f"real WRF MSKF output not found under {root} (set PARAMLIB_DATA_ROOT)")
    done = run_catalog("validate")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in WRF_RUNS:
        assert f"ok    {name}: 1 file(s)" in done.stdout
    assert "skip  wrf_mskf_run: template" in done.stdout
