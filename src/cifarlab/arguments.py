"""What the ``cifarlab`` command accepts: its subcommands, their options, help and examples.

Parsing errors are one line like every other error (``_Parser``); ``cli`` runs the commands.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from cifarlab.config import (
    AUGMENTATIONS,
    LABELS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    SELECT_BY,
    did_you_mean,
)
from cifarlab.errors import CifarlabError, suggest
from cifarlab.experiments.store import WORKSPACE


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (no usage dump) like every other error, a
    misspelt command gets a did-you-mean, and options are never abbreviated (`--val` for
    --val-size would change meaning the day a --val-x option is added)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CifarlabError(f"{message}; {_close_choice(message)}see `{self.prog} --help`")


def _close_choice(message: str) -> str:
    """ "did you mean 'train'? " for argparse's "invalid choice: 'trian' (choose from ...)"."""
    match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not match:
        return ""
    return suggest(match.group(1), re.findall(r"'?([\w.-]+)'?", match.group(2)))


def _command(sub: argparse._SubParsersAction, name: str, text: str, examples: str = ""):
    """A subcommand whose help page opens with ``text`` and ends with ``examples``."""
    epilog = "examples:\n" + examples if examples else None
    return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                          epilog=epilog)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from cifarlab import __version__

    parser = _Parser(
        prog="cifarlab",
        description="CIFAR-10 style experiments, fast and honest.",
        epilog="`cifarlab COMMAND --help` describes each command; README.md has the rest.",
    )
    parser.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    _add_train_parser(sub)
    _add_data_parser(sub)
    _add_results_parser(sub)
    _add_sweep_parsers(sub)
    _add_model_parsers(sub)
    _add_report_parser(sub)
    _add_predict_parser(sub)
    _add_export_parser(sub)
    return parser


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = _command(sub, "train", "train one model and record the run", _TRAIN_EXAMPLES)
    # --x / --no-x; None: not given, so the preset's or the default value applies
    flag = dict(action=argparse.BooleanOptionalAction, default=None)
    # in groups: 48 options in one list hid the one looked for
    add = train.add_argument
    add("--preset", metavar="NAME", help="speedrun, speedrun-cpu or quick-cpu; options given "
        "with it override it, wherever they stand; under a preset a new --batch-size also "
        "scales --lr")  # fmt: skip
    add("--model", help="built-in name (`cifarlab models`), spec.toml or file.py:Class "
        "(default tutorial)")  # fmt: skip
    add("--data", help=_DATA_HELP)
    add("--epochs", type=int, help="passes over the training split (default 10)")
    add("--batch-size", type=int, help="training batch size (default 64)")
    add("--seed", type=int, help="seeds split, init, shuffling, augmentation (default 0)")
    add = train.add_argument_group("optimizer").add_argument
    add("--optimizer", metavar="NAME", help=f"one of {', '.join(OPTIMIZERS)} (default sgd)")
    add("--lr", type=float, help="learning rate (default 0.001)")
    add("--momentum", type=float, help="SGD/RMSprop momentum (default 0.9)")
    add("--nesterov", **flag, help="Nesterov momentum (sgd)")
    add("--weight-decay", type=float, help="weight decay (default 0)")
    add(
        "--decay-norm-bias",
        action=argparse.BooleanOptionalAction,
        help="apply weight decay to norm weights and biases too (default on)",
    )
    add("--norm-lr-scale", type=float, help="lr multiplier of norm-layer parameters (default 1)")
    add("--grad-clip", type=float, help="clip the gradient norm to this value")
    add("--label-smoothing", type=float, help="label smoothing in [0, 1) (default 0)")
    add("--ema", type=float, metavar="DECAY", help="evaluate an EMA of the weights, e.g. 0.999 "
        "(its decay warms up over the first steps)")  # fmt: skip
    add = train.add_argument_group("learning-rate schedule").add_argument
    add("--schedule", metavar="NAME", help=f"one of {', '.join(SCHEDULES)} (default constant)")
    add("--warmup-epochs", type=float, metavar="N", help="linear warm-up of warmup-* schedules, "
        "and the peak of triangular, else at 23%% of the run (default 0)")  # fmt: skip
    add("--step-size", type=int, help="epochs between decays of the step schedule (default 10)")
    add("--milestones", help="epochs of the multistep schedule's decays, e.g. 30,60")
    add("--gamma", type=float, help="decay factor of step/multistep (default 0.1)")
    add("--max-lr", type=float, help="peak learning rate of the onecycle schedule")
    add = train.add_argument_group("data and augmentation").add_argument
    add("--val-size", type=int, help="validation images held out of train (default 5000)")
    add(
        "--limit-train",
        type=int,
        metavar="N",
        help="stratified subset of the training split, for quick runs",
    )
    add("--limit-test", type=int, metavar="N", help="stratified subset of the test split")
    add("--augment", metavar="NAME", help=f"one of {', '.join(AUGMENTATIONS)} (default crop-flip)")
    add("--crop-pad", type=int, metavar="PX", help="crop/translate padding in pixels (default 4)")
    add(
        "--cutout",
        type=int,
        metavar="PX",
        help="cutout square side; adds cutout to any --augment (default 8 for *-cutout ones)",
    )
    add(
        "--drop-last",
        action=argparse.BooleanOptionalAction,
        help="drop the last partial training batch (default: keep it)",
    )
    add(
        "--labels",
        metavar="fine|coarse",
        help="CIFAR-100 classes: fine (100) or coarse (20) (default fine)",
    )
    add("--image-size", type=int, metavar="N", help=_IMAGE_SIZE_HELP)
    add = train.add_argument_group("speedrun tricks").add_argument
    add("--whiten", **flag, help="set the first conv to whiten 2x2 patches of the data")
    add(
        "--whiten-bias-epochs",
        type=int,
        metavar="N",
        help="with --whiten: freeze the first conv's bias after N epochs (default never)",
    )
    add("--lookahead", **flag, help="airbench's lookahead: average weights every 5 steps")
    add(
        "--tta",
        type=int,
        metavar="LEVEL",
        help="test-time augmentation of the last epoch's test scoring (its final test "
        "accuracy): 0 none, 1 + mirror, 2 + mirrors of two 1-px shifts (default 0)",
    )
    add = train.add_argument_group("scoring and model selection").add_argument
    add(
        "--select-by",
        metavar="METRIC",
        help=f"model selection metric: {' or '.join(SELECT_BY)} (default val_acc)",
    )
    add(
        "--eval-every",
        type=int,
        metavar="N",
        help="score validation and test every N epochs and at the last (default 1); the "
        "epochs between record training metrics only, and selection, --early-stop and "
        "--patience count the scored epochs",
    )
    add(
        "--early-stop",
        type=int,
        metavar="N",
        help="stop after N epochs without validation improvement (default: never)",
    )
    add(
        "--patience",
        type=int,
        metavar="N",
        help="epochs of rising validation loss that mark overfitting (default 3)",
    )
    add = train.add_argument_group("speed and hardware").add_argument
    add("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    add(
        "--precision",
        metavar="NAME",
        help=f"one of {', '.join(PRECISIONS)}; auto takes bf16 autocast on CUDA (fp16 where "
        "the GPU lacks bf16) and with channels_last on CPUs with native bf16 (AVX-512 BF16 "
        "or AMX), else fp32 (on other CPUs bf16 is emulated, 5-16x slower) (default auto)",
    )
    add("--channels-last", action=argparse.BooleanOptionalAction, help="NHWC layout (default on)")
    add("--compile", **flag, help="torch.compile the model (slow start; opt-in)")
    add("--deterministic", **flag, help="deterministic algorithms: bitwise-repeatable runs")
    add = train.add_argument_group("bookkeeping").add_argument
    add(
        "--resume",
        nargs="?",
        const="auto",
        metavar="RUN_ID",
        help="continue RUN_ID from its last checkpoint (no id: the latest run with these settings)",
    )
    add("--workspace", help=_WORKSPACE_HELP)
    add("--quiet", **flag, help="no progress bars or epoch lines")
    add("--tensorboard", **flag, help="also write TensorBoard scalars to the run folder (needs "
        "pip install 'cifarlab[tensorboard]')")  # fmt: skip


