"""The `paramlib` command line and `paramlib doctor`."""

import os
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import pytest

from paramlib import cli, doctor, paths

SCRIPT = Path(sysconfig.get_path("scripts")) / "paramlib"


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.is_file(), f"console script {SCRIPT} missing: run `make setup`"
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


# --- paramlib -------------------------------------------------------------------------------


def test_version_from_console_script() -> None:
    done = run_script("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"paramlib {version('paramlib')}"
    assert version("paramlib") == "0.1.0"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_subcommands_are_registered_by_module_name() -> None:
    args = cli.build_parser(("doctor",)).parse_args(["doctor"])
    assert args.func is doctor.run


def test_subcommand_whose_module_fails_to_import_reports_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = cli.build_parser(("doctor", "no_such_command"))
    args = parser.parse_args(["no_such_command"])
    assert args.func(args) == 2
    assert "importing paramlib.no_such_command failed" in capsys.readouterr().err
    assert parser.parse_args(["doctor"]).func is doctor.run  # the others still work


# --- paramlib doctor ------------------------------------------------------------------------


def test_doctor_without_bridge_library_fails_naming_it(tmp_path: Path) -> None:
    done = run_script("doctor", env={paths.BUILD_DIR_ENV: str(tmp_path)})
    assert done.returncode == 1
    library = tmp_path / "lib" / "libparamlib_bridge.so"
    assert f"bridge library: {library} does not exist" in done.stderr
    assert f"make -C {paths.REPO_ROOT} build" in done.stderr
    assert "MISSING  bridge library" in done.stdout


def test_doctor_passes_once_built(bridge_library: Path, bindings: Path) -> None:
    done = run_script("doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(bridge_library) in done.stdout
    assert "everything required is present" in done.stdout


def test_doctor_reports_python_torch_and_libtorch() -> None:
    import torch
    import torch.utils

    checks = doctor.run_checks()
    details = {check.name: check.detail for check in checks}
    assert details["torch"] == torch.__version__
    assert sys.executable in details["python"]
    assert details["libtorch cmake"] == torch.utils.cmake_prefix_path
    assert (Path(details["libtorch.so"]) / "libtorch.so").is_file()
    report = doctor.format_report(checks)
    assert all(check.detail in report for check in checks)


def fake_tool(directory: Path, name: str, output: str) -> None:
    script = directory / name
    script.write_text(f"#!/bin/sh\nprintf '{output}'\n")
    script.chmod(0o755)


def test_tool_version_is_first_non_empty_line(tmp_path: Path) -> None:
    fake_tool(tmp_path, "fakecc", "\\nfakecc 1.2.3\\nCopyright nobody\\n")
    result = doctor.check_tool("fakecc", "fakecc-pkg", search_path=str(tmp_path))
    assert result == doctor.CheckResult("fakecc", True, "fakecc 1.2.3", apt_package="fakecc-pkg")


def test_silent_tool_reports_its_path(tmp_path: Path) -> None:
    fake_tool(tmp_path, "quiet", "")
    assert doctor.tool_version("quiet", search_path=str(tmp_path)) == str(tmp_path / "quiet")


def test_missing_tool_is_reported_missing(tmp_path: Path) -> None:
    result = doctor.check_tool("nf-config", "libnetcdff-dev", search_path=str(tmp_path))
    assert (result.ok, result.detail, result.apt_package) == (False, "missing", "libnetcdff-dev")


def test_json_header_is_looked_up_in_include_dirs(tmp_path: Path) -> None:
    assert not doctor.check_json_header([tmp_path]).ok
    (tmp_path / "nlohmann").mkdir()
    (tmp_path / "nlohmann" / "json.hpp").touch()
    found = doctor.check_json_header([tmp_path])
    assert (found.ok, found.detail) == (True, str(tmp_path / "nlohmann" / "json.hpp"))


def test_build_dir_honours_the_environment(tmp_path: Path) -> None:
    assert paths.build_dir({}) == paths.REPO_ROOT / "build"
    override = {paths.BUILD_DIR_ENV: str(tmp_path)}
    assert paths.bridge_library_path(override) == tmp_path / "lib" / "libparamlib_bridge.so"


def test_bridge_and_bindings_checks_look_for_the_files(tmp_path: Path) -> None:
    library = tmp_path / "lib" / "libparamlib_bridge.so"
    assert not doctor.check_bridge_library(library).ok
    assert not doctor.check_bindings(tmp_path).ok
    library.parent.mkdir()
    library.touch()
    (tmp_path / "_ext").mkdir()
    extension = tmp_path / "_ext" / "_paramlib_bridge.cpython-311-x86_64-linux-gnu.so"
    extension.touch()
    assert doctor.check_bridge_library(library).ok
    assert doctor.check_bindings(tmp_path) == doctor.CheckResult(
        "python bindings", True, str(extension), fix=f"make -C {paths.REPO_ROOT} build"
    )


def failing_checks() -> list[doctor.CheckResult]:
    build = f"make -C {paths.REPO_ROOT} build"
    return [
        doctor.CheckResult("gfortran", True, "GNU Fortran 12", apt_package="gfortran"),
        doctor.CheckResult("nf-config", False, "missing", apt_package="libnetcdff-dev"),
        doctor.CheckResult("cmake", False, "missing", apt_package="cmake"),
        doctor.CheckResult("cuda", False, "not available", required=False),
        doctor.CheckResult("bridge library", False, "absent", fix=build),
        doctor.CheckResult("python bindings", False, "absent", fix=build),
    ]


def test_fix_commands_give_one_apt_line_then_make() -> None:
    build = f"make -C {paths.REPO_ROOT} build"
    assert doctor.fix_commands(failing_checks(), is_root=True) == [
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y cmake libnetcdff-dev",
        build,
    ]
    assert doctor.fix_commands(failing_checks(), is_root=False) == [
        "sudo apt-get install -y cmake libnetcdff-dev",
        build,
    ]


def test_only_required_failures_count_as_missing() -> None:
    assert [c.name for c in doctor.missing(failing_checks())] == [
        "nf-config",
        "cmake",
        "bridge library",
        "python bindings",
    ]
    optional_only = [doctor.CheckResult("cuda", False, "not available", required=False)]
    assert doctor.missing(optional_only) == []
    assert doctor.fix_commands(optional_only, is_root=True) == []


def test_report_marks_missing_and_optional_items() -> None:
    lines = doctor.format_report(failing_checks()).splitlines()
    assert lines[1].split() == ["ok", "gfortran", "GNU", "Fortran", "12"]
    assert lines[2].split()[:3] == ["MISSING", "nf-config", "missing"]
    assert lines[4].split()[:2] == ["-", "cuda"]
    summary = doctor.format_missing(failing_checks(), is_root=False)
    assert "4 required item(s) missing" in summary
    assert "  nf-config: missing" in summary
