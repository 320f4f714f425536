"""Helpers the superset role runs with Superset's own Python (through superset-manage).

db-revisions   print {"current": [...], "heads": [...]} for the metadata database (Alembic)
provision DIR  import the dashboard files in DIR with Superset's importer; print "changed" or "unchanged"
analytics FILE the analytics database's per-group connections and roles from FILE (JSON); print
               "changed" or "unchanged"
"""

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import yaml

PROVISIONER = "platform-provisioner"


def revisions() -> None:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine
    from superset.app import create_app

    uri = create_app().config["SQLALCHEMY_DATABASE_URI"]
    pkg = Path(importlib.util.find_spec("superset").origin).parent
    cfg = Config()
    cfg.set_main_option("script_location", str(pkg / "migrations"))
    heads = sorted(ScriptDirectory.from_config(cfg).get_heads())
    engine = create_engine(uri)
    with engine.connect() as conn:
        current = sorted(MigrationContext.configure(conn).get_current_heads())
    print(json.dumps({"current": current, "heads": heads}))


def bundle(directory: Path) -> dict[str, str]:
    """Superset's bundle layout (type/name.yaml) from the role's files, one YAML document or list each."""
    contents = {"metadata.yaml": (directory / "metadata.yaml").read_text()}
    for kind in ("databases", "datasets", "charts", "dashboards"):
        docs = yaml.safe_load((directory / f"{kind}.yaml").read_text())
        for doc in docs if isinstance(docs, list) else [docs]:
            contents[f"{kind}/{doc['uuid']}.yaml"] = yaml.safe_dump(doc, sort_keys=True)
    return contents


def provision(directory: Path) -> None:
    from superset.app import create_app

    app = create_app()
    with app.app_context():
        from flask import g
        from superset import db, security_manager
        from superset.commands.importers.v1.assets import ImportAssetsCommand
        from superset.models.dashboard import Dashboard

        contents = bundle(directory)
        digest = hashlib.sha256(json.dumps(contents, sort_keys=True).encode()).hexdigest()
        dashboards = [yaml.safe_load(v)["uuid"] for k, v in contents.items() if k.startswith("dashboards/")]
        stamp = Path(app.config["DATA_DIR"]) / "provisioned.sha256"
        present = all(db.session.query(Dashboard).filter_by(uuid=u).one_or_none() for u in dashboards)
        if present and stamp.exists() and stamp.read_text().strip() == digest:
            print("unchanged")
            return
        # The importer checks the current user's permissions: a local account that can never log in
        # (inactive; the login is OAuth only) owns what is provisioned.
        user = security_manager.find_user(username=PROVISIONER)
        if user is None:
            user = security_manager.add_user(
                username=PROVISIONER,
                first_name="Platform",
                last_name="Provisioner",
                email="provisioner@localhost",
                role=security_manager.find_role("Admin"),
                password=os.urandom(32).hex(),
            )
            user.active = False
            db.session.commit()
        g.user = user
        ImportAssetsCommand(contents).run()
        stamp.write_text(digest + "\n")
        print("changed")


# What a group's role may do beside reading dashboards (Gamma): use its own connection (and no
# other), add datasets on it, and browse its schemas; SQL Lab comes from the sql_lab role.
GROUP_PERMISSIONS = [("can_write", "Dataset"), ("can_read", "Database")]
CONNECTION = {"expose_in_sqllab": True, "allow_dml": False, "allow_ctas": False, "allow_cvas": False,
              "allow_run_async": False, "allow_file_upload": False}  # fmt: skip


def analytics(path: Path) -> None:
    """One Superset database per group ([{name, role, uri}]): it logs in as the group's own
    database role, which can read nothing but the group's schema and `shared`, so whatever Superset
    lets through, the database refuses the rest. The Superset role of the same group may use that
    connection and no other."""
    from superset.app import create_app

    spec = json.loads(path.read_text())
    app = create_app()
    with app.app_context():
        from superset import db
        from superset import security_manager as sm
        from superset.models.core import Database

        changed = False
        for c in spec:
            d = db.session.query(Database).filter_by(database_name=c["name"]).one_or_none()
            if d is None:
                d = Database(database_name=c["name"])
                db.session.add(d)
                changed = True
            if not d.sqlalchemy_uri or d.sqlalchemy_uri_decrypted != c["uri"]:
                d.set_sqlalchemy_uri(c["uri"])
                changed = True
            for attr, value in CONNECTION.items():
                if getattr(d, attr) != value:
                    setattr(d, attr, value)
                    changed = True
            db.session.flush()
            role = sm.find_role(c["role"])
            if role is None:
                role = sm.add_role(c["role"])
                changed = True
            for perm, view in [("database_access", d.perm), *GROUP_PERMISSIONS]:
                pv = sm.find_permission_view_menu(perm, view) or sm.add_permission_view_menu(perm, view)
                if pv not in role.permissions:
                    sm.add_permission_role(role, pv)
                    changed = True
        db.session.commit()
        print("changed" if changed else "unchanged")


def main() -> None:
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "db-revisions":
        revisions()
    elif cmd == "provision" and len(sys.argv) == 3:
        provision(Path(sys.argv[2]))
    elif cmd == "analytics" and len(sys.argv) == 3:
        analytics(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