_IMAGE_SIZE_HELP = ("resize every image to NxN (default: keep their size; images of several "
                    "sizes become 32x32)")  # fmt: skip
_DATA_HELP = ("dataset folder or archive, or cifar10/cifar100 to download (default: "
              "$CIFARLAB_DATA, else the cifar10 download)")  # fmt: skip
_WORKSPACE_HELP = "folder of the results database and run folders (default ./cifarlab-runs)"
_TRAIN_EXAMPLES = """\
  cifarlab train --data ../shared/data/cifar10-jpeg.tar.gz --epochs 2
  cifarlab train --preset quick-cpu                 # ~85% in a few minutes on 2 CPU cores
  cifarlab train --preset speedrun --epochs 5       # a preset, with a complete 5-epoch schedule
  cifarlab train --model resnet18 --optimizer adamw --lr 3e-3 --schedule cosine
  cifarlab train --resume                           # continue the latest run with these settings
  torchrun --nproc_per_node 4 -m cifarlab train --preset speedrun   # one run over 4 GPUs
"""


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    data = _command(sub, "data", "inspect a dataset: `data info`, `data preview`", _DATA_EXAMPLES)
    data_sub = data.add_subparsers(
        dest="data_command", metavar="info|preview", required=True, parser_class=_Parser
    )
    for name, text in (("info", "counts per class and split, image shape, mean/std, cache"),
                       ("preview", "a PNG grid of sample images per class")):  # fmt: skip
        p = _command(data_sub, name, text, _DATA_EXAMPLES)
        p.add_argument("--data", help=_DATA_HELP)
        p.add_argument(
            "--labels",
            default="fine",
            choices=LABELS,
            help="CIFAR-100 classes: fine (100) or coarse (20) (default fine)",
        )
        p.add_argument("--image-size", type=int, metavar="N", help=_IMAGE_SIZE_HELP)
    info, preview = data_sub.choices["info"], data_sub.choices["preview"]
    info.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="a table, or JSON for programs (default text)",
    )
    preview.add_argument("-o", "--output", default="grid.png", help="PNG file (default grid.png)")
    preview.add_argument(
        "--per-class",
        type=int,
        default=8,
        metavar="N",
        help="images per class, at most 100 (default 8)",
    )
    preview.add_argument(
        "--split",
        choices=("train", "test"),
        default="train",
        help="which split to sample (default train)",
    )
    preview.add_argument("--seed", type=int, default=0, help="picks the samples (default 0)")


