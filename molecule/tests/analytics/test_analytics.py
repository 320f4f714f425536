"""The analytics database (roles/analytics), the seed's second scenario end to end: alice (team-a)
writes a DataFrame to her group's schema from her lab, registers a report notebook with `month` and
`region`, two runs of it write rows to team_a.sales_report, and she charts them in Superset (logged
in through the provider); bob, in no group, can read none of it, from his notebook or in Superset;
and when the provider takes team-a from alice, her next login takes the access away.

The database enforces each boundary: the assertions are what PostgreSQL answers a user's own code
and what Superset's per-group connection may read, never the configuration that says it."""

from __future__ import annotations

import json
import secrets

import pytest
from analyticslib import GROUP, SCHEMA
from hostlib import browser_hub_token, notebook, until
from provider_admin import groups_at_provider
from supersetlib import SupersetSession

TABLE = f"{SCHEMA}.sales_report"
CONNECTION = f"analytics ({GROUP})"
# A report notebook: its parameters cell declares month (int) and region (str); it writes one row
# to the group's table with no password anywhere (PGSERVICE and ~/.pgpass).
REPORT = notebook(
    [
        "import psycopg\n"
        "with psycopg.connect('') as db:\n"
        f"    db.execute('INSERT INTO {TABLE} (month, region, amount, made_by) "
        "VALUES (%s, %s, %s, current_user)', (month, region, month * 100.0))"
    ],
    parameters="month = 1\nregion = 'north'",
)


def refused(kernel, sql: str, **connect) -> str:
    """What PostgreSQL answers the kernel's user for `sql` ('' when it was allowed)."""
    code = (
        "import psycopg, json\n"
        "try:\n"
        f"    with psycopg.connect('', connect_timeout=10, **{connect!r}) as db:\n"
        f"        cur = db.execute({sql!r})\n"
        "        cur.fetchall() if cur.description else None\n"
        "    print(json.dumps(''))\n"
        "except psycopg.Error as e:\n"
        "    print(json.dumps(str(e).strip()))\n"
    )
    return kernel.json(code)


def rows(kernel, sql: str) -> list:
    return kernel.json(
        "import psycopg, json\nwith psycopg.connect('') as db:\n"
        f"    print(json.dumps(db.execute({sql!r}).fetchall(), default=str))"
    )


# ------------------------------------------------------------------------- from the lab
@pytest.fixture(scope="module")
def seeded(alice):
    """alice writes a DataFrame to her group's schema from her lab, with pandas and SQLAlchemy, as
    the README shows: no host, user or password in the notebook."""
    alice.run(
        "import pandas as pd, sqlalchemy as sa\n"
        "engine = sa.create_engine('postgresql+psycopg://')\n"
        "pd.DataFrame({'month': [0], 'region': ['seed'], 'amount': [0.0], 'made_by': ['lab']})"
        f".to_sql('sales_report', engine, schema={SCHEMA!r}, if_exists='replace', index=False)\n"
    )
    return TABLE


def test_alice_writes_a_dataframe_to_her_groups_schema_from_her_lab(seeded, alice):
    assert rows(alice, f"SELECT month, region FROM {seeded}") == [[0, "seed"]]


def test_the_table_belongs_to_the_group_not_to_alice(seeded, alice):
    """So every member may use it, and a member who leaves the group loses it."""
    owner = rows(
        alice, f"SELECT tableowner FROM pg_tables WHERE schemaname = '{SCHEMA}' AND tablename = 'sales_report'"
    )
    assert owner == [[f"group.{GROUP}"]]


def test_alice_connects_as_herself_with_the_password_the_platform_keeps(alice, site):
    assert rows(alice, "SELECT current_user, current_database()") == [["alice", "analytics"]]
    pgpass = site.file("/home/alice/.pgpass")
    assert (pgpass.user, pgpass.mode) == ("alice", 0o600)
    assert pgpass.content_string.startswith("*:*:analytics:alice:")


