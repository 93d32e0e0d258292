"""The two databases the decision log runs on, for tests: a SQLite file and a real PostgreSQL server
(pgserver ships its binaries in a wheel), each one the tests can break and mend as an outage would."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url


@dataclass
class Backend:
    """A database the tests can break and mend, as an operator's mistake or an outage would."""

    url: str
    break_: Callable[[], None]
    restore: Callable[[], None]


def sqlite_backend(tmp_path: Path) -> Backend:
    state = tmp_path / "state"
    away = tmp_path / "state-moved-away"
    return Backend(f"sqlite:///{state / 'decisions.sqlite3'}",
                   break_=lambda: state.rename(away), restore=lambda: away.rename(state))


def postgres_backend(server: Any) -> Backend:
    """A fresh database on the shared server, so that each test starts empty."""
    from pgserver._commands import pg_ctl

    name = f"decisions_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(server.get_uri()).set(drivername="postgresql+psycopg"),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url = make_url(server.get_uri()).set(drivername="postgresql+psycopg", database=name)
    return Backend(url.render_as_string(hide_password=False),
                   break_=lambda: pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user),
                   restore=server.ensure_postgres_running)
