r"""Package maintainer scripts: the small `sh` scripts every Debian-family machine is full of.

dpkg keeps each installed package's `postinst`, `preinst`, `prerm` and `postrm` in
`/var/lib/dpkg/info` (a few hundred on a small server), and every `.deb` carries them in its
control archive. Most are sections debhelper writes from its templates, around a hand-written
`case "$1" in` and a few lines of housekeeping. Their bytes are unlike the hand-picked lines of
`_everyday.system_script`: package names, version strings with dpkg-maintscript-helper's `\+`
and `\~` escapes, `'unit.service'` quoting, tab indents, heredocs of conffiles and their md5
sums, the dh_make template's backquoted comments. Without them the models met few real shell
scripts at all (the Python installation holds a dozen), and dogfooding found v1 blocking a
226-byte `dpkg-maintscript-helper symlink_to_dir` script on its shares of `q`, `\` and `+`, and
`apache2`'s `preinst` (0.98) on a folder never trained on.

The builder draws a script from these parts with a seeded generator; nothing is copied from a
real package.
"""

from __future__ import annotations

import numpy as np

from model_store.corpus._everyday import _ident, _sentence, _words

__all__ = ["maintainer_script"]

Rng = np.random.Generator
_STAGES = ("postinst", "preinst", "prerm", "postrm")
_DH_TOOLS = (
    "dh_installdeb",
    "dh_installsystemd",
    "dh_installinit",
    "dh_python3",
    "dh_installdebconf",
    "dh_installalternatives",
    "dh_makeshlibs",
    "dh_installsysusers",
)


def _pick(rng: Rng, items: tuple[str, ...]) -> str:
    return items[int(rng.integers(0, len(items)))]


def _pkg(rng: Rng) -> str:
    head = _pick(rng, ("lib", "python3-", "node-", "golang-", "", "", "", ""))
    parts = [w.lower().replace("'", "") for w in _words(rng, int(rng.integers(1, 3)))]
    name = head + "-".join(parts)
    return name + (str(int(rng.integers(0, 9))) if rng.random() < 0.3 else "")


def _version(rng: Rng) -> str:
    v = ".".join(str(int(rng.integers(0, 40))) for _ in range(int(rng.integers(2, 4))))
    v += _pick(rng, ("", "", "+dfsg", "+ds", "+dfsg+~" + v, "+git20240101", "~rc1"))
    return v + f"-{int(rng.integers(1, 12))}" + ("~" if rng.random() < 0.6 else "")


def _escaped(version: str) -> str:
    """As dh_installdeb writes a version into a dpkg-maintscript-helper line."""
    return version.replace("+", "\\+").replace("~", "\\~")


def _path(rng: Rng, pkg: str) -> str:
    top = _pick(rng, ("/etc", "/var/lib", "/usr/share", "/var/log", "/etc/default", "/var/cache"))
    leaf = _ident(rng) + _pick(rng, ("", ".conf", ".lock", ".d", ".list", ".cache", ".pem"))
    mid = f"/{pkg}" if rng.random() < 0.7 else f"/.{_ident(rng)}"
    return top + mid + ("/" + leaf if rng.random() < 0.8 else "")


