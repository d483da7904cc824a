"""The ctypes fanotify binding: layouts and constants against the kernel's headers, real events."""

from __future__ import annotations

import ctypes
import errno
import os
import select
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from agent.protect import fanotify as fan

pytestmark = pytest.mark.skipif(not fan.is_available()[0], reason=fan.is_available()[1])

_CONSTANTS = (
    "FAN_CLOEXEC",
    "FAN_NONBLOCK",
    "FAN_CLASS_CONTENT",
    "FAN_UNLIMITED_QUEUE",
    "FAN_UNLIMITED_MARKS",
    "FAN_MODIFY",
    "FAN_CLOSE_WRITE",
    "FAN_Q_OVERFLOW",
    "FAN_OPEN_PERM",
    "FAN_OPEN_EXEC_PERM",
    "FAN_EVENT_ON_CHILD",
    "FAN_MARK_ADD",
    "FAN_MARK_REMOVE",
    "FAN_MARK_MOUNT",
    "FAN_MARK_FLUSH",
    "FAN_ALLOW",
    "FAN_DENY",
    "FAN_NOFD",
    "FANOTIFY_METADATA_VERSION",
)
_FIELDS = {
    "fanotify_event_metadata": (
        "event_len",
        "vers",
        "reserved",
        "metadata_len",
        "mask",
        "fd",
        "pid",
    ),
    "fanotify_response": ("fd", "response"),
}


@pytest.fixture(scope="module")
def kernel_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to read <sys/fanotify.h>")
    tmp = tmp_path_factory.mktemp("fanotify_h")
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <sys/fanotify.h>",
        "int main(void){",
    ]
    for struct, fields in _FIELDS.items():
        lines.append(f'printf("sizeof {struct} %zu\\n", sizeof(struct {struct}));')
        for f in fields:
            lines.append(f'printf("offsetof {struct}.{f} %zu\\n", offsetof(struct {struct}, {f}));')
    for c in _CONSTANTS:
        lines.append(f'printf("const {c} %lld\\n", (long long)({c}));')
    lines.append("return 0;}")
    (tmp / "layout.c").write_text("\n".join(lines))
    subprocess.run([gcc, "-o", str(tmp / "layout"), str(tmp / "layout.c")], check=True)
    out = subprocess.run([str(tmp / "layout")], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.rsplit(" ", 1) for line in out.splitlines())}


def test_struct_sizes_and_offsets_match_the_kernel_header(kernel_layout: dict[str, int]) -> None:
    for struct, cls in (
        ("fanotify_event_metadata", fan.EventMetadata),
        ("fanotify_response", fan.Response),
    ):
        assert ctypes.sizeof(cls) == kernel_layout[f"sizeof {struct}"]
        for f in _FIELDS[struct]:
            assert getattr(cls, f).offset == kernel_layout[f"offsetof {struct}.{f}"], f


def test_constants_match_the_kernel_header(kernel_layout: dict[str, int]) -> None:
    for c in _CONSTANTS:
        assert getattr(fan, c) == kernel_layout[f"const {c}"], c


def _exec_in_thread(path: Path) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []

    def run() -> None:
        try:
            codes.append(subprocess.run([str(path)], check=False).returncode)
        except PermissionError as exc:
            codes.append(-exc.errno)

    t = threading.Thread(target=run)
    t.start()
    return t, codes


@pytest.mark.parametrize(("allow", "expected"), [(True, 0), (False, -errno.EPERM)])
def test_exec_permission_event_waits_for_the_answer(
    tmp_path: Path, allow: bool, expected: int
) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    fd = fan.fanotify_init(fan.FAN_CLOEXEC | fan.FAN_CLASS_CONTENT)
    try:
        fan.fanotify_mark(
            fd, fan.FAN_MARK_ADD, fan.FAN_OPEN_EXEC_PERM | fan.FAN_EVENT_ON_CHILD, str(tmp_path)
        )
        thread, codes = _exec_in_thread(script)
        assert select.select([fd], [], [], 10)[0], "no permission event arrived"
        events = list(fan.iter_events(os.read(fd, 4096)))
        assert len(events) == 1 and events[0].is_permission
        event = events[0]
        assert event.mask & fan.FAN_OPEN_EXEC_PERM
        assert os.readlink(f"/proc/self/fd/{event.fd}") == str(script)
        assert not codes, "the exec went ahead before the answer"
        fan.respond(fd, event.fd, allow)
        os.close(event.fd)
        thread.join(10)
        assert codes == [expected]
    finally:
        os.close(fd)


def test_packed_formats_match_the_ctypes_layouts() -> None:
    meta = fan.EventMetadata(24, 3, 0, 24, fan.FAN_OPEN_EXEC_PERM | (1 << 40), 7, 4242)
    [event] = fan.iter_events(bytes(meta) * 1)
    assert (event.mask, event.fd, event.pid) == (meta.mask, 7, 4242)
    assert fan._RESPONSE.pack(9, fan.FAN_DENY) == bytes(fan.Response(9, fan.FAN_DENY))
    assert fan._META.size == ctypes.sizeof(fan.EventMetadata)


def test_iter_events_rejects_another_metadata_version() -> None:
    meta = fan.EventMetadata(24, 2, 0, 24, fan.FAN_OPEN_PERM, 5, 1)
    with pytest.raises(OSError, match="version"):
        list(fan.iter_events(bytes(meta)))
