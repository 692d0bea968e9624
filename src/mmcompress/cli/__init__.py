"""The `mmcompress` command line: Typer owns commands and --options, Hydra owns key=value overrides.

Commands live by concern (runs.py: one run; analysis.py: many runs; weights.py: pretrained weights) and
register on the one Typer app (app.py); `main` turns every error into one line and an exit status.
"""

from __future__ import annotations

import importlib
import sys

from mmcompress.cli.app import app
from mmcompress.console import console
from mmcompress.errors import UserError

for _commands in ("runs", "analysis", "weights"):  # their commands register on `app`, in this order
    importlib.import_module(f"mmcompress.cli.{_commands}")


def main() -> None:
    """Entry point: one-line errors with exit status, full tracebacks only with --debug.

    A full disk or an unwritable path, anywhere, is one line naming the path (errors.disk_problem); a W&B
    mirror that failed mid-run (tracking.FAILURES) makes a finished command exit non-zero."""
    from typing import NoReturn

    from rich.markup import escape

    from mmcompress.errors import disk_problem

    debug = "--debug" in sys.argv[1:3]

    def fail(message: str, status: int) -> NoReturn:
        console.quiet = False  # an error shows on every torchrun process, not only rank 0
        one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())
        console.print(f"[red]error:[/] {escape(one_line)}", soft_wrap=True)
        sys.exit(status)

    try:
        status = app(standalone_mode=False)  # click returns a command's typer.Exit code instead of exiting
        tracking = sys.modules.get("mmcompress.tracking")
        if tracking is not None and tracking.FAILURES:  # the command finished without its W&B mirror
            raise UserError(tracking.FAILURES[0])
        if isinstance(status, int) and status:
            sys.exit(status)
    except UserError as exc:
        if debug:
            raise
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: completed stages are kept; rerun the same command to resume")
        sys.exit(130)
    except Exception as exc:  # Click usage errors, full disks and anything unexpected
        import click

        if isinstance(exc, click.exceptions.ClickException):
            fail(exc.format_message(), exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        if debug:
            raise
        problem = disk_problem(exc)
        if problem:
            fail(problem, 1)
        text = str(exc).strip()
        fail(
            f"{type(exc).__name__}: {text.splitlines()[0] if text else ''} (rerun with --debug for the traceback)",
            1,
        )
