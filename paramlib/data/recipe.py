"""Dataset recipes: the YAML file ``paramlib dataset build`` reads (schema below), as dataclasses.

    name: bilstm_wrf_mskf            # required, one path component (letters, digits, . _ + -);
                                     # the store's default file name is NAME.zarr
    description: ...                 # required
    sources: [wrf_mskf_ctl, ...]     # required: catalog entry names
    inputs: [t, qv, ...]             # required: canonical variable names (after the entry's map)
    targets: [rthcuten, ...]         # required
    units: {t: K}                    # optional: units each variable must have, checked per source
    levels: {start: 0, stop: 30}     # optional: level index slice, 0 = lowest level; a bound
                                     # beyond a source's levels is an error, not clamped
    # or
    levels: {interpolate: [0.99, 0.9, 0.5]}
                                     # linear interpolation in the lev coordinate (its units:
                                     # eta for wrfout, hPa for CESM) onto these levels, surface
                                     # first, each inside every source's levels. Without it,
                                     # sources whose selected levels differ are refused.
    times: {start: 0, stop: 10}      # optional: frame index slice of every source (bounds
                                     # beyond a source's frames are errors)
    source_fractions:                # optional: a part of one source's frames (after `times`),
      run_b: {start: 0.6}            # as fractions: frames round(start*n) to round(stop*n);
                                     # e.g. to train an oracle on the first half of a run and
                                     # test everything on the rest (DESIGN.md, MF-RPN)
    qc:
      ranges: {t: [150, 350]}        # optional: columns with a value outside [lo, hi] are dropped
    sampling:                        # optional
      mskf_fresh: true               # WRF MSKF: keep columns MSKF recomputed at this call
      previous: [rthcuten]           # add the previous frame's fields as inputs NAME_prev
      balance: {where: "rthcuten != 0", ratio: 1.0, seed: 0}
                                     # keep every column where the predicate holds on any level
                                     # and at most ratio x as many others, drawn at random
    split:                           # required
      by: run                        # run: whole catalog entries per split
      train: [wrf_mskf_ctl]
      val: []
      test: [wrf_mskf_shear2x]
      val_fraction: 0.2              # optional: the last 20 % of each train run's frames (after
      gap: 1                         # a gap of 1 frame) go to val instead
    # or
      by: time                       # contiguous frame blocks train | gap | val | gap | test
      fractions: {train: 0.7, val: 0.15, test: 0.15}
      gap: 1                         # frames left out between blocks (no neighbouring times)
    chunk_samples: 8192              # optional: zarr chunk length along sample
    compression: lz4                 # optional: lz4 (default, Blosc with byte shuffle; writes
                                     # ~2x faster than zstd), zstd (smaller files) or none

Every problem found is reported at once, each line naming the recipe file and the key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from paramlib.guards import UserInputError, safe_name

SPLITS = ("train", "val", "test")
SPLIT_BY = ("run", "time")
PREDICATE = re.compile(r"^\s*(\w+)\s*(==|!=|>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")
TOP_KEYS = (
    *("name", "description", "sources", "inputs", "targets", "units", "levels", "times"),
    "source_fractions",
    *("qc", "sampling", "split", "chunk_samples", "compression"),
)
COMPRESSIONS = ("lz4", "zstd", "none")


class RecipeError(ValueError):
    """An invalid recipe; one line per problem, each naming the file and key."""


@dataclass(frozen=True)
class IndexSlice:
    start: int | None = None
    stop: int | None = None

    def as_slice(self) -> slice:
        return slice(self.start, self.stop)


@dataclass(frozen=True)
class Levels(IndexSlice):
    interpolate: tuple[float, ...] = ()  # lev coordinate values to interpolate onto, if any


@dataclass(frozen=True)
class FractionSlice:
    start: float = 0.0
    stop: float = 1.0

    def of(self, n: int) -> slice:
        return slice(round(self.start * n), round(self.stop * n))


@dataclass(frozen=True)
class Balance:
    variable: str
    op: str
    value: float
    ratio: float = 1.0
    seed: int = 0

    @property
    def where(self) -> str:
        return f"{self.variable} {self.op} {self.value:g}"


@dataclass(frozen=True)
class Sampling:
    mskf_fresh: bool = False
    previous: tuple[str, ...] = ()
    balance: Balance | None = None


@dataclass(frozen=True)
class Split:
    by: str
    runs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # by run: split -> entries
    fractions: dict[str, float] = field(default_factory=dict)  # by time: split -> fraction
    gap: int = 0  # frames left out between time blocks
    val_fraction: float = 0.0  # by run: the last frames of each train run held out as val


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    sources: tuple[str, ...]
    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    split: Split
    units: dict[str, str] = field(default_factory=dict)
    levels: Levels = Levels()
    times: IndexSlice = IndexSlice()
    source_fractions: dict[str, FractionSlice] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    sampling: Sampling = Sampling()
    chunk_samples: int = 8192
    compression: str = "lz4"
    text: str = ""  # the YAML as written, stored in the store's attributes
    path: Path | None = None

    @property
    def variables(self) -> tuple[str, ...]:
        """Inputs (previous-frame fields included) then targets: what the store holds."""
        previous = tuple(f"{name}_prev" for name in self.sampling.previous)
        return (*self.inputs, *previous, *self.targets)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text()
        raw = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as error:
        raise RecipeError(f"{path}: cannot be read as YAML ({error})") from error
    return parse_recipe(raw, text=text, path=path)


def parse_recipe(raw: Any, *, text: str = "", path: Path | None = None) -> Recipe:
    where = str(path) if path else "recipe"
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(raw).__name__}")
    for key in sorted(raw.keys() - set(TOP_KEYS)):
        problems.append(f"unknown key {key!r} (allowed: {', '.join(TOP_KEYS)})")
    missing = [
        k for k in ("name", "description", "sources", "inputs", "targets", "split") if k not in raw
    ]
    if missing:
        problems.append(f"missing required keys {missing}")
        raise RecipeError("\n".join(f"{where}: {p}" for p in problems))

    def names(key: str, value: Any, allow_empty: bool = False) -> tuple[str, ...]:
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        if not ok or (not value and not allow_empty):
            problems.append(f"key {key!r}: expected a list of names, got {value!r}")
            return ()
        return tuple(value)

    if not (isinstance(raw["description"], str) and raw["description"].strip()):
        problems.append(
            f"key 'description': expected a non-empty string, got {raw['description']!r}"
        )
    try:
        # The name becomes the default store path NAME.zarr: it must not leave the folder.
        safe_name(raw["name"], "key 'name':")
    except UserInputError as error:
        problems.append(str(error))
    sources = names("sources", raw["sources"])
    inputs = names("inputs", raw["inputs"])
    targets = names("targets", raw["targets"])
    units = _mapping(raw.get("units", {}), "units", problems)
    ranges = {}
    qc = _mapping(raw.get("qc") or {}, "qc", problems)
    for name in sorted(qc.keys() - {"ranges"}):
        problems.append(f"key 'qc.{name}': unknown (allowed: ranges)")
    for var, bounds in _mapping(qc.get("ranges", {}), "qc.ranges", problems).items():
        if not (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(map(_is_number, bounds))
            and bounds[0] <= bounds[1]
        ):
            problems.append(
                f"key 'qc.ranges.{var}': expected [low, high], two numbers with low <= high,"
                f" got {bounds!r}"
            )
        else:
            ranges[var] = (float(bounds[0]), float(bounds[1]))
    sampling = _parse_sampling(raw.get("sampling") or {}, problems)
    split = _parse_split(raw["split"], sources, problems)
    source_fractions = _parse_fractions(raw.get("source_fractions"), sources, problems)
    levels = _parse_levels(raw.get("levels"), problems)
    times = _parse_slice(raw.get("times"), "times", problems)
    chunk = raw.get("chunk_samples", 8192)
    if not (isinstance(chunk, int) and chunk > 0):
        problems.append(f"key 'chunk_samples': expected a positive integer, got {chunk!r}")
    compression = raw.get("compression", "lz4")
    if compression not in COMPRESSIONS:
        problems.append(f"key 'compression': expected one of {COMPRESSIONS}, got {compression!r}")
    known = {*inputs, *targets}
    for key, used in (("units", units), ("qc.ranges", ranges)):
        for var in sorted(set(used) - known - {f"{p}_prev" for p in sampling.previous}):
            problems.append(f"key '{key}.{var}': {var!r} is neither an input nor a target")
    if problems:
        raise RecipeError("\n".join(f"{where}: {p}" for p in problems))
    return Recipe(
        name=raw["name"].strip(),
        description=raw["description"].strip(),
        sources=sources,
        inputs=inputs,
        targets=targets,
        split=split,
        units={str(k): str(v) for k, v in units.items()},
        levels=levels,
        times=times,
        source_fractions=source_fractions,
        ranges=ranges,
        sampling=sampling,
        chunk_samples=chunk,
        compression=compression,
        text=text,
        path=path,
    )


def _mapping(value: Any, key: str, problems: list[str]) -> dict:
    if not isinstance(value, dict):
        problems.append(f"key {key!r}: expected a mapping, got {value!r}")
        return {}
    return value


def _is_number(value: Any) -> bool:
    """A finite int or float from YAML (not a bool, not a string that looks like one)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _parse_slice(
    value: Any, key: str, problems: list[str], extra: tuple[str, ...] = ()
) -> IndexSlice:
    raw = _mapping(value or {}, key, problems)
    allowed = ("start", "stop", *extra)
    for name in sorted(raw.keys() - set(allowed)):
        problems.append(f"key '{key}.{name}': unknown (allowed: {', '.join(allowed)})")
    bounds = [raw.get("start"), raw.get("stop")]
    if not all(
        b is None or (isinstance(b, int) and not isinstance(b, bool) and b >= 0) for b in bounds
    ):
        problems.append(f"key {key!r}: start and stop must be non-negative integers, got {raw!r}")
        return IndexSlice()
    if None not in bounds and bounds[0] >= bounds[1]:
        problems.append(f"key {key!r}: expected start < stop, got {raw!r}")
    return IndexSlice(*bounds)


