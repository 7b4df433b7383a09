"""Training configs: YAML -> validated dataclasses, with variants and command-line overrides.

A config file (training/configs/*.yaml)::

    name: mfrpn_hf_of_lf                 # required; names the default run directory (one
                                         # path component: letters, digits, . _ + -)
    description: ...                     # optional
    model:   {kind: mfrpn, hidden: [512, ...], members: 32, composition: hf_of_lf, ...}
    data:    {store: ..., lf_store: ..., inputs: [...], targets: [...], nlev: {q: 22}}
    train:   {steps: 100000, batch_size: 2048, lr: 1.0e-4, seed: 0, ...}
    export:  {output: mean_spread}
    variants:
      small: {model.hidden: [32, 32], model.members: 4, train.steps: 300}

Each section's keys are the fields of `ModelConfig`, `DataConfig`, `TrainConfig` and
`ExportConfig` below (with their defaults). A variant is a set of dotted overrides applied by
``--variant NAME`` before the command line's ``key.sub=value`` overrides. Values of overrides
are YAML (``model.hidden=[64,64]``, ``train.lr=3e-4``) and typed by the field they set.

Store paths may use ``${VAR}`` and ``${VAR:-default}``; relative paths are relative to the
current directory. The resolved config (variant and overrides applied, paths absolute) is what
a run records and what a resumed run is compared against.

Errors (`ConfigError`) name where the value came from (the file, the variant, or the
override) and the dotted key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paramlib.guards import UserInputError, safe_name
from paramlib.train import kinds
from paramlib.train.kinds import ModelOptions

NORMALISATIONS = ("train", "lf")
LOADERS = ("auto", "memory", "streaming")
DEVICES = ("auto", "cpu", "cuda")

# Keys a resumed run may change: how long and how verbosely it runs, not what it computes.
RESUMABLE_CHANGES = (
    "train.steps",
    "train.log_every",
    "train.val_every",
    "train.checkpoint_every",
    "train.progress",
    "train.threads",
    # The loader auto chose is kept in the checkpoint: the budget cannot change the data order.
    "data.memory_gb",
    "data.prefetch",  # how far ahead the reading thread runs, not what it reads
    "export.output",
    "export.member",
)


class ConfigError(ValueError):
    """An invalid config; the message names the source (file, variant, override) and key."""


@dataclass
class DataConfig:
    store: str = ""  # the training store (MF-RPN: the HF store)
    lf_store: str | None = None  # MF-RPN's LF store; with normalisation: lf, its statistics
    inputs: list[str] | None = None  # default: the store's inputs (MF-RPN: the x fields)
    targets: list[str] | None = None  # default: the store's targets
    nlev: dict[str, int] = field(default_factory=dict)  # keep the lowest N levels of a field
    normalisation: str | None = None  # train | lf; default lf for mfrpn, train otherwise
    train_group: str = "train"
    val_group: str = "val"
    val_max_samples: int = 8192  # validation on at most this many evenly spaced samples
    # memory: read the train split(s) whole; streaming: read shuffled store chunks while
    # training (`paramlib.train.streaming`); auto: memory when they fit in memory_gb.
    loader: str = "auto"
    memory_gb: float | None = None  # default: half the available memory per process on a node
    shuffle_chunks: int = 8  # streaming: store chunks shuffled together in memory
    prefetch: int = 2  # streaming: shuffle buffers read ahead by a background thread


@dataclass
class TrainConfig:
    steps: int = 100_000
    batch_size: int = 2048
    lf_batch_size: int | None = None  # MF-RPN's LF batch; default batch_size
    lr: float = 1e-4
    lr_decay: float = 0.99  # x lr_decay every lr_decay_every steps (the MF-RPN paper's)
    lr_decay_every: int = 1000
    seed: int = 0
    log_every: int = 100
    val_every: int = 1000
    checkpoint_every: int = 1000
    device: str = "auto"  # auto: cuda when available
    threads: int | None = None  # torch intra-op threads per process; default torch's
    # bfloat16: the Bi-LSTM's forward pass under autocast (oneDNN's bf16 kernels on CPUs with
    # AVX512-BF16/AMX, tensor cores on GPUs); weights, optimizer and loss stay float32.
    precision: str = "float32"
    progress: bool = True


@dataclass
class ExportConfig:
    output: str | None = None  # default: mean_spread for ensembles, mean otherwise
    member: int = 0


@dataclass
class Config:
    name: str
    model: ModelOptions  # the dataclass of model.kind (paramlib.train.kinds)
    data: DataConfig
    train: TrainConfig
    export: ExportConfig = field(default_factory=ExportConfig)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the run's record)."""
        return dataclasses.asdict(self)

    @property
    def kind(self) -> kinds.ModelKind:
        return kinds.get(self.model.kind)

    @property
    def members(self) -> int:
        """Members trained: model.members for an ensemble kind, else 1."""
        return int(getattr(self.model, "members", 1)) if self.kind.ensemble else 1

    @property
    def ensemble(self) -> bool:
        return self.members > 1

    @property
    def normalisation(self) -> str:
        return self.data.normalisation or self.kind.normalisation

    @property
    def export_output(self) -> str:
        return self.export.output or ("mean_spread" if self.ensemble else "mean")