def test_the_login_sync_leaves_a_link_alice_planted_as_her_pgpass_alone(alice, site, group_hosts):
    """Root keeps ~/.pgpass at each login: a link alice puts there to a root-only file (the sync's
    own configuration, with its password) is neither read through nor written through, and it
    does not keep her in a group the provider took away (the sync the hub runs at her login)."""
    target, sync = "/etc/platform-analytics/sync.json", "/usr/local/sbin/platform-analytics sync alice platform-users"
    member = ("runuser -u postgres -- psql -XAtq -d analytics -c "
              f"\"SELECT pg_has_role('alice', 'group.{GROUP}', 'MEMBER')\"")  # fmt: skip
    before = site.check_output(f"sha256sum {target}")
    alice.run(f"import os\nos.rename(os.path.expanduser('~/.pgpass'), os.path.expanduser('~/.pgpass.kept'))\n"
              f"os.symlink({target!r}, os.path.expanduser('~/.pgpass'))")  # fmt: skip
    try:
        out = site.run(sync)  # a login without team-a
        link = site.file("/home/alice/.pgpass")
        assert out.rc == 2 and "leaves it alone" in out.stderr, (out.rc, out.stdout, out.stderr)
        assert link.is_symlink and link.linked_to == target
        assert site.check_output(f"sha256sum {target}") == before
        assert (site.file(target).user, site.file(target).mode) == ("root", 0o600)
        assert group_hosts("postgresql")[0].check_output(member) == "f"
    finally:
        alice.run("import os\nos.remove(os.path.expanduser('~/.pgpass'))\n"
                  "os.rename(os.path.expanduser('~/.pgpass.kept'), os.path.expanduser('~/.pgpass'))")  # fmt: skip
        site.check_output(f"{sync} {GROUP}")  # her groups as the provider has them


def test_alices_own_schema_is_where_her_tables_go_by_default(alice, bob):
    alice.run(
        "import psycopg\nwith psycopg.connect('') as db:\n    db.execute('CREATE TABLE IF NOT EXISTS mine (x int)')"
    )
    assert rows(alice, "SELECT schemaname FROM pg_tables WHERE tablename = 'mine'") == [["alice"]]
    assert "permission denied for schema alice" in refused(bob, "SELECT * FROM alice.mine")


# ------------------------------------------------------------------------- from runs
@pytest.fixture(scope="module")
def report_runs(seeded, alice, alice_api):
    """The report registered with typed parameters, run twice through the exec API."""
    name = f"sales-{secrets.token_hex(3)}.ipynb"
    alice.run(
        "import json, pathlib\n"
        "p = pathlib.Path.home() / 'notebooks' / 'analytics'\n"
        "p.mkdir(parents=True, exist_ok=True)\n"
        f"(p / {name!r}).write_text(json.dumps({REPORT!r}))\n"
    )
    nb = alice_api.register_notebook(f"analytics/{name}", f"sales report {name}")
    runs = [alice_api.run(notebook_id=nb.id, parameters=p) for p in ({"month": 3, "region": "north"},
                                                                     {"month": 4, "region": "south"})]  # fmt: skip
    return nb, [alice_api.wait(r.id, timeout=300) for r in runs]


def test_the_reports_parameters_are_typed(report_runs, alice_api):
    nb, _ = report_runs
    assert {p.param_name: p.param_type for p in alice_api.parameters(nb.id)} == {"month": "int", "region": "str"}


def test_two_runs_with_parameters_wrote_their_rows_as_alice(report_runs, alice):
    _, done = report_runs
    assert [r.status for r in done] == ["succeeded", "succeeded"], [(r.status, r.error_message) for r in done]
    assert rows(alice, f"SELECT month, region, made_by FROM {TABLE} WHERE month > 0 ORDER BY month") == [
        [3, "north", "alice"], [4, "south", "alice"]]  # fmt: skip


# ------------------------------------------------------------------------- bob, outside the group
def test_bob_cannot_read_the_groups_table_from_his_notebook(seeded, bob):
    assert "permission denied for schema team_a" in refused(bob, f"SELECT * FROM {TABLE}")


@pytest.mark.parametrize(
    "sql",
    [f"INSERT INTO {TABLE} (month, region) VALUES (13, 'bob')", f"CREATE TABLE {SCHEMA}.bobs (x int)",
     f"DROP TABLE {TABLE}"],
    ids=["insert", "create", "drop"],
)  # fmt: skip
def test_bobs_writes_to_the_groups_schema_are_refused(seeded, bob, sql):
    assert "permission denied for schema team_a" in refused(bob, sql)


