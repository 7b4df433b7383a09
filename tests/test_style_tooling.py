"""Style tooling of `make lint`: clang-format with .clang-format over the C++, fortitude with
fortitude.toml over the Fortran (the WRF plugin's .F included), and `make test` linting first.
The tools come from the dev extra, next to this interpreter."""

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
CPP_DIRS = ("fortran_bridge", "benchmarks")


def tool(name: str) -> str:
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{path} missing: `make setup` installs the dev extra (pyproject.toml)")
    return str(path)


def run(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120)


def cpp_sources(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for d in CPP_DIRS
        for p in (root / d).rglob("*")
        if p.suffix in {".cpp", ".h", ".hpp"}
    )


def test_cpp_tree_is_formatted(repo_root: Path) -> None:
    files = cpp_sources(repo_root)
    assert "fortran_bridge/src/bridge.cpp" in files
    r = run([tool("clang-format"), "--dry-run", "-Werror", *files], repo_root)
    assert r.returncode == 0, r.stderr[-3000:]


def test_clang_format_config_is_the_projects(repo_root: Path) -> None:
    """Pointers stay to the right and 120 columns fit; a longer line is flagged."""
    fmt = [tool("clang-format"), "--dry-run", "-Werror", "--assume-filename=fortran_bridge/x.cpp"]
    kept = "int f(const char *name, int &n);\n"
    assert run(fmt, repo_root, kept).returncode == 0
    call = "  return g(" + ", ".join(f"argument_{i}" for i in range(9)) + ");\n"
    assert 100 < len(call) <= 120
    assert run(fmt, repo_root, "int h() {\n" + call + "}\n").returncode == 0
    too_long = "  return g(" + ", ".join(f"argument_{i}" for i in range(11)) + ");\n"
    r = run(fmt, repo_root, "int h() {\n" + too_long + "}\n")
    assert r.returncode != 0 and "code should be clang-formatted" in r.stderr


def test_fortran_tree_is_clean_and_the_plugin_is_linted(repo_root: Path) -> None:
    fortitude = tool("fortitude")
    shown = run([fortitude, "check", "--show-files", *CPP_DIRS], repo_root).stdout
    assert "fortran_bridge/wrf/module_cu_paramlib.F" in shown
    assert "benchmarks/bridge_bench.f90" in shown
    assert "fake_wrf" not in shown  # WRF's own stand-in sources keep WRF's form
    # A clean run also means no syntax error (E001) in the .F with its #ifdef lines.
    r = run([fortitude, "check", *CPP_DIRS], repo_root)
    assert r.returncode == 0, r.stdout[-3000:]


def lint_as(root: Path, path: str, source: str) -> subprocess.CompletedProcess:
    """fortitude on `source` as if it were the file `path`, under the project's config."""
    return run([tool("fortitude"), "check", "--stdin-filename", path, "-"], root, source)


def test_generated_bridge_module_is_clean(repo_root: Path) -> None:
    """The bridge module exists only as fypp's output: lint that, as `make lint` does."""
    fypp = [tool("fypp"), "-M", "fortran_bridge/cmake", "-m", "bridge_header"]
    source = run([*fypp, "fortran_bridge/src/paramlib_bridge.fypp"], repo_root)
    assert source.returncode == 0, source.stderr
    assert "module paramlib_bridge" in source.stdout
    r = lint_as(repo_root, "build/lint/paramlib_bridge.f90", source.stdout)
    assert r.returncode == 0, r.stdout[-3000:]


def test_fortitude_config_flags_what_it_should(repo_root: Path) -> None:
    bad = "module m\n  implicit none\ncontains\n  subroutine s()\n  end subroutine\nend module m\n"
    r = lint_as(repo_root, "fortran_bridge/host/x.f90", bad)
    assert r.returncode != 0 and "S061" in r.stdout
    # Upper-case keywords and `0.` literals are WRF style: allowed in the plugin only.
    wrf = "MODULE m\n  IMPLICIT NONE\n  PRIVATE\n  REAL, PARAMETER :: x = 0.\nEND MODULE m\n"
    plugin = lint_as(repo_root, "fortran_bridge/wrf/module_cu_paramlib.F", wrf)
    assert plugin.returncode == 0, plugin.stdout
    other = lint_as(repo_root, "fortran_bridge/host/x.f90", wrf)
    assert other.returncode != 0 and "S233" in other.stdout and "S291" in other.stdout


def test_make_test_lints_first(repo_root: Path) -> None:
    r = run(["make", "-n", "test"], repo_root)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    assert first("ruff check") < first("clang-format --dry-run -Werror") < first("fortitude check")
    assert "build/lint/paramlib_bridge.f90" in lines[first("fortitude check")]
    assert first("fortitude check") < first("pytest")
