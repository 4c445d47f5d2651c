"""The `onepiece` command."""

from __future__ import annotations

import logging
import sys

import click

from onepiece_hpc import __version__
from onepiece_hpc.errors import UserError
from onepiece_hpc.cli.bench import bench
from onepiece_hpc.cli.export_cmd import export_cmd
from onepiece_hpc.cli.inspect_cmd import inspect_cmd
from onepiece_hpc.cli.run import run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onepiece")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Staged diffusion generation: job files in, HDF5 out."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = {"verbose": verbose}


for command in (run, inspect_cmd, export_cmd, bench):
    cli.add_command(command)


def main() -> None:
    """Console entry point: user mistakes exit 2 with a message and no traceback."""
    try:
        cli.main(standalone_mode=False)
    except UserError as err:
        click.echo(f"error: {err.render()}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(2 if isinstance(err, click.UsageError) else err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
