"""``edgekit bench --host`` and ``edgekit targets --host`` against a real OpenSSH server started here.

The server listens on 127.0.0.1 only, on a free port, with a host key and a client key pair generated for the test
and a known_hosts file the test writes; no other address is ever contacted (the unreachable host is a closed port
on 127.0.0.1). The device's python is this one with this checkout on its path, behind a wrapper that records
``$$`` and ``$SSH_CONNECTION`` before it ``exec``s python: the worker's own pid, proof it was started over SSH.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.benchmark.remote import RemoteHost, SSHOptions, ssh_command, ssh_failure
from edgekit.cli import app
from edgekit.errors import InputError

CHECKOUT = Path(__file__).resolve().parents[1]
QUICK = ["--iterations", "3", "--duration", "0", "--warmup", "0"]
SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if Path(p).is_file()), None)
NEEDS_SSH = pytest.mark.skipif(
    SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
    reason="needs the OpenSSH server and client (apt-get install -y openssh-server openssh-client; .ci/run does)",
)


@dataclass
class Device:
    """The test's sshd and what a client needs for it."""

    port: int
    host: str  # user@127.0.0.1:PORT
    key: Path
    wrong_key: Path
    config: Path  # an ssh config naming the test's known_hosts
    python: Path  # the device's python: this one, with this checkout, logging its pid
    pid_log: Path
    bare_python: Path  # a python without edgekit
    root: Path

    def args(self, *, python: Path | None = None, key: Path | None = None) -> list[str]:
        return ["--host", self.host, "--remote-python", str(python or self.python), "--identity", str(key or self.key),
                "--ssh-config", str(self.config)]  # fmt: skip

    def ssh_pids(self) -> dict[int, str]:
        """pid -> SSH_CONNECTION of every python started on the device."""
        lines = [ln.split(" ", 1) for ln in self.pid_log.read_text().splitlines() if ln.strip()]
        return {int(p[0]): (p[1] if len(p) > 1 else "") for p in lines}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-test", "-f", str(path)], check=True)
    return path


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _wait_listening(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}: {log.read_text()[-500:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"sshd did not listen on 127.0.0.1:{port}: {log.read_text()[-500:]}")


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    """A real sshd on 127.0.0.1:<free port>, key auth only, for this module's tests."""
    if SSHD is None:
        pytest.skip("needs the OpenSSH server")
    root = tmp_path_factory.mktemp("sshd")
    if os.geteuid() == 0:  # sshd as root needs its privilege-separation directory (the ssh service makes it)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key, key, wrong = _keygen(root / "host_key"), _keygen(root / "client_key"), _keygen(root / "wrong_key")
    (root / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nStrictModes no\nUsePAM no\nPidFile none\nAllowTcpForwarding no\n"
        "X11Forwarding no\nPermitUserEnvironment no\n"
    )
    known = root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {' '.join(Path(f'{host_key}.pub').read_text().split()[:2])}\n")
    client = root / "ssh_config"
    client.write_text(f"Host *\n  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n")
    pid_log = root / "pids.log"
    pid_log.write_text("")
    python = _script(root / "python", f'echo "$$ $SSH_CONNECTION" >> {pid_log}\n'
                                      f'PYTHONPATH={CHECKOUT} exec {sys.executable} "$@"\n')  # fmt: skip
    bare = _script(root / "bare-python", f'exec {sys.executable} -S -E "$@"\n')
    log = root / "sshd.log"
    with log.open("w") as err:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config), "-p", str(port), "-h", str(host_key)],
                                stdout=err, stderr=err)  # fmt: skip
    try:
        _wait_listening(proc, port, log)
        yield Device(port, f"{getpass.getuser()}@127.0.0.1:{port}", key, wrong, client, python, pid_log, bare, root)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    from conftest import make_mlp_onnx

    return make_mlp_onnx(tmp_path / "mlp.onnx").path


def _remote_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("edgekit-remote-*")}


