"""A local Prefect server starts from a database migrated once per Prefect version
(unipipe_prefect.server.template_db) instead of migrating a fresh one on every start."""

from __future__ import annotations

import sqlite3


def _query(db, sql):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_new_server_starts_from_the_migrated_template_and_leaves_it_untouched(tmp_path):
    from unipipe_prefect.server import LocalPrefectServer, template_db

    template = template_db()
    head = _query(template, "select version_num from alembic_version")
    assert len(head) == 1 and len(head[0][0]) == 12  # an alembic revision id
    assert _query(template, "select count(*) from block_type") == [(0,)]  # schema only
    with LocalPrefectServer(home=tmp_path / "server") as server:
        assert server.healthy()
        db = server.home / "prefect.db"
        # the server found its revision at the head (nothing to migrate) and registered its
        # block types into its own copy
        assert _query(db, "select version_num from alembic_version") == head
        assert _query(db, "select count(*) from block_type")[0][0] > 0
    assert _query(template, "select count(*) from block_type") == [(0,)]
