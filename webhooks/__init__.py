"""Webhooks: signed notifications of job events, delivered from a light Celery queue."""
