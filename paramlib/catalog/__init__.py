"""The data catalog: YAML files in ``data_catalog/`` that say what data exists and how to read it.

Schema (data_catalog/README.md has the long form). A file holds ``entries`` (name -> entry) and
optional ``defaults`` (keys every entry of that file starts from; an entry's own keys win):

    description  str, required
    format       required, one of FORMATS (the reader registered under that name reads it)
    paths        required, list of paths or globs, relative to the data root unless absolute;
                 environment variables ($VAR, ${VAR}) expanded
    fidelity     required, "low" or "high"
    scenario     required, e.g. "historical", "plus4k", or a run's name
    variables    optional, reader variable -> {name: canonical name, units: expected units};
                 when given, only these are kept (units checked, then renamed)
    levels       optional, {coordinate, units, count (optional), source_order (optional:
                 surface_to_top | top_to_surface, as stored; readers return surface_to_top)}
    options      optional mapping, passed to the reader as keyword arguments
    template     optional bool: real-data layout to copy; ``validate`` skips it while its paths
                 do not exist

A file may also hold ``models`` (name -> model entry): trained model files a host or an
evaluation names, with keys ``description`` (required), ``path`` (required, relative to the
data root unless absolute) and ``sha256`` (optional: 64 hex digits; `model_file` checks the
file against it before anything loads it, as a model file is code).

The data root is ``--root`` / ``root=``, else $PARAMLIB_DATA_ROOT, else ``../shared/data`` next to
the repository. The catalog folder is ``--catalog-dir``, else $PARAMLIB_CATALOG_DIR, else
``data_catalog/`` in the repository. Validation names the file, the entry and the key.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paramlib.paths import CATALOG_DIR, CATALOG_DIR_ENV, DATA_ROOT, DATA_ROOT_ENV

FORMATS = ("wrfout", "cesm-history", "srm-coarse", "zarr")
FIDELITIES = ("low", "high")
LEVEL_ORDERS = ("surface_to_top", "top_to_surface")
FILE_KEYS = ("defaults", "entries", "models")
MODEL_KEYS = ("description", "path", "sha256")
_UNEXPANDED = re.compile(r"\$\{?\w+")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class CatalogError(ValueError):
    """Invalid catalog files or entries; one line per problem, each naming file, entry and key."""


@dataclass(frozen=True)
class VariableMap:
    name: str  # canonical name
    units: str  # units the reader must report


@dataclass(frozen=True)
class LevelSpec:
    coordinate: str  # eta, hybrid_sigma_pressure, pressure, height, ...
    units: str
    count: int | None = None
    source_order: str = "surface_to_top"


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    format: str
    paths: tuple[str, ...]
    fidelity: str
    scenario: str
    variables: Mapping[str, VariableMap] = field(default_factory=dict)
    levels: LevelSpec | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    template: bool = False
    source_file: Path | None = None  # the YAML file it came from


@dataclass(frozen=True)
class ModelEntry:
    """A trained model file the catalog names, optionally pinned by its SHA-256."""

    name: str
    description: str
    path: str
    sha256: str | None = None
    source_file: Path | None = None


REQUIRED_KEYS = tuple(
    f.name
    for f in dataclasses.fields(CatalogEntry)
    if f.default is dataclasses.MISSING
    and f.default_factory is dataclasses.MISSING
    and f.name != "name"
)
ENTRY_KEYS = tuple(
    f.name for f in dataclasses.fields(CatalogEntry) if f.name not in ("name", "source_file")
)


def data_root(root: str | os.PathLike | None = None) -> Path:
    chosen = root if root is not None else os.environ.get(DATA_ROOT_ENV) or DATA_ROOT
    return Path(os.path.expandvars(os.fspath(chosen))).expanduser()


def catalog_dir(directory: str | os.PathLike | None = None) -> Path:
    chosen = (
        directory if directory is not None else (os.environ.get(CATALOG_DIR_ENV) or CATALOG_DIR)
    )
    return Path(chosen).expanduser()


def load_catalog(
    directory: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    *,
    check_paths: bool = True,
) -> dict[str, CatalogEntry]:
    """Every entry of ``directory``/*.yaml by name, validated. With ``check_paths``, the paths
    of non-template entries must exist under the data root. Raises CatalogError listing every
    problem found."""
    entries, _, errors = _load(directory)
    if check_paths:
        for entry in entries.values():
            if not entry.template:
                try:
                    resolve_paths(entry, root)
                except CatalogError as error:
                    errors.append(str(error))
    if errors:
        raise CatalogError("\n".join(errors))
    return entries


def load_models(directory: str | os.PathLike | None = None) -> dict[str, ModelEntry]:
    """Every model entry of ``directory``/*.yaml by name, validated (CatalogError)."""
    _, models, errors = _load(directory)
    if errors:
        raise CatalogError("\n".join(errors))
    return models


def model_file(
    name: str, directory: str | os.PathLike | None = None, root: str | os.PathLike | None = None
) -> Path:
    """The model file of catalog model `name`, checked against its ``sha256`` (when the entry
    pins one) before anything loads it."""
    models = load_models(directory)
    if name not in models:
        raise CatalogError(f"no catalog model {name!r}; models: {', '.join(models) or 'none'}")
    entry = models[name]
    path = Path(os.path.expandvars(entry.path)).expanduser()
    path = path if path.is_absolute() else data_root(root) / path
    if entry.sha256 is None:
        return path
    from paramlib.export import verify_sha256  # torch: only when a model is asked for

    return verify_sha256(path, entry.sha256, f"catalog model {name!r} ({entry.source_file})")


def _load(
    directory: str | os.PathLike | None,
) -> tuple[dict[str, CatalogEntry], dict[str, ModelEntry], list[str]]:
    """Data entries, model entries and the problems found, over every file of the folder."""
    folder = catalog_dir(directory)
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise CatalogError(f"{folder}: no catalog files (*.yaml)")
    entries: dict[str, CatalogEntry] = {}
    models: dict[str, ModelEntry] = {}
    errors: list[str] = []
    for path in files:
        found, found_models = _parse_file(path, errors)
        _add_unique(entries, found, f"{path}: entry", errors)
        _add_unique(models, found_models, f"{path}: model", errors)
    return entries, models, errors


def _add_unique(table: dict[str, Any], items: list[Any], where: str, errors: list[str]) -> None:
    """Add named `items` to `table`; a name defined before is an error, not a replacement."""
    for item in items:
        if item.name in table:
            errors.append(
                f"{where} {item.name!r}: already defined in {table[item.name].source_file}"
            )
        else:
            table[item.name] = item


def resolve_paths(entry: CatalogEntry, root: str | os.PathLike | None = None) -> list[Path]:
    """The entry's files: each path or glob, variables expanded, under the data root."""
    base = data_root(root)
    files: list[Path] = []
    for index, pattern in enumerate(entry.paths):
        where = f"{entry.source_file}: entry {entry.name!r}: key 'paths[{index}]'"
        expanded = os.path.expandvars(pattern)
        unset = _UNEXPANDED.search(expanded)
        if unset:
            raise CatalogError(f"{where}: environment variable {unset.group(0)} is not set")
        full = Path(expanded).expanduser()
        full = full if full.is_absolute() else base / full
        if glob.has_magic(str(full)):
            matched = sorted(Path(p) for p in glob.glob(str(full)))
            if not matched:
                raise CatalogError(f"{where}: {pattern!r} matches no file ({full})")
        elif full.exists():
            matched = [full]
        else:
            raise CatalogError(f"{where}: {pattern!r} does not exist ({full})")
        files.extend(p for p in matched if p not in files)
    return files


# --- parsing --------------------------------------------------------------------------------


def _parse_file(path: Path, errors: list[str]) -> tuple[list[CatalogEntry], list[ModelEntry]]:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        errors.append(f"{path}: cannot be read as YAML ({error})")
        return [], []
    if not isinstance(document, dict) or not isinstance(
        document.get("entries", {} if "models" in document else None), dict
    ):
        errors.append(f"{path}: expected a mapping with key 'entries' (name -> entry)")
        return [], []
    for key in document.keys() - set(FILE_KEYS):
        errors.append(f"{path}: unknown top-level key {key!r} (allowed: {', '.join(FILE_KEYS)})")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        errors.append(f"{path}: 'defaults' must be a mapping")
        defaults = {}
    parsed = []
    for name, raw in document.get("entries", {}).items():
        problems: list[str] = []
        entry = _parse_entry(str(name), {**defaults, **(raw or {})}, path, problems)
        errors.extend(f"{path}: entry {name!r}: {problem}" for problem in problems)
        if entry is not None and not problems:
            parsed.append(entry)
    return parsed, _parse_models(document.get("models"), path, errors)


def _parse_models(raw: object, path: Path, errors: list[str]) -> list[ModelEntry]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        errors.append(f"{path}: 'models' must be a mapping (name -> model entry)")
        return []
    models = []
    for name, entry in raw.items():
        where = f"{path}: model {name!r}"
        if not isinstance(entry, dict):
            errors.append(f"{where}: expected a mapping with description and path")
            continue
        problems = [
            f"unknown key {k!r} (allowed: {', '.join(MODEL_KEYS)})"
            for k in entry.keys() - set(MODEL_KEYS)
        ]
        problems += [
            f"key {k!r}: expected a non-empty string"
            for k in ("description", "path")
            if not isinstance(entry.get(k), str) or not entry[k].strip()
        ]
        pinned = entry.get("sha256")
        if pinned is not None and not (isinstance(pinned, str) and _SHA256.fullmatch(pinned)):
            problems.append(f"key 'sha256': expected 64 hex digits of a SHA-256, got {pinned!r}")
        errors.extend(f"{where}: {problem}" for problem in problems)
        if not problems:
            models.append(
                ModelEntry(
                    str(name),
                    entry["description"].strip(),
                    entry["path"],
                    pinned.lower() if pinned else None,
                    path,
                )
            )
    return models


def _parse_entry(name: str, raw: dict, path: Path, problems: list[str]) -> CatalogEntry | None:
    for key in sorted(raw.keys() - set(ENTRY_KEYS)):
        problems.append(f"unknown key {key!r} (allowed: {', '.join(ENTRY_KEYS)})")
    for key in REQUIRED_KEYS:
        if key not in raw:
            problems.append(f"missing required key {key!r}")
    if problems:
        return None

    def check(key: str, ok: bool, expected: str) -> None:
        if not ok:
            problems.append(f"key {key!r}: expected {expected}, got {raw[key]!r}")

    for key in ("description", "scenario"):
        check(key, isinstance(raw[key], str) and bool(raw[key].strip()), "a non-empty string")
    check("format", raw["format"] in FORMATS, f"one of {', '.join(FORMATS)}")
    check("fidelity", raw["fidelity"] in FIDELITIES, f"one of {', '.join(FIDELITIES)}")
    paths = raw["paths"]
    check(
        "paths",
        isinstance(paths, list) and bool(paths) and all(isinstance(p, str) and p for p in paths),
        "a non-empty list of path strings",
    )
    check("template", isinstance(raw.get("template", False), bool), "true or false")
    check("options", isinstance(raw.get("options", {}), dict), "a mapping")
    variables = _parse_variables(raw.get("variables") or {}, problems)
    levels = _parse_levels(raw.get("levels"), problems)
    if problems:
        return None
    return CatalogEntry(
        name=name,
        description=raw["description"].strip(),
        format=raw["format"],
        paths=tuple(paths),
        fidelity=raw["fidelity"],
        scenario=raw["scenario"],
        variables=variables,
        levels=levels,
        options=dict(raw.get("options") or {}),
        template=raw.get("template", False),
        source_file=path,
    )


def _parse_variables(raw: object, problems: list[str]) -> dict[str, VariableMap]:
    if not isinstance(raw, dict):
        problems.append(
            f"key 'variables': expected a mapping source -> {{name, units}}, got {raw!r}"
        )
        return {}
    parsed = {}
    for source, target in raw.items():
        key = f"variables.{source}"
        if not isinstance(target, dict) or set(target) != {"name", "units"}:
            problems.append(f"key {key!r}: expected {{name: ..., units: ...}}, got {target!r}")
        elif not all(isinstance(v, str) for v in target.values()):
            problems.append(f"key {key!r}: name and units must be strings, got {target!r}")
        else:
            parsed[str(source)] = VariableMap(name=target["name"], units=target["units"])
    return parsed


def _parse_levels(raw: object, problems: list[str]) -> LevelSpec | None:
    if raw is None:
        return None
    allowed = {f.name for f in dataclasses.fields(LevelSpec)}
    if not isinstance(raw, dict) or not {"coordinate", "units"} <= raw.keys() <= allowed:
        problems.append(
            f"key 'levels': expected a mapping with coordinate and units (and"
            f" optionally count, source_order), got {raw!r}"
        )
        return None
    count = raw.get("count")
    if count is not None and not (isinstance(count, int) and count > 0):
        problems.append(f"key 'levels.count': expected a positive integer, got {count!r}")
    order = raw.get("source_order", "surface_to_top")
    if order not in LEVEL_ORDERS:
        problems.append(f"key 'levels.source_order': expected one of {LEVEL_ORDERS}, got {order!r}")
    return LevelSpec(str(raw["coordinate"]), str(raw["units"]), count, order)


# --- paramlib catalog -----------------------------------------------------------------------
