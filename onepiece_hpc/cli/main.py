"""The `onepiece` command."""

from __future__ import annotations

import logging

import click

from onepiece_hpc import __version__
from onepiece_hpc.cli.bench import bench
from onepiece_hpc.cli.export_cmd import export_cmd
from onepiece_hpc.cli.inspect_cmd import inspect_cmd
from onepiece_hpc.cli.merge import merge
from onepiece_hpc.cli.report import report
from onepiece_hpc.cli.run import run
from onepiece_hpc.cli.simulate import simulate_cmd
from onepiece_hpc.cli.status import status
from onepiece_hpc.cli.submit import submit
from onepiece_hpc.cli.sweep import sweep
from onepiece_hpc.cli.verify import verify
from onepiece_hpc.errors import UserError


class ReportedUserError(click.ClickException):
    """A UserError on its way out: printed as 'error: ...' with no traceback, exit code 2."""

    exit_code = UserError.exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


class OnepieceGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as err:
            raise ReportedUserError(err.render()) from None


@click.group(cls=OnepieceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onepiece")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Staged diffusion generation: job files in, HDF5 out."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = {"verbose": verbose}


for command in (run, inspect_cmd, export_cmd, verify, bench, simulate_cmd, submit, sweep, merge, status, report):
    cli.add_command(command)


def main() -> None:
    """Console entry point."""
    cli(prog_name="onepiece")


if __name__ == "__main__":
    main()
