"""The WRF patch kit (fortran_bridge/wrf/patch_wrf.py) on a stand-in WRF tree
(fortran_bridge/wrf/tests/fake_wrf: only the lines the kit anchors on, not WRF source, with
the constructs of the real v4.7.1 files listed in its README): the scheme is wired where MSKF
is, nothing else moves, a second run and a dry run change nothing, an unrecognised tree is left
untouched, and the patched Fortran compiles against the real module_cu_paramlib. The plugin
also goes through WRF's own preprocessing rule (fortran_bridge/wrf/tests/wrf_preprocess.py)."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from paramlib import paths
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
    "dyn_em/start_em.F",
)


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wrf_preprocess = load(KIT / "tests" / "wrf_preprocess.py")


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
    assert "ON_ERROR=config_flags%paramlib_cu_on_error" in init
    assert re.search(r"rconfig integer +paramlib_cu_on_error +namelist,physics 1 0 ", registry)
    assert re.search(r'rconfig character paramlib_cu_sha256 +namelist,physics 1 "none"', registry)
    # the physical limits' and the out-of-range log's settings, namelist to cu_paramlib_init
    top = r"rconfig real +paramlib_cu_top_fraction +namelist,physics 1 0.0005 "
    assert re.search(top, registry)
    for option in ("top_fraction", "water_closure", "ood_every"):
        assert f"{option.upper()}=config_flags%paramlib_cu_{option}" in init
    # A cold start in cu_paramlib_init: MSKF's arrays and the *_pl copies, which start_em passes
    # through phy_init and cu_init as optional arguments (cu_init sees no grid)
    assert "RESTART=restart" in init and "NCA_PREV=NCA_PL" in init and "ITS=its" in init
    pl = "RTHCUTEN_PL, RQVCUTEN_PL, RQCCUTEN_PL, RQRCUTEN_PL, RQICUTEN_PL, RQSCUTEN_PL"
    assert (
        init.count(f"OPTIONAL, INTENT(INOUT) :: &   ! paramlib cumulus plugin\n        {pl}\n") == 2
    )
    assert init.count(f"{pl}, NCA_PL)   ! paramlib cumulus plugin") == 2  # both headers
    assert "NCA_PL=NCA_PL)   ! paramlib cumulus plugin" in init  # phy_init's CALL cu_init
    start = (wrf / "dyn_em/start_em.F").read_text()
    assert ", NCA_PL=grid%nca_pl)   ! paramlib cumulus plugin" in start
    assert start.count("RTHCUTEN_PL=grid%rthcuten_pl") == 1
    # WRF's .F rule drops comment lines holding an apostrophe; none in what the kit writes
    assert not [line for line in registry.splitlines() if "paramlib" in line and "'" in line]
    addtendc = (wrf / "phys/module_physics_addtendc.F").read_text()
    tendencies = addtendc[: addtendc.index("END SUBROUTINE phy_cu_ten")]
    assert "MSKFSCHEME, PARAMLIBSCHEME)" in tendencies
    countdown = addtendc[addtendc.index("SUBROUTINE advance_ppt") :]  # in the same file in v4.7.1
    assert "CASE (KFETASCHEME, MSKFSCHEME, PARAMLIBSCHEME, KFCUPSCHEME)!stand-in" in countdown
    # MSKF's own advective forcing is not the plugin's: that file stays as it was
    assert (wrf / "dyn_em/module_em.F").read_bytes() == (FAKE / "dyn_em/module_em.F").read_bytes()
    assert "module_cu_mskf.o module_cu_paramlib.o" in (wrf / "phys/Makefile").read_text()
    depend = (wrf / "main/depend.common").read_text()
    assert depend.count("module_cu_paramlib.o") == 3
    assert "module_cu_mskf.o module_cu_paramlib.o: \\\n\t../frame/module_wrf_error.o" in depend
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


def test_a_countdown_written_as_an_if_in_another_file(wrf: Path) -> None:
    """Where advance_ppt tests `cu_physics .EQ. MSKFSCHEME` in a file of its own with a
    module-level ONLY list, the plugin joins the test and the list; other routines of that
    file stay as they were."""
    addtendc = wrf / "phys/module_physics_addtendc.F"
    text = addtendc.read_text()
    start, end = text.index("   SUBROUTINE advance_ppt"), text.index("END SUBROUTINE advance_ppt")
    countdown = text[start : end + len("END SUBROUTINE advance_ppt\n")]
    addtendc.write_text(text.replace(countdown, ""))
    countdown = countdown.replace("   SELECT CASE (config_flags%cu_physics)\n", "").replace(
        "   CASE (KFETASCHEME, MSKFSCHEME, KFCUPSCHEME)!stand-in: a comment on the CASE line",
        "   IF (config_flags%cu_physics == KFETASCHEME .OR. &\n"
        "       config_flags%cu_physics .EQ. MSKFSCHEME) THEN",
    )
    countdown = countdown.replace("   END SELECT\n", "   ENDIF\n")
    em = wrf / "dyn_em/module_em.F"
    em.write_text(
        em.read_text().replace("END MODULE module_em", countdown + "END MODULE module_em")
    )
    result = kit("apply", "--wrf", wrf)
    assert result.returncode == 0, result.stderr
    patched = em.read_text()
    other = patched[: patched.index("END SUBROUTINE other_forcing")]
    assert "config_flags%cu_physics .EQ. PARAMLIBSCHEME" in patched
    assert "ONLY : KFETASCHEME, MSKFSCHEME, PARAMLIBSCHEME" in other  # the module's USE
    assert "PARAMLIBSCHEME" not in other.split("CONTAINS")[1]  # only the countdown follows MSKF


def test_cu_init_with_preprocessor_lines_in_its_argument_list(wrf: Path) -> None:
    """WRF v4.7.1's cu_init has `#if ( EM_CORE == 1 )` ... `#endif` inside its continued
    argument list: before, the statement reader stopped at `#if` and apply refused the real
    tree with "cu_init has no argument kds"."""
    init = wrf / "phys/module_physics_init.F"
    before = init.read_text()
    assert re.search(r"&\n#if \( EM_CORE == 1 \)\n\s*!.*\n\s*cupflag,", before)  # the construct
    result = kit("apply", "--wrf", wrf)
    assert result.returncode == 0, result.stderr
    after = init.read_text()
    assert "CALL cu_paramlib_init(" in after and "KDS=kds, KDE=kde, RESTART=restart" in after
    start = after.index("SUBROUTINE cu_init")  # phy_init comes first in the file
    head = after[start : after.index("IMPLICIT NONE", start)]
    # MSKF's module is used outside any #if there: the plugin's USE gets an EM_CORE guard
    assert re.search(
        r"USE module_cu_mskf\n#if \(EM_CORE == 1\)\n   USE module_cu_paramlib, ONLY : "
        r"cu_paramlib_init.*\n.*PARAMLIBSCHEME\n#endif\n",
        head,
    )
    start = before.index("SUBROUTINE cu_init")
    arguments = before[start : before.index("   USE ", start)]
    kept, last = arguments.rstrip("\n").rsplit("\n", 1)
    assert kept in after  # the argument list itself untouched, the *_pl arrays appended
    assert last.removesuffix(")") + ", &\n        RTHCUTEN_PL, " in after


def test_untouched_bytes_stay_and_no_registry_copy_is_made(wrf: Path) -> None:
    """WRF's phys/CMakeLists.txt ends without a newline (before: one was added); a fresh clone
    has no Registry/Registry (before: apply touched an empty one into existence), a compiled
    tree's is touched so that make regenerates the registry. Files keep their permissions."""
    cmake = wrf / "phys/CMakeLists.txt"
    assert not cmake.read_bytes().endswith(b"\n")
    (wrf / "phys/Makefile").chmod(0o640)
    assert kit("apply", "--wrf", wrf).returncode == 0
    assert cmake.read_bytes().endswith(b"module_cumulus_driver.F\n)")
    assert not (wrf / "Registry/Registry").exists()
    assert (wrf / "phys/Makefile").stat().st_mode & 0o777 == 0o640
    assert not list(wrf.rglob("*.paramlib-tmp"))  # written through temporary files, renamed
    other = Path(shutil.copytree(FAKE, wrf.parent / "compiled"))
    (other / "Registry/Registry").write_text("## from Registry.EM\n")
    old = (other / "Registry/Registry").stat().st_mtime_ns - 10**9
    os.utime(other / "Registry/Registry", ns=(old, old))
    assert kit("apply", "--wrf", other).returncode == 0
    assert (other / "Registry/Registry").stat().st_mtime_ns > old
    assert (other / "Registry/Registry").read_text() == "## from Registry.EM\n"


