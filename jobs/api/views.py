"""REST API for integrators: submit a job (202), read its status, cancel it."""

from __future__ import annotations

from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import selectors, services
from jobs.api.serializers import JobSerializer, JobSubmitInputSerializer
from ratelimit.client_ip import client_ip
from ratelimit.services import enforce_status_poll_limit


class JobListView(APIView):
    def post(self, request: Request) -> Response:
        serializer = JobSubmitInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = services.job_submit(client_ip=client_ip(request), **serializer.validated_data)
        body = JobSerializer(job, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["status_url"]})


class JobDetailView(APIView):
    def get(self, request: Request, job_id: str) -> Response:
        enforce_status_poll_limit(client_ip=client_ip(request))
        job = selectors.job_get(job_id=job_id)
        return Response(JobSerializer(job, context={"request": request}).data)


class JobCancelView(APIView):
    def post(self, request: Request, job_id: str) -> Response:
        job = services.job_cancel(job_id=selectors.job_get(job_id=job_id).pk)
        return Response(JobSerializer(job, context={"request": request}).data)
