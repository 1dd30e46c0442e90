from django.apps import AppConfig


class BlogConfig(AppConfig):
    name = "blog"
    verbose_name = "Live blog"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - connects the post_save and post_delete receivers