def test_revert_restores_every_file_byte_for_byte(wrf: Path, tmp_path: Path) -> None:
    """apply, link, apply again, then revert: the tree is the one before, byte for byte, the
    module and the folder of originals gone. After a new ./configure, link and revert bring
    back that new configure.wrf, not the first one."""
    prefix = tmp_path / "opt"
    (prefix / "share/paramlib").mkdir(parents=True)
    (prefix / "share/paramlib/paramlib_bridge.mk").write_text("PARAMLIB_BRIDGE_LIBS = -lx\n")
    before = snapshot(wrf)
    assert kit("apply", "--wrf", wrf).returncode == 0
    assert kit("link", "--wrf", wrf, "--prefix", prefix).returncode == 0
    assert kit("apply", "--wrf", wrf).returncode == 0
    assert snapshot(wrf) != before
    result = kit("revert", "--wrf", wrf)
    assert result.returncode == 0, result.stderr
    assert "phys/module_cu_paramlib.F: removed" in result.stdout
    assert snapshot(wrf) == before
    again = kit("revert", "--wrf", wrf)
    assert again.returncode == 1 and ".paramlib_patch not found" in again.stderr

    assert kit("apply", "--wrf", wrf).returncode == 0
    assert kit("link", "--wrf", wrf, "--prefix", prefix).returncode == 0
    configure = wrf / "configure.wrf"
    reconfigured = before[Path("configure.wrf")] + b"# ./configure run again\n"
    configure.write_bytes(reconfigured)  # what a new ./configure leaves: the link gone
    assert kit("link", "--wrf", wrf, "--prefix", prefix).returncode == 0
    assert kit("revert", "--wrf", wrf).returncode == 0
    assert configure.read_bytes() == reconfigured


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
    bridge_modules = paths.build_dir() / "mod"
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
    configure = (wrf / "configure.wrf").read_text()
    assert "$(LIB_LOCAL)" in configure and not re.search(r"^LIB_LOCAL\s*=", configure, re.M)
    probe = wrf / "probe.mk"
    probe.write_text(
        "include configure.wrf\nshow:\n\t@echo $(INCLUDE_MODULES) / $(FCBASEOPTS) / $(LIB_LOCAL)"
        " / $(LIB)\n"
    )
    shown = subprocess.run(
        ["make", "-s", "-f", str(probe), "show"],
        cwd=wrf,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    includes, options, libraries, link_line = shown.split(" / ")
    assert "-I/main" in includes and "-I/frame" in includes  # WRF's own search path kept
    assert "-I/opt/p/include/paramlib" in includes and "-I/opt/p/include/paramlib" in options
    assert "-ffree-form" in options  # FCBASEOPTS keeps WRF's own value
    assert libraries.strip() == "-L/opt/p/lib -lparamlib_bridge -lstdc++"
    assert link_line.strip() == "-L/opt/p/lib -lparamlib_bridge -lstdc++"  # WRF links $(LIB)
    flags = kit("cmake-flags", "--prefix", prefix).stdout
    assert '-DCMAKE_Fortran_STANDARD_LIBRARIES="-L/opt/p/lib -lparamlib_bridge -lstdc++"' in flags


def test_link_refuses_a_configure_wrf_without_lib_local(wrf: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    (prefix / "share/paramlib").mkdir(parents=True)
    (prefix / "share/paramlib/paramlib_bridge.mk").write_text("PARAMLIB_BRIDGE_LIBS = -lx\n")
    configure = wrf / "configure.wrf"
    configure.write_text(configure.read_text().replace("$(LIB_LOCAL)", ""))
    before = configure.read_bytes()
    result = kit("link", "--wrf", wrf, "--prefix", prefix)
    assert result.returncode == 1
    assert "no `LIB_LOCAL =` line nor a `LIB =` line using it" in result.stderr
    assert configure.read_bytes() == before


def test_link_needs_an_installed_bridge(wrf: Path, tmp_path: Path) -> None:
    result = kit("link", "--wrf", wrf, "--prefix", tmp_path / "none")
    assert result.returncode == 1 and "cmake --install build --prefix" in result.stderr


def test_iofields_line_is_the_readers_and_the_templates() -> None:
    line = kit("iofields").stdout.strip()
    assert line == IOFIELDS_LINE
    assert line in (ROOT / "data_catalog" / "wrf_mskf_template.yaml").read_text()


def test_wrf_rule_drops_sentinel_statements_and_keeps_omp_directives() -> None:
    """tools/standard.exe's rule (reimplemented in wrf_preprocess.standard): comments go, a
    `!$` sentinel statement with them; `!$omp` directives stay; CALL wrf_error_fatal( becomes
    wrf_error_fatal3 with the caller's file and line."""
    text = (
        "!$ USE omp_lib\n"
        "      !$ tid = omp_get_thread_num()\n"
        "!$omp parallel do private(i)\n"
        "  x = 'a!b' ! a comment\n"
        "#ifdef _OPENMP\n"
        "  CALL wrf_error_fatal('stop: ' // TRIM(msg))\n"
    )
    assert wrf_preprocess.standard(text).splitlines() == [
        "",
        "      ",
        "!$omp parallel do private(i)",
        "  x = 'a!b' ",
        "#ifdef _OPENMP",
        "  CALL wrf_error_fatal3(__FILE__,__LINE__,&",
        "'stop: ' // TRIM(msg))",
    ]


def test_the_old_sentinel_lines_vanish_through_the_whole_wrf_rule(tmp_path: Path) -> None:
    """The plugin before issue 13 through sed, cpp -D_OPENMP, standard.exe's rule and cpp: its
    `!$ nthreads = ...` and `!$ tid = ...` vanish (every tile used handle 0 in real WRF);
    the #ifdef _OPENMP form the plugin uses now survives."""
    old = tmp_path / "old.F"
    old.write_text(
        "      nthreads = 1\n"
        "      !$ nthreads = omp_get_max_threads()\n"
        "      tid = 0\n"
        "      !$ tid = omp_get_thread_num()\n"
        "#ifdef _OPENMP\n"
        "      tid = omp_get_thread_num()\n"
        "#endif\n"
    )
    text = wrf_preprocess.preprocess(old, FAKE / "configure.wrf")
    assert text.split() == [
        "nthreads",
        "=",
        "1",
        "tid",
        "=",
        "0",
        "tid",
        "=",
        "omp_get_thread_num()",
    ]


def test_the_plugin_compiles_after_wrfs_preprocessing(tmp_path: Path, bridge_library: Path) -> None:
    """module_cu_paramlib.F as WRF's .F.o rule hands it to gfortran (the stand-in configure.wrf's
    GNU smpar flags): its OpenMP code is still there and it compiles with -fopenmp. ctest
    wrf_plugin_wrfpp runs the driver on this copy with 2 threads (tests/test_wrf_plugin.py)."""
    text = wrf_preprocess.preprocess(KIT / "module_cu_paramlib.F", FAKE / "configure.wrf")
    assert "tid = omp_get_thread_num()" in text and "nthreads = omp_get_max_threads()" in text
    assert "USE omp_lib" in text and "CALL wrf_error_fatal3(" in text
    # Only OpenMP directives stay of the comments: the out-of-range tally's critical section.
    comments = [line for line in text.splitlines() if line.lstrip().startswith("!")]
    assert comments == ["!$omp critical (paramlib_cu_ood)", "!$omp end critical (paramlib_cu_ood)"]
    source = tmp_path / "module_cu_paramlib.f90"
    source.write_text(text)
    # configure.wrf's compile line: $(FC) -c $(FCFLAGS) $(OMP) ... (FC = time gfortran)
    (flags,) = wrf_preprocess.make_values(FAKE / "configure.wrf", "$(SFC) $(FCFLAGS) $(OMP)")
    assert "-fopenmp" in flags and "-ffree-line-length-none" in flags
    command = [
        *flags,
        "-c",
        f"-I{paths.build_dir() / 'mod'}",
        f"-J{tmp_path}",
        str(source),
        "-o",
        str(tmp_path / "module_cu_paramlib.o"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
