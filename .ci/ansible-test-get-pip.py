"""Offline stand-in for ansible-test's downloaded get-pip bootstrap script.

ansible-test fetches get-pip-<version>.py from a host we cannot reach and caches it as
~/.ansible/test/cache/get_pip_<version>.py; `make sanity` puts this file there instead.
It bootstraps pip from the interpreter's own ensurepip, then installs what was asked.
"""

import subprocess
import sys

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
# ansible-test strips the environment, so the CA bundle has to be named explicitly.
subprocess.check_call([sys.executable, "-m", "pip", "install", "--cert", CA_BUNDLE, *args])
