from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/blog/", consumers.LiveBlogConsumer.as_asgi()),
]
