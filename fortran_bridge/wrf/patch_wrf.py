#!/usr/bin/env python3
"""Add the paramlib cumulus plugin to a WRF source tree (written against WRF v4.7.1).

    patch_wrf.py apply --wrf WRF_DIR [--cu-physics 97] [--dry-run]
    patch_wrf.py link --wrf WRF_DIR --prefix PARAMLIB_PREFIX      (after every ./configure)
    patch_wrf.py revert --wrf WRF_DIR                             (undo apply and link)
    patch_wrf.py cmake-flags --prefix PARAMLIB_PREFIX             (WRF's CMake build)
    patch_wrf.py iofields                                         (the history line for training)

`apply` copies module_cu_paramlib.F into phys/ and edits WRF's files in place, each edit
anchored on MSKF's own lines (cu_physics = 11), so the plugin is wired exactly where MSKF is:

  Registry/Registry.EM_COMMON   rconfig lines for the namelist options, state lines for the
                                scheme's *_PREV copies (restart fields) and the package line
                                `paramlibscheme cu_physics==N` (with w0avg where MSKF's has it)
  phys/module_cumulus_driver.F  USE + CASE (PARAMLIBSCHEME) calling cu_paramlib with the actual
                                arguments MSKF's CALL passes, plus grid%*_pl
  phys/module_physics_init.F    USE + CASE (PARAMLIBSCHEME) in cu_init calling cu_paramlib_init
                                with config_flags%paramlib_cu_*, restart and the arrays it
                                starts cold (MSKF's and the *_pl copies); the *_pl arrays as
                                optional arguments of cu_init and phy_init, passed from
  dyn_em/start_em.F             start_em's CALL phy_init (grid%*_pl)
  phys/module_physics_addtendc.F  PARAMLIBSCHEME next to MSKFSCHEME in phy_cu_ten's CASE: its
                                default branch is silent, without this the tendencies are never
                                applied
  the file holding WRF's NCA countdown (advance_ppt): PARAMLIBSCHEME next to MSKFSCHEME there,
                                so NCA counts down and held tendencies end as MSKF's do
  phys/Makefile, main/depend.common, phys/CMakeLists.txt  module_cu_paramlib next to
                                module_cu_mskf
  Registry/Registry             touched: make regenerates the registry only when it changes

Every anchor is checked before anything is written: a tree the script does not recognise is
left untouched and the message names the file and the line it looked for. Applying twice
changes nothing. No WRF source is copied; only the lines shown above are added. Each file is
written through a temporary file and renamed; its original is kept first in WRF_DIR/.paramlib_patch,
from which `revert` restores every file byte for byte (and removes the module).
Standard library only (WRF machines need no paramlib install for this).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE = HERE / "module_cu_paramlib.F"
WRF_VERSION = "4.7.1"
DEFAULT_CU_PHYSICS = 97
MARK = "paramlib cumulus plugin"
SCHEME = "PARAMLIBSCHEME"
# The cumulus fields WRF keeps in restart files only (paramlib.data.readers.wrfout, whose test
# checks that this line is the reader's IOFIELDS_LINE).
IOFIELDS_LINE = "+:h:0:RTHCUTEN,RQVCUTEN,RQCCUTEN,RQRCUTEN,RQICUTEN,RQSCUTEN," + (
    "RAINCV,PRATEC,NCA,W0AVG,CUTOP,CUBOT"
)
# The scheme's copies of its previous call's outputs: (Registry name, dims, units).
PREV_STATE = [
    *((f"r{x}cuten_pl", "ikj", u) for x, u in (("th", "K s-1"), ("qv", "kg kg-1 s-1"))),
    *((f"rq{x}cuten_pl", "ikj", "kg kg-1 s-1") for x in "cris"),
    ("nca_pl", "ij", "s"),
]
NAMELIST = [  # (type, name, default, description)
    ("character", "paramlib_cu_model", '"paramlib_cu.pt"', "TorchScript model file"),
    ("integer", "paramlib_cu_device", "0", "0 CPU, 1 CUDA"),
    ("integer", "paramlib_cu_device_index", "0", "CUDA device number"),
    ("integer", "paramlib_cu_fallback", "0", "CUDA unavailable: 0 stop, 1 run on the CPU"),
    ("integer", "paramlib_cu_threads", "1", "libtorch intra-op threads (0: its default)"),
    ("character", "paramlib_cu_sha256", '"none"', "expected SHA-256 of the model (none: no check)"),
    ("integer", "paramlib_cu_on_error", "0", "failed model call: 0 stop, 1 zero that tile"),
    ("real", "paramlib_cu_top_fraction", "0.0005", "cloud top: activity >= this x column max"),
    ("integer", "paramlib_cu_water_closure", "0", "1: PRATEC = net column water loss"),
    ("integer", "paramlib_cu_ood_every", "0", "calls between out-of-range logs (0: 1 hour)"),
]
# The scheme's state as optional dummies of phy_init and cu_init (RTHCUTEN_PL ...), which
# start_em passes from grid% so that cu_paramlib_init can start it cold.
PL_ARGUMENTS = [name.upper() for name, _, _ in PREV_STATE]
# cu_init's own arguments that cu_paramlib_init starts cold, and the bounds it needs.
COLD_START = "RTHCUTEN RQVCUTEN RQCCUTEN RQRCUTEN RQICUTEN RQSCUTEN NCA W0AVG".split()
BOUNDS = "ids ide jds jde ims ime jms jme kms kme its ite jts jte kts kte".split()
# Arguments of cu_paramlib taken from MSKF's CALL in the cumulus driver, by keyword.
FROM_MSKF = (
    "DT KTAU STEPCU U V W TH T QV PCPS PI RHO DZ8W W0AVG HFX UST PBLH XLAND RTHCUTEN RQVCUTEN"
    " RQCCUTEN RQRCUTEN RQICUTEN RQSCUTEN F_QC F_QR F_QI F_QS RAINCV PRATEC NCA CUTOP CUBOT"
    " CU_ACT_FLAG IDS IDE JDS JDE KDS KDE IMS IME JMS JME KMS KME ITS ITE JTS JTE KTS KTE"
).split()


class PatchError(RuntimeError):
    """A WRF file is not as expected; nothing has been written."""


# --- Fortran text helpers -----------------------------------------------------------------------


def code_part(line: str) -> str:
    """The line without its ! comment (quotes respected)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "!":
            return line[:i]
    return line


