"""The hub database's schema revision beside the installed release's head, for the jupyterhub role
(run with the hub's Python and its environment file, which holds JUPYTERHUB_DB_URL):

    hub_db.py     print {"current": [...], "heads": [...]}

Read-only: the upgrade itself is JupyterHub's own `jupyterhub upgrade-db`.
"""

import json
import os
from pathlib import Path

import jupyterhub
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

config = Config()
config.set_main_option("script_location", str(Path(jupyterhub.__file__).parent / "alembic"))
heads = sorted(ScriptDirectory.from_config(config).get_heads())
engine = create_engine(os.environ["JUPYTERHUB_DB_URL"])
with engine.connect() as conn:
    current = sorted(MigrationContext.configure(conn).get_current_heads())
print(json.dumps({"current": current, "heads": heads}))