def _dh_section(rng: Rng, pkg: str) -> list[str]:
    kind = int(rng.integers(0, len(_DH_TOOLS)))
    unit = f"{pkg}.service" if rng.random() < 0.7 else f"{pkg}-{_ident(rng)}.timer"
    if kind == 0:
        op = _pick(rng, ("rm_conffile", "mv_conffile", "symlink_to_dir", "dir_to_symlink"))
        args = {
            "rm_conffile": _path(rng, pkg),
            "mv_conffile": f"{_path(rng, pkg)} {_path(rng, pkg)}",
            "symlink_to_dir": f"/usr/share/{_words(rng, 1)[0]}/{pkg} /usr/share/{pkg}/dist",
            "dir_to_symlink": f"/usr/share/doc/{pkg} {_pkg(rng)}",
        }[op]
        body = [
            f'dpkg-maintscript-helper {op} {args} {_escaped(_version(rng))} -- "$@"'
            for _ in range(int(rng.integers(1, 7)))
        ]
    elif kind == 1:
        body = [
            'if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || '
            '[ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then',
            f"\tdeb-systemd-helper unmask '{unit}' >/dev/null || true",
            f"\tif deb-systemd-helper --quiet was-enabled '{unit}'; then",
            f"\t\tdeb-systemd-helper enable '{unit}' >/dev/null || true",
            "\telse",
            f"\t\tdeb-systemd-helper update-state '{unit}' >/dev/null || true",
            "\tfi",
            "fi",
        ]
        if rng.random() < 0.5:
            body += [
                "if [ -d /run/systemd/system ]; then",
                "\tsystemctl --system daemon-reload >/dev/null || true",
                f"\tdeb-systemd-invoke {_pick(rng, ('stop', 'restart', 'start'))} '{unit}'"
                " >/dev/null || true",
                "fi",
            ]
    elif kind == 2 and rng.random() < 0.3:  # the preinst side: make the init script runnable
        body = [
            f'if [ "$1" = "install" ] && [ -n "$2" ] && [ -e "/etc/init.d/{pkg}" ] ; then',
            f'\tchmod +x "/etc/init.d/{pkg}" >/dev/null || true',
            "fi",
        ]
    elif kind == 2:
        body = [
            f'if [ -x "/etc/init.d/{pkg}" ]; then',
            f"\tupdate-rc.d {pkg} defaults >/dev/null",
            f"\tinvoke-rc.d --skip-systemd-native {pkg} start || exit 1",
            "fi",
        ]
    elif kind == 3:
        body = [
            "if command -v py3clean >/dev/null 2>&1; then",
            f"\tpy3clean -p {pkg} ",
            "else",
            f"\tdpkg -L {pkg} | sed -En -e '/^(.*)\\/(.+)\\.py$/s,,rm \"\\1/__pycache__/\\2\".*,e'",
            "\tfind /usr/lib/python3/dist-packages/ -type d -name __pycache__ -empty -print0"
            " | xargs --null --no-run-if-empty rmdir",
            "fi",
        ]
    elif kind == 4:
        body = [
            'if [ "$1" = purge ] && [ -e /usr/share/debconf/confmodule ]; then',
            "\t. /usr/share/debconf/confmodule",
            "\tdb_purge",
            "fi",
        ]
    elif kind == 5:
        cmd = _ident(rng).replace("_", "-")
        body = [
            f"update-alternatives --install /usr/bin/{cmd} {cmd} /usr/bin/{cmd}.{pkg}"
            f" {int(rng.integers(10, 100))} \\",
            f"  --slave /usr/share/man/man1/{cmd}.1.gz {cmd}.1.gz"
            f" /usr/share/man/man1/{cmd}.{pkg}.1.gz",
        ]
    elif kind == 6:
        body = ['if [ "$1" = "configure" ]; then', "\tldconfig", "fi"]
    else:
        body = [
            'if [ -z "${DPKG_ROOT:-}" ] && [ -x /usr/bin/systemd-sysusers ]; then',
            f'\tsystemd-sysusers ${{DPKG_ROOT:+--root="$DPKG_ROOT"}} {pkg}.conf',
            "fi",
        ]
    tool = f"{_DH_TOOLS[kind]}/{int(rng.integers(10, 14))}.{int(rng.integers(0, 20))}"
    return [f"# Automatically added by {tool}", *body, "# End automatically added section"]


def _template_head(rng: Rng, stage: str, pkg: str) -> list[str]:
    """The comment block dh_make puts at the top of a hand-written script."""
    lines = [f"# {stage} script for {pkg}", "#", "# see: dh_installdeb(1)", ""]
    if rng.random() < 0.6:
        lines += ["# summary of how this script can be called:"]
        for _ in range(int(rng.integers(2, 6))):
            who = _pick(rng, ("new", "old", "conflictor's", "deconfigured's"))
            lines += [f"#        * <{who}-{stage}> `{_pick(rng, _ACTIONS)}' <{_ident(rng)}>"]
        lines += [
            "# for details, see https://www.debian.org/doc/debian-policy/ or",
            "# the debian-policy package",
            "",
        ]
    return lines


_ACTIONS = ("configure", "install", "upgrade", "remove", "purge", "abort-upgrade", "failed-upgrade")


