#!/usr/bin/env bash
# The FALLBACK local model server: llama-cpp-python[server], pinned, built from source.
# `make local-model` and `pip install 'shesha[local]'` install llama.cpp's own server
# prebuilt (xllamacpp) instead, with nothing to compile. Build this one for a CPU that
# wheel cannot serve (it needs AVX2), or for a build tuned to this CPU's AVX-512 (about
# 13% faster at reading prompts on one Xeon; see benchmarks/local_model.py), then set
# local_runtime = "llama-cpp-python". The build takes 4-7 minutes on 2 cores; the wheel is
# kept in a cache keyed by version and CPU flags, so later installs are quick.
#   usage: scripts/install-local-server.sh [PYTHON]      (default: .venv/bin/python)
#
# CPU flags: never GGML_NATIVE=ON (it segfaults on these machines). Each AVX-512 and VNNI
# extension is switched on only when /proc/cpuinfo lists it: building one the CPU lacks
# (e.g. AVX-VNNI on AMD EPYC) makes the server die with SIGILL on its first request.
set -euo pipefail
py=${1:-.venv/bin/python}
version=0.3.36
log() { printf 'local-server: %s\n' "$*" >&2; }

if "$py" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.__version__ == '$version' else 1)" 2>/dev/null \
   && "$py" -c "import llama_cpp.server" 2>/dev/null; then
  log "llama-cpp-python $version is installed."
  exit 0
fi

flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { [[ " $flags " == *" $1 "* ]]; }
args="-DGGML_NATIVE=OFF"
if has avx512f; then
  args+=" -DGGML_AVX512=ON"
  has avx512_vnni && args+=" -DGGML_AVX512_VNNI=ON"
  has avx512_bf16 && args+=" -DGGML_AVX512_BF16=ON"
  has avx512vbmi && args+=" -DGGML_AVX512_VBMI=ON"
fi
has avx_vnni && args+=" -DGGML_AVX_VNNI=ON"
# pip's own wheel cache ignores CMAKE_ARGS, so it could hand back a wheel built for another
# CPU: keep our own cache, keyed by version and flags.
key=$(printf '%s %s' "$version" "$args" | sha256sum | cut -c1-16)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/shesha/llama-wheels/$key"
if ! ls "$cache"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  log "Building llama-cpp-python $version (CMAKE_ARGS=$args); this takes 4-7 minutes..."
  mkdir -p "$cache"
  CMAKE_ARGS="$args" "$py" -m pip wheel -q --no-cache-dir --no-deps -w "$cache.tmp" \
    "llama-cpp-python==$version"
  mv "$cache.tmp"/llama_cpp_python-*.whl "$cache"/ && rm -rf "$cache.tmp"
fi
wheel=$(ls "$cache"/llama_cpp_python-*.whl | head -n1)
"$py" -m pip install -q "$wheel[server]"
log "Installed ($wheel)."