def _one_line_error(result, code: int, needle: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


# --- done when: a row timed by a worker started through SSH, next to a local row, in one report ----------------


@NEEDS_SSH
@pytest.mark.slow
def test_bench_host_times_a_worker_started_over_ssh_next_to_a_local_row(device, mlp, tmp_path):
    import edgekit

    artifact = tmp_path / "art"
    edgekit.convert(mlp, artifact)  # an artifact: its edgekit.json and hashed files travel, checked on arrival
    before = _remote_dirs()
    out = tmp_path / "r.json"
    args = ["bench", str(artifact), "--target", "onnxruntime", *QUICK, "--rounds", "2", *device.args()]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert f"onnxruntime@{device.host}" in result.stdout and f"device {device.host}:" in result.stdout
    report = json.loads(out.read_text())
    local, remote = report["results"]
    assert (local["target"], local["host"]) == ("onnxruntime", None)
    assert (remote["target"], remote["host"]) == ("onnxruntime", device.host)
    assert remote["status"] == "ok" and remote["latency_ms"]["n"] >= 6 and remote["fidelity"]["passed"]
    remote_pids = {r["pid"] for r in remote["rounds"]}
    local_pids = {r["pid"] for r in local["rounds"]} | {report["parent_pid"], os.getpid()}
    assert len(remote_pids) == 2 and not remote_pids & local_pids  # a fresh remote process per round
    started = device.ssh_pids()
    for pid in remote_pids:  # the worker is the process the wrapper exec'd, in an SSH session to the test's sshd
        assert pid in started and started[pid].endswith(f"127.0.0.1 {device.port}"), (pid, started)
    assert not local_pids & set(started)
    from edgekit.cpu import cpu_model, numeric_cpu_flags

    facts = remote["remote"]  # the device's own facts (here the device is this machine)
    assert facts["cpu_model"] == cpu_model() and facts["cpu_flags"] == numeric_cpu_flags()
    assert facts["edgekit_version"] and "onnxruntime" in facts["libraries"]
    assert remote["session"]["precision"] == "fp32" and remote["session"]["backend_version"]
    assert remote["speedup"] is None
    assert _remote_dirs() == before  # the device's temporary directory is gone


@NEEDS_SSH
def test_targets_host_lists_the_device_runtimes(device):
    result = CliRunner().invoke(app, ["targets", "--json", *device.args()])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    [found] = json.loads(result.stdout)
    assert found["host"] == device.host and found["edgekit_version"]
    assert {t["name"]: t["available"] for t in found["targets"]}["onnxruntime"] is True
    table = CliRunner().invoke(app, ["targets", *device.args()])
    assert table.exit_code == 0 and f"edgekit targets on {device.host}" in table.stdout


# --- bad input: one line, exit 2, before anything is measured ----------------------------------------------------


@NEEDS_SSH
@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("closed port", "connection refused"),
        ("refused key", "refused the login"),
        ("no edgekit", "edgekit is not installed"),
        ("no python", "no python at"),
        ("unknown host key", "host key is not in known_hosts"),
    ],
)
def test_bad_device_is_one_line_and_exit_2(device, mlp, tmp_path, case, needle):
    args = device.args(key=device.wrong_key if case == "refused key" else None,
                       python=device.bare_python if case == "no edgekit" else None)  # fmt: skip
    if case == "closed port":
        args[1] = f"{getpass.getuser()}@127.0.0.1:{_free_port()}"
    elif case == "no python":
        args[3] = str(tmp_path / "nowhere" / "python3")
    elif case == "unknown host key":
        (tmp_path / "empty_known_hosts").write_text("")
        args[7] = str(tmp_path / "ssh_config")
        (tmp_path / "ssh_config").write_text(
            f"Host *\n  UserKnownHostsFile {tmp_path / 'empty_known_hosts'}\n  GlobalKnownHostsFile /dev/null\n"
        )
    result = CliRunner().invoke(app, ["bench", str(mlp), "--target", "onnxruntime", *QUICK, *args])
    _one_line_error(result, 2, needle)
    if case == "no edgekit":
        assert "pip install 'edgekit[text]'" in result.stderr


