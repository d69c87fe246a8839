# vmceph: the two commands a newcomer needs are `make demo` and `make test` (see README.md).
# Everything runs with Debian's /usr/bin/python3: the rados/rbd bindings exist only there.
PY      ?= /usr/bin/python3
PYTEST  := PYTHONPATH=$(CURDIR)/lib:$(CURDIR)/tests $(PY) -m pytest
export PYTHONDONTWRITEBYTECODE := 1

# Debian 12 packages: Ceph, libvirt/QEMU, Pacemaker and the tools the tests drive.
DEB_RUNTIME := ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd \
	python3-libvirt python3-lxml libvirt-daemon libvirt-daemon-system libvirt-clients \
	qemu-system-x86 qemu-block-extra qemu-utils libvirt-daemon-driver-storage-rbd pacemaker pacemaker-cli-utils corosync \
	pcs crmsh resource-agents fence-agents libxml2-utils
DEB_TEST := python3-pytest python3-hypothesis iproute2 uuid-runtime procps psmisc bc util-linux time strace \
	iptables
DEB_PACKAGE := build-essential debhelper dh-python python3-lxml lintian rpm fakeroot devscripts \
	python3-argparse-manpage

.PHONY: docs help deps deps-package test unit fuzz offline integration e2e ocf-tester demo bench chaos \
	bench-fencing \
	package lab-up lab-down lab-status clean

help:
	@echo "make demo     bring up the three-node lab and play the story (installs what it needs)"
	@echo "make test     every test: unit, Pacemaker offline, real Ceph+libvirt, ocf-tester, e2e"
	@echo "make bench    benchmarks vs ocf:heartbeat:VirtualDomain, then fencing (docs/benchmarks.md)"
	@echo "make bench-fencing  only the fencing medians (fence_vmceph: crashes, partitions; ~20 min)"
	@echo "make package  build the .deb (and the .rpm) under packaging/out/"

deps:
	@missing=$$(for p in $(DEB_RUNTIME) $(DEB_TEST); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends $$missing; \
	fi

deps-package:
	@missing=$$(for p in $(DEB_PACKAGE); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends $$missing; \
	fi

# One pytest run per level: each level brings up (and tears down) what it needs, so two
# labs never compete for this machine's two cores. Packages come last: they install and
# purge vmceph on this host.
test: deps deps-package
	$(PYTEST) -q tests/unit
	$(PYTEST) -q tests/fuzz -m "not long"
	$(PYTEST) -v tests/pacemaker
	$(PYTEST) -v --durations=25 tests/integration
	$(PYTEST) -v --durations=40 tests/e2e
	$(PYTEST) -v tests/packaging

unit:
	$(PYTEST) -q tests/unit

# Both agents and vmceph as whole processes over every parameter and the OCF environment:
# at least 5,000 invocations (docs/reliability.md). No daemon needed (libvirt's test driver).
fuzz: deps
	$(PYTEST) -q -p no:cacheprovider tests/fuzz

offline: deps
	$(PYTEST) -q tests/pacemaker

integration: deps
	$(PYTEST) -v tests/integration

e2e: deps
	$(PYTEST) -v tests/e2e

demo: deps
	cd tests && $(PY) -m vmlab demo

lab-up: deps
	cd tests && $(PY) -m vmlab up
lab-status:
	cd tests && $(PY) -m vmlab status
lab-down:
	cd tests && $(PY) -m vmlab down

# A seeded fault soak on a fresh three-node lab (tests/vmlab/chaos.py), then the
# VirtualDomain canary; writes its section of docs/reliability.md and
# docs/chaos-timeline.svg. SEED and FAULTS replay a run.
SEED ?= 1
FAULTS ?= 28
chaos: deps
	cd tests && $(PY) -m vmlab chaos --seed $(SEED) --faults $(FAULTS) --canary \
		--report $(CURDIR)/docs/reliability.md

bench: deps
	PYTHONPATH=$(CURDIR)/lib:$(CURDIR)/tests $(PY) -m bench
	PYTHONPATH=$(CURDIR)/lib:$(CURDIR)/tests $(PY) -m bench recovery
	PYTHONPATH=$(CURDIR)/lib:$(CURDIR)/tests $(PY) -m bench fencing

bench-fencing: deps
	PYTHONPATH=$(CURDIR)/lib:$(CURDIR)/tests $(PY) -m bench fencing

package: deps deps-package
	packaging/build-deb
	packaging/build-rpm

clean:
	rm -rf build dist packaging/out lib/*.egg-info .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

docs:
	PYTHONPATH=$(CURDIR)/lib $(PY) -m vmceph.paramdoc > docs/parameters.md
