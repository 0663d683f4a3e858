"""The test harness: real processes (Celery worker, gunicorn), waits, free ports and the
test Redis. Fixtures in ``tests/conftest.py`` and the suites import it from here."""
