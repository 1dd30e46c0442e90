"""The chat app from the seed "Async Django, Channels and Celery", ported by changing imports."""
