from django.contrib import admin

from .models import Message


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["sent", "room", "author", "text"]
    list_filter = ["room"]
