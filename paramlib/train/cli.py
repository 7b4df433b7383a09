"""``paramlib train``, ``paramlib export`` and ``paramlib calibrate`` (contract in
`paramlib.train`'s docstring). torch is imported inside the handlers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from paramlib.cli import Subparsers
from paramlib.guards import UserInputError, check_output_path
from paramlib.train.kinds import OUTPUTS  # the standard library only


class _IntermixedParser(argparse.ArgumentParser):
    """Overrides may come before or after the options (``train C --out D a=1 --resume b=2``):
    a plain parser stops taking positionals at the first option, and wrapper scripts pass the
    user's words through in any order. Installed on the subparsers below."""

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing:  # parse_known_intermixed_args calls back in (Python < 3.13)
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config YAML (see training/configs/)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="config overrides (YAML values)"
    )
    parser.add_argument("--variant", help="apply the config's variants.NAME block (e.g. small)")
    parser.__class__ = _IntermixedParser  # add_parser takes no parser class of its own


def register(subparsers: Subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a model from a run config",
        description="Train a model from CONFIG.yaml, alone or as one rank under srun/torchrun."
        " Exit 99 after a checkpoint on SIGTERM/SIGUSR1 (requeue and --resume).",
    )
    _config_arguments(train)
    train.add_argument("--out", help="run directory (default runs/NAME[-VARIANT])")
    train.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint.pt when it exists"
    )
    train.add_argument(
        "--max-steps", type=int, metavar="N", help="stop at step N (checkpointed, resumable)"
    )
    train.set_defaults(func=_train)

    export = subparsers.add_parser(
        "export",
        help="write a model file from a training checkpoint",
        description="TorchScript model file with normalisation inside and paramlib.json,"
        " from a checkpoint (or a run directory holding checkpoint.pt).",
    )
    export.add_argument("checkpoint", help="checkpoint.pt or its run directory")
    export.add_argument("--out", required=True, help="model file to write (MODEL.pt)")
    export.add_argument(
        "--output",
        choices=OUTPUTS,
        help="ensemble output (default: the config's export.output, mean_spread for ensembles)",
    )
    export.add_argument("--member", type=int, metavar="I", help="the member for --output member")
    export.set_defaults(func=_export)

    calibrate = subparsers.add_parser(
        "calibrate",
        help="choose an ensemble's prior scale by validation interval coverage",
        description="Train CONFIG once per prior scale (and member count), measure the 90 %"
        " interval coverage on the validation split, pick the setting closest to 0.9.",
    )
    _config_arguments(calibrate)
    calibrate.add_argument(
        "--prior-scale",
        type=_numbers(float),
        default=[0.5, 1.0, 2.0, 4.0, 8.0],
        metavar="S,S,...",
        help="prior scales to try (default 0.5,1,2,4,8)",
    )
    calibrate.add_argument(
        "--members", type=_numbers(int), metavar="M,M,...", help="member counts to try"
    )
    calibrate.add_argument("--out", help="directory (default runs/calibrate-NAME[-VARIANT])")
    calibrate.set_defaults(func=_calibrate)


def _numbers(kind: type[float] | type[int]) -> Callable[[str], list]:
    """A comma-separated list of numbers (a list option that cannot swallow overrides)."""

    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {kind.__name__}s like 1,2,4: {text!r}"
            ) from None

    return parse


def _default_out(config_name: str, variant: str | None, prefix: str = "") -> Path:
    return Path("runs") / f"{prefix}{config_name}{f'-{variant}' if variant else ''}"


def _train(args: argparse.Namespace) -> int:
    from paramlib.train import NONFINITE_EXIT
    from paramlib.train.checkpoint import CheckpointError
    from paramlib.train.config import ConfigError, load_config
    from paramlib.train.data import DataError
    from paramlib.train.loop import NonFiniteLoss, RunDirError, train

    try:
        config = load_config(args.config, args.overrides, args.variant)
        out = Path(args.out) if args.out else _default_out(config.name, args.variant)
        check_output_path(out, "--out", "dir")  # before the data is read, not after
        return train(config, out, resume=args.resume, max_steps=args.max_steps)
    except (ConfigError, DataError, RunDirError, CheckpointError, UserInputError) as error:
        print(f"paramlib train: {error}", file=sys.stderr)
        return 2
    except NonFiniteLoss as error:
        print(f"paramlib train: {error}", file=sys.stderr)
        return NONFINITE_EXIT


def _export(args: argparse.Namespace) -> int:
    from paramlib.export import file_sha256
    from paramlib.train import checkpoint
    from paramlib.train.loop import export_checkpoint

    try:
        out = check_output_path(args.out, "--out", "file")
        state = checkpoint.load(args.checkpoint)
        if args.member is not None and args.output not in (None, "member"):
            raise ValueError("--member goes with --output member")
        output = "member" if args.member is not None else args.output
        out.parent.mkdir(parents=True, exist_ok=True)
        path = export_checkpoint(state, out, output, args.member)
    except (FileNotFoundError, ValueError) as error:
        print(f"paramlib export: {error}", file=sys.stderr)
        return 2
    print(f"[paramlib export] {path} (step {state['step']}) sha256 {file_sha256(path)}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from paramlib.train import NONFINITE_EXIT
    from paramlib.train.calibrate import calibrate
    from paramlib.train.checkpoint import CheckpointError
    from paramlib.train.config import ConfigError, load_config
    from paramlib.train.data import DataError
    from paramlib.train.loop import NonFiniteLoss, RunDirError

    try:
        config = load_config(args.config, args.overrides, args.variant)
        out = Path(args.out) if args.out else _default_out(config.name, args.variant, "calibrate-")
        check_output_path(out, "--out", "dir")
        calibrate(config, out, args.prior_scale, args.members)
    except (ConfigError, DataError, RunDirError, CheckpointError, UserInputError) as error:
        print(f"paramlib calibrate: {error}", file=sys.stderr)
        return 2
    except NonFiniteLoss as error:
        print(f"paramlib calibrate: {error}", file=sys.stderr)
        return NONFINITE_EXIT
    return 0
