"""A real server for tests: uvicorn on a free port of 127.0.0.1, on a thread of the test process.

Because the server shares the test process, it sees the test database — including SQLite's
in-memory test database, which Channels' process-based live server cannot use. As with Django's
own live server, data must be committed to be visible: use ``TransactionTestCase`` (or
pytest-django's ``transactional_db``), which :class:`ChannelsLiveServerTestCase` is.
"""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.test import TransactionTestCase
from django.test.utils import modify_settings

from ..routing import get_default_application
from ..server import Server, ServerOptions, log_websocket_connections
from ..types import ASGIApp

__all__ = ["ChannelsLiveServerTestCase", "LiveServer", "LiveServerTestCase"]


def _default_app(serve_static: bool) -> ASGIApp:
    application = get_default_application()
    if serve_static and "django.contrib.staticfiles" in settings.INSTALLED_APPS:
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        application = cast(ASGIApp, ASGIStaticFilesHandler(application))  # type: ignore[arg-type]
    return application


class LiveServer:
    """Serve ``application`` (default: ``ASGI_APPLICATION``) until :meth:`stop`.

    Usable as a context manager. ``url`` / ``ws_url`` give the addresses to connect to.
    """

    def __init__(
        self,
        application: ASGIApp | None = None,
        *,
        host: str = "127.0.0.1",
        serve_static: bool = True,
        options: ServerOptions | None = None,
    ) -> None:
        if application is None:
            application = _default_app(serve_static)
        self.application = application
        base = options or ServerOptions()
        self.options = base.using(
            host=host,
            port=0,
            log_level="warning",
            access_log=False,
            configure_logging=False,
            uvicorn_options={"timeout_graceful_shutdown": 2, **base.uvicorn_options},
        )
        self._server: Server | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return self._running().url

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>``."""
        return self._running().ws_url

    @property
    def port(self) -> int:
        return self._running().port

    def _running(self) -> Server:
        if self._server is None:
            raise RuntimeError("the live server is not running; call start() first")
        return self._server

    def start(self) -> LiveServer:
        app = log_websocket_connections(self.application)
        self._server = Server(app, self.options)
        self._server.start_in_thread()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LiveServerTestCase(TransactionTestCase):
    """A ``TransactionTestCase`` with a live uvicorn server for the whole class.

    ``live_server_url`` and ``live_server_ws_url`` point at it. Set ``host`` (default
    127.0.0.1) or ``serve_static`` (default ``True``: static files through Django's handler)
    on a subclass to change them.
    """

    host = "127.0.0.1"
    serve_static = True
    _live_server: LiveServer
    _live_settings: Any

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls._live_settings = modify_settings(ALLOWED_HOSTS={"append": cls.host})
        cls._live_settings.enable()
        try:
            cls._live_server = LiveServer(host=cls.host, serve_static=cls.serve_static).start()
        except BaseException:
            cls._live_settings.disable()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls._live_server.stop()
        cls._live_settings.disable()
        super().tearDownClass()

    @property
    def live_server_url(self) -> str:
        return self._live_server.url

    @property
    def live_server_ws_url(self) -> str:
        return self._live_server.ws_url


#: Channels' name, so ``from headrace.testing import ChannelsLiveServerTestCase`` ports as is.
ChannelsLiveServerTestCase = LiveServerTestCase
