from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import Post


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    list_display = ["title", "author", "published"]
    search_fields = ["title", "body"]
    fields = ["title", "body"]

    def save_model(self, request: HttpRequest, obj: Post, form: Any, change: bool) -> None:
        if not change:
            obj.author = request.user.get_username()
        super().save_model(request, obj, form, change)
