"""The seed's blog (``async-django-channels-celery.txt``): its Celery task and view, ported to
headrace by changing import lines only (see tests/test_task_compat.py)."""
