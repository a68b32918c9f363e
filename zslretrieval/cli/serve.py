"""``zslr serve``: search an index from a browser or over HTTP (JSON API), one long-lived process."""
from __future__ import annotations

import click

_EPILOG = """\b
Examples:
  zslr serve --index zslr-demo/indexes/demo          # then open http://127.0.0.1:8000/
  zslr serve --index photos --port 9000
  zslr serve --index photos --host 0.0.0.0 --token "$(openssl rand -hex 16)"
Open /?attributes=stripes,water to search from the URL; the JSON API is described at
/api/openapi.json (GET /api/search?attributes=stripes,water&top_k=10).

The server never writes to the index; thumbnails are cached in --cache-dir. It picks up
what `zslr index` adds to the index while it runs (old or new state, never a mix).
"""


@click.command("serve", epilog=_EPILOG)
@click.option("--index", "index", default="default", show_default=True, help="Index name or folder.")
@click.option("--index-root", type=click.Path(file_okay=False), default=None,
              help="Folder holding named indexes (default $ZSLR_INDEXES or ./indexes).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback should come with --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", envvar="ZSLR_SERVE_TOKEN", default=None,
              help="Access token required on every request (Bearer header, or /?token=T once in a browser). "
                   "Default $ZSLR_SERVE_TOKEN.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Backbone weight file, for image queries on an index built with `zslr index --weights`.")
@click.option("--images-root", "images_roots", multiple=True, type=click.Path(file_okay=False),
              help="Serve image files only from under this folder (repeatable). Default: the common "
                   "folder of the catalog's images.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Thumbnail cache (default $XDG_CACHE_HOME/zslretrieval/thumbs); never inside the index.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0.01, max=1024), default=10.0, show_default=True,
              help="Largest example image accepted, in MiB.")
@click.option("--reload-interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between checks for a new index state (0: never reload).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch/FAISS threads per request; requests already run concurrently.")
def serve_cmd(index, index_root, host, port, token, weights, images_roots, cache_dir, max_upload_mb,
              reload_interval, threads):
    """Serve a search page and a JSON API over an index (attributes, text, class, example image)."""
    # heavy imports (torch, FastAPI, uvicorn) only when the command runs, never for `zslr --help`
    from ..serve import ServeConfig, run_server

    if token is not None and not token.strip():
        raise click.BadParameter("empty token; give a non-empty string or leave --token out", param_hint="--token")
    cfg = ServeConfig(index=index, index_root=index_root, host=host, port=port, token=token, weights=weights,
                      images_roots=tuple(images_roots), cache_dir=cache_dir,
                      max_upload_bytes=int(max_upload_mb * (1 << 20)), reload_interval=reload_interval,
                      threads=threads)
    run_server(cfg, log=lambda msg: click.echo(msg, err=True))
