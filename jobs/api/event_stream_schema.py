"""The OpenAPI entry of the event stream: an async Django view, which drf-spectacular does not
see, so it is declared here and added to the generated schema by a postprocessing hook."""

from __future__ import annotations

from typing import Any

EVENTS_PATH = "/api/v1/jobs/{job_id}/events"

EVENT_TYPES = {
    "queued": "`{position, estimated_start_at, estimated_finish_at}`: while queued; again when the place "
    "changes, and when the job goes back to the queue (its worker was lost).",
    "progress": "`{step, total, preview_url, published_at}`: `preview_url` is null until a preview exists.",
    "completed": "The job's status body (as `GET /api/v1/jobs/{id}`), image URLs included. Ends the stream.",
    "failed": "The job's status body; `failure.code` says why. Ends the stream.",
    "cancelled": "The job's status body. Ends the stream.",
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def add_event_stream(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    event_list = "\n".join(f"- `{name}`: {text}" for name, text in EVENT_TYPES.items())
    result["paths"][EVENTS_PATH] = {
        "get": {
            "operationId": "jobs_events",
            "summary": "Stream a job's events (Server-Sent Events)",
            "description": (
                "A `text/event-stream` of the job's events, each with an `id:`. Reconnect with "
                "`Last-Event-ID` to resume with nothing missed. A comment line (`: keep-alive`) "
                "comes every `EVENTS_KEEPALIVE_SECONDS` (15 s) while nothing happens. The stream "
                "ends after the terminal event; a finished job sends it at once.\n\nEvents:\n" + event_list
            ),
            "tags": ["api"],
            "parameters": [
                {
                    "in": "path",
                    "name": "job_id",
                    "required": True,
                    "schema": {"type": "string", "format": "uuid"},
                },
                {
                    "in": "header",
                    "name": "Last-Event-ID",
                    "schema": {"type": "string", "pattern": r"^(0|\d+-\d+)$"},
                    "description": "The `id` of the last event received: the stream resumes after it.",
                },
            ],
            "responses": {
                "200": {
                    "description": "The event stream.",
                    "content": {
                        "text/event-stream": {
                            "schema": {"type": "string"},
                            "example": 'id: 1764476000000-0\nevent: progress\ndata: {"step": 5, "total": 25, '
                            '"preview_url": "https://host/api/v1/jobs/.../preview?step=5", "published_at": 1764476000.0}\n\n',
                        }
                    },
                },
                "400": _error("`last_event_id_invalid`: `Last-Event-ID` is not an id this stream sent."),
                "401": _error(
                    "`invalid_api_key` (malformed or unknown) or `api_key_revoked`: an `Authorization` "
                    "header that names no live key; without one the stream is anonymous."
                ),
                "404": _error("`not_found`: no job has this id."),
                "429": _error(
                    "`too_many_streams`: this caller (its API key, else its client network) holds "
                    "`EVENTS_MAX_STREAMS_PER_CLIENT` open streams; retry after `Retry-After` seconds."
                ),
            },
        }
    }
    return result