def directive(line: str) -> bool:
    """A C preprocessor line (#if, #endif, ...): WRF's .F files go through cpp."""
    return line.lstrip().startswith("#")


def statements(lines: list[str], start: int = 0, stop: int | None = None) -> list[tuple[int, int]]:
    """(first, last) line indices of each free-form statement (continued with &)."""
    result, i = [], start
    stop = len(lines) if stop is None else min(stop, len(lines))
    while i < stop:
        j, pending = i, code_part(lines[i]).rstrip().endswith("&")
        # Comment, blank and preprocessor lines may sit inside a statement: WRF's cu_init has
        # `#if ( EM_CORE == 1 )` ... `#endif` inside its argument list.
        while pending and j + 1 < stop:
            j += 1
            code = "" if directive(lines[j]) else code_part(lines[j]).strip()
            if code:
                pending = code.endswith("&")
        result.append((i, j))
        i = j + 1
    return result


def joined(lines: list[str], first: int, last: int) -> str:
    """The statement's code, preprocessor lines left out (every branch of an #if kept)."""
    return " ".join(
        code_part(line).rstrip().rstrip("&")
        for line in lines[first : last + 1]
        if not directive(line)
    )


def routine_span(lines: list[str], name: str, path: str) -> tuple[int, int]:
    """Line indices of SUBROUTINE name ... END SUBROUTINE name."""
    begin = re.compile(rf"^\s*SUBROUTINE\s+{name}\b", re.I)
    end = re.compile(rf"^\s*END\s*SUBROUTINE\s+{name}\b", re.I)
    first = next((i for i, line in enumerate(lines) if begin.match(line)), None)
    if first is None:
        raise PatchError(f"{path}: SUBROUTINE {name} not found")
    last = next((i for i in range(first, len(lines)) if end.match(lines[i])), None)
    if last is None:
        raise PatchError(f"{path}: END SUBROUTINE {name} not found")
    return first, last


def find_line(
    lines: list[str], pattern: str, path: str, what: str, lo: int = 0, hi: int = -1
) -> int:
    hi = len(lines) if hi < 0 else hi
    regex = re.compile(pattern, re.I)
    for i in range(lo, hi):
        if regex.search(code_part(lines[i])):
            return i
    raise PatchError(f"{path}: {what} not found (looked for /{pattern}/)")


