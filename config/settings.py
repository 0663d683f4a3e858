"""The one settings module. Every production switch is an environment variable.

Defaults run the whole service on one machine: SQLite, Redis on localhost, media files in
``var/media`` and the tiny model built in ``var/models/tiny-sd``. ``docker/.env.example``
documents every variable.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from pathlib import Path

import botocore.config
import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
# The fallback key is marked insecure on purpose: `manage.py check --deploy` rejects it.
SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-local-development-only-key-change-me")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# The service's public origin (https://imagegen.example.com), for URLs written where no
# request says where it is: webhook payloads. Empty: such URLs stay relative.
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_htmx",
    "csp",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "jobs",
    "ratelimit",
    "webhooks",
]

MIDDLEWARE = [
    # Outside the rest, so that every log line names the request and no /api/ error is HTML.
    "config.middleware.RequestIdMiddleware",
    "config.middleware.ApiErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
]

# --- Admin login: lockout after repeated failures (django-axes) ---------------------------
INSTALLED_APPS += ["axes"]
# Last, as axes asks: it answers a locked-out login before the admin's view runs.
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# A user name is locked out from one client address after this many failed logins in a row,
# for this long; other users and addresses are unaffected. Attempts are kept in the database.
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("ADMIN_LOGIN_COOLOFF_SECONDS", default=900))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# The client address as abuse control decides it: X-Forwarded-For only from trusted proxies.
AXES_CLIENT_IP_CALLABLE = "ratelimit.client_ip.client_ip"
AXES_RESET_ON_SUCCESS = True
# Its start-up banner on every manage.py command and worker is noise in the event log.
AXES_VERBOSE = False

# --- Operations: health, readiness and metrics (ops/) -------------------------------------
INSTALLED_APPS += ["django_prometheus", "ops"]
# Outermost on both sides, so that request metrics time the whole middleware stack.
MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    *MIDDLEWARE,
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]
PROMETHEUS_EXPORT_MIGRATIONS = False
# /metrics wants "Authorization: Bearer <token>" (job counts are not public); without a token
# it is open only with DEBUG on, and `check --deploy` warns.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker processes write the same file: WAL lets readers run beside a writer,
    # IMMEDIATE transactions avoid "database is locked" on lock upgrades.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so that a worker process can share the test database.
    DATABASES["default"]["TEST"] = {
        "NAME": env.str("TEST_DATABASE_NAME", default=str(VAR_DIR / "test.sqlite3"))
    }
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
# A kept connection is checked before a request reuses it, so a database restart costs no request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache (rate limits), broker ----------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Connect and read timeout of every Redis call (core.redis, the cache): a stalled Redis fails fast.
REDIS_SOCKET_TIMEOUT_SECONDS = env.float("REDIS_SOCKET_TIMEOUT_SECONDS", default=2.0)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            "socket_connect_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
            "socket_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
        },
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="imagegen"),
    }
}

# --- Static and media files ------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=VAR_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = env.str("MEDIA_URL", default="/media/")
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")
STORAGE_BACKEND = env.str("STORAGE_BACKEND", default="local")
if STORAGE_BACKEND == "s3":
    # Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
    # an instance role, ...), never from this file.
    _media_storage = {
        "BACKEND": "jobs.storage.ResultStorage",
        "OPTIONS": {
            "bucket_name": env.str("S3_BUCKET"),
            "endpoint_url": env.str("S3_ENDPOINT_URL", default=None),
            # Where browsers reach the store, when that differs from S3_ENDPOINT_URL.
            "public_endpoint_url": env.str("S3_PUBLIC_ENDPOINT_URL", default=None),
            "region_name": env.str("S3_REGION", default=None),
            # Bounded timeouts: a hung store must fail a request (and /readyz) quickly, not
            # after botocore's 60 s default. Addressing "path" suits MinIO and most
            # self-hosted stores; "auto" lets boto3 choose (AWS).
            "client_config": botocore.config.Config(
                signature_version="s3v4",
                s3={"addressing_style": env.str("S3_ADDRESSING_STYLE", default="auto")},
                connect_timeout=env.float("S3_CONNECT_TIMEOUT", default=3.0),
                read_timeout=env.float("S3_READ_TIMEOUT", default=30.0),
                retries={"max_attempts": 3, "mode": "standard"},
            ),
            # No per-object ACL: objects stay as private as the bucket, and buckets with
            # ACLs disabled (AWS's default) reject requests that carry one.
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": env.int("S3_URL_EXPIRY_SECONDS", default=3600),
            # A clashing name gets a suffix rather than replacing a stored result.
            "file_overwrite": False,
        },
    }
elif STORAGE_BACKEND == "local":
    _media_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
else:
    raise environ.ImproperlyConfigured(f"STORAGE_BACKEND must be 'local' or 's3', not {STORAGE_BACKEND!r}")
STORAGES = {
    "default": _media_storage,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# Local result files are served by Django itself (there is no other web server in the
# embedded setup); with S3 the storage's presigned URLs are used instead.
SERVE_MEDIA = env.bool("SERVE_MEDIA", default=STORAGE_BACKEND == "local")
WHITENOISE_USE_FINDERS = DEBUG

# --- Generation ------------------------------------------------------------------------
GENERATOR_MODEL = env.str("GENERATOR_MODEL", default=str(VAR_DIR / "models" / "tiny-sd"))
GENERATOR_ALLOW_HUB = env.bool("GENERATOR_ALLOW_HUB", default=False)
GENERATOR_DEVICE = env.str("GENERATOR_DEVICE", default="auto")
GENERATOR_DTYPE = env.str("GENERATOR_DTYPE", default="auto")
GENERATOR_COMPILE = env.bool("GENERATOR_COMPILE", default=False)
GENERATOR_WARMUP = env.bool("GENERATOR_WARMUP", default=True)
# Images one pipeline call may serve, summed over the compatible queued jobs it batches.
GENERATION_BATCH_IMAGES = env.int("GENERATION_BATCH_IMAGES", default=4)
# Progress is written when both have passed since the last write (and at the last step).
PROGRESS_MIN_STEPS = env.int("PROGRESS_MIN_STEPS", default=2)
PROGRESS_MIN_SECONDS = env.float("PROGRESS_MIN_SECONDS", default=0.5)

# --- Live jobs: event streams, previews, Prefer: wait (docs/api.md#live-events) -----------
# A job's events stay in Redis this long for Last-Event-ID resume and late subscribers.
EVENTS_TTL_SECONDS = env.int("EVENTS_TTL_SECONDS", default=3600)
EVENTS_KEEPALIVE_SECONDS = env.float("EVENTS_KEEPALIVE_SECONDS", default=15.0)
# Events a stream may fall behind before it re-reads them from Redis instead of its queue.
EVENTS_CLIENT_QUEUE_SIZE = env.int("EVENTS_CLIENT_QUEUE_SIZE", default=64)
EVENTS_MAX_STREAMS_PER_CLIENT = env.int("EVENTS_MAX_STREAMS_PER_CLIENT", default=20)
# An idle stream ends after this long without its terminal event; the client resumes it with
# Last-Event-ID, so no connection is held for ever by a job that waits for hours.
EVENTS_MAX_STREAM_SECONDS = env.int("EVENTS_MAX_STREAM_SECONDS", default=900)
# Threads of a web process for sync views (config/asgi.py); async views wait on its event loop.
WEB_THREADS = env.int("WEB_THREADS", default=8)
# A preview every this many steps (0: none); TAESD when a folder holds an AutoencoderTiny.
PREVIEW_EVERY_STEPS = env.int("PREVIEW_EVERY_STEPS", default=5)
PREVIEW_FORMAT = env.str("PREVIEW_FORMAT", default="webp")
PREVIEW_TAESD = env.str("PREVIEW_TAESD", default="")
PREVIEW_TTL_SECONDS = env.int("PREVIEW_TTL_SECONDS", default=600)
# The longest a submit with "Prefer: wait=N" waits for its job's end.
SUBMIT_WAIT_MAX_SECONDS = env.int("SUBMIT_WAIT_MAX_SECONDS", default=60)

JOB_LIMITS = {
    "prompt_max_chars": env.int("JOB_PROMPT_MAX_CHARS", default=1000),
    "min_size": env.int("JOB_MIN_SIZE", default=64),
    "max_size": env.int("JOB_MAX_SIZE", default=1024),
    "max_steps": env.int("JOB_MAX_STEPS", default=100),
    "min_guidance": env.float("JOB_MIN_GUIDANCE", default=0.0),
    "max_guidance": env.float("JOB_MAX_GUIDANCE", default=30.0),
}
JOB_DEFAULTS = {
    "width": env.int("JOB_DEFAULT_WIDTH", default=512),
    "height": env.int("JOB_DEFAULT_HEIGHT", default=512),
    "steps": env.int("JOB_DEFAULT_STEPS", default=25),
    "guidance_scale": env.float("JOB_DEFAULT_GUIDANCE", default=7.5),
}
# The model registry (docs/operations.md#the-model-registry): name -> source, family, and
# optionally its own defaults, limits, cost_weight and memory_gb; what an entry does not set
# comes from JOB_DEFAULTS / JOB_LIMITS. The embedded default serves the tiny model.
GENERATOR_MODELS = env.json(
    "GENERATOR_MODELS", default={"tiny-sd": {"source": GENERATOR_MODEL, "family": "sd15"}}
)
GENERATOR_DEFAULT_MODEL = env.str("GENERATOR_DEFAULT_MODEL", default=next(iter(GENERATOR_MODELS), ""))
# The models a GPU worker process claims jobs of (each loaded on its first job): size a host's
# list by the models' memory_gb. Empty serves every model of the registry.
GENERATOR_SERVED_MODELS = env.list("GENERATOR_SERVED_MODELS", default=[]) or list(GENERATOR_MODELS)
# POST /v1/images/generations (the OpenAI-compatible face) waits this long for its job, under
# nginx's 60 s proxy timeout; a job not done by then is answered 504 with its status URL.
OPENAI_IMAGES_WAIT_SECONDS = env.float("OPENAI_IMAGES_WAIT_SECONDS", default=50.0)

# --- Abuse control (ratelimit/) ----------------------------------------------------------
# The client IP is the only identity. X-Forwarded-For is believed only from trusted proxies:
# either a fixed number of proxy hops in front of every request, or the proxies' networks.
CLIENT_IP_TRUSTED_PROXY_COUNT = env.int("CLIENT_IP_TRUSTED_PROXY_COUNT", default=0)
CLIENT_IP_TRUSTED_PROXIES = env.list("CLIENT_IP_TRUSTED_PROXIES", default=[])
# IPv6 clients are limited and counted per network of this prefix length.
CLIENT_IP_IPV6_PREFIX = env.int("CLIENT_IP_IPV6_PREFIX", default=64)
SUBMIT_RATE = env.str("SUBMIT_RATE", default="8/m")  # django-ratelimit's "count/period"
SUBMIT_MAX_ACTIVE_JOBS = env.int("SUBMIT_MAX_ACTIVE_JOBS", default=1)  # queued or running, per client
SUBMIT_DAILY_QUOTA = env.int("SUBMIT_DAILY_QUOTA", default=500)  # accepted jobs per UTC day; 0 = none
STATUS_POLL_RATE = env.str("STATUS_POLL_RATE", default="600/m")
# Compute units (docs/api.md: 512x512, 25 steps, 1 image = 1 unit) an anonymous network may
# spend per UTC day, and the most one of its jobs may cost; 0 = no limit.
ANON_DAILY_BUDGET_UNITS = env.int("ANON_DAILY_BUDGET_UNITS", default=500)
ANON_MAX_JOB_UNITS = env.int("ANON_MAX_JOB_UNITS", default=0)
# Anonymous networks are also limited (rate, daily quota, budget) as the wider networks of
# these prefix lengths, each level on its own, so one allocation shares one aggregate.
ANON_AGGREGATE_PREFIXES_V6 = env.list("ANON_AGGREGATE_PREFIXES_V6", cast=int, default=[56, 48])
ANON_AGGREGATE_PREFIXES_V4 = env.list("ANON_AGGREGATE_PREFIXES_V4", cast=int, default=[])
# Queued or running jobs the widest of those aggregates may hold in all (0 = no limit); it is
# also the one account of the fair queue for every network inside it.
ANON_AGGREGATE_MAX_ACTIVE_JOBS = env.int("ANON_AGGREGATE_MAX_ACTIVE_JOBS", default=SUBMIT_MAX_ACTIVE_JOBS)
# API keys (Authorization: Bearer): the policy of a key that sets none of its own.
API_KEY_DEFAULT_SUBMIT_RATE = env.str("API_KEY_DEFAULT_SUBMIT_RATE", default="60/m")
API_KEY_DEFAULT_MAX_ACTIVE_JOBS = env.int("API_KEY_DEFAULT_MAX_ACTIVE_JOBS", default=8)
API_KEY_DEFAULT_DAILY_BUDGET_UNITS = env.int("API_KEY_DEFAULT_DAILY_BUDGET_UNITS", default=5000)
API_KEY_DEFAULT_MAX_JOB_UNITS = env.int("API_KEY_DEFAULT_MAX_JOB_UNITS", default=0)
# Share of GPU compute in the fair queue relative to an anonymous network's 1.
API_KEY_DEFAULT_WEIGHT = env.float("API_KEY_DEFAULT_WEIGHT", default=1.0)

# --- Integrators' API: bounded queue, dedupe, idempotency, queue ETA, OpenAPI -----------
# Submits beyond this many queued jobs get 503 queue_full rather than waiting for hours.
JOB_QUEUE_MAX = env.int("JOB_QUEUE_MAX", default=500)
# Answer a request identical to a completed one (explicit seed included) from its files.
JOB_DEDUPE = env.bool("JOB_DEDUPE", default=True)
# The longest deadline a submit may set (Cancel-After header, deadline_seconds field).
JOB_DEADLINE_MAX_SECONDS = env.int("JOB_DEADLINE_MAX_SECONDS", default=24 * 3600)
IDEMPOTENCY_TTL_SECONDS = env.int("IDEMPOTENCY_TTL_SECONDS", default=24 * 3600)
# Throughput for queue ETAs comes from at most this many jobs finished in this window;
# with none, each job is assumed to take the fallback seconds.
JOB_ETA_SAMPLE_JOBS = env.int("JOB_ETA_SAMPLE_JOBS", default=50)
JOB_ETA_WINDOW_SECONDS = env.int("JOB_ETA_WINDOW_SECONDS", default=900)
JOB_ETA_FALLBACK_SECONDS = env.float("JOB_ETA_FALLBACK_SECONDS", default=10.0)
SPECTACULAR_SETTINGS = {
    "TITLE": "imagegen API",
    "DESCRIPTION": "Submit text-to-image jobs, poll their status (with ETags), cancel them.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs UI's assets come from drf-spectacular-sidecar's static files, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Every limit the server enforces, from its own rules, and links from submit to status/cancel;
    # the event stream is an async view the generator cannot see: a hook adds its entry.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "jobs.api.schema.declare_enforced_limits",
        "jobs.api.event_stream_schema.add_event_stream",
    ],
}

# --- Celery ------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True  # the GenerationJob row is the record of truth
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
# The GPU queues' prefix: a model's wake-ups go to "<prefix>.<model>" (config.celery.generation_queue),
# consumed by the workers serving it. A deployment with several GPU pools gives each its own.
GENERATION_QUEUE = env.str("GENERATION_QUEUE", default="gpu")
# No route for generate_task: each wake-up names its model's queue when it is sent.
CELERY_TASK_ROUTES: dict[str, dict[str, str]] = {}
# Beat's reaper and sweeps have a queue and worker of their own: a backlog of slow webhook
# receivers cannot delay them. An unrouted task lands there too, where a worker reads it.
MAINTENANCE_QUEUE = "maintenance"
CELERY_TASK_DEFAULT_QUEUE = MAINTENANCE_QUEUE
# A GPU task is long and expensive: acknowledge it only when done, hand it back if the
# worker process dies, and never reserve more than the one being run.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A pool process loads its model before it reports up; Celery's 4 s default would kill a
# replacement process mid-load, over and over.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = env.float("WORKER_PROCESS_START_TIMEOUT_SECONDS", default=600.0)
# The soft limit raises inside the pipeline and fails the batch with `timeout`; the hard
# limit kills a process stuck in native code (its jobs are then reaped as `worker_lost`).
# Celery sends a task's limits inside each message, so the sender's value (web, beat) is
# the one enforced: give every process of a deployment the same value.
GENERATION_SOFT_TIME_LIMIT = env.int("GENERATION_SOFT_TIME_LIMIT", default=300)
GENERATION_TIME_LIMIT = GENERATION_SOFT_TIME_LIMIT + env.int("GENERATION_HARD_LIMIT_GRACE", default=30)
# Redis redelivers unacknowledged messages after this long: keep it above the hard limit.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": max(3600, GENERATION_TIME_LIMIT * 2)}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Webhooks ----------------------------------------------------------------------------
# Deliveries run on their own light queue, so a slow receiver never holds a GPU worker.
WEBHOOK_QUEUE = "webhooks"
CELERY_TASK_ROUTES["webhooks.tasks.deliver_webhook_task"] = {"queue": WEBHOOK_QUEUE}
# Standard Webhooks secrets ("whsec_<base64>"); every listed one signs, so a rotation lists
# the new and the old. The fallback derives from SECRET_KEY so no published key ever signs.
_derived_webhook_secret = (
    "whsec_" + base64.b64encode(hashlib.sha256(f"webhooks:{SECRET_KEY}".encode()).digest()).decode()
)
WEBHOOK_SECRETS = env.list(
    "WEBHOOK_SECRETS", default=[env.str("WEBHOOK_SECRET", default=_derived_webhook_secret)]
)
# Each API key and each anonymous job with a webhook has its own secret; these global ones
# sign only deliveries whose receiver has none (recorded before receivers had their own).
# During a key's secret rotation its deliveries carry the old and the new signature this long.
WEBHOOK_SECRET_ROTATION_OVERLAP_SECONDS = env.int(
    "WEBHOOK_SECRET_ROTATION_OVERLAP_SECONDS", default=24 * 3600
)
# Fernet keys that encrypt stored secrets (the first encrypts, all decrypt: list a new one
# first to rotate). The fallback derives from SECRET_KEY: set it before changing SECRET_KEY.
_derived_encryption_key = base64.urlsafe_b64encode(
    hashlib.sha256(f"secret-encryption:{SECRET_KEY}".encode()).digest()
).decode()
SECRET_ENCRYPTION_KEYS = env.list("SECRET_ENCRYPTION_KEYS", default=[_derived_encryption_key])
# Seconds before retry 1, 2, ... (each jittered by WEBHOOK_RETRY_JITTER); then the delivery fails.
WEBHOOK_RETRY_SCHEDULE = env.list(
    "WEBHOOK_RETRY_SCHEDULE", cast=float, default=[5, 300, 1800, 7200, 18000, 36000]
)
WEBHOOK_RETRY_JITTER = env.float("WEBHOOK_RETRY_JITTER", default=0.1)
# One deadline for a whole delivery attempt: name lookup, connect, TLS and the full response.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5.0)
# A webhook host's name lookup gives up after this long, at submit and within an attempt.
WEBHOOK_DNS_TIMEOUT_SECONDS = env.float("WEBHOOK_DNS_TIMEOUT_SECONDS", default=2.0)
# Attempts in flight to one destination host across all workers; more wait and try again.
WEBHOOK_HOST_CONCURRENCY = env.int("WEBHOOK_HOST_CONCURRENCY", default=4)
# Local development only: production webhooks are https to public addresses (SSRF safety).
WEBHOOK_ALLOW_HTTP = env.bool("WEBHOOK_ALLOW_HTTP", default=False)
WEBHOOK_ALLOW_PRIVATE_NETWORKS = env.bool("WEBHOOK_ALLOW_PRIVATE_NETWORKS", default=False)
# Every WEBHOOK_SWEEP_INTERVAL_SECONDS beat's sweep (on the `maintenance` queue) sends the attempt
# message again for pending deliveries whose attempt is overdue by WEBHOOK_SWEEP_AFTER_SECONDS:
# the send failed (broker down) or the broker lost the message (Redis restarted empty). Keep
# the grace above the longest wait in the webhooks queue; a shorter one only sends duplicates.
WEBHOOK_SWEEP_INTERVAL_SECONDS = env.int("WEBHOOK_SWEEP_INTERVAL_SECONDS", default=60)
WEBHOOK_SWEEP_AFTER_SECONDS = env.int("WEBHOOK_SWEEP_AFTER_SECONDS", default=120)

# --- Operators: reaper and result retention ---------------------------------------------
# Every REAPER_INTERVAL_SECONDS the reaper (on the `maintenance` queue, started by beat):
# re-queues or fails `running` jobs whose worker is gone (no heartbeat for
# REAPER_HEARTBEAT_GRACE_SECONDS, or REAPER_GRACE_SECONDS past the hard time limit),
# wakes workers for jobs `queued` longer than REAPER_REPUBLISH_AFTER_SECONDS whose broker
# message was lost, and deletes result files older than RESULT_RETENTION_DAYS (0 = never).
REAPER_INTERVAL_SECONDS = env.int("REAPER_INTERVAL_SECONDS", default=60)
REAPER_GRACE_SECONDS = env.int("REAPER_GRACE_SECONDS", default=120)
REAPER_MAX_REQUEUES = env.int("REAPER_MAX_REQUEUES", default=1)
REAPER_REPUBLISH_AFTER_SECONDS = env.int("REAPER_REPUBLISH_AFTER_SECONDS", default=60)
# A GPU worker refreshes a Redis key per running job every WORKER_HEARTBEAT_SECONDS (the key
# lives three of them). A running job claimed more than REAPER_HEARTBEAT_GRACE_SECONDS ago
# without one has lost its worker: a killed worker is noticed in about a minute, not after
# the hard time limit. 0 turns the heartbeat rule off (the hard-limit rule stays).
WORKER_HEARTBEAT_SECONDS = env.float("WORKER_HEARTBEAT_SECONDS", default=10.0)
REAPER_HEARTBEAT_GRACE_SECONDS = env.int("REAPER_HEARTBEAT_GRACE_SECONDS", default=60)
RESULT_RETENTION_DAYS = env.int("RESULT_RETENTION_DAYS", default=0)
# How long the dashboard waits for workers to answer a ping: every refresh waits this long,
# and below about a second a busy worker's answer is often missed.
DASHBOARD_PING_TIMEOUT_SECONDS = env.float("DASHBOARD_PING_TIMEOUT_SECONDS", default=1.0)
CELERY_BEAT_SCHEDULE = {
    "reap-stale-jobs": {
        "task": "jobs.tasks.reap_stale_jobs_task",
        "schedule": REAPER_INTERVAL_SECONDS,
        # A run that could not start before the next one is due is only a duplicate.
        "options": {"queue": MAINTENANCE_QUEUE, "expires": REAPER_INTERVAL_SECONDS},
    },
    "sweep-webhook-deliveries": {
        "task": "webhooks.tasks.sweep_webhook_deliveries_task",
        "schedule": WEBHOOK_SWEEP_INTERVAL_SECONDS,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": WEBHOOK_SWEEP_INTERVAL_SECONDS},
    },
}

# --- REST framework ----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["ratelimit.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "jobs.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}

# --- Security ---------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
# Probes and scrapers speak plain HTTP to the process itself, behind the TLS proxy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The web page explains a rejected form (an expired page) instead of a bare 403.
CSRF_FAILURE_VIEW = "jobs.views.csrf_failure"

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "img-src": ["'self'", "data:", *env.list("CSP_IMG_SOURCES", default=[])],
        "style-src": ["'self'"],
        "script-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOG_FORMAT = env.str("LOG_FORMAT", default="logfmt")
if LOG_FORMAT not in ("logfmt", "json"):
    raise environ.ImproperlyConfigured(f"LOG_FORMAT must be 'logfmt' or 'json', not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "logfmt": {"()": "core.logging.LogfmtFormatter"},
        "json": {"()": "core.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
