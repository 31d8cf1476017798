# make test: bootstrap a fresh Debian machine (as root) and run every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := tshark radvd nftables iproute2 strongswan-swanctl charon-systemd systemd shellcheck clang llvm libbpf-dev bpftool iperf3 chromium
STAMP := $(VENV)/.installed

.PHONY: test test-setup-venvs test-setup-lab test-lab-lane test-check-lane lint format unit \
	test-long fuzz bench soak apt venv clean sanity ansible-lint lab-bootstrap lab-image lab-venv \
	lab-test molecule lab lab-down lab-shell vm-test interop interop-ci

# Two lanes at once: the Podman lab (its tests, then Molecule), which mostly waits on
# container execs, and the checks that need no lab (lint, sanity, namespace tests).
# Each lane is sequential; -O prints a target's output in one piece when it ends.
# The setup runs in two lanes as well: the venvs (PyPI) beside the lab image (debootstrap).
test: apt
	$(MAKE) --no-print-directory -j2 -O test-setup-venvs test-setup-lab
	$(MAKE) --no-print-directory -j2 -O test-lab-lane test-check-lane

test-setup-venvs: venv lab-venv

test-setup-lab: lab-image

test-lab-lane:
	$(MAKE) --no-print-directory lab-test
	$(MAKE) --no-print-directory molecule
	$(MAKE) --no-print-directory interop-ci

test-check-lane:
	$(MAKE) --no-print-directory lint ansible-lint unit sanity test-long

apt:
	lab/apt-install-missing.sh $(APT_PACKAGES)

venv: $(STAMP) collections/ansible_collections/mobileip/mipv6

# ansible.cfg finds this collection through a symlink to the checkout.
collections/ansible_collections/mobileip/mipv6:
	mkdir -p $(dir $@) && ln -sfn ../../.. $@

$(STAMP): constraints.txt agent/pyproject.toml requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e 'agent[test]' -r requirements-dev.txt
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: venv
	$(BIN)/pytest agent/tests tests/unit -m "not long and not lab"

# The property tests with a large example count, and the bounded-time fuzz target.
test-long: venv
	$(BIN)/pytest agent/tests -m long --hypothesis-profile=long

fuzz: venv
	$(BIN)/python agent/tests/fuzz_decoder.py --seconds $${FUZZ_SECONDS:-60}

bench: venv
	$(BIN)/python bench/wire.py

# The home agent under mixed hostile and legitimate traffic for SOAK_SECONDS (default 1800),
# as root on namespaces; prints JSON (docs/security.md). make test runs a 60 s version.
soak: venv
	$(BIN)/python bench/soak.py $${SOAK_SECONDS:-1800}

# ansible-test wants the collection under ansible_collections/<ns>/<name>/ and, offline,
# a cached pip bootstrap script (.ci/ansible-test-get-pip.py stands in for the download).
# The copy leaves out agent/, bench/ and .ci/: the agent is a separate Python project with
# its own linters (ruff) and tests; ansible-test's pylint and pep8 rules are for plugins.
# The interop matrix's Python (lab/interop/*.py, pytest code run in the kernel VM) is
# left out for the same reason; its shell scripts stay in (shellcheck).
SANITY_DIR := .build/ansible_collections/mobileip/mipv6
GET_PIP := $(HOME)/.ansible/test/cache/get_pip_24_2.py

sanity: venv
	mkdir -p $(dir $(GET_PIP)) && cp .ci/ansible-test-get-pip.py $(GET_PIP)
	rm -rf .build && mkdir -p $(SANITY_DIR)
	git ls-files -co --exclude-standard | grep -vE '^(agent|bench|\.ci)/|^lab/interop/.*\.py$$' | tar -cf - -T - | tar -xf - -C $(SANITY_DIR)
	cd $(SANITY_DIR) && git init -q && git add -A
	cd $(SANITY_DIR) && PATH=$(CURDIR)/$(BIN):$$PATH $(CURDIR)/$(BIN)/ansible-test sanity --local --python 3.11

ansible-lint: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-lint --profile production --offline

# The Podman lab (docs/lab.md): podman, runc and debootstrap, an image keyed by a hash of
# its inputs, and the bundled containers.podman collection from the `ansible` package.
LAB_STAMP := $(VENV)/.lab-installed