def add_scheme_next_to_mskf(lines: list[str], lo: int, hi: int, only_use: bool = False) -> int:
    """In lines lo..hi: PARAMLIBSCHEME wherever a CASE selector or a USE list names
    MSKFSCHEME, and as an alternative to `cu_physics == MSKFSCHEME` (or .EQ./.NE.); with
    only_use, in USE lists alone. Returns the number of lines changed."""
    changed = 0
    mskf = re.compile(r"\bMSKFSCHEME\b", re.I)
    compare = re.compile(r"([\w%]*cu_physics)\s*(==|\.eq\.|/=|\.ne\.)\s*MSKFSCHEME\b", re.I)
    for first, last in statements(lines, lo, hi):
        text = joined(lines, first, last)
        if not mskf.search(text) or re.search(rf"\b{SCHEME}\b", text, re.I):
            continue
        listing = re.match(r"\s*(CASE\b|USE\b)", text, re.I)
        if only_use and not re.match(r"\s*USE\b", text, re.I):
            continue
        for i in range(first, last + 1):
            if directive(lines[i]):
                continue
            code, comment = code_part(lines[i]), lines[i][len(code_part(lines[i])) :]
            if listing:
                new = mskf.sub(lambda m: f"{m.group(0)}, {SCHEME}", code)
            else:
                new = compare.sub(_alternative, code)
            if new != code:
                lines[i] = new + comment
                changed += 1
    return changed


def _alternative(m: re.Match[str]) -> str:
    var, op = m.group(1), m.group(2)
    joiner = ".AND." if op.lower() in ("/=", ".ne.") else ".OR."
    return f"({var} {op} MSKFSCHEME {joiner} {var} {op} {SCHEME})"


def keyword_actuals(call: str) -> dict[str, str]:
    """KEY=actual pairs of a CALL statement's argument list (top level only)."""
    body = call[call.index("(") + 1 : call.rindex(")")]
    parts, depth, current = [], 0, ""
    for ch in body:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    pairs = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if sep:
            pairs[key.strip().upper()] = value.strip()
    return pairs


def continued(head: str, items: list[str], indent: str, limit: int = 96) -> list[str]:
    """A Fortran call over continuation lines of at most about `limit` characters (WRF's
    free-form .F files stay well inside the 132 of the standard)."""
    out = [f"{head}({items[0]}"]
    for item in items[1:]:
        if len(out[-1]) + len(item) + 2 > limit:
            out.append(f"{indent}, {item}")
        else:
            out[-1] += f", {item}"
    return [line + " &" for line in out[:-1]] + [out[-1] + ")"]


def append_arguments(lines: list[str], first: int, last: int, items: list[str], what: str) -> None:
    """items at the end of the argument list of the statement lines[first..last] (a CALL or a
    SUBROUTINE header ending in `)`), on continuation lines of their own; the `)` may sit on a
    line of its own after an #if block, as in WRF's phy_init."""
    i = next(
        k
        for k in range(last, first - 1, -1)
        if not directive(lines[k]) and code_part(lines[k]).strip()
    )
    code, comment = code_part(lines[i]).rstrip(), lines[i][len(code_part(lines[i])) :].strip()
    if not code.endswith(")"):
        raise PatchError(f"{what} does not end in `)`")
    indent = re.match(r"\s*", lines[first]).group(0) + "     "
    head = code[:-1].rstrip() or code[:-1]
    rows = continued("", items, indent)
    rows[0] = indent + rows[0][1:]  # continued's first row starts with `(`
    rows[-1] = f"{rows[-1]}   ! {MARK}"
    lines[i : i + 1] = [f"{head}, &" + (f" {comment}" if comment else ""), *rows]