_DATA_EXAMPLES = """\
  cifarlab data info --data ../shared/data/cifar10-jpeg.tar.gz
  cifarlab data info --data cifar100 --labels coarse --format json
  cifarlab data preview --data ~/datasets/cifar-10-batches-py -o grid.png --per-class 10
"""


def _add_results_parser(sub: argparse._SubParsersAction) -> None:
    results = _command(sub, "results", "list runs, or an experiment's seed-grouped table",
                       _RESULTS_EXAMPLES)  # fmt: skip
    results.add_argument("--workspace", default=WORKSPACE, help=_WORKSPACE_HELP)
    results.add_argument("--experiment", help="only this experiment's runs, grouped over seeds")
    results.add_argument(
        "--group-by", help="comma-separated settings to group by, e.g. model,optimizer"
    )
    results.add_argument("--sort", help="sort by a column, e.g. test_acc (best first)")
    results.add_argument(
        "--only", action="append", default=[], metavar="KEY=VALUE",
        help="only runs with this setting (repeatable), e.g. model=tutorial",
    )  # fmt: skip
    results.add_argument("--compare", nargs=2, metavar=("A", "B"),
                         help="difference in mean test accuracy of two filters, with a 95%% CI, "
                              "e.g. optimizer=adam optimizer=sgd")  # fmt: skip
    results.add_argument("--format", choices=("table", "csv", "json", "markdown"), default="table",
                         help="default table")  # fmt: skip


