# The seed's publish view. Only the import lines are added (the seed leaves them out).
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone

from .models import Post
from .tasks import notify_author


def publish(request, slug):
    post = get_object_or_404(Post, slug=slug)
    post.published_at = timezone.now()
    post.save()
    notify_author.delay(post.id)  # returns immediately
    return redirect("blog:detail", slug=slug)


def detail(request, slug):
    from django.http import HttpResponse

    return HttpResponse(get_object_or_404(Post, slug=slug).title)