def declare_state(lines: list[str], routine: str, path: str) -> None:
    """The *_pl arrays as optional dummies of `routine`: appended to its arguments, declared
    after the statement that declares its memory bounds (ims ...)."""
    first, last = routine_span(lines, routine, path)
    header = statements(lines, first, last)[0]
    bounds = next(
        (
            b
            for a, b in statements(lines, header[1] + 1, last)
            if re.match(r"\s*INTEGER\b.*::.*\bims\b.*\bkme\b", joined(lines, a, b), re.I)
        ),
        None,
    )
    if bounds is None:
        raise PatchError(f"{path}: {routine} declares no INTEGER ims ... kme")
    profiles = ", ".join(PL_ARGUMENTS[:-1])
    lines[bounds + 1 : bounds + 1] = [
        f"   REAL, DIMENSION(ims:ime, kms:kme, jms:jme), OPTIONAL, INTENT(INOUT) :: &   ! {MARK}",
        f"        {profiles}",
        f"   REAL, DIMENSION(ims:ime, jms:jme), OPTIONAL, INTENT(INOUT) :: {PL_ARGUMENTS[-1]}",
    ]
    append_arguments(lines, *header, PL_ARGUMENTS, f"{path}: SUBROUTINE {routine}")


def em_core_guarded(lines: list[str], at: int, body: list[str]) -> list[str]:
    """body inside #if (EM_CORE == 1) unless line `at` already sits in such a block (MSKF is
    EM-only, and so is its neighbourhood)."""
    for line in reversed(lines[:at]):
        if line.lstrip().startswith("#"):
            if re.match(r"\s*#\s*if\b.*\bEM_CORE\s*==\s*1", line):
                return body
            break
    return ["#if (EM_CORE == 1)", *body, "#endif"]


def add_use_and_case(lines: list[str], use: int, case: int, entry: str, body: list[str]) -> None:
    """CASE (PARAMLIBSCHEME) with `body` before line `case` (MSKF's CASE), and the USE of `entry`
    and of PARAMLIBSCHEME after line `use` (MSKF's USE), which comes first."""
    lines[case:case] = em_core_guarded(lines, case, [f"     CASE ({SCHEME})   ! {MARK}", *body])
    uses = [
        f"   USE module_cu_paramlib, ONLY : {entry}   ! {MARK}",
        f"   USE module_state_description, ONLY : {SCHEME}",
    ]
    lines[use + 1 : use + 1] = em_core_guarded(lines, use + 1, uses)


# --- the edits ----------------------------------------------------------------------------------

Edit = Callable[[list[str], str, int], str]


def registry(lines: list[str], path: str, n: int) -> str:
    package = next(
        (
            line
            for line in lines
            if re.match(r"\s*package\s+mskfscheme\s+cu_physics\s*==", line, re.I)
        ),
        None,
    )
    if package is None:
        raise PatchError(f"{path}: MSKF's `package mskfscheme cu_physics==11` line not found")
    taken = {int(v) for v in re.findall(r"cu_physics\s*==\s*(\d+)", "\n".join(lines), re.I)}
    if n in taken:
        raise PatchError(f"{path}: cu_physics = {n} is taken; choose another with --cu-physics")
    w0avg = ",w0avg" if re.search(r"state:.*\bw0avg\b", package, re.I) else ""
    state = ",".join(name for name, _, _ in PREV_STATE) + w0avg
    block = [f"# {MARK} (fortran_bridge/wrf/patch_wrf.py): cu_physics = {n}"]
    block += [
        f'rconfig {kind:<9} {name:<24} namelist,physics 1 {default} - "{name}" "{desc}" ""'
        for kind, name, default, desc in NAMELIST
    ]
    block += [
        f'state  real  {name:<12}  {dims:<3}  misc  1  -  r  "{name.upper()}"'
        f'  "{MARK}: {name[:-3].upper()} of its last call"  "{units}"'
        for name, dims, units in PREV_STATE
    ]
    block.append(f"package   paramlibscheme  cu_physics=={n}  -  state:{state}")
    lines.extend(["", *block])
    return f"namelist options, {len(PREV_STATE)} state arrays, package cu_physics=={n}"


