# dotaudit: the two set-up commands of the README.
#   make demo   install dotaudit and audit a bundled capture
#   make test   install what the tests need (apt and pip) and run them
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
APT_PACKAGES = tshark tcpdump chromium tcpreplay iproute2 libpcap0.8 libcap2-bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-deps apt-deps lab bench

demo:
	$(PIP) install --quiet .
	dotaudit audit pcaps/gateway/mixed.pcap --trust-anchor pcaps/lab/ca.pem -f text --fail-on never

apt-deps:
	@if command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    $(SUDO) apt-get update -qq && \
	    echo "wireshark-common wireshark-common/install-setuid boolean false" | $(SUDO) debconf-set-selections && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else echo "no apt-get: install $(APT_PACKAGES) by hand"; fi

test-deps: apt-deps
	$(PIP) install --quiet -e '.[test]'

test: test-deps
	$(PYTHON) -m pytest -q

lab:
	pcaps/lab/make.sh

bench:
	$(PYTHON) bench/run.py

# The example reports in reports/ (html, md, json) from bundled captures; tests/report compares
# them as goldens (volatile fields masked). Run after a change to a formatter or the analysis.
.PHONY: reports
reports:
	$(PYTHON) -m dotaudit.report.examples reports
