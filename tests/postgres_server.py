"""A real PostgreSQL server for tests: Debian's ``initdb`` and ``pg_ctl`` in a temporary folder.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user
that Debian's package creates.  It listens on a free port of 127.0.0.1 (and a socket in
its own folder, never the system's), trusts local connections, skips ``fsync``, and is
stopped and its folder removed by `stop`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.proxies import free_port


def _find_bin() -> Path | None:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "initdb").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


#: The folder of ``initdb``, ``pg_ctl`` and ``postgres``, or ``None`` when not installed.
POSTGRES_BIN = _find_bin()


class PostgresServer:
    """One PostgreSQL cluster of its own, on ``port`` of 127.0.0.1."""

    def __init__(self) -> None:
        if POSTGRES_BIN is None:
            raise RuntimeError("PostgreSQL is not installed")
        self.bin = POSTGRES_BIN
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="gateway-postgres-"))
        self.data = self.folder / "data"
        self._user = "postgres" if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        """The ``postgresql://`` URL of ``database`` (no password: local trust)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        """Make the cluster and start the server; return once it accepts connections."""
        if self._user is not None:
            account = pwd.getpwnam(self._user)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        return self

    def create_database(self, name: str) -> str:
        """Create the empty database ``name``; return its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")
