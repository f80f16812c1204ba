"""Console output for the CLIs: rich logging and one-line user errors instead of tracebacks."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable

from rich.console import Console
from rich.logging import RichHandler

from birdvision.runs.artifacts import write_error

console = Console(stderr=True)


def setup_logging(level: int = logging.INFO) -> None:
    """Route the package's (and Lightning's) logging through rich, once."""
    root = logging.getLogger()
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        root.addHandler(RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False))
    root.setLevel(level)
    for noisy in ("PIL", "matplotlib", "fsspec", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_cli(fn: Callable[[], int | None], user_errors: tuple[type[BaseException], ...]) -> int:
    """Run a CLI body; a user error prints ``error: ...`` and returns 2 instead of a traceback."""
    try:
        return int(fn() or 0)
    except user_errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (``... --help | head``): stop quietly, as Unix tools do
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the interpreter flushes stdout at exit
        return 141
    except OSError as e:  # a write that failed for want of space or permission, wherever it happened
        if (err := write_error(e)) is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def progress_bar(*, disable: bool = False):
    """The project's rich progress bar (description, bar, done/total, time left) on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, disable=disable, transient=True)
