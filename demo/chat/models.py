"""Chat messages are kept so that a newcomer sees what was said before they arrived."""

from __future__ import annotations

from typing import Any

from django.db import models

#: Longest chat message, in characters.
MAX_MESSAGE_LENGTH = 500
#: How many earlier messages a newcomer to a room is shown.
HISTORY_SIZE = 50


class Message(models.Model):
    room = models.CharField(max_length=40, db_index=True)
    author = models.CharField(max_length=40)
    authenticated = models.BooleanField(default=False)
    text = models.CharField(max_length=MAX_MESSAGE_LENGTH)
    sent = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.author} in {self.room}: {self.text[:40]}"

    def as_event(self) -> dict[str, Any]:
        """The JSON-ready form the page renders (also what travels in the channel layer)."""
        return {
            "id": self.id,
            "author": self.author,
            "authenticated": self.authenticated,
            "text": self.text,
            "sent": self.sent.isoformat(),
        }
