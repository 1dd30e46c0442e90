"""The live blog page: the latest posts and a form to add one.

The form works without JavaScript (post, redirect, get). With JavaScript the page sends it
with ``fetch`` and gets JSON back; either way the new post reaches every open page, this one
included, through the ``post_save`` signal and the WebSocket — never through this response.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render

from .forms import PostForm
from .models import Post

#: Posts rendered with the page.
PAGE_SIZE = 20


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def blog(request: HttpRequest) -> HttpResponse:
    form = PostForm()
    if request.method == "POST":
        form = PostForm(request.POST)
        if form.is_valid():
            post = form.save(commit=False)
            if request.user.is_authenticated:
                post.author = request.user.get_username()
            post.save()
            if _wants_json(request):
                return JsonResponse({"id": post.id}, status=201)
            return redirect("blog:page")
        if _wants_json(request):
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    posts = list(Post.objects.order_by("-id")[:PAGE_SIZE])
    return render(request, "blog/page.html", {"section": "blog", "form": form, "posts": posts})
