"""``zslr``: a thin click front end. Each sub-command lives in its own module, turns its
options into a typed config dataclass and calls one library function.

Commands are defined at module level and import the library (torch, faiss, numpy) only inside
their bodies, so ``zslr --help`` and option errors answer without loading any of it
(``tests/cli/test_startup.py`` checks that torch stays unimported).

Errors derived from ZslrError become a one-line message on stderr and their ``exit_code``
(2: bad input or missing file, 1: engine failure, 3: consistency problem); anything else
is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import ZslrError
from . import demo, duplicates, general, index, query, serve, train


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


for _cmd in (train.train_cmd, train.eval_cmd, index.index_cmd, index.check_cmd, query.query_cmd, demo.demo_cmd,
             serve.serve_cmd, general.general_cmd, duplicates.duplicates_cmd):
    cli.add_command(_cmd)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="zslr")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
