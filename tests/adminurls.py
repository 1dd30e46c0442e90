"""URLs for the admin tests: the chat app's and the Django admin."""

from django.contrib import admin
from django.urls import path

from tests.chatapp.urls import urlpatterns as chat_urlpatterns

urlpatterns = [path("admin/", admin.site.urls), *chat_urlpatterns]