def test_bob_cannot_write_shared_or_public(bob):
    assert "permission denied for schema shared" in refused(bob, "CREATE TABLE shared.bobs (x int)")
    assert "permission denied for schema public" in refused(bob, "CREATE TABLE public.bobs (x int)")


def test_bob_cannot_give_himself_a_group(bob):
    granted = refused(bob, f'GRANT "group.{GROUP}" TO bob')
    assert "admin option" in granted or "permission denied" in granted, granted
    assert "permission denied" in refused(
        bob, "SELECT analytics_platform.sync_user('bob', ARRAY['team-a'], true, NULL)"
    )
    assert "permission denied" in refused(bob, 'SET ROLE "analytics.admin"')


@pytest.mark.parametrize(
    "sql",
    ["CREATE FUNCTION leak() RETURNS int LANGUAGE sql AS 'SELECT 1'",
     f"CREATE TRIGGER leak BEFORE INSERT ON {TABLE} FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
     f"CREATE RULE leak AS ON INSERT TO {TABLE} DO ALSO NOTIFY leak"],
    ids=["function", "trigger", "rule"],
)  # fmt: skip
def test_no_member_plants_code_that_runs_as_another(seeded, alice, sql):
    """A trigger, rule or default on a table the group shares runs as whoever writes to it: no
    user may create code in the database at all."""
    assert "is not allowed in the analytics database" in refused(alice, sql)


@pytest.mark.parametrize(
    "sql",
    ["SELECT query_to_xml('SELECT 1', true, false, '')", "SELECT table_to_xml('alice.mine', true, false, '')",
     "SELECT database_to_xml(true, false, '')", "SELECT pg_notify('loot', 'x')"],
    ids=["query_to_xml", "table_to_xml", "database_to_xml", "pg_notify"],
)  # fmt: skip
def test_no_user_calls_the_functions_that_run_sql_as_the_caller(alice, sql):
    assert "permission denied for function" in refused(alice, sql)


def test_a_default_planted_on_a_shared_table_reads_nothing_of_whoever_writes(alice, bob):
    """alice shares a table of hers with bob whose default would read bob's private schema as
    bob, when he inserts: the database refuses the function, as bob."""
    bob.run("import psycopg\nwith psycopg.connect('') as db:\n"
            "    db.execute('CREATE TABLE IF NOT EXISTS secret AS SELECT 42 AS answer')")  # fmt: skip
    alice.run(
        "import psycopg\nwith psycopg.connect('') as db:\n"
        "    db.execute('DROP TABLE IF EXISTS trap')\n"
        '    db.execute("CREATE TABLE trap (x int, loot text DEFAULT '
        "query_to_xml('SELECT * FROM bob.secret', true, false, '')::text)\")\n"
        "    db.execute('GRANT USAGE ON SCHEMA alice TO bob')\n"
        "    db.execute('GRANT INSERT, SELECT ON trap TO bob')\n"
    )
    try:
        assert "permission denied for function query_to_xml" in refused(bob, "INSERT INTO alice.trap (x) VALUES (1)")
        assert rows(alice, "SELECT count(*) FROM trap") == [[0]]
    finally:
        alice.run("import psycopg\nwith psycopg.connect('') as db:\n    db.execute('DROP TABLE trap')\n"
                  "    db.execute('REVOKE USAGE ON SCHEMA alice FROM bob')\n")  # fmt: skip


def test_a_user_named_as_a_service_gets_no_role(group_hosts):
    """Whatever the order of events: a user `superset` never gets (or takes over) the service's role."""
    out = group_hosts("postgresql")[0].run("runuser -u postgres -- psql -X -d analytics -c "
                   "\"SELECT analytics_platform.sync_user('superset', '{}', false, NULL)\"")  # fmt: skip
    assert out.rc != 0 and "is not a name the platform makes a role of" in out.stderr, out.stderr


