#!/usr/bin/env bash
# Bring the packages bench.gpu_check needs to a GPU machine that has Python 3.12 and torch but
# no network and no Ray / DeepSpeed / POT, through transfers of at most 64 MiB (bench/GPU.md).
#
#   bench/gpu_wheels.sh download [DIR]  # where there is network: cp312 manylinux x86_64 wheels into DIR/wheels
#   bench/gpu_wheels.sh split    [DIR]  # DIR/wheels -> DIR/parts/NN/, each at most $PART_SIZE (split -b)
#   bench/gpu_wheels.sh assemble [DIR]  # DIR/parts/* -> DIR/wheels (cat the pieces back), sha256sum -c
#   bench/gpu_wheels.sh install  [DIR]  # assemble, then pip install --no-index --find-links DIR/wheels
#
# DIR defaults to wheels/ at the repository root (git-ignored: it travels only when carried).
# Environment: PART_SIZE (split -b size, default 60m), PYTHON (interpreter whose pip is used;
# download: default python3.12, install: default python3), REQUIREMENTS (default
# bench/gpu_requirements.txt).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PART_SIZE="${PART_SIZE:-60m}"
REQUIREMENTS="${REQUIREMENTS:-$ROOT/bench/gpu_requirements.txt}"
# The GPU machine's platform: CPython 3.12 on manylinux x86_64 (pure-Python wheels match too).
TARGET=(--python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --only-binary=:all:)
# Installed with torch on the GPU machine already, and huge: never downloaded.
TORCH_STACK='^(torch|triton|nvidia-.*|sympy|mpmath|networkx)$'

die() { echo "gpu_wheels: $*" >&2; exit 1; }

bytes() { numfmt --from=iec "$(tr '[:lower:]' '[:upper:]' <<<"${1%[bB]}")"; }

download() {  # DIR
  local dir="$1" py="${PYTHON:-python3.12}" ds
  mkdir -p "$dir/wheels"
  "$py" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' \
    || die "download needs a Python 3.12 interpreter (PYTHON=...): DeepSpeed is an sdist, built here"
  # DeepSpeed ships only an sdist: build a pure-Python wheel without its CUDA/C++ ops (they are
  # JIT-compiled on first use if ever needed; rad uses torch's AdamW and none of them).
  ds="$(grep -E '^deepspeed==' "$REQUIREMENTS" | head -1)"
  DS_BUILD_OPS=0 "$py" -m pip wheel --no-deps --wheel-dir "$dir/wheels" "$ds"
  # Resolve everything else for the target platform (metadata only), then fetch it without torch's stack.
  "$py" -m pip install --dry-run --ignore-installed --quiet --report "$dir/resolved.json" --target "$dir/.resolve" \
    --find-links "$dir/wheels" "${TARGET[@]}" -r "$REQUIREMENTS"
  "$py" - "$dir/resolved.json" "$TORCH_STACK" >"$dir/download.txt" <<'PY'
import json, re, sys
report, skip = json.load(open(sys.argv[1])), re.compile(sys.argv[2])
for item in report["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if not skip.match(name.lower()) and name.lower() != "deepspeed":
        print(f"{name}=={version}")
PY
  "$py" -m pip download --no-deps --dest "$dir/wheels" "${TARGET[@]}" -r "$dir/download.txt"
  (cd "$dir/wheels" && sha256sum -- *.whl >SHA256SUMS)
  echo "gpu_wheels: $(ls "$dir/wheels" | grep -c '\.whl$') wheels, $(du -sh "$dir/wheels" | cut -f1), in $dir/wheels"
}

split_parts() {  # DIR: every file of DIR/wheels into DIR/parts/NN/ of at most PART_SIZE bytes
  local dir="$1" cap n=0 size item placed i
  cap="$(bytes "$PART_SIZE")"
  [[ -f "$dir/wheels/SHA256SUMS" ]] || die "$dir/wheels/SHA256SUMS is missing (run download first)"
  rm -rf "$dir/parts" "$dir/.pieces"
  mkdir -p "$dir/parts" "$dir/.pieces"
  # Files over the cap are cut into pieces NAME.part-aa, -ab, ... of PART_SIZE (the last one smaller).
  for f in "$dir"/wheels/*.whl; do
    if (( $(stat -c %s "$f") > cap )); then
      split -b "$PART_SIZE" -- "$f" "$dir/.pieces/$(basename "$f").part-"
    else
      cp -- "$f" "$dir/.pieces/"
    fi
  done
  # First fit, largest first: each part holds what fits in the cap, plus the checksums of all wheels.
  local -a used=()
  while read -r size item; do
    placed=""
    for i in "${!used[@]}"; do
      if (( used[i] + size <= cap )); then placed="$i"; break; fi
    done
    if [[ -z "$placed" ]]; then placed="${#used[@]}"; used+=(0); n=$((n + 1)); fi
    used[placed]=$(( used[placed] + size ))
    mkdir -p "$dir/parts/$(printf %02d $((placed + 1)))"
    mv -- "$item" "$dir/parts/$(printf %02d $((placed + 1)))/"
  done < <(find "$dir/.pieces" -type f -printf '%s %p\n' | sort -k1,1nr -k2,2)
  for p in "$dir"/parts/*/; do cp -- "$dir/wheels/SHA256SUMS" "$p"; done
  rmdir "$dir/.pieces"
  echo "gpu_wheels: $n parts of at most $PART_SIZE in $dir/parts (carry one per call: ${dir#"$ROOT"/}/parts/NN)"
  du -sh "$dir"/parts/*
}

assemble() {  # DIR: DIR/parts/* back into DIR/wheels, every wheel checked against SHA256SUMS
  local dir="$1" sums name pieces
  sums="$(ls "$dir"/parts/*/SHA256SUMS 2>/dev/null | head -1)"
  [[ -n "$sums" ]] || die "no parts in $dir/parts (carry them first)"
  echo "gpu_wheels: parts here: $(cd "$dir/parts" && echo */ | tr -d /)"
  mkdir -p "$dir/wheels"
  cp -- "$sums" "$dir/wheels/SHA256SUMS"
  while read -r _ name; do
    if compgen -G "$dir/parts/*/$name" >/dev/null; then
      cp -- "$dir"/parts/*/"$name" "$dir/wheels/$name"
    elif compgen -G "$dir/parts/*/$name.part-*" >/dev/null; then
      # pieces sort by their suffix (aa, ab, ...) whichever part holds them
      pieces="$(find "$dir/parts" -name "$name.part-*" -printf '%f %p\n' | sort | cut -d' ' -f2-)"
      # shellcheck disable=SC2086
      cat $pieces >"$dir/wheels/$name"
    fi
  done <"$dir/wheels/SHA256SUMS"
  (cd "$dir/wheels" && sha256sum --quiet -c SHA256SUMS) \
    || die "checksum mismatch or wheel missing above: a part did not arrive whole (carry it again)"
  echo "gpu_wheels: $(grep -c . "$dir/wheels/SHA256SUMS") wheels reassembled and verified in $dir/wheels"
}

install() {  # DIR
  local dir="$1"
  assemble "$dir"
  "${PYTHON:-python3}" -m pip install --no-index --find-links "$dir/wheels" -r "$REQUIREMENTS"
}

cmd="${1:-}"
dir="${2:-$ROOT/wheels}"
case "$cmd" in
  download) download "$dir" ;;
  split) split_parts "$dir" ;;
  assemble) assemble "$dir" ;;
  install) install "$dir" ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
