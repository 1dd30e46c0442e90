"""Test helpers: communicators (no server) and a live uvicorn server.

Names and methods follow ``channels.testing``: ``ApplicationCommunicator``,
``WebsocketCommunicator``, ``HttpCommunicator`` and ``ChannelsLiveServerTestCase``.
"""

from __future__ import annotations

from .communicators import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator
from .live import ChannelsLiveServerTestCase, LiveServer, LiveServerTestCase

__all__ = [
    "ApplicationCommunicator",
    "ChannelsLiveServerTestCase",
    "HttpCommunicator",
    "LiveServer",
    "LiveServerTestCase",
    "WebsocketCommunicator",
]
