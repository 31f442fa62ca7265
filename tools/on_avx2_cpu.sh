#!/bin/sh
# Run a command of this project as it would run on an AVX2-only x86-64 CPU: no AVX-512, no VNNI, no bf16, no AMX.
#
# Why: INT8 and bf16 speed and numerics depend on those instructions, and a variant `--quantize auto` chose on a
# VNNI CPU must still meet its fidelity target (and not be slower than FP32) where they are missing. This runs
# the project's Python under qemu-user's emulation of an Intel Haswell (`-cpu Haswell-v4`), so ONNX Runtime's
# and OpenVINO's kernel dispatch sees that CPU (cpuid) and the numerics are the AVX2 kernels', and binds a copy
# of /proc/cpuinfo without those flags over the real one in a private mount namespace, so edgekit's own ISA
# checks see the same CPU. Worker processes Python starts (sys.executable) are emulated too.
#
# Emulation is ~100-300x slower than the real CPU and not in proportion (float is emulated in software), so
# fidelity and decisions measured this way are real for such a CPU; latencies and speed ratios are not.
#
# Needs: Linux, root (for the mount namespace), qemu-user (Debian: apt-get install qemu-user), `make venv`.
#   tools/on_avx2_cpu.sh python tools/measure_heldout.py build/q --reference ref.npy --target openvino
#   tools/on_avx2_cpu.sh python -m edgekit convert MODEL -o OUT --quantize auto --calib-data TEXT
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
venv_python="$root/.venv/bin/python"
[ -x "$venv_python" ] || { echo "no $venv_python: run 'make venv' first" >&2; exit 2; }
command -v qemu-x86_64 >/dev/null || { echo "qemu-x86_64 not found: apt-get install qemu-user" >&2; exit 2; }
[ "$#" -ge 1 ] && [ "$1" = python ] || { echo "usage: $0 python ARGS... (the venv's Python, emulated)" >&2; exit 2; }
shift

# Haswell-v4 less the features qemu's TCG cannot emulate (it warns about each otherwise)
cpu="Haswell-v4,-pcid,-x2apic,-tsc-deadline,-invpcid,-spec-ctrl"
# The wrapper is made sys.executable (qemu's -0 keeps it as argv[0]), so the worker processes edgekit starts go
# through the emulator too. It sits in a venv-shaped temp dir (pyvenv.cfg, lib -> the venv's lib) so Python still
# finds the venv's packages from it; nothing is written into .venv.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin"
cp "$root/.venv/pyvenv.cfg" "$work/"
ln -s "$root/.venv/lib" "$work/lib"
wrapper="$work/bin/python"
printf '#!/bin/sh\nexec qemu-x86_64 -cpu %s -0 "$0" %s "$@"\n' "$cpu" "$venv_python" >"$wrapper"
chmod +x "$wrapper"

cpuinfo="$work/cpuinfo"
# the flags a Haswell lacks that this project looks at (edgekit.cpu) or that kernels dispatch on
sed -E -e '/^flags/ s/ (avx512[a-z0-9_]*|amx[a-z0-9_]*|avx_vnni|sha_ni|vaes|vpclmulqdq|gfni)\b//g' \
    -e 's/^(model name[[:space:]]*:).*/\1 Intel Core Processor (Haswell) emulated by qemu-x86_64 (tools\/on_avx2_cpu.sh)/' \
    /proc/cpuinfo >"$cpuinfo"
unshare -m sh -c 'mount --bind "$0" /proc/cpuinfo && shift && exec "$@"' "$cpuinfo" x "$wrapper" "$@"
