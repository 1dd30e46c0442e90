"""Posts of the live blog."""

from __future__ import annotations

from typing import Any

from django.db import models


class Post(models.Model):
    title = models.CharField(max_length=120)
    body = models.TextField(max_length=4000)
    author = models.CharField(max_length=40, default="Guest")
    published = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.title

    def as_event(self) -> dict[str, Any]:
        """The JSON-ready form the page renders (also what travels in the channel layer)."""
        return {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "author": self.author,
            "published": self.published.isoformat(),
        }
