"""``edgekit bench --host user@device[:port]``: the bench worker run on a remote device over the system ``ssh``.

Why the system client: it already honours ``~/.ssh/config`` (aliases, ``ProxyJump``, ``IdentityFile``), keys and
agents, and known_hosts, which a user's devices are set up for; edgekit adds only what makes a run safe and
scriptable: ``BatchMode=yes`` (never a password prompt, nothing stored), ``StrictHostKeyChecking=yes`` (or
``accept-new`` when asked) and ``ConnectTimeout``. On the device, a standard-library agent
(:mod:`edgekit.benchmark.remote_agent`) probes the install, unpacks what is sent into a temporary directory and
hashes it; the device's own edgekit then runs ``python -m edgekit.benchmark.worker``, exactly as a local row does.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import InputError, RemoteError, RuntimeUnavailableError, one_line

if TYPE_CHECKING:
    from edgekit.benchmark.plan import ModelPlan

DEVICE_INSTALL = "pip install 'edgekit[text]'"  # the torch-free device install (ONNX Runtime included)
PATH_KEYS = ("model", "feeds", "fidelity_feeds", "outputs_path", "cache_dir", "texts", "fidelity_texts")
Facts = dict[str, Any]
Placement = tuple[str, "Facts | None"]  # (target, the device's facts; None: this machine)
_AGENT = Path(__file__).with_name("remote_agent.py")
_MARKER = "EDGEKIT-AGENT "
_NAME = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
_HOST_RE = re.compile(rf"^(?:(?P<user>{_NAME})@)?(?P<host>{_NAME}|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?$")


@dataclass(frozen=True)
class RemoteHost:
    """A device as ``[user@]host[:port]`` (host may be an ``~/.ssh/config`` alias, or ``[ipv6]``)."""

    user: str | None
    host: str
    port: int | None

    @classmethod
    def parse(cls, text: str) -> RemoteHost:
        """Refuse anything ssh could read as an option or a second argument, so a host is only ever a host."""
        found = _HOST_RE.match(text.strip())
        port = int(found["port"]) if found and found["port"] else None
        if not found or (port is not None and not 0 < port < 65536):
            raise InputError(f"bad --host {text!r}; expected user@device or user@device:port, e.g. pi@10.0.0.7:22")
        return cls(found["user"], found["host"].strip("[]"), port)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")


@dataclass(frozen=True)
class SSHOptions:
    """How to reach the devices: the python there, a key, trust on first use, an ssh config, the connect timeout."""

    python: str = "python3"
    identity: Path | None = None
    accept_new_host_key: bool = False
    config: Path | None = None
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for what, path in (("--identity", self.identity), ("--ssh-config", self.config)):
            if path is not None and not Path(path).is_file():
                raise InputError(f"{what} {path} does not exist or is not a file")
        if not self.python.strip():
            raise InputError("--remote-python must name a python on the device")
        if self.connect_timeout_s <= 0:
            raise InputError(f"the connect timeout must be positive, got {self.connect_timeout_s}")


def parse_hosts(hosts: str | Sequence[str | RemoteHost] | None) -> list[RemoteHost]:
    """``--host`` values as :class:`RemoteHost`, each once, in order."""
    items = [hosts] if isinstance(hosts, str) else list(hosts or [])
    parsed = [h if isinstance(h, RemoteHost) else RemoteHost.parse(h) for h in items]
    return list(dict.fromkeys(parsed))


def ssh_command(host: RemoteHost, options: SSHOptions, remote_command: str) -> list[str]:
    """The ``ssh`` argv: batch mode, host keys checked, a connect timeout; the user's config decides the rest."""
    strict = "accept-new" if options.accept_new_host_key else "yes"
    argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={strict}",
            "-o", f"ConnectTimeout={max(1, round(options.connect_timeout_s))}", "-o", "LogLevel=ERROR",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]  # fmt: skip
    if options.config is not None:
        argv += ["-F", str(options.config)]
    if options.identity is not None:
        argv += ["-i", str(options.identity), "-o", "IdentitiesOnly=yes"]
    if host.port is not None:
        argv += ["-p", str(host.port)]
    return [*argv, "--", host.destination, remote_command]


def _shell_word(path: str) -> str:
    """A path for the remote shell, quoted, with a leading ``~/`` still meaning the remote home."""
    return '"$HOME"/' + shlex.quote(path[2:]) if path.startswith("~/") else shlex.quote(path)


