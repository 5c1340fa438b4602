"""The ``cifarlab`` command. Bad input: one line on stderr, exit status 2, nothing recorded."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from cifarlab.config import AUGMENTATIONS, OPTIMIZERS, PRECISIONS, make_run_config
from cifarlab.errors import CifarlabError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (no usage dump) like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CifarlabError(f"{message}; see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cifarlab", description="CIFAR-10 style experiments, fast and honest.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train one model and record the run")
    add = train.add_argument
    add("--model", help="built-in name (`cifarlab models`), spec.toml or file.py:Class")
    add("--data", help="dataset folder or archive (default: $CIFARLAB_DATA)")
    add("--optimizer", help=f"one of {', '.join(OPTIMIZERS)} (default sgd)")
    add("--lr", type=float, help="learning rate (default 0.001)")
    add("--momentum", type=float, help="SGD momentum (default 0.9)")
    add("--weight-decay", type=float, help="L2 weight decay (default 0)")
    add("--batch-size", type=int, help="training batch size (default 64)")
    add("--epochs", type=int, help="passes over the training split (default 10)")
    add("--val-size", type=int, help="validation images held out of train (default 5000)")
    add("--limit-train", type=int, help="stratified subset of the training split, for quick runs")
    add("--limit-test", type=int, help="stratified subset of the test split")
    add("--augment", help=f"one of {', '.join(AUGMENTATIONS)} (default crop-flip)")
    add("--seed", type=int, help="seeds split, init, shuffling, augmentation (default 0)")
    add("--precision", help=f"one of {', '.join(PRECISIONS)} (default auto)")
    add("--channels-last", action=argparse.BooleanOptionalAction, help="NHWC layout (default on)")
    add("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    add(
        "--workspace",
        help="folder of the results database and run folders (default ./cifarlab-runs)",
    )
    add("--quiet", action="store_true", default=None, help="no progress bars or epoch lines")

    results = sub.add_parser("results", help="list the runs of a workspace")
    results.add_argument("--workspace", default="cifarlab-runs")
    results.add_argument("--format", choices=("table", "csv", "json"), default="table")

    sub.add_parser("models", help="list the built-in models")
    for name, help_text in (
        ("summary", "per-layer shapes, parameters, MACs/FLOPs and training memory of a model"),
        ("diagram", "draw a model's architecture to a PNG"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("model", help="built-in name, spec.toml or file.py:Class")
        cmd.add_argument("--num-classes", type=int, default=10)
        cmd.add_argument("--in-channels", type=int, default=3)
        cmd.add_argument("--image-size", type=int, default=32)
        if name == "summary":
            cmd.add_argument("--batch-size", type=int, default=64, help="for the memory estimate")
            cmd.add_argument("--format", choices=("table", "json"), default="table")
        else:
            cmd.add_argument("-o", "--output", default="model.png", help="image file to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except CifarlabError as err:
        print(f"cifarlab: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cifarlab: interrupted", file=sys.stderr)
        return 130


def cmd_train(args: argparse.Namespace) -> int:
    from cifarlab.results import format_table
    from cifarlab.runner import run_training

    options: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k != "command" and v is not None
    }
    result = run_training(make_run_config(**options))
    record = {"id": result.run_id, **result.config.model_dump(), "status": result.status}
    print(format_table([record | result.summary]))
    if result.status != "completed":
        print(f"cifarlab: run {result.run_id} {result.status}: {result.error}", file=sys.stderr)
        return 1
    print(f"run {result.run_id}: checkpoints in {result.run_dir}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from cifarlab.results import format_results, results

    print(format_results(results(args.workspace), args.format))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from cifarlab.models import create_model, list_models
    from cifarlab.models.summary import summarize_model

    rows = []
    for e in list_models():
        summary = summarize_model(create_model(e.name))
        rows.append((e.name, f"{summary.params:,}", f"{summary.macs / 1e6:,.1f}M", e.description))
    head = ("model", "params", "MACs")
    width = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    print(f"{head[0].ljust(width[0])}  {head[1].rjust(width[1])}  {head[2].rjust(width[2])}  "
          "description")  # fmt: skip
    for name, params, macs, desc in rows:
        print(f"{name.ljust(width[0])}  {params.rjust(width[1])}  {macs.rjust(width[2])}  {desc}")
    return 0


def _model_for(args: argparse.Namespace):
    from cifarlab.models import create_model

    for flag in ("num_classes", "in_channels", "image_size", "batch_size"):
        if getattr(args, flag, 1) < 1:
            raise CifarlabError(f"--{flag.replace('_', '-')} must be positive")
    shape = (args.in_channels, args.image_size, args.image_size)
    model = create_model(
        args.model,
        num_classes=args.num_classes,
        in_channels=args.in_channels,
        image_size=args.image_size,
    )
    return model, shape


def cmd_summary(args: argparse.Namespace) -> int:
    import json

    from cifarlab.models.summary import summarize_model

    model, shape = _model_for(args)
    summary = summarize_model(model, shape, batch_size=args.batch_size)
    text = summary.format_table() if args.format == "table" else json.dumps(summary.to_dict())
    print(text)
    return 0


def cmd_diagram(args: argparse.Namespace) -> int:
    from cifarlab.models.diagram import draw_diagram

    model, shape = _model_for(args)
    try:
        path = draw_diagram(model, args.output, shape, title=args.model)
    except (OSError, ValueError) as err:  # an unwritable path or unknown image suffix
        raise CifarlabError(f"cannot write diagram to {args.output!r}: {err}") from None
    print(f"wrote {path}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "results": cmd_results,
    "models": cmd_models,
    "summary": cmd_summary,
    "diagram": cmd_diagram,
}

if __name__ == "__main__":
    sys.exit(main())
