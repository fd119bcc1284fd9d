"""The event log on PostgreSQL: seqs taken atomically by concurrent emitters in several
processes stay unique and gapless per thread."""

import json
import subprocess

import pytest

from tests.cluster import postgres_database, query, require_postgres
from tests.servers import PYTHON, ROOT, base_env

PROCESSES = 4
EVENTS_EACH = 150

SETUP = """
from django.contrib.auth import get_user_model
from chat.services import thread_create
user = get_user_model().objects.create_user(username="seq-owner")
print(thread_create(owner=user).id)
"""

APPEND = """
import sys, uuid
from chat.events import event_append
thread_id, n = uuid.UUID(sys.argv[-2]), int(sys.argv[-1])
run_id = uuid.uuid4()
for i in range(n):
    event_append(thread_id=thread_id, run_id=run_id, type="agent_thinking",
                 data={"text": str(i), "step": i})
"""


@pytest.mark.postgres
def test_concurrent_emitters_in_several_processes_get_gapless_seqs() -> None:
    require_postgres()
    with postgres_database() as url:
        env = base_env(DATABASE_URL=url)
        thread_id = (
            subprocess.run(
                [PYTHON, "manage.py", "shell", "-c", SETUP],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        writers = [
            subprocess.Popen(
                [
                    PYTHON,
                    "-c",
                    "import django, os, sys; os.environ.setdefault("
                    "'DJANGO_SETTINGS_MODULE', 'netra_site.settings'); django.setup(); "
                    f"exec({APPEND!r})",
                    thread_id,
                    str(EVENTS_EACH),
                ],
                cwd=ROOT,
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(PROCESSES)
        ]
        for writer in writers:
            _, err = writer.communicate(timeout=120)
            assert writer.returncode == 0, err
        rows = query(
            url,
            "SELECT seq, run_id, data FROM chat_event WHERE thread_id = %s ORDER BY seq",
            thread_id,
        )
        last = query(url, "SELECT last_seq FROM chat_thread WHERE id = %s", thread_id)[0][0]
    total = PROCESSES * EVENTS_EACH
    assert [seq for seq, _, _ in rows] == list(range(1, total + 1))
    assert last == total
    # Each emitter's own events keep its order.
    by_run: dict[str, list[int]] = {}
    for _, run_id, data in rows:
        by_run.setdefault(str(run_id), []).append(int(json.loads(json.dumps(data))["text"]))
    assert len(by_run) == PROCESSES
    assert all(steps == list(range(EVENTS_EACH)) for steps in by_run.values())
