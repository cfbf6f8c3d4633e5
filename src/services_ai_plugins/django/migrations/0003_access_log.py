# Written by hand (as Django 5.2 generates it) for the data-access log (issue 22): one row per
# granted API call of a plugin on tenant data.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("services_ai_plugins", "0002_staged_kept_versions_and_artifacts"),
    ]

    operations = [
        migrations.CreateModel(
            name="AccessEntry",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("plugin_id", models.CharField(max_length=200)),
                ("tenant", models.CharField(max_length=200)),
                ("method", models.CharField(max_length=200)),
                ("permission", models.CharField(max_length=200)),
                ("record_type", models.CharField(blank=True, max_length=200, null=True)),
                ("record_ids", models.TextField()),
                ("count", models.IntegerField()),
                ("at", models.DateTimeField(db_index=True)),
            ],
            options={
                "verbose_name_plural": "access entries",
                "db_table": "services_ai_plugins_access",
                "indexes": [
                    models.Index(fields=["plugin_id", "tenant", "at"], name="sap_access_plugin"),
                    models.Index(fields=["tenant", "at"], name="sap_access_tenant"),
                ],
            },
        ),
    ]