def cumulus_driver(lines: list[str], path: str, n: int) -> str:
    header = find_line(
        lines, r"^\s*SUBROUTINE\s+cumulus_driver\s*\(", path, "SUBROUTINE cumulus_driver"
    )
    if not re.search(r"\(\s*grid\b", code_part(lines[header]) + code_part(lines[header + 1]), re.I):
        raise PatchError(f"{path}: cumulus_driver has no `grid` argument (needed for grid%*_pl)")
    use = find_line(lines, r"^\s*USE\s+module_cu_mskf\b", path, "USE module_cu_mskf")
    case = find_line(lines, r"^\s*CASE\s*\(.*\bMSKFSCHEME\b", path, "CASE (MSKFSCHEME)", use)
    call = find_line(lines, r"^\s*CALL\s+MSKF_CPS\s*\(", path, "CALL MSKF_CPS(", case)
    (first, last) = statements(lines, call, call + 200)[0]
    actual = keyword_actuals(joined(lines, first, last))
    missing = [key for key in FROM_MSKF if key not in actual]
    if missing:
        raise PatchError(f"{path}: MSKF's CALL passes no {missing}; cannot wire cu_paramlib alike")
    args = [f"{key}={actual[key]}" for key in FROM_MSKF]
    args += [f"{name[:-3].upper()}_PREV=grid%{name}" for name, _, _ in PREV_STATE[:-1]]
    args.append("NCA_PREV=grid%nca_pl")
    call = continued("          CALL CU_PARAMLIB", args, "               ")
    add_use_and_case(
        lines, use, case, "cu_paramlib", ["          CALL wrf_debug(100, 'in cu_paramlib')", *call]
    )
    return f"USE and CASE ({SCHEME}) with MSKF's {len(FROM_MSKF)} actual arguments"


def physics_init(lines: list[str], path: str, n: int) -> str:
    first, last = routine_span(lines, "cu_init", path)
    head = joined(lines, *statements(lines, first, last)[0])
    for name in ("config_flags", "restart", "kds", "kde", *COLD_START, *BOUNDS):
        if not re.search(rf"\b{name}\b", head, re.I):
            raise PatchError(f"{path}: cu_init has no argument {name}")
    case = find_line(
        lines, r"^\s*CASE\s*\(.*\bMSKFSCHEME\b", path, "CASE (MSKFSCHEME) in cu_init", first, last
    )
    # Every namelist option, by keyword: the dummy is the option's name without its prefix.
    args = [
        f"{name.removeprefix('paramlib_cu_').upper()}=config_flags%{name}"
        for _, name, _, _ in NAMELIST
    ]
    args[0] = "MODEL_FILE=config_flags%paramlib_cu_model"
    use = find_line(
        lines, r"^\s*USE\s+module_cu_mskf\b", path, "USE module_cu_mskf in cu_init", first, case
    )
    # A cold start (restart false) sets MSKF's arrays and the scheme's *_pl copies on the tile.
    args += ["KDS=kds", "KDE=kde", "RESTART=restart", *(f"{a}={a}" for a in COLD_START)]
    args += [f"{a[:-3]}_PREV={a}" for a in PL_ARGUMENTS]
    args += [f"{b.upper()}={b}" for b in BOUNDS]
    call = continued("          CALL cu_paramlib_init", args, "               ")
    add_use_and_case(lines, use, case, "cu_paramlib_init", call)
    declare_state(lines, "cu_init", path)
    first, last = routine_span(lines, "phy_init", path)
    call_cu_init = find_line(lines, r"^\s*CALL\s+cu_init\s*\(", path, "CALL cu_init", first, last)
    statement = statements(lines, call_cu_init)[0]
    append_arguments(lines, *statement, [f"{a}={a}" for a in PL_ARGUMENTS], f"{path}: CALL cu_init")
    declare_state(lines, "phy_init", path)
    return f"USE and CASE ({SCHEME}) in cu_init; the *_pl arrays through phy_init and cu_init"


def start_em(lines: list[str], path: str, n: int) -> str:
    call = find_line(lines, r"^\s*CALL\s+phy_init\s*\(", path, "CALL phy_init")
    items = [f"{a}=grid%{a.lower()}" for a in PL_ARGUMENTS]
    append_arguments(lines, *statements(lines, call)[0], items, f"{path}: CALL phy_init")
    return "grid%*_pl into CALL phy_init"


def physics_addtendc(lines: list[str], path: str, n: int) -> str:
    first, last = routine_span(lines, "phy_cu_ten", path)
    if not add_scheme_next_to_mskf(lines, first, last):
        raise PatchError(f"{path}: phy_cu_ten names no MSKFSCHEME to add {SCHEME} to")
    uses = add_scheme_next_to_mskf(lines, 0, first, only_use=True)  # module-level ONLY list
    return f"{SCHEME} next to MSKFSCHEME in phy_cu_ten" + (" and its USE" if uses else "")


