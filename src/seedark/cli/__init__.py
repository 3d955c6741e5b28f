"""Command line: parse options, call one library function, report.

Errors from the library arrive as :class:`~seedark.errors.SeedarkError` and are
printed as one line on stderr (``seedark: error: <file>: <reason>``) with the
error's exit code: 1 for failures, 2 for usage errors, 130 for Ctrl-C and 143 for
SIGTERM, which every command handles like Ctrl-C (seedark.cli.signals).
"""

from __future__ import annotations

import sys

import click

from seedark._version import __version__
from seedark.cli import camera, demo, images, models, signals, training
from seedark.cli.display import bars_closed, safe, setup_logging
from seedark.cli.options import QUIET_HELP, VERBOSE_HELP
from seedark.errors import SeedarkError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="seedark")
@click.option("-v", "--verbose", count=True, help=VERBOSE_HELP + " Also accepted after the command's name.")
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP + " Also accepted after the command's name.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Turn dark RAW photos into clean, bright images ("Learning to See in the Dark")."""
    setup_logging(verbose, quiet)
    # shared with every subcommand, whose own -v/-q add to these (cli.options.verbosity_options)
    ctx.obj = {"quiet": quiet, "verbose": verbose}


for command in (
    images.enhance,
    images.batch,
    images.info,
    demo.demo,
    models.models,
    training.eval_command,
    training.train_command,
    camera.calibrate_command,
    camera.finetune_command,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``seedark`` command: one line per error, meaningful exit codes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if debug:
        argv = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--debug"]
    try:
        with signals.interrupts(), bars_closed():  # an error's line must not land on a bar's
            code = cli.main(args=argv, prog_name="seedark", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare 'seedark'
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        code = 0
    except click.exceptions.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"seedark: error: {exc.format_message()}{hint}", err=True)
        code = 2
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click has already ended the terminal's "^C" line
        click.echo(signals.message(), err=True)
        code = signals.exit_code()
    except SeedarkError as exc:
        click.echo(f"seedark: error: {safe(exc)}", err=True)
        code = exc.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except Exception as exc:  # a bug: one line by default, the traceback with --debug
        if debug:
            raise
        click.echo(
            f"seedark: internal error: {type(exc).__name__}: {safe(exc)} (rerun with --debug for details)", err=True
        )
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
