"""WRF's preprocessing of a .F file, as `make` runs it inside WRF (the `.F.o` rule of
configure.wrf), so that tests compile the plugin the way WRF does:

    python wrf_preprocess.py --configure CONFIGURE_WRF SOURCE.F -o OUT.f90

1. sed drops whole-line comments holding an apostrophe (they would confuse cpp);
2. `$(CPP) -I$(WRF_SRC_ROOT_DIR)/inc $(CPPFLAGS) $(OMPCPP)`: cpp -P -traditional-cpp with
   -DEM_CORE=1 ..., and -D_OPENMP in smpar builds;
3. `$(SED_FTN)` = tools/standard.exe (`standard` below), then `$(CPP) $(TRADFLAG)` again.

The cpp command comes from the configure.wrf given (WRF's own, or the stand-in tree's), read
through make with the variables WRF's ./compile exports for an em_* build.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# What ./compile exports for an EM build (configure.wrf's COREDEFS reads them).
COMPILE_ENV = {"WRF_EM_CORE": "1", "WRF_NMM_CORE": "0", "WRF_DA_CORE": "0", "WRF_PLUS_CORE": "0"}
# tools/standard.c keeps a comment when, from its `!` on, the line holds one of these
# directives (case-insensitive): OpenMP `$omp`, Intel `dec$` / `dir$`, PGI `$acc`, Fujitsu `ocl`.
KEPT_DIRECTIVES = re.compile(r"\$omp|dec\$|dir\$|\$acc|.ocl", re.I)
FATAL_CALL = re.compile(r"(call)([ \t]*)wrf_error_fatal(?!3)[ ]*\(", re.I)


def drop_comment(line: str) -> str:
    """standard.c's drop_comment: the line cut at its first `!` outside '...' or "..." unless
    a directive follows it (a `!$` sentinel statement is a comment like any other)."""
    quote = ""
    for i, ch in enumerate(line):
        if ch in "'\"":  # as standard.c: any quote character opens, its twin closes
            quote = "" if quote == ch else ch
        elif ch == "!" and not quote:
            if KEPT_DIRECTIVES.search(line[i:]):
                return line
            return line[:i] + "\n"
    return line


def standard(text: str) -> str:
    """tools/standard.exe on a cpp-processed file. For each line not starting with `#`: the
    comment dropped (drop_comment); `CALL wrf_error_fatal(` becomes
    `CALL wrf_error_fatal3(__FILE__,__LINE__,&` + newline + the rest of the arguments (only the
    first `call` of a line is looked at). Its joining of `CALL *_driver(` argument lists onto
    long lines is left out: it concerns WRF's own driver calls, never the plugin."""
    out = []
    for line in text.splitlines(keepends=True):
        if line.startswith("#"):
            out.append(line)
            continue
        line = drop_comment(line)
        first = re.search("call", line, re.I)
        fatal = FATAL_CALL.match(line, first.start()) if first else None
        if fatal:
            rest = line[fatal.end() :].lstrip(" \t(&")
            line = f"{line[: fatal.end(2)]}wrf_error_fatal3(__FILE__,__LINE__,&\n"
            line += "" if rest.startswith("\n") else rest
        out.append(line)
    return "".join(out)


def make_values(configure: Path, *expressions: str) -> list[list[str]]:
    """Each make expression (e.g. "$(FCFLAGS) $(OMP)") expanded by make in configure.wrf, with
    the variables ./compile exports, split into words."""
    targets = "".join(f"v{n}:\n\t@echo {e}\n" for n, e in enumerate(expressions))
    with tempfile.NamedTemporaryFile("w", suffix=".mk", delete=False) as file:
        file.write(f"include {configure.resolve()}\n{targets}")
    # Run from inside a make (the CMake build), the parent's MAKEFLAGS would add
    # "make[N]: Entering directory" lines to the output.
    outer = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    inherited = {k: v for k, v in os.environ.items() if k not in outer}
    env = {**inherited, **COMPILE_ENV, "WRF_SRC_ROOT_DIR": str(configure.resolve().parent)}
    try:
        return [
            subprocess.run(
                ["make", "-s", "--no-print-directory", "-f", file.name, f"v{n}"],
                capture_output=True,
                text=True,
                env=env,
                check=True,
                timeout=60,
            ).stdout.split()
            for n in range(len(expressions))
        ]
    finally:
        os.unlink(file.name)


def cpp_command(configure: Path) -> tuple[list[str], list[str]]:
    """The .F.o rule's first cpp call and its second one ($(CPP) $(TRADFLAG))."""
    first, second = make_values(
        configure,
        "$(CPP) -I$(WRF_SRC_ROOT_DIR)/inc $(CPPFLAGS) $(OMPCPP)",
        "$(CPP) $(TRADFLAG)",
    )
    return first, second


def preprocess(source: Path, configure: Path) -> str:
    """source (.F) as WRF's .F.o rule hands it to the Fortran compiler (.f90 text)."""
    first_cpp, second_cpp = cpp_command(configure)
    # sed -e "s/^\!.*'.*//" -e "s/^ *\!.*'.*//": the line emptied, its newline kept.
    lines = source.read_text().splitlines(keepends=True)
    text = "".join(re.sub(r"^ *!.*'.*", "", line) for line in lines)

    def run(command: list[str], text: str) -> str:
        result = subprocess.run(command, input=text, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed on {source}:\n{result.stderr}")
        return result.stdout

    return run(second_cpp, standard(run(first_cpp, text)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configure", type=Path, required=True, help="a configure.wrf")
    parser.add_argument("source", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    text = preprocess(args.source, args.configure)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_name(args.output.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
