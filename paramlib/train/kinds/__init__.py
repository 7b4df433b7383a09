"""Model kinds: the one registry that configs, training, export, evaluation and the demo look a
kind up in.

A kind is one module that defines ``KIND = ModelKind(...)``: the dataclass of its ``model:``
keys (with their defaults), its training task (network, loss, validation, export:
`paramlib.train.tasks.Task`) and the rules a config of that kind must keep. It is registered
by one line in `MODULES` and imported only when a config or model file of that kind is used,
so that the command line (``paramlib --help``, ``paramlib doctor``) never imports torch.

Adding a kind ``cnn``: write ``paramlib/train/kinds/cnn.py`` with
``KIND = ModelKind("cnn", CNNOptions, CNNTask)`` and add ``"cnn": "paramlib.train.kinds.cnn"``
to `MODULES`; ``model: {kind: cnn, ...}`` in a config then trains, exports and evaluates it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# name -> the module defining its KIND (the registration line of each kind).
MODULES: dict[str, str] = {
    "mlp": "paramlib.train.kinds.mlp",
    "rpn": "paramlib.train.kinds.rpn",
    "mfrpn": "paramlib.train.kinds.mfrpn",
    "bilstm": "paramlib.train.kinds.bilstm",
}
DEFAULT_KIND = "rpn"  # a config's model.kind when it names none
OUTPUTS = ("mean_spread", "members", "mean", "member")  # export.output (models.export_wrap's)
PRECISIONS = ("float32", "bfloat16")  # train.precision: the forward pass's (autocast)

Problems = Iterator[tuple[str, str]]  # (dotted key, what is wrong with its value)


@dataclass
class ModelOptions:
    """The ``model:`` section; each kind's options dataclass adds its own keys."""

    kind: str = DEFAULT_KIND


def _no_problems(options: Any) -> Problems:
    return iter(())


def _never(options: Any) -> bool:
    return False


@dataclass(frozen=True)
class ModelKind:
    name: str
    options: type[ModelOptions]  # the dataclass of its model.* keys
    task: type  # its paramlib.train.tasks.Task subclass
    exported_as: str = ""  # model_kind in its model files (default: name)
    ensemble: bool = False  # model.members > 1 trains an ensemble of that many members
    normalisation: str = "train"  # data.normalisation when the config sets none
    precisions: tuple[str, ...] = ("float32",)  # train.precision it implements
    outputs: tuple[str, ...] = OUTPUTS  # export.output it can write
    # its files follow the MSKF host contract (paramlib.models.bilstm): evaluate scores its
    # trigger and period and puts persistence and climatology beside it
    mskf_contract: bool = False
    problems: Callable[[Any], Problems] = _no_problems  # the kind's own config rules
    needs_lf_store: Callable[[Any], bool] = _never  # data.lf_store required for these options

    @property
    def model_kind(self) -> str:
        return self.exported_as or self.name

    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options))


class UnknownKind(KeyError):
    """A kind name no module registers."""

    def __str__(self) -> str:
        return str(self.args[0])


def names() -> tuple[str, ...]:
    return tuple(MODULES)


def get(name: str) -> ModelKind:
    """The registered kind `name` (its module imported on first use)."""
    if name not in MODULES:
        raise UnknownKind(f"expected one of {', '.join(MODULES)}, got {name!r}")
    kind = importlib.import_module(MODULES[name]).KIND
    assert isinstance(kind, ModelKind) and kind.name == name, MODULES[name]
    return kind


def exported(model_kind: str) -> ModelKind | None:
    """The kind whose model files say `model_kind` (None for files no kind here trains, such
    as the example models and the baselines)."""
    return next((k for k in map(get, MODULES) if k.model_kind == model_kind), None)


def readers_of(key: str) -> list[str]:
    """The kinds whose options have `key`."""
    return [name for name in MODULES if key in get(name).keys()]


# --- checks the kinds share -------------------------------------------------------------------


def at_least_one(key: str, value: int) -> Problems:
    if value < 1:
        yield key, f"expected an integer >= 1, got {value}"


def widths(key: str, sizes: list[int] | None) -> Problems:
    if sizes is not None and (not sizes or min(sizes) < 1):
        yield key, f"expected a non-empty list of widths >= 1, got {sizes}"


def one_of(key: str, value: str, allowed: tuple[str, ...]) -> Problems:
    if value not in allowed:
        yield key, f"expected one of {', '.join(allowed)}, got {value!r}"
