from django.conf import settings
from django.db import migrations, models


def name_the_default_model(apps, schema_editor):
    """Jobs stored before the registry hold the model's folder; they ran on the default model."""
    GenerationJob = apps.get_model("jobs", "GenerationJob")
    GenerationJob.objects.exclude(model__in=list(settings.GENERATOR_MODELS)).update(
        model=settings.GENERATOR_DEFAULT_MODEL
    )


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0009_client_aggregate"),
    ]

    operations = [
        migrations.RenameField(model_name="generationjob", old_name="model_name", new_name="model"),
        migrations.RunPython(name_the_default_model, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="generationjob",
            index=models.Index(fields=["model", "status", "created_at"], name="job_model_status_idx"),
        ),
    ]
