"""Read, in one round trip, what the agent role needs to know about a host before it writes.

Run by the agent role on the host (``ansible.builtin.script`` with the host's Python):

    python3 mip6_host_state.py '{"stamp": ..., "config": ..., "unit": ..., "venv_bin": ...,
                                 "command_dir": ..., "commands": [...], "dirs": {path: mode}}'

Prints one JSON object:

- ``version``, ``machine``, ``libc``: the host's Python and platform (the wheelhouse key);
- ``installed``: the wheelhouse the venv was installed from (its stamp file), or "";
- ``role``: the role in the running configuration, or "";
- ``unit``: whether the systemd unit exists;
- ``links``: the commands whose link in ``command_dir`` points at ``venv_bin`` already;
- ``dirs``: the directories that exist with owner root:root and the given mode.

The role then acts only on what is not right, so a rerun costs few round trips. It reads
and never writes.
"""

from __future__ import annotations

import json
import os
import platform
import re
import stat
import sys

ROLE = re.compile(r'^role: *"?([a-z]+)"?', re.MULTILINE)


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def link_is_right(command_dir: str, venv_bin: str, name: str) -> bool:
    path = os.path.join(command_dir, name)
    return os.path.islink(path) and os.readlink(path) == os.path.join(venv_bin, name)


def dir_is_right(path: str, mode: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    wanted = (0, 0, int(mode, 8))
    return stat.S_ISDIR(st.st_mode) and (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == wanted


def host_state(given: dict) -> dict:
    role = ROLE.search(read(given["config"]))
    command_dir = given.get("command_dir") or ""
    return {
        "version": "{}.{}".format(*sys.version_info[:2]),
        "machine": platform.machine(),
        "libc": platform.libc_ver()[0],
        "installed": read(given["stamp"]).strip(),
        "role": role.group(1) if role else "",
        "unit": os.path.isfile(given["unit"]),
        "links": [
            name
            for name in given.get("commands", [])
            if command_dir and link_is_right(command_dir, given["venv_bin"], name)
        ],
        "dirs": [path for path, mode in given.get("dirs", {}).items() if dir_is_right(path, mode)],
    }


def main() -> int:
    if len(sys.argv) != 2:
        sys.stderr.write("usage: mip6_host_state.py JSON\n")
        return 2
    print(json.dumps(host_state(json.loads(sys.argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