def _parse_levels(value: Any, problems: list[str]) -> Levels:
    bounds = _parse_slice(value, "levels", problems, extra=("interpolate",))
    targets = (value or {}).get("interpolate") if isinstance(value, dict) else None
    if targets is None:
        return Levels(bounds.start, bounds.stop)
    if bounds != IndexSlice():
        problems.append("key 'levels': give either start/stop or interpolate, not both")
    steps = (
        np.diff(targets) if isinstance(targets, list) and all(map(_is_number, targets)) else None
    )
    if not targets or steps is None or not (np.all(steps > 0) or np.all(steps < 0)):
        problems.append(
            "key 'levels.interpolate': expected a list of level coordinate values, strictly"
            f" monotonic (surface first), got {targets!r}"
        )
        return Levels()
    return Levels(interpolate=tuple(float(v) for v in targets))


def _parse_fractions(
    value: Any, sources: tuple[str, ...], problems: list[str]
) -> dict[str, FractionSlice]:
    fractions = {}
    for name, spec in _mapping(value or {}, "source_fractions", problems).items():
        key = f"source_fractions.{name}"
        if name not in sources:
            problems.append(f"key {key!r}: {name!r} is not in 'sources'")
            continue
        spec = _mapping(spec, key, problems)
        for extra in sorted(spec.keys() - {"start", "stop"}):
            problems.append(f"key '{key}.{extra}': unknown (allowed: start, stop)")
        start, stop = spec.get("start", 0.0), spec.get("stop", 1.0)
        if not all(isinstance(f, int | float) for f in (start, stop)) or not (
            0 <= start < stop <= 1
        ):
            problems.append(f"key {key!r}: expected 0 <= start < stop <= 1, got {spec!r}")
            continue
        fractions[name] = FractionSlice(float(start), float(stop))
    return fractions


