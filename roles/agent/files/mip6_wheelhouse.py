"""Build the agent's offline wheelhouse on the controller, for one target Python.

Run by the agent role (delegated to the controller, once per target Python and machine):

    python mip6_wheelhouse.py --source AGENT_DIR --constraints constraints.txt \
        --python-version 3.11 --machine x86_64 --dest CACHE/KEY [-- PIP_ARGS...]

1. ``pip wheel --no-deps -c constraints.txt AGENT_DIR``: the agent's own wheel (pure Python),
   built from a copy of AGENT_DIR (pyproject.toml, README.md, mip6agent/) so that the
   collection's tree is never written to (setuptools leaves build/ behind).
2. ``pip download --only-binary=:all: --python-version V --platform manylinux2014_M
   -c constraints.txt <that wheel>``: its dependencies at the pinned versions, as wheels for
   the target's Python and machine (which may differ from the controller's).
3. constraints.txt and SHA256SUMS next to them.

Everything is written to a private directory that is renamed to DEST at the end, so DEST
either holds a complete wheelhouse or does not exist: the role builds only when it is
missing. The host then installs with ``pip install --no-index --find-links DEST
-c DEST/constraints.txt mip6agent==VERSION``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def run(argv: list[str]) -> None:
    print("+ " + " ".join(argv), file=sys.stderr)
    subprocess.run(argv, check=True, stdout=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, type=Path)
    p.add_argument("--constraints", required=True, type=Path)
    p.add_argument("--python-version", required=True)
    p.add_argument("--machine", required=True)
    p.add_argument("--dest", required=True, type=Path)
    p.add_argument("pip_args", nargs="*", help="extra pip arguments (after --)")
    args = p.parse_args(argv)

    dest = args.dest.expanduser()
    if dest.is_dir():
        print(f"{dest}: exists", file=sys.stderr)
        return 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=dest.name + ".partial.", dir=dest.parent))
    try:
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        constraints = ["-c", str(args.constraints)]
        source = args.source.expanduser().resolve()
        copy = Path(tempfile.mkdtemp(prefix="mip6agent-src.", dir=dest.parent))
        try:
            for name in ("pyproject.toml", "README.md"):
                shutil.copyfile(source / name, copy / name)
            shutil.copytree(
                source / "mip6agent",
                copy / "mip6agent",
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
            run([*pip, "wheel", "--no-deps", *constraints, "-w", str(work), *args.pip_args,
                 str(copy)])  # fmt: skip
        finally:
            shutil.rmtree(copy)
        wheels = sorted(work.glob("mip6agent-*.whl"))
        if len(wheels) != 1:
            print(f"expected one mip6agent wheel, found {wheels}", file=sys.stderr)
            return 1
        platforms = [f"manylinux2014_{args.machine}", f"linux_{args.machine}"]
        run([*pip, "download", "--only-binary=:all:", "--implementation", "cp",
             "--python-version", args.python_version,
             *[f"--platform={x}" for x in platforms],
             *constraints, "-d", str(work), *args.pip_args, str(wheels[0])])  # fmt: skip
        shutil.copyfile(args.constraints, work / "constraints.txt")
        sums = [
            f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n"
            for f in sorted(work.iterdir())
        ]
        (work / "SHA256SUMS").write_text("".join(sums))
        work.chmod(0o755)
        os.rename(work, dest)
    except subprocess.CalledProcessError as exc:
        print(f"wheelhouse build failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if work.exists():
            shutil.rmtree(work)
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
