"""``manage.py api_key create|rotate|rotate-webhook-secret|revoke|list``: the admin's key
actions from a shell."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ratelimit import services
from ratelimit.models import ApiKey


class Command(BaseCommand):
    help = (
        "Create, rotate, revoke or list API keys, or rotate a key's webhook secret. A new key, "
        "webhook secret or rotated one is printed once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser(
            "create", help="Create a key; prints it and its webhook secret once, one per line."
        )
        create.add_argument("name")
        create.add_argument(
            "--submit-rate", default="", help="e.g. 60/m; default API_KEY_DEFAULT_SUBMIT_RATE"
        )
        for option in ("--max-active-jobs", "--daily-budget-units", "--max-job-units"):
            create.add_argument(option, type=int, default=None)
        create.add_argument("--weight", type=float, default=None)
        for action in ("rotate", "revoke"):
            actions.add_parser(action, help=f"{action.capitalize()} the key with this prefix.").add_argument(
                "prefix"
            )
        rotate_webhook_secret = actions.add_parser(
            "rotate-webhook-secret",
            help="A new webhook secret for the key with this prefix, printed once; the old one also "
            "signs for the overlap.",
        )
        rotate_webhook_secret.add_argument("prefix")
        rotate_webhook_secret.add_argument(
            "--overlap-seconds",
            type=int,
            default=None,
            help="default WEBHOOK_SECRET_ROTATION_OVERLAP_SECONDS",
        )
        actions.add_parser("list", help="Every key: prefix, name, state, last use.")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "create":
            policy = {
                name: options[name]
                for name in (
                    "submit_rate",
                    "max_active_jobs",
                    "daily_budget_units",
                    "max_job_units",
                    "weight",
                )
            }
            try:
                issued = services.api_key_create(name=options["name"], **policy)
            except ValidationError as error:
                raise CommandError(str(error.message_dict)) from None
            self.stdout.write(issued.key)
            self.stdout.write(issued.webhook_secret)
        elif action == "rotate":
            self.stdout.write(services.api_key_rotate(api_key=self._key(options["prefix"])))
        elif action == "rotate-webhook-secret":
            if options["overlap_seconds"] is not None and options["overlap_seconds"] < 0:
                raise CommandError("--overlap-seconds must be 0 or more.")
            self.stdout.write(
                services.api_key_rotate_webhook_secret(
                    api_key=self._key(options["prefix"]), overlap_seconds=options["overlap_seconds"]
                )
            )
        elif action == "revoke":
            services.api_key_revoke(api_key=self._key(options["prefix"]))
            self.stdout.write(f"revoked {options['prefix']}")
        else:
            for api_key in ApiKey.objects.order_by("created_at"):
                state = "revoked" if api_key.revoked_at else "active"
                last_used = api_key.last_used_at.isoformat() if api_key.last_used_at else "never"
                self.stdout.write(f"{api_key.prefix}\t{state}\t{last_used}\t{api_key.name}")

    @staticmethod
    def _key(prefix: str) -> ApiKey:
        api_key = ApiKey.objects.filter(prefix=prefix.removeprefix("ig_").partition("_")[0]).first()
        if api_key is None:
            raise CommandError(f"No API key has the prefix {prefix!r}.")
        return api_key