def nca_countdown(root: Path) -> tuple[Path, str] | None:
    """The file and subroutine that count NCA down each step (advance_ppt)."""
    decrement = re.compile(
        r"NCA\s*\(\s*I\s*,\s*J\s*\)\s*=\s*NCA\s*\(\s*I\s*,\s*J\s*\)\s*-\s*DT\b", re.I
    )
    for path in sorted([*root.glob("dyn_em/*.F"), *root.glob("phys/*.F")]):
        text = path.read_text(errors="replace")
        match = decrement.search(text)
        if match:
            before = text[: match.start()].splitlines()
            name = next(
                (
                    m.group(1)
                    for line in reversed(before)
                    if (m := re.match(r"\s*SUBROUTINE\s+(\w+)", line, re.I))
                ),
                None,
            )
            if name:
                return path, name
    return None


def countdown_edit(name: str) -> Edit:
    def edit(lines: list[str], path: str, n: int) -> str:
        first, last = routine_span(lines, name, path)
        changed = add_scheme_next_to_mskf(lines, first, last)
        if changed:
            add_scheme_next_to_mskf(lines, 0, first, only_use=True)  # module-level ONLY list
            return f"{SCHEME} next to MSKFSCHEME in {name} (NCA countdown), {changed} line(s)"
        return f"{name} counts NCA down for every scheme: nothing to add"

    return edit


def next_to_mskf_object(suffix: str) -> Edit:
    def edit(lines: list[str], path: str, n: int) -> str:
        token = re.compile(rf"\bmodule_cu_mskf{re.escape(suffix)}(?!\w)")
        count = 0
        for i, line in enumerate(lines):
            if token.search(line):
                lines[i] = token.sub(f"module_cu_mskf{suffix} module_cu_paramlib{suffix}", line)
                count += 1
        if not count:
            raise PatchError(f"{path}: module_cu_mskf{suffix} not found")
        return f"module_cu_paramlib{suffix} next to module_cu_mskf{suffix} ({count} place(s))"

    return edit


# --- files --------------------------------------------------------------------------------------

BACKUP = ".paramlib_patch"  # in the WRF tree: originals of the files apply and link change
CREATED = "created.txt"  # in BACKUP: files apply made that did not exist before


