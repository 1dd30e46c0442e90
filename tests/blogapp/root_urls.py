from django.urls import include, path

urlpatterns = [path("blog/", include("tests.blogapp.urls"))]