def _housekeeping(rng: Rng, pkg: str) -> list[str]:
    """Hand-written lines: directories, users, conffile fix-ups, version checks, clean-up."""
    kind = int(rng.integers(0, 10))
    user = _pick(rng, (pkg.split("-")[0], f"_{pkg.split('-')[-1]}", "www-data", "root"))
    p = _path(rng, pkg)
    if kind == 0:
        return [
            f"[ -d {p} ] || mkdir -m 755 {p}",
            f"if [ ! -f {p}/.{_ident(rng)} ]; then",
            f"    touch {p}/.{_ident(rng)}",
            f"    chmod {_pick(rng, ('644', '600', '0640', '755'))} {p}/.{_ident(rng)}",
            "fi",
        ]
    if kind == 1:
        return [
            f"if ! getent passwd {user} >/dev/null; then",
            f"\tadduser --system --group --home /var/lib/{pkg} --no-create-home --quiet \\",
            f'\t\t--gecos "{_sentence(rng, 2, 5)[:-1]}" {user}',
            "fi",
            f"install -d -o {user} -g {user} -m 0750 {_path(rng, pkg)}",
        ]
    if kind == 2:
        fn = f"list_{_ident(rng)}"
        rows = []
        for _ in range(int(rng.integers(1, 12))):
            md5 = "".join(f"{int(b):02x}" for b in rng.integers(0, 256, size=16))
            rows.append(f"\t\t{_path(rng, pkg)}\t\t\t{md5}")
        return [f"{fn} () {{", "\tcat <<- EOF", *rows, "\tEOF", "}", ""]
    if kind == 3:
        return [
            f'if [ -n "$2" ] && dpkg --compare-versions "$2" lt "{_version(rng)}"; then',
            f'\trm -f "{_path(rng, pkg)}" || true',
            f"\t# {_sentence(rng, 3, 12)}",
            "fi",
        ]
    if kind == 4:
        paths = " ".join(_path(rng, pkg) for _ in range(int(rng.integers(1, 4))))
        return [f"for f in {paths}; do", '\tif [ -e "$f" ]; then', '\t\trm -f "$f"', "\tfi", "done"]
    if kind == 5:
        return [f"# {_sentence(rng, 4, 14)}" for _ in range(int(rng.integers(1, 5)))]
    var = _ident(rng).upper()
    if kind == 6:  # a helper function with locals, a pipeline and a message
        return [
            f"{_ident(rng)}() {{",
            f'\tlocal {_ident(rng)}="${{1:-{_words(rng, 1)[0]}}}"',
            f'\tif grep -qs "^{_ident(rng)}" {p}; then',
            f'\t\techo "{_sentence(rng, 3, 10)}" >&2',
            f"\t\t{_pick(rng, ('return 0', 'return 1', 'exit 0'))}",
            "\tfi",
            f"\t{var}=$(dpkg-query -W -f='${{Version}}' {pkg} 2>/dev/null || true)",
            "}",
            "",
        ]
    if kind == 7:  # settings at the top
        return [
            f"{var}={_pick(rng, ('', p, _words(rng, 1)[0], str(int(rng.integers(0, 999)))))}",
            f'{_ident(rng).upper()}="${{{var}:-{_path(rng, pkg)}}}"',
            f"[ -r /etc/default/{pkg} ] && . /etc/default/{pkg}",
        ]
    if kind == 8:
        return [
            f'if [ -L {p} ] && [ "$(readlink {p})" = "{_path(rng, pkg)}" ]; then',
            f"\trm {p}",
            f'\tprintf "%s: %s\\n" "{pkg}" "{_sentence(rng, 2, 8)}"',
            "fi",
        ]
    return [
        f"if [ -e {p} ]; then",
        f"\tucf --purge {p}",
        f"\tchown {user}:{user} {p} 2>/dev/null || true",
        "fi",
    ]


def maintainer_script(rng: Rng, _: int) -> bytes:
    """A package's postinst, preinst, prerm or postrm: debhelper sections and housekeeping."""
    pkg = _pkg(rng)
    qualified = pkg + (":amd64" if rng.random() < 0.2 else "")
    stage = _pick(rng, _STAGES)
    lines = [_pick(rng, ("#!/bin/sh", "#! /bin/sh", "#!/bin/bash", "#! /bin/bash", "#!/bin/sh -e"))]
    if rng.random() < 0.35:
        lines += _template_head(rng, stage, qualified)
    lines += ["set -e", ""] if rng.random() < 0.8 else [""]
    for _ in range(int(rng.integers(0, 4))):
        lines += _housekeeping(rng, pkg)
    if rng.random() < 0.4:  # the hand-written dispatch on dpkg's first argument
        lines += ['case "$1" in', f"    {_pick(rng, _ACTIONS)}|{_pick(rng, _ACTIONS)})"]
        lines += _housekeeping(rng, pkg) if rng.random() < 0.6 else ["\t:"]
        lines += ["    ;;", "    *)"]
        lines += [
            f'        echo "{stage} called with unknown argument \\`$1\'" >&2',
            "        exit 1",
        ]
        lines += ["    ;;", "esac", ""]
    for _ in range(int(rng.integers(0 if len(lines) > 8 else 1, 4))):
        lines += _dh_section(rng, pkg)
    lines += ["", "exit 0"] if rng.random() < 0.4 else []
    return ("\n".join(lines) + "\n").encode()
