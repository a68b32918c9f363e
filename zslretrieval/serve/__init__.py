"""``zslr serve``: an HTTP JSON API and a search page over one index, on top of ``zslretrieval.query``.

    service = SearchService(ServeConfig(index="zslr-demo/indexes/demo"))   # opens the index once
    app = create_app(service)                                              # FastAPI (ASGI) app
    run_server(ServeConfig(...))                                           # what the CLI calls

Importing this package does not import FastAPI or torch; ``create_app`` and ``run_server`` do.
"""
from __future__ import annotations

from .bounds import CLIENT_KINDS, DEFAULT_MAX_UPLOAD, MAX_OFFSET, MAX_QUERIES, MAX_TOP_K
from .files import NotFoundError
from .service import SearchService, ServeConfig


def create_app(service: SearchService, **kwargs):
    """The FastAPI app for ``service`` (see :func:`zslretrieval.serve.app.create_app`)."""
    from .app import create_app as _create

    return _create(service, **kwargs)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int):
    """Bind before the (slow) index load, so a taken port fails at once with a clear message."""
    import socket

    from ..errors import InvalidInputError

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise InvalidInputError(f"--host {host!r} does not resolve ({e}); give an address such as 127.0.0.1") from e
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        # listening now: a client that connects as soon as the ready line is printed waits in the
        # backlog for uvicorn's accept loop instead of being refused
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise InvalidInputError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port") from e
    return sock


def run_server(cfg: ServeConfig, *, log=print) -> None:
    """Open the index, build the app and serve it with uvicorn until interrupted."""
    import logging

    import uvicorn

    if cfg.threads < 1:
        from ..errors import InvalidInputError
        raise InvalidInputError(f"--threads must be >= 1, got {cfg.threads}")
    sock = _listen(cfg.host, cfg.port)
    try:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("zslr serve: %(levelname)s: %(message)s"))
        logger = logging.getLogger("zslretrieval.serve")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        # Requests run concurrently in a thread pool; intra-op thread teams on top of that only
        # oversubscribe the cores (and their spin-waits hurt most on a loaded machine).
        import sys

        import faiss

        faiss.omp_set_num_threads(cfg.threads)
        if "torch" in sys.modules:   # torch only where the index needs it (a model, a torch backbone)
            sys.modules["torch"].set_num_threads(cfg.threads)
        local = is_loopback(cfg.host)
        if not local and not cfg.token:
            log(f"zslr serve: WARNING: binding {cfg.host} without --token: anyone who can reach this machine can "
                "search the index and read its images; give --token (or $ZSLR_SERVE_TOKEN)")
        service = SearchService(cfg)   # opened, loaded and warmed up by a throw-away search: then ready
        if "torch" in sys.modules:     # loaded with the index's model or backbone just now
            sys.modules["torch"].set_num_threads(cfg.threads)
        app = create_app(service, token=cfg.token, loopback_only=local)
        info = service.info()
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        log(f"zslr serve: index {info['index']} ({info['entries']} entries, model {info['model'] or 'none'}) "
            f"on http://{shown}:{port}/" + (" (token required)" if cfg.token else ""))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               timeout_graceful_shutdown=5))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: a normal end
            pass
        log("zslr serve: stopped")
    finally:
        sock.close()


__all__ = ["CLIENT_KINDS", "DEFAULT_MAX_UPLOAD", "MAX_OFFSET", "MAX_QUERIES", "MAX_TOP_K", "NotFoundError",
           "SearchService", "ServeConfig", "create_app", "is_loopback", "run_server"]
