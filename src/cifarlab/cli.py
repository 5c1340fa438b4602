"""The ``cifarlab`` command. Bad input: one line on stderr, exit status 2, nothing recorded."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from cifarlab.config import (
    AUGMENTATIONS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    SELECT_BY,
    make_run_config,
)
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
    flag = dict(action="store_true", default=None)  # None: not given, so the default applies
    add("--model", help="registered model name (`cifarlab models`), default tutorial")
    add("--data", help="dataset folder or archive (default: $CIFARLAB_DATA)")
    add("--optimizer", help=f"one of {', '.join(OPTIMIZERS)} (default sgd)")
    add("--lr", type=float, help="learning rate (default 0.001)")
    add("--momentum", type=float, help="SGD/RMSprop momentum (default 0.9)")
    add("--nesterov", **flag, help="Nesterov momentum (sgd)")
    add("--weight-decay", type=float, help="weight decay (default 0)")
    add(
        "--decay-norm-bias",
        action=argparse.BooleanOptionalAction,
        help="apply weight decay to norm weights and biases too (default on)",
    )
    add("--schedule", help=f"one of {', '.join(SCHEDULES)} (default constant)")
    add("--warmup-epochs", type=float, help="linear warm-up length for warmup-* schedules")
    add("--step-size", type=int, help="epochs between decays of the step schedule (default 10)")
    add("--milestones", help="epochs of the multistep schedule's decays, e.g. 30,60")
    add("--gamma", type=float, help="decay factor of step/multistep (default 0.1)")
    add("--max-lr", type=float, help="peak learning rate of the onecycle schedule")
    add("--label-smoothing", type=float, help="label smoothing in [0, 1) (default 0)")
    add("--grad-clip", type=float, help="clip the gradient norm to this value")
    add("--ema", type=float, metavar="DECAY", help="evaluate an EMA of the weights, e.g. 0.999")
    add("--batch-size", type=int, help="training batch size (default 64)")
    add("--epochs", type=int, help="passes over the training split (default 10)")
    add("--val-size", type=int, help="validation images held out of train (default 5000)")
    add("--limit-train", type=int, help="stratified subset of the training split, for quick runs")
    add("--limit-test", type=int, help="stratified subset of the test split")
    add("--augment", help=f"one of {', '.join(AUGMENTATIONS)} (default crop-flip)")
    add("--seed", type=int, help="seeds split, init, shuffling, augmentation (default 0)")
    add("--deterministic", **flag, help="deterministic algorithms: bitwise-repeatable runs")
    add("--precision", help=f"one of {', '.join(PRECISIONS)} (default auto)")
    add("--channels-last", action=argparse.BooleanOptionalAction, help="NHWC layout (default on)")
    add("--compile", **flag, help="torch.compile the model (slow start; opt-in)")
    add("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    add("--select-by", help=f"model selection metric: {' or '.join(SELECT_BY)} (default val_acc)")
    add(
        "--early-stop",
        type=int,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without validation improvement",
    )
    add("--patience", type=int, help="epochs of rising validation loss that mark overfitting (3)")
    add(
        "--resume",
        nargs="?",
        const="auto",
        metavar="RUN_ID",
        help="continue RUN_ID from its last checkpoint (no id: the latest run with these settings)",
    )
    add(
        "--workspace",
        help="folder of the results database and run folders (default ./cifarlab-runs)",
    )
    add("--quiet", **flag, help="no progress bars or epoch lines")
    add("--tensorboard", **flag, help="also write TensorBoard scalars to the run folder")

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


COMMANDS = {"train": cmd_train, "results": cmd_results, "models": cmd_models}

if __name__ == "__main__":
    sys.exit(main())