def read_lines(path: Path) -> tuple[list[str], str, str]:
    """The file's lines, its line ending and what follows the last line, so that writing the
    lines back reproduces every untouched byte (WRF's phys/CMakeLists.txt has no final newline;
    a few WRF sources are not UTF-8)."""
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    newline = "\r\n" if "\r\n" in text else "\n"
    return text.splitlines(), newline, newline if text.endswith(("\n", "\r")) else ""


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, then rename: an interrupted run never
    leaves a half-written WRF file. The file keeps its permission bits."""
    temporary = path.with_name(f".{path.name}.paramlib-tmp")
    try:
        temporary.write_bytes(text.encode("utf-8", "surrogateescape"))
        if path.exists():
            shutil.copymode(path, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def keep_originals(root: Path, relatives: list[str], refresh: bool) -> None:
    """Copy each file into BACKUP before it changes; files that do not exist yet are listed in
    CREATED. refresh: the file holds none of the kit's lines now (apply and link never rewrite
    a file that does), so this copy replaces an older one: configure.wrf after a new
    ./configure. Otherwise (the module, copied at every apply) the first copy stays."""
    backup = root / BACKUP
    created = backup / CREATED
    for relative in relatives:
        path, saved = root / relative, backup / relative
        listed = created.read_text().split() if created.is_file() else []
        if not refresh and (saved.exists() or relative in listed):
            continue
        if path.exists():
            saved.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(saved, path.read_bytes().decode("utf-8", "surrogateescape"))
        elif relative not in listed:
            backup.mkdir(exist_ok=True)
            write_atomic(created, "".join(f"{name}\n" for name in [*listed, relative]))


def writable(root: Path, relatives: list[str]) -> None:
    """Refuse before writing anything when a file or its folder cannot be written."""
    for relative in relatives:
        path = root / relative
        for target in (path.parent, path) if path.exists() else (path.parent,):
            if not os.access(target, os.W_OK):
                raise PatchError(f"{target}: not writable")


# --- commands -----------------------------------------------------------------------------------


def check_version(root: Path) -> str:
    decl = root / "inc" / "version_decl"
    if not decl.is_file():
        raise PatchError(f"{root}: inc/version_decl not found; is this a WRF source tree?")
    found = re.search(r"V?(\d+\.\d+(\.\d+)?)", decl.read_text())
    version = found.group(1) if found else "unknown"
    if version != WRF_VERSION:
        print(
            f"patch_wrf.py: WRF {version}, written against {WRF_VERSION}: every anchor is checked,"
            " but compile and test the result",
            file=sys.stderr,
        )
    return version


def apply(root: Path, n: int, dry_run: bool) -> int:
    version = check_version(root)
    edits: dict[str, list[Edit]] = {
        "Registry/Registry.EM_COMMON": [registry],
        "phys/module_cumulus_driver.F": [cumulus_driver],
        "phys/module_physics_init.F": [physics_init],
        "dyn_em/start_em.F": [start_em],
        "phys/module_physics_addtendc.F": [physics_addtendc],
        "phys/Makefile": [next_to_mskf_object(".o")],
        "main/depend.common": [next_to_mskf_object(".o")],
    }
    if (root / "phys" / "CMakeLists.txt").is_file():
        edits["phys/CMakeLists.txt"] = [next_to_mskf_object(".F")]
    countdown = nca_countdown(root)
    if countdown is None:
        print(
            "patch_wrf.py: WRF's NCA countdown (NCA(I,J) = NCA(I,J) - DT) not found in dyn_em/ or"
            f" phys/: check by hand that it applies to cu_physics = {n}",
            file=sys.stderr,
        )
    else:
        edits.setdefault(countdown[0].relative_to(root).as_posix(), []).append(
            countdown_edit(countdown[1])
        )

    results: dict[str, tuple[str, list[str]]] = {}
    for relative, file_edits in edits.items():  # every file edited in memory first: all or nothing
        path = root / relative
        if not path.is_file():
            raise PatchError(f"{path}: not found")
        lines, newline, end = read_lines(path)
        if re.search(rf"{MARK}|\bmodule_cu_paramlib\b|\b{SCHEME}\b", "\n".join(lines), re.I):
            print(f"  {relative}: already applied")
            continue
        notes = [edit(lines, relative, n) for edit in file_edits]
        results[relative] = (newline.join(lines) + end, notes)
    module = f"phys/{MODULE.name}"
    if not dry_run:
        writable(root, [*results, module, BACKUP])
        keep_originals(root, list(results), refresh=True)
        keep_originals(root, [module], refresh=False)
    for relative, (text, notes) in results.items():
        print(f"  {relative}: {'; '.join(notes)}")
        if not dry_run:
            write_atomic(root / relative, text)
    if not dry_run:
        write_atomic(root / module, MODULE.read_text())
        # A fresh clone has no Registry/Registry: ./compile makes it from Registry.EM. Touching
        # would create an empty one.
        registry_copy = root / "Registry" / "Registry"
        if registry_copy.is_file():
            registry_copy.touch()
    print(f"  phys/{MODULE.name}: {'would copy' if dry_run else 'copied'} from {MODULE}")
    print(
        f"WRF {version}: cu_physics = {n} runs the paramlib cumulus scheme"
        + (" (dry run: nothing written)" if dry_run else "; now `patch_wrf.py link` and compile")
    )
    return 0


def bridge_make_fragment(prefix: Path) -> Path:
    fragment = prefix / "share" / "paramlib" / "paramlib_bridge.mk"
    if not fragment.is_file():
        raise PatchError(
            f"{fragment} not found: install the bridge with"
            f" `cmake --install build --prefix {prefix}`"
        )
    return fragment


def link(root: Path, prefix: Path) -> int:
    fragment = bridge_make_fragment(prefix)
    configure = root / "configure.wrf"
    if not configure.is_file():
        raise PatchError(f"{configure} not found: run WRF's ./configure first")
    lines, newline, end = read_lines(configure)
    text = "\n".join(lines)
    if MARK in text:
        print(f"  {configure}: already linked")
        return 0
    for name in ("INCLUDE_MODULES", "FCBASEOPTS"):
        if not re.search(rf"^{name}\s*[:+]?=", text, re.M):
            raise PatchError(f"{configure}: no `{name} =` line")
    # WRF's GNU stanza only uses LIB_LOCAL (`LIB = ... $(LIB_LOCAL) ...`), others define it empty.
    if not re.search(r"^(LIB_LOCAL\s*[:+]?=|LIB\s*[:+]?=.*\$[({]LIB_LOCAL[)}])", text, re.M):
        raise PatchError(f"{configure}: no `LIB_LOCAL =` line nor a `LIB =` line using it")
    # Appended: += after WRF's own definitions; -I twice is harmless.
    writable(root, ["configure.wrf", BACKUP])
    keep_originals(root, ["configure.wrf"], refresh=True)
    lines += [
        "",
        f"# {MARK}: the paramlib bridge's Fortran module and library (patch_wrf.py link)",
        f"include {fragment}",
        "INCLUDE_MODULES += $(PARAMLIB_BRIDGE_FFLAGS)",
        "FCBASEOPTS += $(PARAMLIB_BRIDGE_FFLAGS)",
        "LIB_LOCAL += $(PARAMLIB_BRIDGE_LIBS)",
    ]
    write_atomic(configure, newline.join(lines) + newline)
    print(f"  {configure}: includes {fragment}; bridge in INCLUDE_MODULES, FCBASEOPTS, LIB_LOCAL")
    return 0


def revert(root: Path) -> int:
    """Every file apply or link changed back to its original bytes; the files apply created
    removed; the folder of originals last (an interrupted revert can be run again)."""
    backup = root / BACKUP
    if not backup.is_dir():
        raise PatchError(
            f"{backup} not found: this tree was not patched by this kit (or was reverted);"
            " restore WRF's files from its git history instead"
        )
    created = backup / CREATED
    listed = created.read_text().split() if created.is_file() else []
    saved = sorted(p for p in backup.rglob("*") if p.is_file() and p != created)
    writable(root, [p.relative_to(backup).as_posix() for p in saved] + listed)
    for original in saved:
        relative = original.relative_to(backup).as_posix()
        # Fresh modification times: make rebuilds what was compiled from the patched files.
        write_atomic(root / relative, original.read_bytes().decode("utf-8", "surrogateescape"))
        print(f"  {relative}: restored")
    for relative in listed:
        (root / relative).unlink(missing_ok=True)
        print(f"  {relative}: removed")
    registry_copy = root / "Registry" / "Registry"
    if registry_copy.is_file():
        registry_copy.touch()
    shutil.rmtree(backup)
    print(f"{root}: the paramlib cumulus plugin removed; compile again")
    return 0


def cmake_flags(prefix: Path) -> int:
    values = dict(
        re.findall(
            r"^(PARAMLIB_BRIDGE_\w+)\s*=\s*(.*)$", bridge_make_fragment(prefix).read_text(), re.M
        )
    )
    print(
        f'-DCMAKE_Fortran_FLAGS="{values["PARAMLIB_BRIDGE_FFLAGS"]}"'
        f' -DCMAKE_Fortran_STANDARD_LIBRARIES="{values["PARAMLIB_BRIDGE_LIBS"]}"'
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("apply", help="copy the module and edit WRF's files")
    p.add_argument("--wrf", type=Path, required=True, help="WRF source tree")
    p.add_argument("--cu-physics", type=int, default=DEFAULT_CU_PHYSICS)
    p.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")
    p = commands.add_parser("link", help="link the bridge in configure.wrf")
    p.add_argument("--wrf", type=Path, required=True)
    p.add_argument("--prefix", type=Path, required=True, help="where the bridge is installed")
    p = commands.add_parser("revert", help="restore the files apply and link changed")
    p.add_argument("--wrf", type=Path, required=True)
    p = commands.add_parser("cmake-flags", help="options for WRF's CMake build")
    p.add_argument("--prefix", type=Path, required=True)
    commands.add_parser("iofields", help="print the iofields_filename line")
    args = parser.parse_args(argv)
    try:
        if args.command == "apply":
            return apply(args.wrf.resolve(), args.cu_physics, args.dry_run)
        if args.command == "link":
            return link(args.wrf.resolve(), args.prefix.resolve())
        if args.command == "revert":
            return revert(args.wrf.resolve())
        if args.command == "cmake-flags":
            return cmake_flags(args.prefix.resolve())
        print(IOFIELDS_LINE)
        return 0
    except PatchError as error:
        print(f"patch_wrf.py: {error}; nothing was changed", file=sys.stderr)
        return 1
    except OSError as error:  # a disk full or a file vanishing mid-way: one line, not a traceback
        print(f"patch_wrf.py: {error.filename}: {error.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