def test_from_another_host_only_tls_is_admitted(alice, site):
    """Where the database is on another host than users' code, a connection without TLS is refused."""
    service = site.file("/etc/postgresql-common/pg_service.conf").content_string
    if "host=127.0.0.1" in service:
        pytest.skip("the database is on the hub's own host here (loopback)")
    assert "no pg_hba.conf entry" in refused(alice, "SELECT 1", sslmode="disable")
    assert rows(alice, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [[True]]


def test_the_daily_size_report_names_each_schema_with_its_size(group_hosts, seeded):
    db = group_hosts("postgresql")[0]
    since = db.check_output("date +'%Y-%m-%d %H:%M:%S'")
    db.check_output("systemctl start platform-analytics-sizes.service")
    log = db.check_output(f"journalctl -u platform-analytics-sizes --since '{since}' --no-pager -o cat")
    assert f'schema {SCHEMA} (owner "group.{GROUP}"):' in log and "schema alice (owner alice):" in log, log


@pytest.mark.parametrize("database", ["exec_api", "jupyterhub", "superset", "postgres"])
def test_a_users_role_cannot_reach_the_services_databases(alice, database):
    answer = refused(alice, "SELECT 1", dbname=database)
    assert answer and ("no pg_hba.conf entry" in answer or "permission denied" in answer), answer


# ------------------------------------------------------------------------- Superset
@pytest.fixture(scope="module")
def alice_superset(browser, superset_url, ca, team_member):
    s = SupersetSession(browser, superset_url, ca, team_member)
    yield s
    s.close()


@pytest.fixture(scope="module")
def bob_superset(browser, superset_url, ca, outsider_user):
    s = SupersetSession(browser, superset_url, ca, outsider_user)
    yield s
    s.close()


def databases(session) -> dict[str, int]:
    r = session.get("/api/v1/database/?q=(page_size:100)")
    assert r.status_code == 200, f"{session.who}: databases: HTTP {r.status_code} {r.text[:300]}"
    return {d["database_name"]: d["id"] for d in r.json()["result"]}


@pytest.fixture(scope="module")
def charted(report_runs, alice_superset):
    """alice's dataset on the group's table, a table chart of it on a dashboard of hers."""
    s = alice_superset
    db = databases(s)[CONNECTION]
    listed = s.get("/api/v1/dataset/?q=(page_size:100)").json()["result"]
    known = [
        d["id"] for d in listed if (d["table_name"], d["schema"], d["database"]["id"]) == ("sales_report", SCHEMA, db)
    ]
    if known:  # made by an earlier run of these tests on the same hosts
        dataset = known[0]
    else:
        r = s.post("/api/v1/dataset/", {"database": db, "schema": SCHEMA, "table_name": "sales_report"})
        assert r.status_code == 201, f"alice's dataset: HTTP {r.status_code} {r.text[:500]}"
        dataset = r.json()["id"]
    r = s.post("/api/v1/dashboard/", {"dashboard_title": "Team A sales", "published": True})
    assert r.status_code == 201, f"alice's dashboard: HTTP {r.status_code} {r.text[:500]}"
    dashboard = r.json()["id"]
    params = {"query_mode": "raw", "all_columns": ["month", "region", "made_by"], "row_limit": 100}
    r = s.post("/api/v1/chart/", {"slice_name": "Sales by month", "viz_type": "table", "datasource_id": dataset,
                                  "datasource_type": "table", "params": json.dumps(params),
                                  "dashboards": [dashboard]})  # fmt: skip
    assert r.status_code == 201, f"alice's chart: HTTP {r.status_code} {r.text[:500]}"
    return {"database": db, "dataset": dataset, "dashboard": dashboard, "chart": r.json()["id"]}


def chart_data(session, dataset: int):
    return session.post("/api/v1/chart/data", {
        "datasource": {"id": dataset, "type": "table"}, "force": True, "result_format": "json", "result_type": "full",
        "queries": [{"columns": ["month", "region"], "metrics": [], "orderby": [["month", True]], "row_limit": 100}],
    })  # fmt: skip


def test_alice_has_her_groups_superset_role_and_connection(alice_superset):
    assert GROUP in (alice_superset.roles() or [])
    assert CONNECTION in databases(alice_superset)


def test_alices_chart_shows_the_rows_the_runs_wrote(charted, alice_superset):
    r = chart_data(alice_superset, charted["dataset"])
    assert r.status_code == 200, f"chart data: HTTP {r.status_code} {r.text[:500]}"
    got = [(row["month"], row["region"]) for row in r.json()["result"][0]["data"]]
    assert (3, "north") in got and (4, "south") in got, got


def test_alices_dashboard_loads_with_her_chart(charted, alice_superset, superset_url):
    page = alice_superset.page
    r = page.goto(f"{superset_url}/superset/dashboard/{charted['dashboard']}/")
    assert r is not None and r.status == 200, f"dashboard page: {r and r.status}"
    page.get_by_text("Sales by month").first.wait_for(timeout=90000)
    page.get_by_text("south").first.wait_for(timeout=90000)


def test_bob_sees_neither_the_connection_nor_the_dataset(charted, bob_superset):
    assert CONNECTION not in databases(bob_superset)
    r = bob_superset.get("/api/v1/dataset/?q=(page_size:100)")
    assert r.status_code == 200 and charted["dataset"] not in {d["id"] for d in r.json()["result"]}, r.text[:300]
    assert bob_superset.get(f"/api/v1/dataset/{charted['dataset']}").status_code in (403, 404)


def test_bob_gets_none_of_the_charts_data(charted, bob_superset):
    r = chart_data(bob_superset, charted["dataset"])
    assert r.status_code in (403, 404), f"bob's chart data: HTTP {r.status_code} {r.text[:300]}"
    assert "south" not in r.text


def test_the_groups_connection_cannot_read_another_schema(charted, alice_superset, bob):
    """What Superset lets alice run on her group's connection, the database still refuses: the
    connection logs in as the group's role, which cannot read bob's schema."""
    bob.run("import psycopg\nwith psycopg.connect('') as db:\n"
            "    db.execute('CREATE TABLE IF NOT EXISTS secret AS SELECT 42 AS answer')")  # fmt: skip
    r = alice_superset.post("/api/v1/sqllab/execute/", {
        "database_id": charted["database"], "sql": "SELECT * FROM bob.secret", "schema": SCHEMA,
        "runAsync": False, "client_id": secrets.token_hex(5), "tab": "probe", "json": True,
    })  # fmt: skip
    assert r.status_code >= 400 and "permission denied for schema bob" in r.text, f"HTTP {r.status_code} {r.text[:500]}"


# ------------------------------------------------------------------------- losing the group
def test_alice_loses_team_a_at_the_provider_and_then_cannot_read_it(
    charted, alice, browser, hub_url, superset_url, ca, team_member, provider_host, issuer, site
):
    without = [g for g in team_member["groups"] if g != GROUP]
    # While a member she grants herself the schema and the table directly: that goes with the group.
    alice.run(
        "import psycopg\nwith psycopg.connect('') as db:\n"
        f"    db.execute('GRANT USAGE ON SCHEMA {SCHEMA} TO alice')\n"
        f"    db.execute('GRANT SELECT ON {TABLE} TO alice')\n"
    )
    pgpass = site.file("/home/alice/.pgpass").content_string
    try:
        with groups_at_provider(provider_host, issuer, ca, "alice", without):
            browser_hub_token(browser, hub_url, team_member)  # her next login
            answer = refused(alice, f"SELECT * FROM {TABLE}")
            s = SupersetSession(browser, superset_url, ca, team_member)
            try:
                roles = s.roles() or []
                data = chart_data(s, charted["dataset"])
            finally:
                s.close()
        assert "permission denied for schema team_a" in answer, answer
        assert GROUP not in roles, roles
        assert data.status_code in (403, 404), f"chart data without the group: HTTP {data.status_code}"
    finally:
        browser_hub_token(browser, hub_url, team_member)  # the group back, at the provider and here
    until(lambda: not refused(alice, f"SELECT 1 FROM {TABLE} LIMIT 1"), 30, "alice's access back after her login")
    # Her password was kept through the logins: it worked and was not old.
    assert site.file("/home/alice/.pgpass").content_string == pgpass
