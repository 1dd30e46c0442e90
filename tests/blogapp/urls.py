from django.urls import path

from . import views

app_name = "blog"
urlpatterns = [
    path("<slug:slug>/publish/", views.publish, name="publish"),
    path("<slug:slug>/", views.detail, name="detail"),
]
