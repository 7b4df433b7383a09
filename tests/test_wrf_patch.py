"""The WRF patch kit (fortran_bridge/wrf/patch_wrf.py) on a stand-in WRF tree
(fortran_bridge/wrf/tests/fake_wrf: only the lines the kit anchors on, not WRF source): the
scheme is wired where MSKF is, nothing else moves, a second run and a dry run change nothing,
an unrecognised tree is left untouched, and the patched Fortran compiles against the real
module_cu_paramlib."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from paramlib import doctor
from paramlib.data.readers.wrfout import IOFIELDS_LINE

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "fortran_bridge" / "wrf"
FAKE = KIT / "tests" / "fake_wrf"
# Compile order of the patched stand-in tree (modules before their users).
SOURCES = (
    "frame/generated_by_registry.F90",
    "phys/module_cu_mskf.F",
    "phys/module_cu_paramlib.F",
    "phys/module_cumulus_driver.F",
    "phys/module_physics_init.F",
    "phys/module_physics_addtendc.F",
    "dyn_em/module_em.F",
)


def kit(*args: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(KIT / "patch_wrf.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def wrf(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FAKE, tmp_path / "WRF"))


def test_apply_wires_the_scheme_where_mskf_is(wrf: Path) -> None:
    result = kit("apply", "--wrf", wrf)
    assert result.returncode == 0, result.stderr
    registry = (wrf / "Registry/Registry.EM_COMMON").read_text()
    assert "package   paramlibscheme  cu_physics==97" in registry
    assert (
        "state:rthcuten_pl,rqvcuten_pl,rqccuten_pl,rqrcuten_pl,rqicuten_pl,rqscuten_pl,nca_pl,w0avg"
        in registry
    )
    assert "rconfig character paramlib_cu_model" in registry
    driver = (wrf / "phys/module_cumulus_driver.F").read_text()
    assert driver.index("CASE (PARAMLIBSCHEME)") < driver.index("CASE (MSKFSCHEME)")
    for argument in ("PRATEC=tmppratec", "CUTOP=HTOP", "QV=qv_curr", "NCA_PREV=grid%nca_pl"):
        assert argument in driver  # MSKF's actual arguments, and the scheme's own state
    assert "USE module_cu_paramlib, ONLY : cu_paramlib" in driver
    init = (wrf / "phys/module_physics_init.F").read_text()
    assert "MODEL_FILE=config_flags%paramlib_cu_model" in init
    assert "SHA256=config_flags%paramlib_cu_sha256" in init  # the model pinned from &physics
    assert re.search(r'rconfig character paramlib_cu_sha256 +namelist,physics 1 "none"', registry)
    assert "MSKFSCHEME, PARAMLIBSCHEME)" in (wrf / "phys/module_physics_addtendc.F").read_text()
    em = (wrf / "dyn_em/module_em.F").read_text()
    countdown = em[em.index("SUBROUTINE advance_ppt") :]
    other = em[em.index("SUBROUTINE other_forcing") : em.index("END SUBROUTINE other_forcing")]
    assert "cu_physics .EQ. PARAMLIBSCHEME" in countdown
    assert "PARAMLIBSCHEME" not in other  # only the NCA countdown follows MSKF in that file
    assert "ONLY : KFETASCHEME, MSKFSCHEME, PARAMLIBSCHEME" in em
    assert "module_cu_mskf.o module_cu_paramlib.o" in (wrf / "phys/Makefile").read_text()
    assert (wrf / "main/depend.common").read_text().count("module_cu_paramlib.o") == 2
    assert "module_cu_mskf.F module_cu_paramlib.F" in (wrf / "phys/CMakeLists.txt").read_text()
    assert (wrf / "phys/module_cu_paramlib.F").read_bytes() == (
        KIT / "module_cu_paramlib.F"
    ).read_bytes()
    assert "phy_cu_ten" in result.stdout and "advance_ppt" in result.stdout


def test_apply_twice_and_dry_run_change_nothing(wrf: Path) -> None:
    before = snapshot(wrf)
    dry = kit("apply", "--wrf", wrf, "--dry-run")
    assert dry.returncode == 0 and "nothing written" in dry.stdout
    assert snapshot(wrf) == before
    assert kit("apply", "--wrf", wrf).returncode == 0
    patched = snapshot(wrf)
    again = kit("apply", "--wrf", wrf)
    assert again.returncode == 0 and again.stdout.count("already applied") == 8
    assert snapshot(wrf) == patched


def test_an_unrecognised_tree_is_left_untouched(wrf: Path) -> None:
    init = wrf / "phys/module_physics_init.F"
    init.write_text(init.read_text().replace("CASE (MSKFSCHEME)", "CASE (KFSCHEME)"))
    before = snapshot(wrf)
    result = kit("apply", "--wrf", wrf)
    assert result.returncode == 1
    assert "phys/module_physics_init.F: CASE (MSKFSCHEME) in cu_init not found" in result.stderr
    assert "nothing was changed" in result.stderr
    assert snapshot(wrf) == before  # files before it in the list were not written either


def test_a_taken_cu_physics_number_is_refused(wrf: Path) -> None:
    result = kit("apply", "--wrf", wrf, "--cu-physics", 16)
    assert result.returncode == 1 and "cu_physics = 16 is taken" in result.stderr


def test_another_wrf_version_is_patched_with_a_warning(wrf: Path) -> None:
    (wrf / "inc/version_decl").write_text("release_version = 'V4.6.1'\n")
    result = kit("apply", "--wrf", wrf)
    assert result.returncode == 0 and "WRF 4.6.1, written against 4.7.1" in result.stderr


def test_patched_fortran_compiles_against_the_plugin(wrf: Path, bridge_library: Path) -> None:
    assert kit("apply", "--wrf", wrf).returncode == 0
    modules = wrf / "obj"
    modules.mkdir()
    bridge_modules = doctor.build_dir() / "mod"
    for source in SOURCES:
        command = [
            "gfortran",
            "-c",
            "-cpp",
            "-DEM_CORE=1",
            "-ffree-form",
            "-fopenmp",
            f"-I{bridge_modules}",
            f"-J{modules}",
            source,
            "-o",
            f"obj/{Path(source).name}.o",
        ]
        result = subprocess.run(command, cwd=wrf, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{source}:\n{result.stderr}"


def test_the_plugin_has_no_openmp_sentinel_statements() -> None:
    """WRF's tools/standard.exe drops comment lines, `!$` statements with them: before, the
    plugin's `!$ tid = omp_get_thread_num()` vanished inside WRF and every tile used handle 0."""
    source = (KIT / "module_cu_paramlib.F").read_text().splitlines()
    sentinels = [s for s in source if s.lstrip().startswith("!$") and not s.lstrip()[2:5] == "omp"]
    assert sentinels == []
    assert "#ifdef _OPENMP" in "\n".join(source)


