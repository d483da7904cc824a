"""The agent as a systemd service: write, enable and remove `fleetward-agent.service`.

The unit runs `fleetward-agent run` as root with only the capabilities the agent uses:
- CAP_SYS_ADMIN: fanotify permission marks (`--protect`);
- CAP_DAC_READ_SEARCH: read any file to score it;
- CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_CHOWN: quarantine a file from any folder and restore its
  owner, mode and times exactly.
It restarts on failure, keeps its state in /var/lib/fleetward (StateDirectory, mode 0700), and
takes the hardening that needs no private mount namespace: a mount mark (`--protect` of a
mount point) only sees the namespace it was made in, and quarantine moves files out of the
protected folders, so ProtectSystem, ProtectHome, PrivateTmp and the like would break it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

from agent.errors import StateError
from agent.update.atomic import write_atomic

__all__ = [
    "CAPABILITIES",
    "STATE_DIR",
    "UNIT_DIR",
    "UNIT_NAME",
    "absolute_paths",
    "install_service",
    "render_unit",
    "uninstall_service",
]

UNIT_NAME = "fleetward-agent.service"
UNIT_DIR = Path("/etc/systemd/system")
STATE_DIR = Path("/var/lib/fleetward")
CAPABILITIES = (
    "CAP_SYS_ADMIN",
    "CAP_DAC_READ_SEARCH",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_CHOWN",
)


def _quote(arg: str) -> str:
    """One ExecStart word: systemd's quoting, with `%` and `$` escaped."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c in arg for c in " \t\n\"'\\;"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def absolute_paths(
    run_args: Sequence[str], path_options: Collection[str], *, cwd: str | os.PathLike[str]
) -> list[str]:
    """`run_args` with the value of each option in `path_options` made absolute against `cwd`.

    A service does not run in the installer's folder: `--root root.json` or `--protect .`
    would name another file or folder there. Both `--opt VALUE` and `--opt=VALUE` are read.
    """
    out: list[str] = []
    absolute = False
    for arg in run_args:
        if absolute:
            out.append(os.path.normpath(os.path.join(cwd, arg)))
            absolute = False
            continue
        name, eq, value = arg.partition("=")
        if name in path_options and eq:
            out.append(f"{name}={os.path.normpath(os.path.join(cwd, value))}")
        else:
            out.append(arg)
            absolute = arg in path_options
    return out


def render_unit(run_args: Sequence[str], *, executable: Sequence[str] | None = None) -> str:
    """The unit text for `fleetward-agent run` with `run_args`.

    `--state-dir /var/lib/fleetward` is added unless `run_args` name a state directory;
    `executable` defaults to this interpreter running `-m agent`.
    """
    args = list(run_args)
    if not any(a == "--state-dir" or a.startswith("--state-dir=") for a in args):
        args += ["--state-dir", str(STATE_DIR)]
    command = [*(executable or (sys.executable, "-m", "agent")), "run", *args]
    exec_start = " ".join(_quote(a) for a in command)
    caps = " ".join(CAPABILITIES)
    return f"""\
[Unit]
Description=fleetward endpoint agent (signed model updates, scanning, real-time protection)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={exec_start}
Restart=on-failure
RestartSec=5s
StateDirectory=fleetward
StateDirectoryMode=0700
UMask=0077
User=root
CapabilityBoundingSet={caps}
AmbientCapabilities={caps}
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
LimitNOFILE=65536
MemoryHigh=300M
OOMScoreAdjust=-500
KillSignal=SIGTERM
TimeoutStopSec=15s

[Install]
WantedBy=multi-user.target
"""


def _systemctl(*args: str) -> None:
    exe = shutil.which("systemctl")
    if exe is None:
        raise StateError("systemctl not found: is this a systemd machine?")
    done = subprocess.run([exe, *args], capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise StateError(f"systemctl {' '.join(args)} failed: {done.stderr.strip()}")


def install_service(
    run_args: Sequence[str],
    *,
    unit_dir: str | os.PathLike[str] = UNIT_DIR,
    start: bool = True,
) -> Path:
    """Write the unit (atomically, `agent.update.atomic`); with `start`, enable and start it.

    Relative paths in `run_args` should be made absolute first (`absolute_paths`).

    Raises:
        StateError: the unit cannot be written, or systemctl is missing or fails.
    """
    path = Path(unit_dir) / UNIT_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, render_unit(run_args).encode(), mode=0o644)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if start:
        _systemctl("daemon-reload")
        _systemctl("enable", "--now", UNIT_NAME)
    return path


def uninstall_service(
    *, unit_dir: str | os.PathLike[str] = UNIT_DIR, stop: bool = True
) -> Path | None:
    """Stop and disable the service (with `stop`) and remove its unit; None if none was there.

    The state directory stays (installed models, quarantine): remove it by hand if wanted.

    Raises:
        StateError: systemctl is missing or fails, or the unit cannot be removed.
    """
    path = Path(unit_dir) / UNIT_NAME
    if not path.exists():
        return None
    if stop:
        _systemctl("disable", "--now", UNIT_NAME)
    try:
        path.unlink()
    except OSError as exc:
        raise StateError(f"cannot remove {path}: {exc.strerror or exc}") from exc
    if stop:
        _systemctl("daemon-reload")
    return path