_RESULTS_EXAMPLES = """\
  cifarlab results                                  # every run, oldest first
  cifarlab results --experiment blog --sort test_acc --format markdown
  cifarlab results --experiment blog --group-by model
  cifarlab results --experiment blog --compare optimizer=adam optimizer=sgd
  cifarlab results --only model=tutorial --format csv > runs.csv
"""


def _add_sweep_parsers(sub: argparse._SubParsersAction) -> None:
    sweep = _command(sub, "sweep", "run every configuration of an experiment file", """\
  cifarlab sweep blog.toml --dry-run        # the plan; runs nothing
  cifarlab sweep blog.toml --workers 2      # runs in parallel processes, one database
  cifarlab sweep blog.toml --ray auto       # runs as tasks of a Ray cluster
  cifarlab sweep blog.toml --only model=tutorial --max-runs 3
""")  # fmt: skip
    sweep.add_argument("file", help="experiment TOML file (README: Experiments)")
    _add_sweep_options(sweep, "dataset for every run (overrides the file's base.data)")

    compare = _command(sub, "compare", "run a built-in study (e.g. the blog's) and compare",
                       """\
  cifarlab compare --preset blog --epochs 5 --limit-train 10000   # the blog's study, quick
  cifarlab compare --preset blog                                  # in full: 15 epochs
  cifarlab compare --preset lr --seeds 2 --dry-run
""")  # fmt: skip
    compare.add_argument("--preset", required=True, metavar="NAME", help="blog, batch-size or lr")
    compare.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help="epochs per run (default: blog 15, the others 10; quick looks 2-5)",
    )
    compare.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="seeds per configuration (default 1; error bars need 2+)",
    )
    compare.add_argument(
        "--limit-train", type=int, metavar="N", help="stratified training subset per run"
    )
    compare.add_argument(  # a quick look need not score 15,000 images an epoch
        "--limit-test", type=int, metavar="N", help="stratified test subset per run"
    )
    compare.add_argument(
        "--val-size", type=int, metavar="N", help="validation images held out (default 5000)"
    )
    compare.add_argument("--models", help="comma-separated subset of models")
    _add_sweep_options(compare, _DATA_HELP)


def _add_model_parsers(sub: argparse._SubParsersAction) -> None:
    _command(sub, "models", "list the built-in models", "  cifarlab models\n")
    for name, help_text in (
        ("summary", "per-layer shapes, parameters, MACs/FLOPs and training memory of a model"),
        ("diagram", "draw a model's architecture to a PNG"),
    ):
        cmd = _command(sub, name, help_text, f"  cifarlab {name} speedrun\n"
                       f"  cifarlab {name} mynet.toml --image-size 64\n")  # fmt: skip
        cmd.add_argument("model", help="built-in name, spec.toml or file.py:Class")
        cmd.add_argument("--num-classes", type=int, default=10, help="outputs of the net (10)")
        cmd.add_argument("--in-channels", type=int, default=3, help="image channels (3: RGB)")
        cmd.add_argument("--image-size", type=int, default=32, help="image side in pixels (32)")
        if name == "summary":
            cmd.add_argument(
                "--batch-size", type=int, default=64, help="for the memory estimate (default 64)"
            )
            cmd.add_argument(
                "--format", choices=("table", "json"), default="table", help="default table"
            )
        else:
            cmd.add_argument("-o", "--output", help="image file or folder (default: MODEL.png)")