def test_link_adds_the_bridge_to_configure_wrf(wrf: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    (prefix / "share/paramlib").mkdir(parents=True)
    (prefix / "share/paramlib/paramlib_bridge.mk").write_text(
        "PARAMLIB_BRIDGE_FFLAGS = -I/opt/p/include/paramlib\n"
        "PARAMLIB_BRIDGE_LIBS = -L/opt/p/lib -lparamlib_bridge -lstdc++\n"
    )
    assert kit("link", "--wrf", wrf, "--prefix", prefix).returncode == 0
    assert "already linked" in kit("link", "--wrf", wrf, "--prefix", prefix).stdout
    probe = wrf / "probe.mk"
    probe.write_text(
        "include configure.wrf\nshow:\n\t@echo $(INCLUDE_MODULES) / $(FCBASEOPTS) / $(LIB_LOCAL)\n"
    )
    shown = subprocess.run(
        ["make", "-s", "-f", str(probe), "show"],
        cwd=wrf,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    includes, options, libraries = shown.split(" / ")
    assert "-I/main" in includes and "-I/frame" in includes  # WRF's own search path kept
    assert "-I/opt/p/include/paramlib" in includes and "-I/opt/p/include/paramlib" in options
    assert libraries.strip() == "-L/opt/p/lib -lparamlib_bridge -lstdc++"
    flags = kit("cmake-flags", "--prefix", prefix).stdout
    assert '-DCMAKE_Fortran_STANDARD_LIBRARIES="-L/opt/p/lib -lparamlib_bridge -lstdc++"' in flags


def test_link_needs_an_installed_bridge(wrf: Path, tmp_path: Path) -> None:
    result = kit("link", "--wrf", wrf, "--prefix", tmp_path / "none")
    assert result.returncode == 1 and "cmake --install build --prefix" in result.stderr


def test_iofields_line_is_the_readers_and_the_templates() -> None:
    line = kit("iofields").stdout.strip()
    assert line == IOFIELDS_LINE
    assert line in (ROOT / "data_catalog" / "wrf_mskf_template.yaml").read_text()