@NEEDS_SSH
def test_a_silent_device_times_out_cleanly(device, mlp):
    """A port on 127.0.0.1 that accepts the connection and never speaks: ConnectTimeout ends it, exit 2."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        args = device.args()
        args[1] = f"{getpass.getuser()}@127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        result = CliRunner().invoke(app, ["targets", *args, "--connect-timeout", "1"])
        assert time.monotonic() - start < 30
    _one_line_error(result, 2, "no connection within 1 s")


@NEEDS_SSH
def test_accept_new_host_key_trusts_on_first_use_and_records_it(device, tmp_path):
    known = tmp_path / "known_hosts"
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n")
    args = device.args()
    args[7] = str(config)
    result = CliRunner().invoke(app, ["targets", "--json", *args, "--accept-new-host-key"])
    assert result.exit_code == 0, result.stderr
    assert f"[127.0.0.1]:{device.port}" in known.read_text()


@NEEDS_SSH
@pytest.mark.slow
def test_a_device_that_fails_mid_run_fails_its_row_only(device, mlp, tmp_path):
    """The device answered the probe, then its worker died: that row fails (exit 1) and the local row is kept."""
    flaky = _script(tmp_path / "flaky-python",
                    f'case "$1 $2" in "-m edgekit.benchmark.worker") echo "worker killed" >&2; exit 9;; esac\n'
                    f'PYTHONPATH={CHECKOUT} exec {sys.executable} "$@"\n')  # fmt: skip
    out = tmp_path / "r.json"
    args = ["bench", str(mlp), "--target", "onnxruntime", *QUICK, "--rounds", "1", *device.args(python=flaky)]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "worker killed" in errors[0] and "Traceback" not in result.stderr
    local, remote = json.loads(out.read_text())["results"]
    assert local["status"] == "ok" and remote["status"] == "failed" and "exited with code 9" in remote["error"]


# --- no server needed ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("pi@10.0.0.7", RemoteHost("pi", "10.0.0.7", None)),
        ("root@127.0.0.1:2222", RemoteHost("root", "127.0.0.1", 2222)),
        ("jetson", RemoteHost(None, "jetson", None)),
        ("me@[::1]:22", RemoteHost("me", "::1", 22)),
    ],
)
def test_host_specs_parse(text, parsed):
    assert RemoteHost.parse(text) == parsed
    assert str(parsed) == text


@pytest.mark.parametrize("text", ["-oProxyCommand=sh", "a b", "root@host:0", "root@host:99999", "@host", "x@-y", ""])
def test_a_host_spec_is_only_ever_a_host(text):
    with pytest.raises(InputError, match="bad --host"):
        RemoteHost.parse(text)


def test_ssh_is_batch_mode_with_host_keys_checked_and_a_timeout(tmp_path):
    key = tmp_path / "k"
    key.write_text("")
    argv = ssh_command(RemoteHost("u", "h", 2200), SSHOptions(identity=key, connect_timeout_s=3), "true")
    assert argv[-3:] == ["--", "u@h", "true"]
    for opt in ("BatchMode=yes", "StrictHostKeyChecking=yes", "ConnectTimeout=3", "IdentitiesOnly=yes"):
        assert opt in argv
    assert argv[argv.index("-p") + 1] == "2200" and argv[argv.index("-i") + 1] == str(key)
    tofu = ssh_command(RemoteHost(None, "h", None), SSHOptions(accept_new_host_key=True), "true")
    assert "StrictHostKeyChecking=accept-new" in tofu and "-p" not in tofu and "-i" not in tofu
    with pytest.raises(InputError, match="--identity"):
        SSHOptions(identity=tmp_path / "missing")


def test_ssh_failures_say_what_to_do():
    host, options = RemoteHost("u", "h", 22), SSHOptions()
    assert "--accept-new-host-key" in ssh_failure(host, options, "Host key verification failed.\n")
    assert "--identity" in ssh_failure(host, options, "u@h: Permission denied (publickey).\n")
    timed_out = ssh_failure(host, options, "ssh: connect to host h port 22: Connection timed out")
    assert "no connection within 10 s" in timed_out


def test_the_agent_refuses_a_tar_member_outside_its_directory(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    agent = CHECKOUT / "edgekit" / "benchmark" / "remote_agent.py"
    before = _remote_dirs()
    proc = subprocess.run([sys.executable, str(agent), "unpack"], input=buf.getvalue(), capture_output=True)
    assert proc.returncode != 0 and b"refusing tar member" in proc.stderr
    assert _remote_dirs() == before  # nothing left behind


def test_a_file_that_arrives_corrupt_is_refused_and_removed(tmp_path, monkeypatch, mlp):
    """The agent's sha256 of what arrived must match what was sent, file by file; the device copy is then removed."""
    from types import SimpleNamespace

    from edgekit.benchmark import remote
    from edgekit.errors import RemoteError

    calls: list[str] = []

    def fake_ssh(host, options, command, timeout_s, stdin=b""):
        calls.append(command)
        return SimpleNamespace(returncode=0, stdout=b"", stderr=b"")

    def fake_answer(host, options, proc):
        return {"dir": "/tmp/edgekit-remote-x", "sha256": {"m0/mlp.onnx": "0" * 64}}

    monkeypatch.setattr(remote, "_ssh", fake_ssh)
    monkeypatch.setattr(remote, "_agent_answer", fake_answer)
    work = tmp_path / "work"
    work.mkdir()
    plan = SimpleNamespace(path=mlp, name="mlp", ref=SimpleNamespace(manifest=None))
    bench = remote.RemoteBench([RemoteHost("u", "127.0.0.1", 1)])
    with pytest.raises(RemoteError, match=re.escape("m0/mlp.onnx arrived on u@127.0.0.1:1 with sha256 0000")), bench:
        bench.upload([plan], work)
    assert "unpack" in calls[0] and "remove" in calls[-1] and "/tmp/edgekit-remote-x" in calls[-1]


