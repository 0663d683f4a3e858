"""URLs of the web page (the API's are in jobs/api/urls.py)."""

from django.urls import path

from jobs import views

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path("recent", views.recent, name="recent"),
    path("jobs/<uuid:job_id>", views.job_page, name="job"),
    path("jobs/<uuid:job_id>/status", views.job_status, name="job-status"),
    path("jobs/<uuid:job_id>/cancel", views.job_cancel, name="job-cancel"),
    path("jobs/<uuid:job_id>/images/<int:index>/download", views.image_download, name="image-download"),
]
