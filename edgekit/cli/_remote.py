"""The ``--host`` options that ``edgekit bench`` and ``edgekit targets`` share, and the :class:`SSHOptions` they make.

ssh itself decides everything else (``~/.ssh/config``, keys, ssh-agent, known_hosts): these only add to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from edgekit.benchmark.remote import SSHOptions

_HELP = {
    "host": "A device to use over SSH, user@device[:port] or an ~/.ssh/config alias (repeatable); it needs a python"
    " with edgekit installed (its text extra for text models).",
    "remote_python": "The python on the device that has edgekit (a ~/ path is the device's home).",
    "identity": "Private key for the devices (ssh -i, IdentitiesOnly); default: ~/.ssh/config, ssh-agent, ~/.ssh/id_*.",
    "accept_new": "Trust a device's host key on first use and record it (StrictHostKeyChecking=accept-new);"
    " a changed key is still refused.",
    "ssh_config": "ssh config file to use instead of ~/.ssh/config (ssh -F).",
    "connect_timeout": "Seconds to wait for each SSH connection.",
}

Hosts = Annotated[list[str], typer.Option("--host", help=_HELP["host"])]
RemotePython = Annotated[str, typer.Option("--remote-python", help=_HELP["remote_python"])]
Identity = Annotated[Path | None, typer.Option("--identity", help=_HELP["identity"])]
AcceptNew = Annotated[bool, typer.Option("--accept-new-host-key", help=_HELP["accept_new"])]
SSHConfig = Annotated[Path | None, typer.Option("--ssh-config", help=_HELP["ssh_config"])]
ConnectTimeout = Annotated[float, typer.Option("--connect-timeout", help=_HELP["connect_timeout"])]


def ssh_options(
    remote_python: str, identity: Path | None, accept_new: bool, config: Path | None, connect_timeout: float
) -> SSHOptions:
    """The options as the library takes them (checked there: a missing key file is exit 2)."""
    from edgekit.benchmark.remote import SSHOptions

    return SSHOptions(python=remote_python, identity=identity, accept_new_host_key=accept_new, config=config,
                      connect_timeout_s=connect_timeout)  # fmt: skip