lab-bootstrap:
	lab/bootstrap.sh

lab-image: lab-bootstrap
	lab/build-image.sh --prune

lab-venv: $(LAB_STAMP)

$(LAB_STAMP): $(STAMP) requirements-lab.txt
	$(BIN)/pip install -q -c constraints.txt -r requirements-lab.txt
	touch $@

# The lab's own tests run no agent: they pass on a kernel without a data plane too.
lab-test: venv lab-venv lab-bootstrap
	MIP6_LAB_REQUIRED=1 $(BIN)/pytest agent/tests/test_lab.py -m lab -v

# Every scenario on one shared lab; MIP6_LAB_CONVERGED tells the scenarios after default
# that the lab is already converged (molecule/shared/converge_once.yml). The destroy first
# clears what an interrupted run left (its state would say "already created"). The
# scenarios run the agent in containers on this host's kernel: where no data-plane backend
# works (seg6, ip6tnl, eBPF tunnel) the agent role refuses to converge, so molecule says
# so in one line and runs nothing (lab/dataplane-available.sh, docs/lab.md).
molecule: apt venv lab-venv lab-bootstrap
	@if reason=$$(lab/dataplane-available.sh); then \
	  set -ex; \
	  PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/molecule destroy; \
	  PATH=$(CURDIR)/$(BIN):$$PATH MIP6_LAB_CONVERGED=1 $(BIN)/molecule test --all; \
	else \
	  echo "molecule: NOT RUN: $$reason"; \
	fi

clean:
	rm -rf $(VENV) .build .pytest_cache .hypothesis .ruff_cache

# The data plane (ip6tnl included) on a Debian distro kernel under qemu/KVM, as root:
# builds the VM's root once (cached in .cache/kernel-vm), see docs/dataplane.md.
vm-test:
	lab/kernel-vm/run.sh

# Interoperability with UMIP (mip6d 1.0) on the same VM (docs/interop.md): builds UMIP
# statically from UMIP_SRC (cached in .cache/interop), runs lab/interop/test_interop.py in
# the VM and prints a JSON summary. INTEROP_ARGS: pytest arguments (e.g. -k umip_mn).
UMIP_SRC ?= $(wildcard $(CURDIR)/../shared/peers/umip-1.0.tar.gz)
INTEROP_ARGS ?=

interop:
	UMIP_SRC="$(UMIP_SRC)" lab/interop/run.sh $(INTEROP_ARGS)

# make test's share of the matrix (docs/interop.md, "CI"): UMIP's MN with our HA (L bit
# set), our MN with UMIP's HA, our CN (route_optimization false) with UMIP's MN; the route
# optimization cases stay in make interop (they add more than 3 minutes). Without a UMIP
# tarball it says so and runs nothing: UMIP's source is not ours to ship.
INTEROP_CI_CASES := (test_umip_mn_our_ha and not clear) or test_our_mn_umip_ha or (test_our_cn_umip_mn and not route_optimization)

interop-ci:
	@if [ -z "$(UMIP_SRC)" ]; then \
	  echo "interop: NOT RUN: no UMIP source tarball (set UMIP_SRC=/path/to/umip-1.0.tar.gz)"; \
	else \
	  UMIP_SRC="$(UMIP_SRC)" lab/interop/run.sh -k "$(INTEROP_CI_CASES)"; \
	fi

# The embedded fleet (docs/quickstart.md): build the lab, roll Mobile IPv6 out with
# playbooks/site.yml and inventories/lab (ansible.cfg), then show ha1's binding cache and
# a ping from cn1 to mn1's home address. NODE=mn1 make lab-shell opens a shell in a node.
LAB_INSTANCE := lab
NODE ?= mn1

lab: venv lab-venv lab-bootstrap
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-playbook -i localhost, molecule/shared/create.yml -e lab_instance=$(LAB_INSTANCE)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-playbook playbooks/site.yml -e mip6_lab_instance=$(LAB_INSTANCE)
	lab/show.sh $(LAB_INSTANCE)

lab-down: venv lab-venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-playbook -i localhost, molecule/shared/destroy.yml -e lab_instance=$(LAB_INSTANCE)

lab-shell:
	podman exec -it mip6-$(LAB_INSTANCE)-$(NODE) bash