def _parse_sampling(value: Any, problems: list[str]) -> Sampling:
    raw = _mapping(value, "sampling", problems)
    for name in sorted(raw.keys() - {"mskf_fresh", "previous", "balance"}):
        problems.append(f"key 'sampling.{name}': unknown (allowed: mskf_fresh, previous, balance)")
    balance = None
    if "balance" in raw:
        spec = _mapping(raw["balance"], "sampling.balance", problems)
        found = len(problems)
        match = PREDICATE.match(str(spec.get("where", "")))
        threshold = _float(match[3]) if match else None
        if threshold is None:
            problems.append(
                "key 'sampling.balance.where': expected 'VARIABLE OP NUMBER' (OP one of"
                f" == != > >= < <=), got {spec.get('where')!r}"
            )
        ratio, seed = spec.get("ratio", 1.0), spec.get("seed", 0)
        if not (_is_number(ratio) and ratio >= 0):
            problems.append(f"key 'sampling.balance.ratio': expected a number >= 0, got {ratio!r}")
        if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
            problems.append(
                f"key 'sampling.balance.seed': expected a non-negative integer, got {seed!r}"
            )
        if match and threshold is not None and len(problems) == found:
            balance = Balance(match[1], match[2], threshold, float(ratio), seed)
    previous = raw.get("previous", [])
    if not (isinstance(previous, list) and all(isinstance(p, str) for p in previous)):
        problems.append(f"key 'sampling.previous': expected a list of names, got {previous!r}")
        previous = []
    return Sampling(bool(raw.get("mskf_fresh", False)), tuple(previous), balance)