def _agent_command(options: SSHOptions, *args: str) -> str:
    return " ".join([_shell_word(options.python), "-c", shlex.quote(_AGENT.read_text()), *map(shlex.quote, args)])


def _ssh(
    host: RemoteHost, options: SSHOptions, command: str, timeout_s: float, stdin: bytes | Path = b""
) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` on ``host``; an SSH failure (exit 255) or no answer in time is a :class:`RemoteError`."""
    argv = ssh_command(host, options, command)
    limit = timeout_s + options.connect_timeout_s
    try:
        if isinstance(stdin, Path):
            with stdin.open("rb") as f:
                proc = subprocess.run(argv, stdin=f, capture_output=True, timeout=limit)
        else:
            proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=limit)
    except FileNotFoundError as exc:
        raise RuntimeUnavailableError("--host needs the OpenSSH client here: apt-get install openssh-client") from exc
    except subprocess.TimeoutExpired as exc:
        raise RemoteError(f"{host} did not answer within {limit:g} s") from exc
    if proc.returncode == 255:
        raise RemoteError(ssh_failure(host, options, proc.stderr.decode(errors="replace")))
    return proc


def ssh_failure(host: RemoteHost, options: SSHOptions, stderr: str) -> str:
    """One line that says what went wrong and what to do, from what ``ssh`` printed."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    said = next((ln for ln in reversed(lines) if not ln.startswith("@")), "no message from ssh")
    text = " ".join(lines).lower()
    if "host key verification failed" in text or "host key for" in text or "no matching host key" in text:
        port = f" -p {host.port}" if host.port else ""
        return (
            f"{host}'s host key is not in known_hosts (or has changed): check it and add it (ssh-keyscan{port}"
            f" {host.host} >> ~/.ssh/known_hosts), or pass --accept-new-host-key to trust a new host once"
        )
    if "permission denied" in text or "too many authentication failures" in text:
        return (
            f"{host} refused the login ({said}): check the user, and pass --identity FILE with a key in its"
            " authorized_keys or load one into ssh-agent (edgekit never uses passwords)"
        )
    if "connection refused" in text:
        return f"cannot reach {host}: connection refused (is sshd running there, on that port?)"
    if "timed out" in text:
        return f"cannot reach {host}: no connection within {options.connect_timeout_s:g} s ({said})"
    return f"ssh to {host} failed: {said}"


def _agent_answer(host: RemoteHost, options: SSHOptions, proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """The agent's JSON line; a missing python or a failed agent is one line that says so."""
    for line in reversed(proc.stdout.decode(errors="replace").splitlines()):
        if line.startswith(_MARKER):
            return json.loads(line[len(_MARKER) :])
    tail = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
    if proc.returncode in (126, 127):
        raise RuntimeUnavailableError(f"no python at {options.python!r} on {host}: install python3 there, or pass"
                                      " --remote-python PATH")  # fmt: skip
    raise RemoteError(f"{host}: the edgekit agent failed (exit {proc.returncode}): {tail[-1] if tail else 'no output'}")


def probe(host: RemoteHost, options: SSHOptions) -> dict[str, Any]:
    """The device's python, edgekit, artifact format, machine and runtimes; :class:`RuntimeUnavailableError` if
    edgekit is not usable there, saying what to install."""
    facts = _agent_answer(host, options, _ssh(host, options, _agent_command(options, "probe"), timeout_s=180))
    version, python = facts.get("edgekit_version"), options.python
    if version is None:
        raise RuntimeUnavailableError(f"edgekit is not installed for {python} on {host}: install it there with"
                                      f" {DEVICE_INSTALL} (add ,openvino for OpenVINO), or pass --remote-python"
                                      " PATH to a python that has it")  # fmt: skip
    if facts.get("broken") or not facts.get("worker"):
        why = facts.get("broken") or "it has no edgekit.benchmark.worker"
        raise RuntimeUnavailableError(f"edgekit {version} on {host} cannot run the bench ({why}): upgrade it there"
                                      f" with {DEVICE_INSTALL.replace('pip install', 'pip install -U')}")  # fmt: skip
    return facts


def device_facts(host: RemoteHost, facts: Mapping[str, Any]) -> dict[str, Any]:
    """What a remote row carries: the host, its CPU and ISA flags, cores, system, python, libraries, edgekit."""
    return {"host": str(host), **facts.get("machine", {}), "edgekit_version": facts.get("edgekit_version")}


def check_formats(host: RemoteHost, facts: Mapping[str, Any], plans: Sequence[ModelPlan]) -> None:
    """Refuse, before anything is sent, an artifact newer than the device's edgekit can read."""
    readable = int(facts.get("format_version") or 0)
    for plan in plans:
        manifest = plan.ref.manifest
        if manifest is not None and manifest.format_version > readable:
            raise RuntimeUnavailableError(
                f"{plan.name} is artifact format {manifest.format_version}, but edgekit {facts['edgekit_version']}"
                f" on {host} reads format {readable} and older: upgrade it there with"
                f" {DEVICE_INSTALL.replace('pip install', 'pip install -U')}"
            )


def model_bytes_on(plan: ModelPlan, target: str, device: Facts | None) -> int:
    """The size of the file ``target`` loads where the row runs: a device lacking the CPU flags an artifact's
    variant was chosen for loads the base model instead (as its own ``variant_for`` decides), so its row must
    not show the variant's size."""
    from edgekit.benchmark.plan import onnx_file_bytes, target_model_bytes

    manifest = plan.ref.manifest
    if device is None or manifest is None or not plan.path.is_dir():
        return target_model_bytes(plan, target)
    chosen, needed = manifest.variants.get(target, manifest.model), manifest.variant_cpu_flags.get(target)
    if needed and not set(needed) & set(device.get("cpu_flags") or []):
        chosen = manifest.model
    return plan.model_bytes if chosen == manifest.model else onnx_file_bytes(plan.path / chosen)


def device_targets(host: RemoteHost, facts: Mapping[str, Any], wanted: Sequence[str] | None) -> list[str]:
    """The runtimes to time on ``host``: those named (each usable there), or every one usable there."""
    rows = {r["name"]: r for r in facts.get("targets", [])}
    if not wanted:
        found = [name for name, r in rows.items() if r.get("available")]
        if not found:
            raise RuntimeUnavailableError(f"no runtime is usable on {host}: install onnxruntime or openvino there")
        return found
    for name in wanted:
        row = rows.get(name)
        if row is None or not row.get("available"):
            how = (row or {}).get("note") or f"install it there with: {(row or {}).get('install') or 'pip install'}"
            raise RuntimeUnavailableError(f"runtime {name!r} is not usable on {host}: {how}")
    return list(dict.fromkeys(wanted))


@dataclass
class _Device:
    host: RemoteHost
    facts: dict[str, Any]
    root: str | None = None  # the temporary directory on the device, once something was sent
    paths: dict[str, str] = field(default_factory=dict)  # local path -> its copy on the device


class RemoteBench:
    """The devices of one bench run: probed, sent the models and inputs, asked to run workers, cleaned up."""

    def __init__(self, hosts: Sequence[RemoteHost], options: SSHOptions | None = None) -> None:
        self.options = options or SSHOptions()
        self.devices = {str(h): _Device(h, {}) for h in hosts}

    def __enter__(self) -> RemoteBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def placements(self, plans: Sequence[ModelPlan], wanted: Sequence[str] | None) -> list[Placement]:
        """Probe every device and check it can run every model; ``(target, device facts)`` for each remote row."""
        out: list[Placement] = []
        for device in self.devices.values():
            device.facts = probe(device.host, self.options)
            check_formats(device.host, device.facts, plans)
            facts = device_facts(device.host, device.facts)
            out += [(t, facts) for t in device_targets(device.host, device.facts, wanted)]
        return out

    def upload(self, plans: Sequence[ModelPlan], work: Path) -> None:
        """Send every model and the run's inputs to every device, and check each file's sha256 on arrival."""
        from edgekit.artifact import sha256_of

        if not self.devices:
            return
        files = {**_model_files(plans), **{f"work/{p.name}": p for p in sorted(work.iterdir()) if p.is_file()}}
        sent = {arc: sha256_of(path) for arc, path in files.items()}
        with tempfile.TemporaryDirectory(prefix="edgekit-send-") as tmp:
            bundle = Path(tmp) / "send.tar"
            with tarfile.open(bundle, "w") as tar:
                for arc, path in files.items():
                    tar.add(str(path), arcname=arc, recursive=False)
            for device in self.devices.values():
                self._send(device, bundle, sent)
                device.paths = {str(p.path): f"{device.root}/m{i}/{p.path.name}" for i, p in enumerate(plans)}
                device.paths[str(work)] = f"{device.root}/work"

    def _send(self, device: _Device, bundle: Path, sent: Mapping[str, str]) -> None:
        timeout = 120 + bundle.stat().st_size / 1e6  # at least 1 MB/s
        proc = _ssh(device.host, self.options, _agent_command(self.options, "unpack"), timeout, stdin=bundle)
        answer = _agent_answer(device.host, self.options, proc)
        device.root = answer["dir"]
        arrived = answer.get("sha256", {})
        for arc, digest in sent.items():
            if arrived.get(arc) != digest:
                raise RemoteError(f"{arc} arrived on {device.host} with sha256 {arrived.get(arc)}, but {digest} was"
                                  " sent: the copy is corrupt")  # fmt: skip

    def run_worker(self, request: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        """One worker process on the device the request's ``host`` names; a lost connection fails that row only."""
        device = self.devices[request["host"]]
        remote = {k: _on_device(device, v) if k in PATH_KEYS else v for k, v in request.items() if k != "host"}
        dirs = [remote["cache_dir"]] if remote.get("cache_dir") else []
        dirs += [str(Path(remote["outputs_path"]).parent)] if remote.get("outputs_path") else []
        prepare = f"mkdir -p -- {' '.join(map(shlex.quote, dirs))} && " if dirs else ""
        command = f"{prepare}exec {_shell_word(self.options.python)} -m edgekit.benchmark.worker"
        try:
            proc = _ssh(device.host, self.options, command, timeout_s, stdin=json.dumps(remote).encode())
            answer = _worker_answer(proc)
            if answer.get("ok") and request.get("outputs_path"):
                fetched = _ssh(device.host, self.options, f"cat -- {shlex.quote(remote['outputs_path'])}", timeout_s)
                Path(request["outputs_path"]).write_bytes(fetched.stdout)
        except RemoteError as exc:
            return {"ok": False, "pid": None, "stage": "ssh", "error": one_line(exc, typed=False)}
        return answer

    def close(self) -> None:
        """Remove what was sent from every device (best effort: an unreachable device keeps it in its temp dir)."""
        for device in self.devices.values():
            if device.root is None:
                continue
            with contextlib.suppress(RemoteError):
                _ssh(device.host, self.options, _agent_command(self.options, "remove", device.root), timeout_s=60)
            device.root = None


def _on_device(device: _Device, value: Any) -> Any:
    """A local path in a worker request, as the path of its copy on the device."""
    if not isinstance(value, str):
        return value
    for local, remote in device.paths.items():
        if value == local or value.startswith(local + "/"):
            return remote + value[len(local) :]
    return value


def _worker_answer(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """The worker's JSON line, or why there is none (as :func:`edgekit.benchmark.runner.run_worker` says it)."""
    lines = [ln for ln in proc.stdout.decode(errors="replace").splitlines() if ln.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        why = tail[-1][:300] if tail else "no output"
        return {"ok": False, "pid": None, "error": f"remote worker exited with code {proc.returncode}: {why}"}


def _model_files(plans: Sequence[ModelPlan]) -> dict[str, Path]:
    """Every file each model needs, by its name in the bundle: an artifact's manifest and hashed files, or a bare
    ONNX file and its external data."""
    from edgekit.artifact import MANIFEST_NAME
    from edgekit.onnxfile import external_data_of

    files: dict[str, Path] = {}
    for i, plan in enumerate(plans):
        base, manifest = f"m{i}/{plan.path.name}", plan.ref.manifest
        if manifest is not None and plan.path.is_dir():
            files[f"{base}/{MANIFEST_NAME}"] = plan.path / MANIFEST_NAME
            files.update({f"{base}/{rel}": plan.path / rel for rel in manifest.files})
        else:
            files[base] = plan.path
            files.update({f"m{i}/{p.relative_to(plan.path.parent).as_posix()}": p for p in external_data_of(plan.path)})
    return files


def describe_remote_targets(hosts: Sequence[str | RemoteHost], options: SSHOptions | None = None) -> list[Facts]:
    """For ``edgekit targets --host``: per device, its edgekit, python, machine and every runtime it knows."""
    options = options or SSHOptions()
    out = []
    for host in parse_hosts(list(hosts)):
        facts = probe(host, options)
        out.append({"host": str(host), "edgekit_version": facts["edgekit_version"], "python": facts["python"],
                    "machine": facts.get("machine", {}), "targets": facts.get("targets", [])})  # fmt: skip
    return out
