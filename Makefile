# make test: set up .venv (pinned CPU torch first), headless display packages, run the suite under Xvfb.
# make demo: set up .venv, render the sample smear, segment it with the shipped default model.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo display clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[testing]'
	touch $(STAMP)

venv: $(STAMP)

display:
	@command -v xvfb-run >/dev/null 2>&1 && [ -e /usr/lib/x86_64-linux-gnu/libxcb-cursor.so.0 -o -e /usr/lib/aarch64-linux-gnu/libxcb-cursor.so.0 ] || ( \
	  apt-get update -qq && apt-get install -y -qq xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 \
	  libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
	  libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 >/dev/null )

test: venv display
	xvfb-run -a -s "-screen 0 1280x1024x24" $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo: venv
	$(BIN)/python scripts/demo.py --out demo_output

clean:
	rm -rf $(VENV) demo_output
