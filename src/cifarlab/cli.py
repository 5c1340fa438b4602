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

from cifarlab.arguments import build_parser, close_option
from cifarlab.config import make_run_config
from cifarlab.errors import (
    CifarlabError,
    MachineFailure,
    RecordedFailure,
    Terminated,
    comma_list,
    machine_trouble,
    show_warning,
)
from cifarlab.files import image_file
from cifarlab.process import one_of_several_ranks, signals_held, terminate_as_interrupt

EXIT_USAGE = 2  # bad input
EXIT_FAILURE = 1  # the machine failed the work: disk, memory, a locked database
# the input was fine, but a run has no result: `train`'s run failed or diverged; a sweep's
# failed or is still running in another process (its diverged runs are results, settled)
EXIT_UNSETTLED = 3


def main(argv: Sequence[str] | None = None) -> int:
    sigterm = terminate_as_interrupt()  # `kill` records the run as failed, like Ctrl-C
    args = None
    try:
        with warnings.catch_warnings():  # restores the default display when main returns
            warnings.showwarning = show_warning
            parser = build_parser()
            args, extra = parser.parse_known_args(argv)
            if extra:  # named here, where the command is known, so the hint can point at it
                unknown = " ".join(extra)
                hint = f"{close_option(parser, args.command, extra[0])}"
                hint += f"see `cifarlab {args.command} --help`"
                raise CifarlabError(f"unrecognized arguments: {unknown}; {hint}")
            if args.command != "results":  # the one command that does without torch
                # torch's C++ start-up runs Python code (numpy's import, GC callbacks) and
                # drops what it raises: a stop landing there was lost (the run trained on)
                # or left numpy half-imported. Held, it comes right after the import.
                with signals_held():
                    import torch  # noqa: F401
            try:
                return COMMANDS[args.command](args)
            except BaseException:
                _tell_other_ranks()
                raise
    except CifarlabError as err:
        if _left_to_rank_0(err):
            return 0
        code = EXIT_UNSETTLED if isinstance(err, RecordedFailure) else EXIT_USAGE
        code = EXIT_FAILURE if isinstance(err, MachineFailure) else code
        for line in str(err).split("\n"):  # one line per problem
            _say_error(_printable(line))
        return code
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (Terminated)
        if _left_to_rank_0(stop):  # torchrun stopped every rank: rank 0 says how to go on
            return 0
        hint = getattr(stop, "resume_hint", None)
        word = "terminated" if isinstance(stop, Terminated) else "interrupted"
        print(f"cifarlab: {word}" + (f"; {hint} continues it" if hint else ""), file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    except BrokenPipeError:  # `cifarlab results | head`: the reader has what it wanted
        _silence_stdout()
        return 141  # as a shell reports a command ended by SIGPIPE
    except Exception as err:
        if _left_to_rank_0(err):
            return 0
        message = machine_trouble(err, getattr(args, "command", None))
        if message is None or os.environ.get("CIFARLAB_TRACEBACK"):
            raise  # a bug: its traceback is what a report needs
        _say_error(message)
        return EXIT_FAILURE
    finally:
        if sigterm is not None:  # main() may be called from a program with its own handler
            signal.signal(signal.SIGTERM, sigterm)


def _say_error(message: str) -> None:
    """``cifarlab: error: ...``, naming the rank on a torchrun rank other than 0."""
    rank = _other_rank()
    print(f"cifarlab: error{f' (rank {rank})' if rank else ''}: {message}", file=sys.stderr)


def _other_rank() -> int:
    """This process's rank under torchrun, when it is not rank 0; else 0."""
    if not one_of_several_ranks():  # torch not needed
        return 0
    from cifarlab.distributed import launched_world

    try:
        return launched_world().rank
    except CifarlabError:  # torchrun's variables garbled: every process says so
        return 0


def _tell_other_ranks() -> None:
    """Rank 0 of a torchrun launch that fails tells the other ranks (``_left_to_rank_0``)."""
    if one_of_several_ranks():  # torch is loaded only then
        from cifarlab.distributed import tell_main_failed

        tell_main_failed()


def _left_to_rank_0(err: BaseException) -> bool:
    """On a rank other than 0 of a torchrun launch: whether rank 0 says this failure; this
    rank then ends quietly with status 0 (``distributed.ends_quietly``)."""
    if not one_of_several_ranks():
        return False
    from cifarlab.distributed import ends_quietly

    return ends_quietly(err)


def _printable(line: str) -> str:
    """A message line with control characters shown escaped: a file name holding a carriage
    return (macOS's `Icon\\r`) broke one error into two lines."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], line)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's own flush at exit meets no closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def image_path(output: str, name_in_folder: str) -> Path:
    """Where ``-o`` writes: ``name_in_folder`` in it if it is a folder, else the file, as a
    PNG if it has no suffix."""
    path = Path(output)
    if path.is_dir() or output.endswith(("/", os.sep)):
        path.mkdir(parents=True, exist_ok=True)
        return path / name_in_folder
    return image_file(path)


def cmd_train(args: argparse.Namespace) -> int:
    from cifarlab.results import format_runs
    from cifarlab.runner import run_training

    options: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k != "command" and v is not None
    }
    result = run_training(make_run_config(**options))
    if _other_rank():  # a spread run's rank 0 prints its results, and its status is the launch's
        return 0
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
        epochs = "scored epoch" if config.eval_every > 1 else "epoch"
        epochs += "s" * (config.early_stop > 1)  # "in 1 epochs"
        done += f" (stopped early: no {config.select_by} gain in {config.early_stop} {epochs})"
    if s.get("best_val_acc") is None:  # no validation split: nothing chosen
        return f"{done}; test accuracy {s['test_acc']:.2%} after the last epoch"
    chosen = f"{s['best_val_acc']:.2%} val"
    if config.select_by == "val_loss":  # the loss chose: it said "best val_loss ... (22% val)"
        row = next(m for m in result.history if m["epoch"] == s["best_epoch"])
        chosen = f"val loss {row['val_loss']:.4f}, {chosen}"
    best = f"best {config.select_by} at epoch {s['best_epoch']} ({chosen})"
    return f"{done}; {best}, where the test accuracy was {s['test_acc']:.2%}"


def cmd_results(args: argparse.Namespace) -> int:
    from cifarlab.filters import parse_only
    from cifarlab.results import (
        compare,
        format_runs,
        group_table,
        grouping_records,
        pooling_note,
        results,
        sort_records,
        unmatched_hint,
        unstarted_note,
    )

    group_by = comma_list(args.group_by) if args.group_by else None
    only = parse_only(args.only)
    if only and not results(args.workspace, args.experiment, only):
        shown = " ".join(f"--only {item}" for item in args.only)
        hint = unmatched_hint(args.workspace, args.experiment, only)  # a typo'd model name
        print(f"no runs match {shown}{hint}")  # not "no runs yet": the workspace has some
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
        # as the groups see them: one dataset at two paths is one dataset
        records = grouping_records(args.workspace, args.experiment, only)
        print(compare(records, *args.compare, fmt=args.format))
    else:
        table = group_table(args.workspace, args.experiment, group_by, args.sort, args.format, only)
        print(table)
        notes = [pooling_note(args.workspace, args.experiment, group_by, only) if group_by
                 else None, unstarted_note(args.workspace, args.experiment)]  # fmt: skip
        for note in filter(None, notes):  # stderr: a --format json/csv reader parses stdout
            print(note, file=sys.stderr)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from cifarlab.experiments.spec import load_experiment

    overrides = {"data": args.data} if args.data else {}
    return _sweep_and_summarize(load_experiment(args.file, **overrides), args)


def cmd_compare(args: argparse.Namespace) -> int:
    from cifarlab.experiments.presets import preset_definition
    from cifarlab.experiments.spec import build_experiment

    definition = preset_definition(
        args.preset,
        epochs=args.epochs,
        seeds=args.seeds,
        models=comma_list(args.models) if args.models is not None else None,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        val_size=args.val_size,
    )
    overrides = {"data": args.data} if args.data else {}
    experiment = build_experiment(definition, source=f"preset {args.preset}", **overrides)
    code = _sweep_and_summarize(experiment, args)
    if not args.dry_run:
        from cifarlab.results import group_table

        print(group_table(args.workspace, args.new_name or definition["name"], sort="test_acc"))
    return code


def _sweep_and_summarize(experiment, args: argparse.Namespace) -> int:
    from cifarlab.experiments.ray_runs import check_ray_options, ray_options
    from cifarlab.experiments.sweep import TO_RUN, SweepPlan, check_sweep_options, run_sweep
    from cifarlab.filters import parse_only

    check_sweep_options(args.workers, args.max_runs)  # the options alone, before --only's
    ray = ray_options(args.ray, args.ray_cpus, args.ray_gpus)
    check_ray_options(ray, args.workers)
    try:
        report = run_sweep(
            experiment, args.workspace, new_name=args.new_name, dry_run=args.dry_run,
            workers=args.workers, only=parse_only(args.only), max_runs=args.max_runs,
            force=args.force, quiet=args.quiet, ray=ray,
        )  # fmt: skip
    except KeyboardInterrupt as stop:  # not the one run's `train --resume`: the whole sweep
        if args.dry_run:  # nothing ran: nothing to continue
            raise
        stop.resume_hint = "the same command again (it skips finished runs, resumes stopped ones)"
        raise
    if isinstance(report, SweepPlan):  # --dry-run: a workspace without a database plans
        print(report.text())  # against an empty one, and nothing is written
        return 0
    experiment_name = args.new_name or experiment.name
    summary = report.outcome_counts() or "nothing to run"
    trained = sum(p.action in TO_RUN for p in report.planned)
    print(
        f"sweep {experiment_name}: {_runs(len(report.planned))} ({summary}); {trained} trained "
        f"now, in {report.seconds:.0f}s",
        file=sys.stderr,
    )
    if report.not_run:  # a partial sweep must not read as a finished one
        print(
            f"sweep {experiment_name}: {report.not_run} of its {_runs(report.runs)} not run yet "
            "(--only / --max-runs); the same command without them runs the rest",
            file=sys.stderr,
        )
    return EXIT_UNSETTLED if report.unsettled else 0


def _runs(n: int) -> str:
    return f"{n} run" + "s" * (n != 1)


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
    try:
        model = create_model(
            args.model,
            num_classes=args.num_classes,
            in_channels=args.in_channels,
            image_size=args.image_size,
        )
    except (OverflowError, RuntimeError, TypeError) as err:  # torch's sizes are 64-bit
        if "overflow" not in str(err).lower():
            raise
        raise CifarlabError(
            f"{args.model} is too large to build for {args.in_channels} x {args.image_size} x "
            f"{args.image_size} images and {args.num_classes} classes; give smaller "
            "--image-size, --in-channels or --num-classes"
        ) from None
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
    except OSError as err:  # an unwritable path: its reason, not our temp file's name
        raise CifarlabError(
            f"cannot write diagram to '{output}': {err.strerror or err}; pick another -o path"
        ) from None
    except ValueError as err:  # an image suffix matplotlib does not write
        raise CifarlabError(f"cannot write diagram to '{output}': {err}") from None
    print(f"wrote {_printable(str(path))}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from cifarlab.data.inspect import dataset_info, format_info, preview_grid

    source = {"image_size": args.image_size, "labels": args.labels}
    if args.data_command == "info":
        print(format_info(dataset_info(args.data, **source), args.format))
        return 0
    output = image_path(args.output, "grid.png")
    path = preview_grid(args.data, output, args.per_class, args.split, args.seed, **source)
    print(f"wrote {_printable(str(path))}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cifarlab.report import report

    if args.experiment and args.run:
        raise CifarlabError("--experiment and --run: give one of them, not both")
    index = report(args.experiment, args.workspace, args.output, run=args.run)
    print(f"wrote {_printable(str(index))}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cifarlab.data.image_files import image_paths, read_images
    from cifarlab.trained import load_trained

    if args.top < 1:
        raise CifarlabError("--top must be 1 or more")
    files = image_paths(args.images)
    trained = load_trained(args.run, args.workspace)
    pixels, resized = read_images(files, trained.image_shape)
    if resized:  # a photo squeezed into 32x32 may lose what told its class apart
        c, h, w = trained.image_shape
        print(f"cifarlab: note: {resized} of {len(files)} images resized to {h}x{w}, the size "
              f"run {args.run} trained on", file=sys.stderr)  # fmt: skip
    top = trained.probabilities(pixels).topk(min(args.top, len(trained.classes)), dim=1)
    rows = [
        (str(f), [(trained.classes[i], p) for i, p in zip(ids, ps)])
        for f, ids, ps in zip(files, top.indices.tolist(), top.values.tolist())
    ]
    print(_predictions_text(rows, args.format))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from cifarlab.trained import load_trained

    trained = load_trained(args.run, args.workspace)
    print(f"exporting {args.run}'s net (torch.onnx takes some seconds)...", file=sys.stderr)
    name = f"{Path(args.run).name}.onnx"  # a run given by its folder: still RUN_ID.onnx here
    output = Path(args.output) if args.output else Path(name)
    if args.output and (output.is_dir() or args.output.endswith(("/", os.sep))):
        output = output / name  # -o deploy/: deploy/RUN_ID.onnx
    path = trained.export_onnx(output)
    print(f"wrote {_printable(str(path))}")
    return 0


def _predictions_text(rows: list[tuple[str, list[tuple[str, float]]]], fmt: str) -> str:
    """One row per file: its likeliest class and probability, then the runners-up."""
    import csv
    import io
    import json

    if fmt == "json":
        return json.dumps([{"file": f, "class": best[0][0], "probability": round(best[0][1], 6),
                            "top": [{"class": c, "probability": round(p, 6)} for c, p in best]}
                           for f, best in rows], indent=2)  # fmt: skip
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        k = len(rows[0][1])
        writer.writerow(["file"] + [f"{w}{j}" for j in range(1, k + 1) for w in ("class", "p")])
        for f, best in rows:
            writer.writerow([f] + [x for c, p in best for x in (c, f"{p:.6f}")])
        return out.getvalue().rstrip("\n")
    from cifarlab.tables import format_table

    header = ["file", "class", "probability"] + (["next"] if len(rows[0][1]) > 1 else [])
    lines = [
        [_printable(f), best[0][0], f"{best[0][1]:.1%}"]  # a newline in a name: one row
        + ([", ".join(f"{c} {p:.1%}" for c, p in best[1:])] if len(best) > 1 else [])
        for f, best in rows
    ]
    return format_table(header, lines, right=(2,), rule=True)


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
    "predict": cmd_predict,
    "export": cmd_export,
}

if __name__ == "__main__":
    sys.exit(main())
