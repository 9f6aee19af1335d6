#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A throw-away PostgreSQL server for the store tests (issue 17).

Debian's postgresql package: initdb + pg_ctl from /usr/lib/postgresql/<v>/bin
in a temporary directory, Unix socket only (listen_addresses=''), no system
service. PostgreSQL refuses to run as root, so as root (CI) the server runs
as the unprivileged user `nobody` (setpriv); the client connects over the
socket with trust authentication as the database user `smpgw`.

As a module: `with PgServer() as pg: pg.conninfo(db)`, `pg.create_db(name)`.
As a command: `pg_server.py CMD ARGS...` runs CMD with SMPGW_TEST_PG set to a
connection string of a fresh database (and SMPGW_TEST_PG_DIR, for
PgServer.attached(): a test may stop and start the server); exit 77 (skip)
when PostgreSQL's binaries are not installed.
"""
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77


def find_bindir():
    """The newest /usr/lib/postgresql/<v>/bin holding initdb, or None."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                    key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                    reverse=True):
        if os.access(os.path.join(d, "initdb"), os.X_OK):
            return d
    return None


def run_psql(conninfo, sql, psql="psql"):
    """SQL through psql on conninfo: its unaligned output."""
    r = subprocess.run([psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                        "-d", conninfo, "-c", sql],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if r.returncode:
        raise RuntimeError(f"psql {sql!r}: {r.stderr.decode(errors='replace')}")
    return r.stdout.decode()


def test_sql(sql):
    """SQL on the test's database (SMPGW_TEST_PG), output stripped."""
    return run_psql(os.environ["SMPGW_TEST_PG"], sql).strip()


def lease_holder(device_id):
    """The live holder of a watch's lease (by this machine's clock), or None
    (the gateways' leases, docs/multi-gateway.md)."""
    now_ms = int(time.time() * 1000)
    return test_sql("SELECT holder FROM leases WHERE device_id = '%s' AND expires_ms > %d"
                    % (device_id, now_ms)) or None


class PgServer:
    """initdb + pg_ctl start in a temp dir; stop and remove on exit."""

    def __init__(self, bindir=None, opts=""):
        """opts: more server options (e.g. "-c shared_preload_libraries=...")."""
        self.bindir = bindir or find_bindir()
        self.opts = opts
        if not self.bindir:
            raise FileNotFoundError("PostgreSQL server binaries (package postgresql)")
        self.tmp = None
        self.user = None

    def _as_owner(self, argv):
        if os.geteuid() != 0:
            return argv
        pw = pwd.getpwnam("nobody")
        return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                "--clear-groups", "--"] + argv

    def _run(self, argv, timeout=120):
        env = dict(os.environ, LC_ALL="C", LANG="C")
        env.pop("PGDATA", None)
        r = subprocess.run(self._as_owner(argv), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout, env=env,
                           cwd=self.tmp)
        if r.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}):\n"
                               + r.stdout.decode(errors="replace"))
        return r.stdout.decode(errors="replace")

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix="smpgw-pg-")
        os.chmod(self.tmp, 0o755)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("nobody")
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.tmp, "data")
        self.sock = self.tmp
        try:
            self._run([os.path.join(self.bindir, "initdb"), "-D", self.data,
                       "-U", "smpgw", "--auth=trust", "--no-sync",
                       "--encoding=UTF8", "--no-locale"])
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start(self):
        """Starts the server (again, after stop())."""
        opts = (f"-c listen_addresses='' -c unix_socket_directories='{self.sock}'"
                " -c fsync=off -c max_connections=60 " + self.opts)
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                   "-l", os.path.join(self.tmp, "log"), "-o", opts,
                   "-w", "-t", "60", "start"])

    @classmethod
    def attached_or_skip(cls):
        """attached(), or the test is skipped (exit 77) when it does not run
        through pg_server.py (no SMPGW_TEST_PG / SMPGW_TEST_PG_DIR)."""
        pg = cls.attached() if os.environ.get("SMPGW_TEST_PG") else None
        if not pg:
            print("1..0 # SKIP needs SMPGW_TEST_PG and SMPGW_TEST_PG_DIR"
                  " (run through tests/pg/pg_server.py)")
            sys.exit(SKIP)
        return pg

    def started_at_end(self, run):
        """Has run (harness_common.Running) start this server again at the
        end if a test left it stopped."""
        run.defer(lambda: self.start() if not os.path.exists(
            os.path.join(self.data, "postmaster.pid")) else None)

    @classmethod
    def attached(cls):
        """The server pg_server.py started for this test (SMPGW_TEST_PG_DIR),
        to stop and start it (a database outage); None outside one."""
        tmp = os.environ.get("SMPGW_TEST_PG_DIR")
        if not tmp or not find_bindir():
            return None
        pg = cls()
        pg.tmp, pg.data, pg.sock = tmp, os.path.join(tmp, "data"), tmp
        return pg

    def log(self):
        try:
            with open(os.path.join(self.tmp, "log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def conninfo(self, db="postgres"):
        return f"host={self.sock} user=smpgw dbname={db} connect_timeout=10"

    def psql(self, sql, db="postgres"):
        """Runs SQL with psql (as the client: no privileges needed)."""
        return run_psql(self.conninfo(db), sql, os.path.join(self.bindir, "psql"))

    def create_db(self, name):
        self.psql(f'CREATE DATABASE "{name}"')
        return self.conninfo(name)

    def stop(self, mode="fast"):
        if self.tmp and os.path.isdir(os.path.join(self.data, "global")):
            try:
                self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                           "-m", mode, "-w", "-t", "60", "stop"])
            except (RuntimeError, subprocess.TimeoutExpired):
                pass

    def __exit__(self, *exc):
        self.stop("immediate")
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        return False


def main(argv):
    if len(argv) < 2:
        print(f"usage: {argv[0]} CMD [ARGS...]", file=sys.stderr)
        return 2
    if not find_bindir():
        print("1..0 # SKIP PostgreSQL server binaries not installed "
              "(Debian package postgresql)")
        return SKIP
    with PgServer() as pg:
        env = dict(os.environ, SMPGW_TEST_PG=pg.create_db("smpgw_test"),
                   SMPGW_TEST_PG_DIR=pg.tmp)
        deadline = time.monotonic() + 600
        p = subprocess.run(argv[1:], env=env, timeout=max(1, deadline - time.monotonic()))
        if p.returncode:
            sys.stderr.write(pg.log()[-4000:])
        return p.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
