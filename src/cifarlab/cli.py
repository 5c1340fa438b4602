"""The ``cifarlab`` command. Bad input: one line on stderr, exit status 2, nothing recorded."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cifarlab.config import (
    AUGMENTATIONS,
    LABELS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    SELECT_BY,
    did_you_mean,
    make_run_config,
)
from cifarlab.errors import (
    CifarlabError,
    RecordedFailure,
    Terminated,
    comma_list,
    machine_trouble,
    show_warning,
    suggest,
)
from cifarlab.process import signals_held, terminate_as_interrupt

EXIT_USAGE = 2  # bad input
EXIT_FAILURE = 1  # the machine failed the work: disk, memory, a locked database
# the input was fine, but a run has no result: `train`'s run failed or diverged; a sweep's
# failed or is still running in another process (its diverged runs are results, settled)
EXIT_UNSETTLED = 3


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
    return parser


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = _command(sub, "train", "train one model and record the run", _TRAIN_EXAMPLES)
    add = train.add_argument
    # --x / --no-x; None: not given, so the preset's or the default value applies
    flag = dict(action=argparse.BooleanOptionalAction, default=None)
    add("--preset", metavar="NAME", help="speedrun, speedrun-cpu or quick-cpu; options given "
        "with it override it, wherever they stand; under a preset a new --batch-size also "
        "scales --lr")  # fmt: skip
    add("--model", help="built-in name (`cifarlab models`), spec.toml or file.py:Class "
        "(default tutorial)")  # fmt: skip
    add("--data", help=_DATA_HELP)
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
    add("--schedule", metavar="NAME", help=f"one of {', '.join(SCHEDULES)} (default constant)")
    add("--warmup-epochs", type=float, metavar="N", help="linear warm-up of warmup-* schedules, "
        "and the peak of triangular, else at 23%% of the run (default 0)")  # fmt: skip
    add("--step-size", type=int, help="epochs between decays of the step schedule (default 10)")
    add("--milestones", help="epochs of the multistep schedule's decays, e.g. 30,60")
    add("--gamma", type=float, help="decay factor of step/multistep (default 0.1)")
    add("--max-lr", type=float, help="peak learning rate of the onecycle schedule")
    add("--label-smoothing", type=float, help="label smoothing in [0, 1) (default 0)")
    add("--grad-clip", type=float, help="clip the gradient norm to this value")
    add("--ema", type=float, metavar="DECAY", help="evaluate an EMA of the weights, e.g. 0.999 "
        "(its decay warms up over the first steps)")  # fmt: skip
    add("--norm-lr-scale", type=float, help="lr multiplier of norm-layer parameters (default 1)")
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
        help="test-time augmentation at the final "
        "evaluation: 0 none, 1 + mirror, 2 + mirrors of two 1-px shifts (default 0)",
    )
    add("--batch-size", type=int, help="training batch size (default 64)")
    add("--epochs", type=int, help="passes over the training split (default 10)")
    add("--val-size", type=int, help="validation images held out of train (default 5000)")
    add(
        "--limit-train",
        type=int,
        metavar="N",
        help="stratified subset of the training split, for quick runs",
    )
    add("--limit-test", type=int, metavar="N", help="stratified subset of the test split")
    add("--augment", metavar="NAME", help=f"one of {', '.join(AUGMENTATIONS)} (default crop-flip)")
    add("--seed", type=int, help="seeds split, init, shuffling, augmentation (default 0)")
    add("--deterministic", **flag, help="deterministic algorithms: bitwise-repeatable runs")
    add(
        "--precision",
        metavar="NAME",
        help=f"one of {', '.join(PRECISIONS)}; auto takes bf16 autocast on CUDA (fp16 where "
        "the GPU lacks bf16) and with channels_last on CPUs with native bf16 (AVX-512 BF16 "
        "or AMX), else fp32 (on other CPUs bf16 is emulated, 5-16x slower) (default auto)",
    )
    add("--channels-last", action=argparse.BooleanOptionalAction, help="NHWC layout (default on)")
    add("--compile", **flag, help="torch.compile the model (slow start; opt-in)")
    add("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    add(
        "--select-by",
        metavar="METRIC",
        help=f"model selection metric: {' or '.join(SELECT_BY)} (default val_acc)",
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
    # -- data layer: train options of the data sources and augmentation, and `cifarlab data`
    add(
        "--labels",
        metavar="fine|coarse",
        help="CIFAR-100 classes: fine (100) or coarse (20) (default fine)",
    )
    add("--image-size", type=int, metavar="N", help=_IMAGE_SIZE_HELP)
    add(
        "--drop-last",
        action=argparse.BooleanOptionalAction,
        help="drop the last partial training batch (default: keep it)",
    )
    add("--crop-pad", type=int, metavar="PX", help="crop/translate padding in pixels (default 4)")
    add(
        "--cutout",
        type=int,
        metavar="PX",
        help="cutout square side; adds cutout to any --augment (default 8 for *-cutout ones)",
    )


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
    results.add_argument("--workspace", default="cifarlab-runs", help=_WORKSPACE_HELP)
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
  cifarlab results                                  # every run, newest first
  cifarlab results --experiment blog --sort test_acc --format markdown
  cifarlab results --experiment blog --group-by model
  cifarlab results --experiment blog --compare optimizer=adam optimizer=sgd
  cifarlab results --only model=tutorial --format csv > runs.csv
"""


