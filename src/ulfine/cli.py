"""`ulfine <command>`: argument parsing only; each command lives in ``ulfine.commands.<name>``."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ulfine.config import config_help
from ulfine.errors import UlfineError


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML run config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.01")


DESCRIPTION = """\
Fine-tune a CLIP model into a classifier for long-tailed, partly labeled images, with the
rare (tail) classes in mind: ULFine and the LTSSL baselines (FixMatch, FixMatch+LA, ACR).

first run (offline model and data in ../shared, about 2 minutes on an idle 2-core CPU):
  ulfine train --config configs/offline/miniclip_cifar10lt.yaml
your own images (see README, "Train on your own images"):
  ulfine data --config configs/offline/miniclip_cifar10lt.yaml data.dataset=imagefolder \\
      data.root=DIR data.distribution=natural
  ulfine train --config configs/offline/miniclip_cifar10lt.yaml data.dataset=imagefolder \\
      data.root=DIR data.distribution=natural output.name=mine

'ulfine COMMAND --help' describes each command; 'ulfine train --help' lists every config key."""

TRAIN_HELP = """\
Train one strategy x method run; a run folder RUN = <output.dir>/<output.name> gets config.yaml,
train.log, metrics.jsonl, metrics.json and checkpoints/. '--config RUN' continues an interrupted run.

your own images: data.dataset=imagefolder data.root=DIR data.distribution=natural uses every
image of DIR/train/<class>/ as labeled, everything under DIR/unlabeled/ as unlabeled and
DIR/test/<class>/ (or, without it, a data.test_holdout share of train) as the test set; see the
README section "Train on your own images".

config keys (section.key = default), set in the YAML file or as section.key=value:
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ulfine", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO",
                        help="ulfine's logging level (DEBUG, INFO, WARNING); DEBUG also shows other libraries'")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("zeroshot", help="zero-shot CLIP accuracy: a run config's test split, or an ImageFolder split")
    _add_config_args(p)
    p.add_argument("--model", default=None, help="without a config: open_clip name, local-dir:PATH or hf-hub:ID")
    p.add_argument("--pretrained", default=None, help="open_clip pretrained tag (built-in names only)")
    p.add_argument("--checkpoint", default=None, help="explicit weights file")
    p.add_argument("--data", default=None, help="without a config: dataset folder holding <split>/<class>/*")
    p.add_argument("--split", default=None, help="without a config: the split folder (default: test)")
    p.add_argument("--class-names", default=None, help="file with one class name per line")
    p.add_argument("--templates", default=None, help="single (default) | simple | openai")
    p.add_argument("--prompt", default=None, help="template for --templates single (default: 'a photo of a {}.')")
    p.add_argument("--batch-size", type=int, default=None, help="default 256")
    p.add_argument("--workers", type=int, default=None, help="default 2")
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"], help="default fp32")
    p.add_argument("--device", default=None, help="default auto")
    p.add_argument("--json", default=None, help="write top1 and per_class (percent) here")

    p = sub.add_parser("data", help="print and plot the labeled/unlabeled/test class distribution")
    _add_config_args(p)
    p.add_argument("--json", default=None, help="write the counts here")
    p.add_argument("--plot", default=None, help="bar plot PNG (default: beside --json)")

    p = sub.add_parser("train", help="train a strategy x method run (torchrun-compatible)",
                       description=TRAIN_HELP + "\n".join(config_help()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p)

    p = sub.add_parser("analyze", help="pseudo-label and calibration analysis of run folders")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", default="analysis", help="output folder for figures and the table")

    p = sub.add_parser("predict", help="predict classes of image files with a trained run")
    p.add_argument("--run", required=True, help="run directory (or an export folder)")
    p.add_argument("--images", required=True, nargs="+", help="image files or folders (recursive)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--output", default="predictions.csv")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2, help="image-loading processes")
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default=None,
                   help="base model location when it moved (replaces model.name; exports check its hash)")

    p = sub.add_parser("export", help="save a run's fine-tuned part alone (safetensors + JSON)")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", default=None, help="export folder (default: RUN/export)")

    p = sub.add_parser("report", help="self-contained HTML report of a run")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", default=None, help="HTML file (default: RUN/report.html)")
    p.add_argument("--device", default="auto", help="device for the test-set predictions")
    p.add_argument("--workers", type=int, default=2, help="image-loading processes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    command = importlib.import_module(f"ulfine.commands.{args.command}")
    try:
        return int(command.run(args) or 0)
    except UlfineError as err:  # anything else is a bug: it keeps its traceback
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            logging.exception("traceback")
        print(f"ulfine {args.command}: error: {error_message(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only or missing output folder, a folder given as a file
        if err.errno is None:  # raised by hand, not by a failed OS call: a bug
            raise
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            logging.exception("traceback")
        print(f"ulfine {args.command}: error: {os_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ulfine {args.command}: interrupted", file=sys.stderr)
        return 130


def os_error_message(err: OSError) -> str:
    """'<reason>: <path>' (e.g. 'No space left on device: runs/x/checkpoints/last.pt')."""
    if err.strerror and err.filename is not None:
        return f"{err.strerror}: '{err.filename}'" + (f" -> '{err.filename2}'" if err.filename2 else "")
    return err.strerror or str(err)


def configure_logging(level: str) -> None:
    """ulfine's records at ``level``; other libraries' at WARNING (open_clip logs its INFO lines
    on the root logger, e.g. 'Loaded ... model config'), unless ``level`` is DEBUG."""
    level = level.upper()
    logging.basicConfig(level=logging.DEBUG if level == "DEBUG" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("ulfine").setLevel(level)


def error_message(err: BaseException) -> str:
    """The user-facing text of ``err``. An error raised in a DataLoader worker reaches us with
    the worker's traceback as its message; its last line is the original error, naming the file."""
    text = str(err)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.partition(": ")[2] or last
    return text


if __name__ == "__main__":
    raise SystemExit(main())
