"""``edgekit targets``: every runtime edgekit knows, available or not, and what to install for the missing ones;
with ``--host``, those of a remote device (asked over SSH of the device's own edgekit)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from edgekit.cli._common import out, print_json
from edgekit.cli._remote import AcceptNew, ConnectTimeout, Hosts, Identity, RemotePython, SSHConfig, ssh_options


def targets_command(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    host: Hosts = [],  # noqa: B006
    remote_python: RemotePython = "python3",
    identity: Identity = None,
    accept_new_host_key: AcceptNew = False,
    ssh_config: SSHConfig = None,
    connect_timeout: ConnectTimeout = 10.0,
) -> None:
    """List every runtime, available or not, with version, devices and what to install (here, or on --host)."""
    from edgekit.runtimes import describe_targets

    if host:
        _remote_targets(host, ssh_options(remote_python, identity, accept_new_host_key, ssh_config, connect_timeout),
                        json_out)  # fmt: skip
        return
    rows = describe_targets()
    if json_out:
        print_json(rows)
        return
    _print_targets(rows)


def _remote_targets(hosts: list[str], ssh: Any, json_out: bool) -> None:
    """Per device: one table of its runtimes, titled with its CPU and edgekit (JSON: one object per device)."""
    from edgekit.benchmark.remote import describe_remote_targets

    devices = describe_remote_targets(hosts, ssh)
    if json_out:
        print_json(devices)
        return
    for d in devices:
        cpu = d["machine"].get("cpu_model", "?")
        _print_targets(d["targets"], f"edgekit targets on {d['host']} · {cpu} · edgekit {d['edgekit_version']}")


def _print_targets(rows: list[dict[str, Any]], title: str = "edgekit targets") -> None:
    table = Table(title=escape(title))
    for col in ("target", "available", "version", "devices", "install / note"):
        table.add_column(col)
    for r in rows:
        note = r["note"] if r["available"] else (r["note"] or r["install"])
        cells = (r["name"], "yes" if r["available"] else "no", r["version"] or "-", ", ".join(r["devices"]), note)
        table.add_row(*map(escape, cells))
    out.print(table)
