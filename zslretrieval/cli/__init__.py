"""``zslr``: a thin click front end. Each sub-command lives in its own module, turns its
options into a typed config dataclass and calls one library function.

Errors derived from ZslrError become a one-line message on stderr and their ``exit_code``
(2: bad input or missing file, 1: engine failure, 3: consistency problem); anything else
is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import sys

import click

from .. import __version__
from ..errors import ZslrError

# Modules that define sub-commands; each exposes ``register(group)``.
_COMMAND_MODULES = ("train", "index", "query", "demo")


class ZslrGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ZslrError as e:
            click.echo(f"zslr: error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=ZslrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zslr")
def cli() -> None:
    """Zero-shot image retrieval: describe classes you never trained on, find their images."""


for _name in _COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(cli)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="zslr")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
