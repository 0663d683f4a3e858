from django.urls import path

from jobs.openai_compat import views

app_name = "openai"

urlpatterns = [
    path("images/generations", views.image_generations, name="image-generations"),
]
