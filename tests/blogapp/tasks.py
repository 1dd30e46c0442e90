# The seed's blog/tasks.py. Only the import lines differ from the Celery version:
#     from celery import shared_task
from django.core.mail import send_mail

from headrace.tasks.compat import shared_task


@shared_task(
    bind=True,
    autoretry_for=(Exception,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def notify_author(self, post_id: int):
    from .models import Post

    post = Post.objects.select_related("author").get(pk=post_id)
    send_mail(
        subject=f"Your post '{post.title}' was published",
        message="Congrats.",
        from_email="noreply@example.com",
        recipient_list=[post.author.email],
    )


# The seed's CELERY_BEAT_SCHEDULE fires this every day at 07:00 (the seed only names it).
@shared_task
def send_daily_digest() -> int:
    from .models import Post

    titles = [post.title for post in Post.objects.order_by("pk")]
    send_mail(
        subject="Daily digest",
        message="\n".join(titles) or "Nothing new.",
        from_email="noreply@example.com",
        recipient_list=["readers@example.com"],
    )
    return len(titles)
