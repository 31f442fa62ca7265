"""What this CPU can do that changes numerics and speed: read once from ``/proc/cpuinfo``, no dependencies.

INT8 is fast where the CPU has INT8 dot-product instructions (VNNI, AMX) and bf16 where it has native bf16;
the bench reports these flags next to every number, and a variant ``--quantize auto`` chose because of them is
only loaded where they are present (:func:`edgekit.artifact.variant_for`).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# CPU features that change numerics: INT8 dot products (VNNI, AMX), bf16/fp16 arithmetic (OpenVINO runs FP32
# models in bf16 by default where it is native) and summation order (AVX2 vs AVX-512 kernels).
NUMERIC_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                     "amx_int8", "amx_fp16")  # fmt: skip
# what makes INT8 matrix products fast, and bf16 ones: a variant chosen for speed on these needs one of them
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def numeric_cpu_flags() -> list[str]:
    """Which of :data:`NUMERIC_CPU_FLAGS` this CPU has (from /proc/cpuinfo; empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in NUMERIC_CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def speed_flags_for(precision: str) -> list[str]:
    """The flags of this CPU that a model at ``precision`` is fast because of (empty for fp32 and GPU formats)."""
    wanted = INT8_DOT_FLAGS if precision.startswith(("int8", "uint8")) else BF16_FLAGS if precision == "bf16" else ()
    return [f for f in numeric_cpu_flags() if f in wanted]


def int8_products_saturate() -> bool:
    """Whether INT8 matrix products can overflow here: on an x86 CPU without INT8 dot products ONNX Runtime's and
    OpenVINO's kernels sum u8 x s8 products in pairs into 16 bits with saturation (AVX2 ``vpmaddubsw``), which
    8-bit weights times large activations exceed; 7-bit weights cannot. Unknown flags on x86 count as saturating."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    return not set(numeric_cpu_flags()) & set(INT8_DOT_FLAGS)
