"""A real IMAP server for tests: Debian's Dovecot on a free loopback port, throwaway everything.

Each server gets its own directory with a config, a passdb file (one user, plain password), a
Maildir and Dovecot's runtime files; ``stop()`` shuts it down and the directory goes with the
test's tmp_path. Tests that need it skip, with the reason, where ``/usr/sbin/dovecot`` is absent
(``apt-get install dovecot-imapd``; ``.ci/run`` installs it on CI).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DOVECOT = "/usr/sbin/dovecot"

_CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = plixo-test-{port}
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{root}/home/%n/Maildir
default_login_user = {login_user}
default_internal_user = {internal_user}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def available() -> str | None:
    """None when Dovecot can run here, else the reason a test skips."""
    if not Path(DOVECOT).exists():
        return f"{DOVECOT} is absent (apt-get install dovecot-imapd)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _users() -> tuple[int, int, str, str]:
    """Mail uid/gid and the login/internal users: Dovecot's own when run as root, else ours."""
    if os.getuid() == 0:
        try:
            mail = pwd.getpwnam("dovecot")
            return mail.pw_uid, mail.pw_gid, "dovenull", "dovecot"
        except KeyError:
            pass
    me = pwd.getpwuid(os.getuid())
    return me.pw_uid, me.pw_gid, me.pw_name, me.pw_name


@dataclass
class Dovecot:
    root: Path
    port: int
    username: str
    password: str

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    def stop(self) -> None:
        subprocess.run([DOVECOT, "-c", str(self.config), "stop"], check=False, timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text() if path.exists() else ""


def start_dovecot(username: str = "ar@acme.test", password: str = "s3cret") -> Dovecot:
    """Start Dovecot in a fresh directory and wait until it accepts IMAP connections.

    The directory is made with ``tempfile`` and opened to other users (0755) because Dovecot's
    auth and mail processes run as its own users and must reach the passdb and the Maildir;
    ``stop()`` removes it.
    """
    root = Path(tempfile.mkdtemp(prefix="plixo-dovecot-"))
    root.chmod(0o755)
    for sub in ("run", "state", "home"):
        (root / sub).mkdir(exist_ok=True)
    uid, gid, login_user, internal_user = _users()
    if os.getuid() == 0:
        shutil.chown(root / "home", uid, gid)
    port = _free_port()
    (root / "passwd").write_text(f"{username}:{{PLAIN}}{password}\n")
    (root / "dovecot.conf").write_text(
        _CONFIG.format(
            root=root,
            port=port,
            uid=uid,
            gid=gid,
            login_user=login_user,
            internal_user=internal_user,
        )
    )
    server = Dovecot(root=root, port=port, username=username, password=password)
    subprocess.run([DOVECOT, "-c", str(server.config)], check=True, timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                if conn.recv(64).startswith(b"* OK"):
                    return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"Dovecot did not start on port {port}:\n{server.log()}")