def _add_sweep_parsers(sub: argparse._SubParsersAction) -> None:
    sweep = _command(sub, "sweep", "run every configuration of an experiment file", """\
  cifarlab sweep blog.toml --dry-run        # the plan; runs nothing
  cifarlab sweep blog.toml --workers 2      # runs in parallel processes, one database
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
    add("--workspace", default="cifarlab-runs", help=_WORKSPACE_HELP)
    add(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="runs at once, in separate processes (default 1)",
    )
    add("--dry-run", action="store_true", help="list the runs and what would happen; run nothing")
    add("--max-runs", type=int, metavar="N", help="run at most N of the missing runs")
    add("--only", action="append", default=[], metavar="KEY=VALUE", help="only matching runs")
    add("--new-name", help="record the experiment under this name instead")
    add("--force", action="store_true", help="replace an experiment of the same name")
    add("--quiet", action="store_true", help="no progress bars")


def main(argv: Sequence[str] | None = None) -> int:
    sigterm = terminate_as_interrupt()  # `kill` records the run as failed, like Ctrl-C
    try:
        with warnings.catch_warnings():  # restores the default display when main returns
            warnings.showwarning = show_warning
            parser = build_parser()
            args, extra = parser.parse_known_args(argv)
            if extra:  # named here, where the command is known, so the hint can point at it
                unknown = " ".join(extra)
                hint = f"{_close_option(parser, args.command, extra[0])}"
                hint += f"see `cifarlab {args.command} --help`"
                raise CifarlabError(f"unrecognized arguments: {unknown}; {hint}")
            if args.command != "results":  # the one command that does without torch
                # torch's C++ start-up runs Python code (numpy's import, GC callbacks) and
                # drops what it raises: a stop landing there was lost (the run trained on)
                # or left numpy half-imported. Held, it comes right after the import.
                with signals_held():
                    import torch  # noqa: F401
            return COMMANDS[args.command](args)
    except CifarlabError as err:
        for line in str(err).splitlines():  # one line per problem
            print(f"cifarlab: error: {line}", file=sys.stderr)
        return EXIT_UNSETTLED if isinstance(err, RecordedFailure) else EXIT_USAGE
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (Terminated)
        hint = getattr(stop, "resume_hint", None)
        word = "terminated" if isinstance(stop, Terminated) else "interrupted"
        print(f"cifarlab: {word}" + (f"; {hint} continues it" if hint else ""), file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    except BrokenPipeError:  # `cifarlab results | head`: the reader has what it wanted
        _silence_stdout()
        return 141  # as a shell reports a command ended by SIGPIPE
    except Exception as err:
        message = machine_trouble(err)
        if message is None or os.environ.get("CIFARLAB_TRACEBACK"):
            raise  # a bug: its traceback is what a report needs
        print(f"cifarlab: error: {message}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if sigterm is not None:  # main() may be called from a program with its own handler
            signal.signal(signal.SIGTERM, sigterm)


def _close_option(parser: argparse.ArgumentParser, command: str, given: str) -> str:
    """ "did you mean --x? " among the options of ``command`` itself (and, for train, the
    names other tools give them: config.did_you_mean); "" when none is close."""
    if not given.startswith("--"):
        return ""
    if command == "train":
        return did_you_mean(given)
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    options = [o for o in sub._option_string_actions if o.startswith("--")]
    return suggest(given, options, cutoff=0.75, show=str)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's own flush at exit meets no closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def image_path(output: str, name_in_folder: str) -> Path:
    """Where ``-o`` writes: a file in it if it is a folder; a PNG if it has no suffix
    (matplotlib would add .png and the path printed would be wrong)."""
    path = Path(output)
    if path.is_dir() or output.endswith(("/", os.sep)):
        path.mkdir(parents=True, exist_ok=True)
        return path / name_in_folder
    return path if path.suffix else path.with_suffix(".png")


def cmd_train(args: argparse.Namespace) -> int:
    from cifarlab.results import format_runs
    from cifarlab.runner import run_training

    options: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k != "command" and v is not None
    }
    result = run_training(make_run_config(**options))
    record = {"id": result.run_id, **result.config.model_dump(), "status": result.status}
    print(format_runs([record | result.summary], "table", reasons=False))  # said on stderr
    if result.status != "completed":
        print(f"cifarlab: run {result.run_id} {result.status}: {result.error}", file=sys.stderr)
        return EXIT_UNSETTLED
    print(_what_was_chosen(result))
    print(f"run {result.run_id}: checkpoints in {result.run_dir}")
    return 0


def _what_was_chosen(result: Any) -> str:
    """One line on the epoch reported and why training ended where it did."""
    s, config = result.summary, result.config
    done = f"{s['epochs_done']} of {config.epochs} epochs"
    if s.get("stopped_epoch"):
        done += f" (stopped early: no {config.select_by} gain in {config.early_stop} epochs)"
    if s.get("best_val_acc") is None:  # no validation split: nothing chosen
        return f"{done}; test accuracy {s['test_acc']:.2%} after the last epoch"
    best = f"best {config.select_by} at epoch {s['best_epoch']} ({s['best_val_acc']:.2%} val)"
    return f"{done}; {best}, where the test accuracy was {s['test_acc']:.2%}"


def cmd_results(args: argparse.Namespace) -> int:
    from cifarlab.filters import parse_only
    from cifarlab.results import compare, format_runs, group_table, results, sort_records

    group_by = comma_list(args.group_by) if args.group_by else None
    only = parse_only(args.only)
    if only and not results(args.workspace, args.experiment, only):
        shown = " ".join(f"--only {item}" for item in args.only)
        print(f"no runs match {shown}")  # not "no runs yet": the workspace has some
        return 0
    if args.experiment is None and group_by is None and args.compare is None:
        records = results(args.workspace, only=only)
        print(format_runs(sort_records(records, args.sort), args.format))
    elif args.compare:
        if group_by or args.sort or args.format in ("csv", "markdown"):
            raise CifarlabError(
                "--compare prints one comparison: it takes no --group-by, --sort or "
                "--format csv/markdown; drop them (--format json gives its numbers)"
            )
        records = results(args.workspace, args.experiment, only)
        print(compare(records, *args.compare, fmt=args.format))
    else:
        table = group_table(args.workspace, args.experiment, group_by, args.sort, args.format, only)
        print(table)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from cifarlab.experiments.spec import load_experiment

    overrides = {"data": args.data} if args.data else {}
    return _sweep(load_experiment(args.file, **overrides), args)


def cmd_compare(args: argparse.Namespace) -> int:
    from cifarlab.experiments.presets import preset_definition
    from cifarlab.experiments.spec import build_experiment

    definition = preset_definition(
        args.preset,
        epochs=args.epochs,
        seeds=args.seeds,
        models=comma_list(args.models) if args.models else None,
        limit_train=args.limit_train,
    )
    overrides = {"data": args.data} if args.data else {}
    code = _sweep(build_experiment(definition, source=f"preset {args.preset}", **overrides), args)
    if not args.dry_run:
        from cifarlab.results import group_table

        print(group_table(args.workspace, args.new_name or definition["name"], sort="test_acc"))
    return code


def _sweep(experiment, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from cifarlab.experiments.store import ResultsStore
    from cifarlab.experiments.sweep import (
        TO_RUN,
        check_experiment_name,
        check_sweep_options,
        plan_sweep,
        run_sweep,
    )
    from cifarlab.filters import parse_only

    if args.new_name is not None:
        experiment = replace(experiment, name=args.new_name)
    check_sweep_options(args.workers, args.max_runs)
    only = parse_only(args.only)
    if args.dry_run:  # writes nothing: a workspace without a database plans against an empty one
        db = Path(args.workspace) / "runs.db"
        with ResultsStore(db if db.exists() else ":memory:") as store:
            check_experiment_name(experiment, store, args.force)  # as the real sweep will
            planned = plan_sweep(experiment, store, only, args.max_runs)
        axes = _other_axes([p.config for p in planned])
        for p in planned:
            print(f"{p.action:7s}{p.config.hash()}  {_describe_run(p.config, axes)}")
        todo = sum(p.action in TO_RUN for p in planned)
        print(f"{experiment.name}: {_runs(len(planned))}, {todo} to run")
        return 0
    try:
        report = run_sweep(
            experiment, args.workspace, workers=args.workers, only=only,
            max_runs=args.max_runs, force=args.force, quiet=args.quiet,
        )  # fmt: skip
    except KeyboardInterrupt as stop:  # not the one run's `train --resume`: the whole sweep
        stop.resume_hint = "the same command again (it skips finished runs, resumes stopped ones)"
        raise
    counts = {s: list(report.outcomes.values()).count(s) for s in set(report.outcomes.values())}
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to run"
    trained = sum(p.action in TO_RUN for p in report.planned)
    print(
        f"sweep {experiment.name}: {_runs(len(report.planned))} ({summary}); {trained} trained "
        f"now, in {report.seconds:.0f}s",
        file=sys.stderr,
    )
    return EXIT_UNSETTLED if report.unsettled else 0


def _runs(n: int) -> str:
    return f"{n} run" + "s" * (n != 1)


_DESCRIBED = ("model", "optimizer", "lr", "batch_size", "seed")


def _describe_run(config, axes: tuple[str, ...] | list[str] = ()) -> str:
    c = config
    text = f"{c.model:10s} {c.optimizer:7s} lr={c.lr:g} bs={c.batch_size} seed={c.seed}"
    from cifarlab.tables import setting_text

    return " ".join([text, *(f"{k}={setting_text(getattr(c, k))}" for k in axes)])


def _other_axes(configs: list) -> list[str]:
    """Settings besides the usual five that differ between ``configs``: a grid over
    milestones must not print identical lines."""
    fields = [k for k in type(configs[0]).model_fields if k not in _DESCRIBED] if configs else []
    return [k for k in fields if len({repr(getattr(c, k)) for c in configs}) > 1]


def cmd_models(args: argparse.Namespace) -> int:
    from cifarlab.models import create_model, list_models
    from cifarlab.models.summary import summarize_model
    from cifarlab.tables import format_table

    rows = []
    for e in list_models():
        summary = summarize_model(create_model(e.name))
        rows.append((e.name, f"{summary.params:,}", f"{summary.macs / 1e6:,.1f}M", e.description))
    print(format_table(("model", "params", "MACs", "description"), rows, right=(1, 2)))
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
    from cifarlab.models.registry import model_label

    model, shape = _model_for(args)
    name = f"{model_label(args.model)}.png"  # `diagram tutorial` writes tutorial.png
    output = image_path(args.output or name, name)
    try:
        path = draw_diagram(model, output, shape, title=args.model)
    except (OSError, ValueError) as err:  # an unwritable path or unknown image suffix
        raise CifarlabError(f"cannot write diagram to {args.output!r}: {err}") from None
    print(f"wrote {path}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from cifarlab.data.inspect import dataset_info, format_info, preview_grid

    source = {"image_size": args.image_size, "labels": args.labels}
    if args.data_command == "info":
        print(format_info(dataset_info(args.data, **source), args.format))
        return 0
    output = image_path(args.output, "grid.png")
    path = preview_grid(args.data, output, args.per_class, args.split, args.seed, **source)
    print(f"wrote {path}")
    return 0


# -- report: charts and one HTML page for an experiment, one run, or the whole workspace ----------
def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    report = _command(sub, "report", "write an HTML report with charts of a sweep or run", """\
  cifarlab report --experiment blog                # cifarlab-runs/report-blog/index.html
  cifarlab report --run tutorial-1a2b3c4d -o my-report/
""")  # fmt: skip
    report.add_argument("--experiment", help="the experiment to report (default: every run)")
    report.add_argument("--run", metavar="RUN_ID", help="report one run instead")
    report.add_argument("--workspace", default="cifarlab-runs", help=_WORKSPACE_HELP)
    report.add_argument("-o", "--output", metavar="DIR",
                        help="folder for index.html and the PNGs "
                             "(default <workspace>/report-<experiment|run|all>)")  # fmt: skip


def cmd_report(args: argparse.Namespace) -> int:
    from cifarlab.report import report

    if args.experiment and args.run:
        raise CifarlabError("--experiment and --run: give one of them, not both")
    index = report(args.experiment, args.workspace, args.output, run=args.run)
    print(f"wrote {index}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "results": cmd_results,
    "models": cmd_models,
    "sweep": cmd_sweep,
    "compare": cmd_compare,
    "summary": cmd_summary,
    "diagram": cmd_diagram,
    "data": cmd_data,
    "report": cmd_report,
}

if __name__ == "__main__":
    sys.exit(main())