def test_an_artifact_newer_than_the_device_reads_is_refused():
    from types import SimpleNamespace

    from edgekit.benchmark.remote import check_formats
    from edgekit.errors import RuntimeUnavailableError

    plan = SimpleNamespace(name="art", ref=SimpleNamespace(manifest=SimpleNamespace(format_version=2)))
    facts = {"format_version": 1, "edgekit_version": "0.1.0"}
    why = "art is artifact format 2, but edgekit 0.1.0 on u@h reads format 1"
    with pytest.raises(RuntimeUnavailableError, match=re.escape(why)):
        check_formats(RemoteHost("u", "h", None), facts, [plan])
    check_formats(RemoteHost("u", "h", None), {**facts, "format_version": 2}, [plan])


def test_a_remote_row_shows_the_size_of_the_file_the_device_loads(tmp_path):
    """An INT8 variant chosen for VNNI is loaded only where the CPU has it: elsewhere the row is the base model's."""
    from types import SimpleNamespace

    from conftest import make_mlp_onnx

    from edgekit.benchmark.remote import model_bytes_on

    base, small = make_mlp_onnx(tmp_path / "model.onnx").path, tmp_path / "model.int8.onnx"
    small.write_bytes(base.read_bytes())  # a variant file of its own
    manifest = SimpleNamespace(model="model.onnx", variants={"onnxruntime": "model.int8.onnx"},
                               variant_cpu_flags={"onnxruntime": ["avx512_vnni"]})  # fmt: skip
    plan = SimpleNamespace(path=tmp_path, model_bytes=10**9, ref=SimpleNamespace(manifest=manifest))
    assert model_bytes_on(plan, "onnxruntime", {"cpu_flags": ["neon"]}) == 10**9  # the base model
    assert model_bytes_on(plan, "onnxruntime", {"cpu_flags": ["avx2", "avx512_vnni"]}) == small.stat().st_size
