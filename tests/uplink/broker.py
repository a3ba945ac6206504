"""A real Mosquitto broker for the uplink tests: TLS, passwords, per-vehicle ACLs, persistence.

Field notes we rely on: listeners open one after another (wait for every port), a SIGTERM right
after start-up is sometimes ignored (wait 0.2 s, then SIGTERM, then SIGKILL after 5 s), and
`autosave_on_changes` + `autosave_interval 1` keep queued messages across a restart.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from vehicle_agent.uplink.topics import mosquitto_acl

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"

OPERATOR = "operator"
"""A user that may read and write all of `fleet/#` (the fleet console, test subscribers)."""


def have_mosquitto() -> bool:
    return Path(MOSQUITTO).is_file() and Path(MOSQUITTO_PASSWD).is_file()


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports: every socket is held open until all are picked, so the
    kernel cannot hand out the same port twice (asked one at a time, it sometimes does)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Certs:
    """A test CA and the certificates it signed (EC keys: fast to make)."""

    ca: Path
    server_cert: Path
    server_key: Path
    impostor_cert: Path
    """Signed by the same CA, but for `impostor.invalid`: a name check must refuse it."""
    impostor_key: Path
    client_cert: Path
    """A client certificate whose CN is `client_cn` (the broker uses it as the username)."""
    client_key: Path
    client_cn: str

    @classmethod
    def make(cls, directory: Path, client_cn: str = "veh-cert") -> Certs:
        directory.mkdir(parents=True, exist_ok=True)
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        _openssl(
            "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=vehicle-agent test CA", cwd=directory,
        )  # fmt: skip

        def leaf(name: str, cn: str, ext: str) -> None:
            (directory / f"{name}.ext").write_text(ext)
            _openssl(
                "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
                cwd=directory,
            )  # fmt: skip
            _openssl(
                "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
                cwd=directory,
            )  # fmt: skip

        leaf("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        leaf("impostor", "impostor.invalid", "subjectAltName=DNS:impostor.invalid\n")
        leaf("client", client_cn, "extendedKeyUsage=clientAuth\n")
        return cls(
            ca=directory / "ca.crt",
            server_cert=directory / "server.crt",
            server_key=directory / "server.key",
            impostor_cert=directory / "impostor.crt",
            impostor_key=directory / "impostor.key",
            client_cert=directory / "client.crt",
            client_key=directory / "client.key",
            client_cn=client_cn,
        )


class _PortTakenError(RuntimeError):
    """Mosquitto could not bind a listener port: another process took it after it was picked."""


class Broker:
    """Mosquitto on four loopback listeners, restartable on the same ports with its data.

    - `plain`: MQTT over TCP, username/password;
    - `tls`: TLS with a certificate for localhost/127.0.0.1, username/password;
    - `impostor`: TLS with a CA-signed certificate for another name;
    - `mtls`: TLS that requires a client certificate and takes its CN as the username.

    ACL: `vehicle_agent.uplink.topics.mosquitto_acl` (each user its own `fleet/<username>/…`, its
    cameras' topics written, commands and updates read); `operator` all of `fleet/#`.
    """

    def __init__(self, directory: Path, certs: Certs, users: dict[str, str]) -> None:
        self.directory = directory
        self.certs = certs
        self.users = users
        self.ports = self._pick_ports()
        self.started_once = False
        self.log = directory / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        self._write_config()

    @staticmethod
    def _pick_ports() -> dict[str, int]:
        return dict(zip(("plain", "tls", "impostor", "mtls"), free_ports(4), strict=True))

    def url(self, listener: str = "tls") -> str:
        scheme = "mqtt" if listener == "plain" else "mqtts"
        return f"{scheme}://127.0.0.1:{self.ports[listener]}"

    def _write_config(self) -> None:
        passwd = self.directory / "passwd"
        for i, (user, password) in enumerate(self.users.items()):
            create = ["-c"] if i == 0 else []
            subprocess.run(
                [MOSQUITTO_PASSWD, "-b", *create, str(passwd), user, password],
                check=True,
                capture_output=True,
            )
        acl = self.directory / "acl"
        # The ACL docs/mqtt.md gives: each vehicle (username) its own subtree, by direction; and
        # Home Assistant discovery: each vehicle writes its own node (docs/mqtt.md).
        acl.write_text(
            f"{mosquitto_acl('fleet')}\npattern write homeassistant/+/%u/#\n\n"
            f"user {OPERATOR}\ntopic readwrite fleet/#\ntopic readwrite homeassistant/#\n"
        )
        c = self.certs
        tls = f"cafile {c.ca}\ntls_version tlsv1.2\n"
        (self.directory / "mosquitto.conf").write_text(
            f"""
user {getpass.getuser()}
per_listener_settings false
allow_anonymous false
password_file {passwd}
acl_file {acl}
persistence true
persistence_location {self.directory / "data"}/
autosave_interval 1
autosave_on_changes true
log_dest file {self.log}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp true

listener {self.ports["plain"]} 127.0.0.1

listener {self.ports["tls"]} 127.0.0.1
{tls}certfile {c.server_cert}
keyfile {c.server_key}

listener {self.ports["impostor"]} 127.0.0.1
{tls}certfile {c.impostor_cert}
keyfile {c.impostor_key}

listener {self.ports["mtls"]} 127.0.0.1
{tls}certfile {c.server_cert}
keyfile {c.server_key}
require_certificate true
use_identity_as_username true
"""
        )

    def start(self, timeout: float = 10.0, attempts: int = 3) -> None:
        """Start and wait for every listener. On the first start only, a port that another process
        took between picking and binding is picked again (a restart keeps its ports)."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
            except _PortTakenError:
                if self.started_once or attempt == attempts:
                    raise
                self.ports = self._pick_ports()
                self._write_config()
            else:
                self.started_once = True
                return

    def _start_once(self, timeout: float) -> None:
        assert self.process is None, "broker already running"
        log_start = self.log.stat().st_size if self.log.exists() else 0
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.directory / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        pending = set(self.ports.values())
        while pending:
            if self.process.poll() is not None:
                process, self.process = self.process, None
                err = ""
                if process.stderr:
                    err = process.stderr.read().decode(errors="replace")
                    process.stderr.close()
                log = self.log_text(since=log_start)
                message = f"mosquitto exited at start-up: {err} {log}"
                if "Address already in use" in message:
                    raise _PortTakenError(message)
                raise RuntimeError(message)
            for port in list(pending):
                with socket.socket() as s:
                    s.settimeout(0.2)
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        pending.discard(port)
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not open ports {sorted(pending)}")
            time.sleep(0.01)
        time.sleep(0.2)  # a SIGTERM right after start-up is sometimes ignored

    def stop(self) -> None:
        """SIGTERM (the broker saves its data), SIGKILL after 5 s."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self, since: int = 0) -> str:
        """The broker's log from byte `since` on."""
        if not self.log.exists():
            return ""
        return self.log.read_bytes()[since:].decode(errors="replace")


def password_env(user: str, password: str, credential: str = "mqtt-password") -> dict[str, str]:
    """The environment that `read_secret(credential)` resolves to `password`."""
    from vehicle_agent.secrets import env_name  # noqa: PLC0415

    return {**os.environ, env_name(credential): password}
