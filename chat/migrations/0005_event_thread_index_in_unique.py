"""The event log's thread column loses its own index: the unique (thread, seq) index starts
with it and serves every lookup by thread. Dropped by name (Django's name for a foreign
key's index is the same on SQLite and PostgreSQL), so that SQLite does not copy the table."""

import django.db.models.deletion
from django.db import migrations, models

INDEX = "chat_event_thread_id_7cedaa78"


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0004_thread_agent"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="event",
                    name="thread",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="chat.thread",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX IF EXISTS "{INDEX}"',
                    reverse_sql=f'CREATE INDEX "{INDEX}" ON "chat_event" ("thread_id")',
                ),
            ],
        ),
    ]