SECTIONS: dict[str, type] = {
    "model": ModelOptions,  # the kind's own dataclass once model.kind is known
    "data": DataConfig,
    "train": TrainConfig,
    "export": ExportConfig,
}
TOP_SCALARS = ("name", "description")
PATH_KEYS = ("data.store", "data.lf_store")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_describe(inner[0])} or null"
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}s"
    if origin is dict:
        key, value = typing.get_args(tp)
        return f"a mapping of {_describe(key)} to {_describe(value)}"
    return {int: "integer", float: "number", bool: "boolean", str: "string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """`value` as type `tp` (YAML scalars are already typed); raises TypeError if it is not.
    An integer is a valid float, and so is a string such as "1e-4"; a boolean is not a number."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner[0])
    if origin is list:
        if not isinstance(value, list | tuple):
            raise TypeError
        return [_coerce(v, typing.get_args(tp)[0]) for v in value]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise TypeError
        key_type, value_type = typing.get_args(tp)
        return {_coerce(k, key_type): _coerce(v, value_type) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise TypeError from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError


_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_path(text: str) -> str:
    """``${VAR}`` and ``${VAR:-default}`` expanded, then made absolute against the current
    directory. An unset variable without a default is an error (KeyError naming it)."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise KeyError(f"environment variable {name} is not set (use ${{{name}:-default}})")
        return default

    return str(Path(_VARIABLE.sub(substitute, text)).expanduser().absolute())


class _Tree:
    """The nested raw config, with the source of every dotted key set so far."""

    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.data: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.default_source = source
        for key, value in data.items():
            if key in SECTIONS and isinstance(value, Mapping):
                for sub, subvalue in value.items():
                    self.set(f"{key}.{sub}", subvalue, source)
            else:
                self.set(key, value, source)

    def set(self, dotted: str, value: Any, source: str) -> None:
        section, _, key = dotted.partition(".")
        if not key:
            if section in SECTIONS:
                raise ConfigError(f"{source}: {section}: expected a mapping of its keys")
            if section not in TOP_SCALARS:
                raise ConfigError(
                    f"{source}: {section}: unknown key; expected one of "
                    f"{', '.join((*TOP_SCALARS, *SECTIONS))}"
                )
            self.data[section] = value
        else:
            if section not in SECTIONS:
                raise ConfigError(
                    f"{source}: {dotted}: unknown section {section!r}; expected one of "
                    f"{', '.join(SECTIONS)}"
                )
            known = [f.name for f in dataclasses.fields(SECTIONS[section])]
            if key not in known and section != "model":  # by its kind, in _build
                raise ConfigError(
                    f"{source}: {dotted}: unknown key; {section} has {', '.join(known)}"
                )
            self.data.setdefault(section, {})[key] = value
        self.sources[dotted] = source

    def source(self, dotted: str) -> str:
        return self.sources.get(dotted, self.default_source)


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` -> (``key.sub``, YAML-parsed value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({error})") from None
    return key.strip(), parsed


def load_config(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    variant: str | None = None,
) -> Config:
    """The validated config of the YAML file at `path`, with `variant` and `overrides`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections")
    raw = dict(raw)
    variants = raw.pop("variants", None) or {}
    if not isinstance(variants, Mapping):
        raise ConfigError(f"{path}: variants: expected a mapping of variant names")
    tree = _Tree(raw, str(path))
    if variant is not None:
        if variant not in variants:
            raise ConfigError(
                f"{path}: variants: no variant {variant!r}; the file has "
                f"{', '.join(variants) or 'none'}"
            )
        try:  # it names the default run directory too (runs/NAME-VARIANT)
            safe_name(variant, f"{path}: variant")
        except UserInputError as error:
            raise ConfigError(str(error)) from None
        if not isinstance(variants[variant], Mapping):
            raise ConfigError(f"{path}: variants.{variant}: expected a mapping of dotted keys")
        for key, value in variants[variant].items():
            tree.set(str(key), value, f"{path} (variant {variant})")
    for text in overrides:
        key, value = parse_override(text)
        tree.set(key, value, f"override {text!r}")
    return _build(tree)


def config_from_dict(data: Mapping[str, Any], source: str = "checkpoint") -> Config:
    """A Config from `Config.to_dict()` output (a checkpoint's record); paths kept as stored."""
    return _build(_Tree(data, source), expand=False)


def _build(tree: _Tree, expand: bool = True) -> Config:
    if "name" not in tree.data:
        raise ConfigError(f"{tree.default_source}: name: required key is missing")
    sections = {}
    for section, cls in SECTIONS.items():
        if section == "model":
            cls = _model_options(tree)
        values = {}
        types_ = _field_types(cls)
        for key, value in tree.data.get(section, {}).items():
            dotted = f"{section}.{key}"
            try:
                values[key] = _coerce(value, types_[key])
            except TypeError:
                raise ConfigError(
                    f"{tree.source(dotted)}: {dotted}: expected {_describe(types_[key])}, "
                    f"got {value!r}"
                ) from None
        sections[section] = cls(**values)
    for key in TOP_SCALARS:
        if not isinstance(tree.data.get(key, ""), str):
            raise ConfigError(f"{tree.source(key)}: {key}: expected a string")
    config = Config(
        name=tree.data["name"], description=tree.data.get("description", ""), **sections
    )
    _validate(config, tree)
    if expand:
        for dotted in PATH_KEYS:
            section, key = dotted.split(".")
            value = getattr(sections[section], key)
            if value:
                try:
                    setattr(sections[section], key, expand_path(value))
                except KeyError as error:
                    raise ConfigError(f"{tree.source(dotted)}: {dotted}: {error.args[0]}") from None
    return config


def _model_options(tree: _Tree) -> type[ModelOptions]:
    """The options dataclass of the config's model.kind, every model key checked against it."""
    model = tree.data.get("model", {})
    name = model.get("kind", kinds.DEFAULT_KIND)
    try:
        kind = kinds.get(name)
    except kinds.UnknownKind as error:
        raise ConfigError(f"{tree.source('model.kind')}: model.kind: {error}") from None
    for key in model:
        if key not in kind.keys():
            readers = kinds.readers_of(key)
            message = (
                f"not read by kind {name!r} (only by {', '.join(readers)})"
                if readers
                else f"unknown key; kind {name!r} has {', '.join(kind.keys())}"
            )
            raise ConfigError(f"{tree.source(f'model.{key}')}: model.{key}: {message}")
    return kind.options


def _validate(config: Config, tree: _Tree) -> None:
    def fail(dotted: str, message: str) -> None:
        raise ConfigError(f"{tree.source(dotted)}: {dotted}: {message}")

    model, data, train = config.model, config.data, config.train
    try:  # the name becomes the default run directory runs/NAME: it must stay inside runs/
        safe_name(config.name, f"{tree.source('name')}: name")
    except UserInputError as error:
        raise ConfigError(str(error)) from None
    kind = config.kind
    for dotted, message in kind.problems(model):
        fail(dotted, message)
    choices = {
        "data.normalisation": (config.normalisation, NORMALISATIONS),
        "data.loader": (data.loader, LOADERS),
        "train.device": (train.device, DEVICES),
        "train.precision": (train.precision, kinds.PRECISIONS),
        "export.output": (config.export_output, kinds.OUTPUTS),
    }
    for dotted, (value, allowed) in choices.items():
        if value not in allowed:
            fail(dotted, f"expected one of {', '.join(allowed)}, got {value!r}")
    positive = {
        "data.val_max_samples": data.val_max_samples,
        "data.shuffle_chunks": data.shuffle_chunks,
        "data.prefetch": data.prefetch,
        "train.steps": train.steps,
        "train.batch_size": train.batch_size,
        "train.lf_batch_size": train.lf_batch_size or 1,
        "train.lr_decay_every": train.lr_decay_every,
        "train.log_every": train.log_every,
        "train.val_every": train.val_every,
        "train.checkpoint_every": train.checkpoint_every,
        "train.threads": train.threads or 1,
    }
    for dotted, value in positive.items():
        if value < 1:
            fail(dotted, f"expected an integer >= 1, got {value}")
    budget = 1.0 if data.memory_gb is None else data.memory_gb  # None: from the machine's RAM
    for dotted, value in {"train.lr": train.lr, "data.memory_gb": budget}.items():
        if not value > 0:
            fail(dotted, f"expected a number > 0, got {value}")
    if not 0 < train.lr_decay <= 1:
        fail("train.lr_decay", f"expected in (0, 1], got {train.lr_decay}")
    for name, levels in data.nlev.items():
        if levels < 1:
            fail(f"data.nlev.{name}", f"expected an integer >= 1, got {levels}")
    if not data.store:
        fail("data.store", "required: the path of the training store")
    if (config.normalisation == "lf" or kind.needs_lf_store(model)) and not data.lf_store:
        fail("data.lf_store", "required: the LF store (its statistics, or the LF-RPN's data)")
    if train.precision not in kind.precisions:
        fail("train.precision", f"kind {model.kind!r} implements {', '.join(kind.precisions)}")
    if config.export_output not in kind.outputs:
        fail("export.output", f"kind {model.kind!r} exports {', '.join(kind.outputs)}")
    if config.export_output == "mean_spread" and not config.ensemble:
        fail("export.output", "mean_spread needs an ensemble (model.members >= 2)")
    if not 0 <= config.export.member < config.members:
        fail("export.member", f"expected 0 .. {config.members - 1}, got {config.export.member}")


def resume_conflicts(saved: Config, current: Config) -> list[str]:
    """Dotted keys whose values differ between a checkpoint's config and the current one,
    other than those a resumed run may change (`RESUMABLE_CHANGES`)."""
    a, b = _flatten(saved.to_dict()), _flatten(current.to_dict())
    return [
        f"{key}: checkpoint has {a.get(key)!r}, config has {b.get(key)!r}"
        for key in sorted(set(a) | set(b))
        if key not in RESUMABLE_CHANGES and a.get(key) != b.get(key)
    ]


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and not prefix:
            out.update(_flatten(value, f"{key}."))
        else:
            out[prefix + key] = value
    return out
