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
    add("--model", help="registered model name (`cifarlab models`), default tutorial")
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
    # -- data layer: train options of the data sources and augmentation, and `cifarlab data`
    add("--labels", help="CIFAR-100 classes: fine (100) or coarse (20) (default fine)")
    add("--image-size", type=int, help="resize every image to NxN (default: keep the size)")
    add("--crop-pad", type=int, help="crop/translate padding in pixels (default 4)")
    add("--cutout", type=int, help="cutout square side (default 8 with a cutout preset)")
    data = sub.add_parser("data", help="inspect a dataset: `data info`, `data preview`")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    for name, text in (("info", "counts per class and split, shape, mean/std, cache"),
                       ("preview", "a PNG grid of sample images per class")):  # fmt: skip
        p = data_sub.add_parser(name, help=text)
        p.add_argument("--data", help="name (cifar10, cifar100), folder or archive")
        p.add_argument("--labels", default="fine", choices=("fine", "coarse"))
        p.add_argument("--image-size", type=int)
    info, preview = data_sub.choices["info"], data_sub.choices["preview"]
    info.add_argument("--format", choices=("text", "json"), default="text")
    preview.add_argument("-o", "--output", default="grid.png", help="PNG file (default grid.png)")
    preview.add_argument("--per-class", type=int, default=8, help="images per class (default 8)")
    preview.add_argument("--split", choices=("train", "test"), default="train")
    preview.add_argument("--seed", type=int, default=0)
    # -- end of the data layer's options

    results = sub.add_parser("results", help="list the runs of a workspace")
    results.add_argument("--workspace", default="cifarlab-runs")
    results.add_argument("--format", choices=("table", "csv", "json"), default="table")

    sub.add_parser("models", help="list the built-in models")
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
    from cifarlab.models import count_parameters, create_model, list_models

    rows = [
        (e.name, f"{count_parameters(create_model(e.name)):,}", e.description)
        for e in list_models()
    ]
    width = [max(len(r[i]) for r in rows + [("model", "params", "")]) for i in range(2)]
    print(f"{'model'.ljust(width[0])}  {'params'.rjust(width[1])}  description")
    for name, params, desc in rows:
        print(f"{name.ljust(width[0])}  {params.rjust(width[1])}  {desc}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from cifarlab.data.inspect import dataset_info, format_info, preview_grid

    source = {"image_size": args.image_size, "labels": args.labels}
    if args.data_command == "info":
        print(format_info(dataset_info(args.data, **source), args.format))
        return 0
    if args.per_class < 1:
        raise CifarlabError(f"--per-class must be at least 1 (got {args.per_class})")
    path = preview_grid(args.data, args.output, args.per_class, args.split, args.seed, **source)
    print(f"wrote {path}")
    return 0


COMMANDS = {"train": cmd_train, "results": cmd_results, "models": cmd_models, "data": cmd_data}

if __name__ == "__main__":
    sys.exit(main())
