"""Saving a post tells every open blog page, the way the Channels concepts document describes.

A ``post_save`` receiver does one ``group_send`` to the ``liveblog`` group; it does not know
or care how many readers there are, or in which process they are connected. Whoever saved the
post — the page's form, the Django admin, a shell — the readers see it. The send waits for the
transaction to commit, so no reader is told about a post that then rolls back.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from headrace.layers import get_channel_layer

from .models import Post

#: The group every open blog page belongs to.
LIVEBLOG_GROUP = "liveblog"


async def _group_send(message: dict[str, Any]) -> None:
    # Look the layer up on the loop that sends: layers that are not process-wide (Redis) keep
    # one instance per event loop.
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(LIVEBLOG_GROUP, message)


def _broadcast(message: dict[str, Any]) -> None:
    async_to_sync(_group_send)(message)


@receiver(post_save, sender=Post)
def post_saved(sender: type[Post], instance: Post, created: bool, **kwargs: Any) -> None:
    message = {"type": "blog.post", "created": created, "post": instance.as_event()}
    transaction.on_commit(lambda: _broadcast(message))


@receiver(post_delete, sender=Post)
def post_deleted(sender: type[Post], instance: Post, **kwargs: Any) -> None:
    message = {"type": "blog.delete", "id": instance.id}
    transaction.on_commit(lambda: _broadcast(message))