def _parse_split(value: Any, sources: tuple[str, ...], problems: list[str]) -> Split:
    raw = _mapping(value, "split", problems)
    by = raw.get("by")
    if by not in SPLIT_BY:
        problems.append(f"key 'split.by': expected one of {SPLIT_BY}, got {by!r}")
        return Split(by="run")
    allowed = {"by", *SPLITS, "val_fraction", "gap"} if by == "run" else {"by", "fractions", "gap"}
    for name in sorted(raw.keys() - allowed):
        problems.append(f"key 'split.{name}': unknown with by: {by} (allowed: {sorted(allowed)})")
    gap = raw.get("gap", 1)
    if not (isinstance(gap, int) and gap >= 0):
        problems.append(f"key 'split.gap': expected a non-negative integer, got {gap!r}")
    if by == "run":
        runs = {}
        for name in SPLITS:
            entries = raw.get(name, [])
            if not (isinstance(entries, list) and all(isinstance(e, str) for e in entries)):
                problems.append(f"key 'split.{name}': expected a list of source names")
                entries = []
            runs[name] = tuple(entries)
        listed = [e for entries in runs.values() for e in entries]
        for entry in sorted({e for e in listed if listed.count(e) > 1}):
            problems.append(f"key 'split': source {entry!r} is in more than one split")
        for entry in sorted(set(listed) ^ set(sources)):
            problems.append(
                f"key 'split': source {entry!r} must be in exactly one of train/val/test"
                " and in 'sources'"
            )
        if not runs["train"]:
            problems.append("key 'split.train': needs at least one source")
        val_fraction = raw.get("val_fraction", 0.0)
        if not (isinstance(val_fraction, int | float) and 0 <= val_fraction < 1):
            problems.append(f"key 'split.val_fraction': expected 0 <= f < 1, got {val_fraction!r}")
            val_fraction = 0.0
        return Split(by="run", runs=runs, gap=gap, val_fraction=float(val_fraction))
    fractions = _mapping(raw.get("fractions", {}), "split.fractions", problems)
    if set(fractions) - set(SPLITS) or "train" not in fractions:
        problems.append(f"key 'split.fractions': expected train (and val, test), got {fractions}")
    elif abs(sum(fractions.values()) - 1.0) > 1e-9 or min(fractions.values()) < 0:
        problems.append(f"key 'split.fractions': must be >= 0 and sum to 1, got {fractions}")
    return Split(by="time", fractions={k: float(v) for k, v in fractions.items()}, gap=gap)