def _add_sweep_options(parser: argparse.ArgumentParser, data_help: str) -> None:
    add = parser.add_argument
    add("--data", help=data_help)
    add("--workspace", default=WORKSPACE, help=_WORKSPACE_HELP)
    add(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="runs at once, in separate processes (default 1)",
    )
    add(
        "--ray",
        metavar="ADDRESS",
        help="train the runs as tasks of a Ray cluster: auto (the one this machine is in), local "
        "(start one here) or its address; needs pip install 'cifarlab[ray]'",
    )
    add("--ray-cpus", type=float, default=1.0, metavar="N", help="CPUs (threads) a run takes (1)")
    add("--ray-gpus", type=float, metavar="N", help="GPUs a run takes (1 if the cluster has any)")
    add("--dry-run", action="store_true", help="list the runs and what would happen; run nothing")
    add("--max-runs", type=int, metavar="N", help="run at most N of the missing runs")
    add("--only", action="append", default=[], metavar="KEY=VALUE", help="only matching runs")
    add("--new-name", help="record the experiment under this name instead")
    add("--force", action="store_true", help="replace an experiment of the same name")
    add("--quiet", action="store_true", help="no progress bars")


def close_option(parser: argparse.ArgumentParser, command: str, given: str) -> str:
    """ "did you mean --x? " among the options of ``command`` itself (and, for train, the
    names other tools give them: config.did_you_mean); "" when none is close."""
    if not given.startswith("--"):
        return ""
    if command == "train":
        return did_you_mean(given)
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    options = [o for o in sub._option_string_actions if o.startswith("--")]
    return suggest(given, options, cutoff=0.75, show=str)


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    report = _command(sub, "report", "write an HTML report with charts of a sweep or run", """\
  cifarlab report --experiment blog                # cifarlab-runs/report-blog/index.html
  cifarlab report --run tutorial-1a2b3c4d -o my-report/
""")  # fmt: skip
    report.add_argument("--experiment", help="the experiment to report (default: every run)")
    report.add_argument("--run", metavar="RUN_ID", help="report one run instead")
    report.add_argument("--workspace", default=WORKSPACE, help=_WORKSPACE_HELP)
    report.add_argument("-o", "--output", metavar="DIR",
                        help="folder for index.html and the PNGs "
                             "(default <workspace>/report-<experiment|run|all>)")  # fmt: skip


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    predict = _command(sub, "predict", "classify image files with a trained run's net", """\
  cifarlab predict speedrun-1a2b3c4d cat.png dog.jpg
  cifarlab predict speedrun-1a2b3c4d photos/ --top 3 --format csv > predictions.csv
""")  # fmt: skip
    predict.add_argument("run", metavar="RUN_ID", help="a run of the workspace (cifarlab results)")
    predict.add_argument("images", nargs="+", metavar="IMAGE",
                         help="image files, or folders of them (all levels)")  # fmt: skip
    predict.add_argument("--workspace", default=WORKSPACE, help=_WORKSPACE_HELP)
    predict.add_argument("--top", type=int, default=1, metavar="K",
                         help="also list the next K-1 likeliest classes (default 1)")  # fmt: skip
    predict.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="default table"
    )


def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    export = _command(sub, "export", "write a trained run's net to an ONNX file", """\
  cifarlab export speedrun-1a2b3c4d                  # speedrun-1a2b3c4d.onnx
  cifarlab export speedrun-1a2b3c4d -o deploy/cifar.onnx
""")  # fmt: skip
    export.add_argument("run", metavar="RUN_ID", help="a run of the workspace (cifarlab results)")
    export.add_argument("-o", "--output", metavar="FILE", help="default: RUN_ID.onnx")
    export.add_argument("--workspace", default=WORKSPACE, help=_WORKSPACE_HELP)
