"""INT8 options for all-MiniLM-L6-v2 side by side: the peers a user would otherwise run, and edgekit auto.

    .venv/bin/python benchmarks/peers.py [--rounds 7] [--duration 1.5] [--reuse]      (or: make peers)

Candidates (the bundled model, ``edgekit.sources.bundled_minilm_dir()``; nothing comes from a model hub):

- torch eager FP32 (baseline); ONNX Runtime FP32 and OpenVINO FP32 at its default precision (bf16 where the CPU
  has it) on Optimum's ONNX export (baselines); OpenVINO FP32 IR from optimum-intel's export (cross-check of the
  IR timer against edgekit's worker);
- ORT ``quantize_dynamic`` with its defaults (per-tensor) on that export; Optimum ``ORTQuantizer`` with the
  ``AutoQuantizationConfig`` preset for this CPU's ISA (dynamic, per-channel);
- NNCF ``nncf.quantize`` on the OpenVINO model (``ModelType.TRANSFORMER``, 300 calibration sentences);
  optimum-intel ``OVQuantizer`` (static INT8, same 300 sentences);
- ``edgekit convert <MiniLM> --quantize auto --fidelity "cosine>=0.99" --calib-data benchmarks/data/sentences.txt
  --target onnxruntime --target openvino``: the variant it chose for each target.

The peers pin their own transformers, so they are installed into ``build/peers-venv`` (torch first, at the
Makefile's ``TORCH_PIN``, so pip never pulls a CUDA build) and convert there, each in its own subprocess; edgekit
converts in the project venv. A peer that fails to install or convert is a failed row with its reason.

Latency: batch 1, seq 128 (held-out sentences joined, cut at 128 tokens), 2 threads (ORT intra-op, OpenVINO
INFERENCE_NUM_THREADS, torch), p50 of a loop of single calls (warm-up by count and time, then >= ``--duration`` s,
``perf_counter_ns`` per call); every candidate in its own fresh process, rounds alternating (A B C ... A B C);
speed = median over rounds of the per-round ratio to a baseline from the same round. ONNX files and torch are
timed by edgekit's worker (``python -m edgekit.benchmark.worker``); OpenVINO IR files by this script's own worker,
which does the same thing with the bare OpenVINO API (PERFORMANCE_HINT LATENCY, one infer request).
Fidelity: mean and min cosine of the mean-pooled, normalised embedding to torch FP32 (sentence-transformers) on
``edgekit.benchmark.texts.heldout_texts(300, seed=7)`` (generated everyday sentences), one at a time at natural
length; calibration text is Python documentation (``benchmarks/data/sentences.txt``), a different kind.

Writes ``benchmarks/results/peers.{json,md}`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "benchmarks" / "data" / "sentences.txt"
GOAL = 0.99
SEQ = 128
THREADS = 2
CALIB_N = 300
EVAL_N, EVAL_SEED = 300, 7
PEER_REQUIREMENTS = ("optimum[onnxruntime]", "optimum-intel[openvino,nncf]")
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
_START = time.perf_counter()


def say(message: str) -> None:
    """One progress line with the elapsed time, flushed so a long step shows it is under way."""
    print(f"[peers {time.perf_counter() - _START:6.0f}s] {message}", flush=True)


# ---------------------------------------------------------------------------------------------- the candidates


@dataclass
class Row:
    """One candidate: how it was made, where its file is, how it is timed, and what came out."""

    key: str
    label: str
    tool: str  # "baseline", "peer", "edgekit", or "check" (a timer cross-check, never in the verdict)
    runtime: str  # "torch", "onnxruntime" or "openvino"
    path: str = ""
    timer: str = "edgekit worker"  # or "own IR worker"
    made_by: str = ""  # the conversion step that wrote ``path``
    scheme: str = ""  # what an IR holds, where the runtime reports only its inference precision
    error: str | None = None
    file_bytes: int | None = None
    precision: str = ""
    rounds_p50_ms: list[float] = field(default_factory=list)
    rounds_p90_ms: list[float] = field(default_factory=list)
    speed: dict[str, Any] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def candidate_rows(work: Path) -> list[Row]:
    """Every candidate in timing order; paths are where each conversion step writes its model."""
    ex, ov = work / "optimum-export", work / "ov-export"
    return [
        Row("torch", "torch eager FP32", "baseline", "torch", timer="edgekit worker"),
        Row("ort_fp32", "ONNX Runtime FP32 (Optimum export)", "baseline", "onnxruntime", str(ex / "model.onnx"),
            made_by="optimum-export"),
        Row("ort_dynamic_defaults", "ORT quantize_dynamic defaults (per-tensor)", "peer", "onnxruntime",
            str(work / "ort-dynamic-defaults" / "model.int8.onnx"), made_by="ort-dynamic-defaults"),
        Row("ortquantizer", "Optimum ORTQuantizer preset, per-channel", "peer", "onnxruntime",
            str(work / "ortquantizer" / "model_quantized.onnx"), made_by="ortquantizer"),
        Row("ov_fp32", "OpenVINO FP32 (Optimum ONNX, default precision)", "baseline", "openvino",
            str(ex / "model.onnx"), made_by="optimum-export"),
        Row("ov_fp32_own", "OpenVINO FP32 (same ONNX), own IR worker: timer check", "check", "openvino",
            str(ex / "model.onnx"), timer="own IR worker", made_by="optimum-export"),
        Row("ov_fp32_ir", "OpenVINO FP32 IR (optimum-intel export)", "peer", "openvino",
            str(ov / "openvino_model.xml"), timer="own IR worker", made_by="ov-export"),
        Row("nncf", "OpenVINO + NNCF (TRANSFORMER, 300 sentences)", "peer", "openvino",
            str(work / "nncf" / "model.xml"), timer="own IR worker", made_by="nncf", scheme="int8 static"),
        Row("ovquantizer", "optimum-intel OVQuantizer (static INT8)", "peer", "openvino",
            str(work / "ovquantizer" / "openvino_model.xml"), timer="own IR worker", made_by="ovquantizer",
            scheme="int8 static"),
        Row("edgekit_ort", "edgekit auto -> ONNX Runtime", "edgekit", "onnxruntime", made_by="edgekit"),
        Row("edgekit_ov", "edgekit auto -> OpenVINO", "edgekit", "openvino", made_by="edgekit"),
    ]  # fmt: skip


# ------------------------------------------------------------------------------------ the peers' virtualenv


def torch_pin(makefile: Path = ROOT / "Makefile") -> str:
    """The Makefile's ``TORCH_PIN``: the one place the torch version is written down."""
    match = re.search(r"^TORCH_PIN\s*\??=\s*(\S+)", makefile.read_text(), re.MULTILINE)
    if not match:
        raise SystemExit(f"no TORCH_PIN in {makefile}")
    return match.group(1)


def _pip(venv: Path, *args: str) -> str | None:
    """``pip install`` into ``venv``; None on success, else the last meaningful line of its output."""
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *args],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip() and "is ignored" not in ln]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]  # the first says what; the last is a help link
    return ((errors or lines or [f"pip exited with {proc.returncode}"])[0])[:300]


def ensure_peers_venv(venv: Path, pin: str) -> dict[str, str | None]:
    """Create ``venv`` and install torch (``pin``) first, then each peer; ``{requirement: error or None}``."""
    stamp = venv / ".peers-installed"
    wanted = json.dumps([pin, *PEER_REQUIREMENTS])
    if stamp.is_file() and stamp.read_text() == wanted:
        say(f"peers venv {venv} is up to date")
        return dict.fromkeys([pin, *PEER_REQUIREMENTS])
    if not (venv / "bin" / "python").exists():
        say(f"creating the peers venv {venv}")
        made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
        if made.returncode != 0:
            why = f"venv creation failed: {_last_error(made.stderr, made.returncode)}"
            return dict.fromkeys([pin, *PEER_REQUIREMENTS], why)
    say(f"installing {pin} into the peers venv (the CPU wheel, before anything that depends on torch)")
    status: dict[str, str | None] = {pin: _pip(venv, pin)}
    if status[pin]:
        return {**status, **dict.fromkeys(PEER_REQUIREMENTS, f"not tried: {pin} failed")}
    say(f"installing {', '.join(PEER_REQUIREMENTS)} (torch held at {pin})")
    together = _pip(venv, *PEER_REQUIREMENTS, pin)
    if together is None:
        status.update(dict.fromkeys(PEER_REQUIREMENTS))
    else:  # one peer's pins must not take the other down with it
        for req in PEER_REQUIREMENTS:
            status[req] = _pip(venv, req, pin)
    if not any(status.values()):
        stamp.write_text(wanted)
    return status


def venv_versions(python: Path) -> dict[str, str]:
    """Installed versions of the libraries that matter, as ``python`` sees them."""
    names = ["torch", "transformers", "onnx", "onnxruntime", "openvino", "nncf", "optimum", "optimum-onnx",
             "optimum-intel", "sentence-transformers", "tokenizers", "numpy"]  # fmt: skip
    code = (
        f"import json, importlib.metadata as m\nout = {{}}\nfor n in {names!r}:\n"
        "    try: out[n] = m.version(n)\n    except m.PackageNotFoundError: pass\nprint(json.dumps(out))"
    )
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


# -------------------------------------------------------------------- conversions (peers venv, one process each)

PEER_STEPS: dict[str, tuple[str, ...]] = {  # step: the steps whose output it needs
    "optimum-export": (),
    "ort-dynamic-defaults": ("optimum-export",),
    "ortquantizer": ("optimum-export",),
    "ov-export": (),
    "nncf": ("ov-export",),
    "ovquantizer": ("ov-export",),
}


def isa_preset(flags: Sequence[str]) -> str:
    """Optimum's ``AutoQuantizationConfig`` preset for this CPU: avx512_vnni, avx512 or avx2."""
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def _calibration_feeds(source: Path, calib: Path) -> list[dict[str, np.ndarray]]:
    """The first :data:`CALIB_N` lines of the calibration file, one feed dict each at natural length."""
    lines = [ln.strip() for ln in calib.read_text().splitlines() if ln.strip()][:CALIB_N]
    return [_token_feeds(source, [line]) for line in lines]


def _token_feeds(source: Path, texts: Sequence[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
    """input_ids / attention_mask / token_type_ids (int64) for ``texts``: truncated at 256 tokens (the model's
    max_seq_length) or cut and padded to ``pad_to``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(source / "tokenizer.json"))
    tok.enable_truncation(pad_to or 256)
    if pad_to:
        tok.enable_padding(length=pad_to)
    else:
        tok.no_padding()
    enc = tok.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


def peer_convert(step: str, source: Path, work: Path, calib: Path, flags: Sequence[str]) -> dict[str, Any]:
    """Run one peer conversion step (inside the peers venv) and say what it did."""
    out = work / step
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if step == "optimum-export":
        from optimum.exporters.onnx import main_export

        main_export(str(source), output=str(out), task="feature-extraction", device="cpu")
        return {"how": "optimum.exporters.onnx.main_export(task='feature-extraction')"}
    if step == "ort-dynamic-defaults":
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(work / "optimum-export" / "model.onnx", out / "model.int8.onnx")
        return {"how": "onnxruntime.quantization.quantize_dynamic(model_input, model_output) (defaults)"}
    if step == "ortquantizer":
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        preset = isa_preset(flags)
        config = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=True)
        ORTQuantizer.from_pretrained(str(work / "optimum-export"), file_name="model.onnx").quantize(config, out)
        return {"how": f"ORTQuantizer + AutoQuantizationConfig.{preset}(is_static=False, per_channel=True)",
                "preset": preset}  # fmt: skip
    if step == "ov-export":
        from optimum.intel import OVModelForFeatureExtraction

        OVModelForFeatureExtraction.from_pretrained(str(source), export=True, compile=False).save_pretrained(out)
        return {"how": "OVModelForFeatureExtraction.from_pretrained(export=True).save_pretrained"}
    if step == "nncf":
        import nncf
        import openvino as ov

        model = ov.Core().read_model(work / "ov-export" / "openvino_model.xml")
        names = {p.get_any_name() for p in model.inputs}
        data = [{k: v for k, v in f.items() if k in names} for f in _calibration_feeds(source, calib)]
        quantized = nncf.quantize(model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(data))  # fmt: skip
        ov.save_model(quantized, out / "model.xml")
        return {"how": f"nncf.quantize(model_type=TRANSFORMER, subset_size={len(data)}); ov.save_model defaults"}
    if step == "ovquantizer":
        import nncf
        from optimum.intel import OVConfig, OVModelForFeatureExtraction, OVQuantizationConfig, OVQuantizer

        model = OVModelForFeatureExtraction.from_pretrained(str(work / "ov-export"), compile=False)
        data = _calibration_feeds(source, calib)
        config = OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(data)))
        OVQuantizer.from_pretrained(model).quantize(calibration_dataset=nncf.Dataset(data), save_directory=out,
                                                    ov_config=config)  # fmt: skip
        return {"how": f"OVQuantizer.quantize(OVQuantizationConfig(num_samples={len(data)}), static INT8)"}
    raise SystemExit(f"unknown peer step {step!r}")


def run_peer_steps(venv: Path, source: Path, work: Path, flags: Sequence[str], broken: str | None,
                   reuse: bool) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every peer step as its own subprocess in the peers venv; a failure is recorded, never raised."""
    done: dict[str, dict[str, Any]] = {}
    for step, needs in PEER_STEPS.items():
        failed = [n for n in needs if done[n].get("error")]
        marker = work / step / "peers-step.json"
        if broken or failed:
            done[step] = {"error": broken or f"needs {failed[0]}, which failed"}
        elif reuse and marker.is_file():
            done[step] = json.loads(marker.read_text())
            say(f"peer step {step}: reused {marker.parent}")
        else:
            say(f"peer step {step}: converting in the peers venv ...")
            done[step] = _peer_subprocess(venv, step, source, work, flags)
            if not done[step].get("error"):
                marker.write_text(json.dumps(done[step]))
            how = done[step].get("error") or f"done in {done[step]['seconds']:.0f} s"
            say(f"peer step {step}: {how}")
    return done


def _peer_subprocess(venv: Path, step: str, source: Path, work: Path, flags: Sequence[str]) -> dict[str, Any]:
    """One peer step in a fresh peers-venv process (offline, no project PYTHONPATH); its answer or its error."""
    cmd = [str(venv / "bin" / "python"), str(Path(__file__).resolve()), "peer", step, "--source", str(source),
           "--work", str(work), "--calib", str(SENTENCES), "--flags", ",".join(flags)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": str(THREADS)}  # fmt: skip
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 1200 s"}
    except OSError as exc:  # the peers venv's python is missing or broken
        return {"error": f"cannot start the peers venv's python: {exc}"[:300]}
    (work / f"{step}.log").write_text(proc.stdout + proc.stderr)
    answer = _last_json(proc.stdout)
    if proc.returncode != 0 or answer is None:
        return {"error": _last_error(proc.stderr, proc.returncode)}
    return {**answer, "seconds": round(time.perf_counter() - start, 1)}


def _last_json(text: str) -> dict[str, Any] | None:
    """The last JSON line a child printed (libraries print their own lines before it)."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _last_error(stderr: str, code: int) -> str:
    """The exception line of a traceback (or the last line), short: a failed row's one-line reason."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b", ln)]
    return ((errors or lines or [f"exit code {code}"])[-1])[:300]


# ------------------------------------------------------------------------------------- edgekit (project venv)


def run_edgekit(source: Path, work: Path, reuse: bool) -> dict[str, Any]:
    """``edgekit convert --quantize auto`` for both CPU targets; what it chose per target, or why it failed."""
    out = work / "edgekit-auto"
    cmd = ["convert", str(source), "-o", str(out), "--quantize", "auto", "--fidelity", f"cosine>={GOAL}",
           "--calib-data", str(SENTENCES.relative_to(ROOT)), "--target", "onnxruntime", "--target", "openvino",
           "--force"]  # fmt: skip
    shown = " ".join(f'"{c}"' if ">" in c else c for c in cmd[:-1])
    shown = shown.replace(str(source), "<MiniLM dir>").replace(f"{ROOT}{os.sep}", "")
    record: dict[str, Any] = {"command": f"edgekit {shown}"}
    if not (reuse and (out / "edgekit.json").is_file()):
        say("edgekit convert --quantize auto (both targets; auto times its candidates, this takes minutes) ...")
        start = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        proc = subprocess.run([sys.executable, "-m", "edgekit", *cmd], capture_output=True, text=True, cwd=ROOT,
                              env=env)  # fmt: skip
        (work / "edgekit-convert.log").write_text(proc.stdout + proc.stderr)
        record["seconds"] = round(time.perf_counter() - start, 1)
        if proc.returncode != 0:
            return {**record, "error": _last_error(proc.stderr, proc.returncode)}
        say(f"edgekit convert done in {record['seconds']:.0f} s")
    from edgekit.artifact import read_manifest

    manifest = read_manifest(out)
    record["variants"] = dict(manifest.variants)
    stage = next((s for s in manifest.stages if s.name == "quantize"), None)
    if stage is not None:
        record["candidates"] = [
            {k: c.get(k) for k in ("target", "scheme", "meets", "chosen", "fidelity", "speedup_vs_fp32")}
            for c in stage.metrics.get("candidates", [])
        ]
    return record


# ---------------------------------------------------------------------------------------- measurement helpers


def model_bytes(path: Path) -> int:
    """Bytes on disk of a model with everything it needs: ONNX plus external data, or IR .xml plus .bin."""
    if path.suffix == ".xml":
        return path.stat().st_size + path.with_suffix(".bin").stat().st_size
    from edgekit.onnxfile import external_data_of

    return path.stat().st_size + sum(p.stat().st_size for p in external_data_of(path))


def onnx_input_specs(path: Path) -> dict[str, str]:
    """``{input name: numpy dtype name}`` of an ONNX model (without loading its weights)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    types = {t.name: t.type.tensor_type.elem_type for t in model.graph.input}
    inits = {i.name for i in model.graph.initializer}
    return {n: onnx.helper.tensor_dtype_to_np_dtype(t).name for n, t in types.items() if n not in inits}


def feeds_for(names: Mapping[str, str], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` restricted to the model's inputs, in its dtypes."""
    return {n: np.asarray(feeds[n]).astype(dtype) for n, dtype in names.items()}


def paired(base: Sequence[float], mine: Sequence[float]) -> dict[str, Any]:
    """Per-round base/mine latency ratios and their median: > 1 means faster than the base."""
    ratios = [b / m for b, m in zip(base, mine, strict=True) if b > 0 and m > 0]
    if not ratios:
        return {}
    return {"median": round(statistics.median(ratios), 4), "rounds": [round(r, 4) for r in ratios]}


# -------------------------------------------------------------------------------- own worker (project venv)


def worker_main(request: Mapping[str, Any]) -> dict[str, Any]:
    """Time (``latency_feeds``) and/or embed (``embed_feeds``) one model in this fresh process; a JSON answer."""
    runtime, model = request["runtime"], request["model"]
    run, info = _open(runtime, model, int(request.get("threads", THREADS)))
    answer: dict[str, Any] = {"ok": True, "pid": os.getpid(), **info}
    if request.get("latency_feeds"):
        with np.load(request["latency_feeds"]) as data:
            feeds = {k: data[k] for k in data.files}
        answer["samples_ns"] = _timed(lambda: run(feeds), request)
    if request.get("embed_feeds"):
        with np.load(request["embed_feeds"]) as data:
            count = int(data["count"])
            items = [{k: data[f"{k}/{i}"] for k in ("input_ids", "attention_mask", "token_type_ids")}
                     for i in range(count)]  # fmt: skip
        vectors = np.concatenate([_pooled(run(f), f["attention_mask"]) for f in items])
        np.save(request["embed_out"], vectors)
    return answer


def _open(runtime: str, model: str, threads: int) -> tuple[Callable[[dict[str, np.ndarray]], list[np.ndarray]],
                                                             dict[str, Any]]:  # fmt: skip
    """A ``run(feeds) -> outputs`` for the model on ``runtime`` with ``threads`` threads, and what it reports."""
    if runtime == "torch":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        st = SentenceTransformer(model, device="cpu")

        def run_torch(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            with torch.inference_mode():
                out = st({k: torch.from_numpy(v) for k, v in feeds.items()})
            return [out["sentence_embedding"].numpy()]

        return run_torch, {"precision": "fp32", "version": f"sentence-transformers, torch {torch.__version__}"}
    if runtime == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return (lambda f: sess.run(None, {n: f[n] for n in names})), {"precision": "", "version": ort.__version__}
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads)})
    request = compiled.create_infer_request()
    in_names = [p.get_any_name() for p in compiled.inputs]

    def run_ov(f: dict[str, np.ndarray]) -> list[np.ndarray]:
        res = request.infer({n: f[n] for n in in_names}, share_inputs=True, share_outputs=False)
        return list(res.to_tuple())

    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    return run_ov, {"precision": precision, "version": ov.get_version(),
                    "threads": int(compiled.get_property("INFERENCE_NUM_THREADS"))}  # fmt: skip


def _timed(call: Callable[[], object], req: Mapping[str, Any]) -> list[int]:
    """Warm up by count and by time, then single calls until both minimums are met (as edgekit's worker)."""
    start, n = time.perf_counter(), 0
    while n < int(req["warmup_iterations"]) or time.perf_counter() - start < float(req["warmup_s"]):
        call()
        n += 1
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(float(req["duration_s"]) * 1e9)
    while len(samples) < int(req["iterations"]) or clock() < deadline:
        t0 = clock()
        call()
        samples.append(clock() - t0)
    return samples


def _pooled(outputs: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """The sentence embedding: a rank-2 output as it is (edgekit's, sentence-transformers'), else the mask-weighted
    mean of the token states (Optimum's last_hidden_state); L2-normalised."""
    vec = next((o for o in outputs if o.ndim == 2), None)
    if vec is None:
        tokens = next(o for o in outputs if o.ndim == 3).astype(np.float64)
        m = mask[..., None].astype(np.float64)
        vec = (tokens * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    vec = np.asarray(vec, dtype=np.float64)
    return vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)


def own_worker(request: Mapping[str, Any], timeout_s: float = 600.0) -> dict[str, Any]:
    """:func:`worker_main` in a fresh process of the project venv; its answer, or why there is none."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "worker"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout_s, env=env)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout_s:g} s"}
    answer = _last_json(proc.stdout)
    if proc.returncode != 0 or answer is None:
        return {"ok": False, "error": _last_error(proc.stderr, proc.returncode)}
    return answer


# ------------------------------------------------------------------------------------------ latency and fidelity


def latency_feeds(source: Path, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Batch 1, exactly :data:`SEQ` tokens: held-out sentences joined, cut (and padded, were they short) to 128."""
    return _token_feeds(source, [" ".join(texts)], pad_to=SEQ)


def _timing_request(row: Row, base: Mapping[str, np.ndarray], work: Path, timing: Any, torch_ref: Path | None,
                    source: Path) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """Which worker times ``row`` and its request (feeds written in the model's own input names and dtypes)."""
    from edgekit.benchmark.runner import timing_request

    feeds_path = work / "feeds" / f"{row.key}.npz"
    feeds_path.parent.mkdir(parents=True, exist_ok=True)
    if row.timer == "own IR worker" or (row.runtime == "torch" and torch_ref is None):
        np.savez(feeds_path, **base)
        model = row.path or str(source)
        return "own", {"runtime": row.runtime, "model": model, "threads": THREADS, "latency_feeds": str(feeds_path),
                       "iterations": timing.iterations, "duration_s": timing.duration_s,
                       "warmup_iterations": timing.warmup_iterations, "warmup_s": timing.warmup_s}  # fmt: skip
    request = {**timing_request(row.runtime, timing), "feeds": str(feeds_path)}
    if row.runtime == "torch":  # edgekit's torch baseline: the source, with the artifact's input specs
        from edgekit.artifact import read_manifest

        specs = {s.name: s.dtype for s in read_manifest(torch_ref).input_specs()}
        request.update(model=str(torch_ref), options={"source": str(source)})
    else:
        specs = onnx_input_specs(Path(row.path))
        request["model"] = row.path
    np.savez(feeds_path, **feeds_for(specs, base))
    return "edgekit", request


def measure_rounds(rows: list[Row], base: Mapping[str, np.ndarray], work: Path, rounds: int, duration: float,
                   source: Path, torch_ref: Path | None) -> None:  # fmt: skip
    """Every row once per round, each in its own fresh process, alternating; a row that fails is dropped."""
    from edgekit.benchmark.plan import BenchConfig
    from edgekit.benchmark.runner import run_worker
    from edgekit.benchmark.stats import summarize

    timing = BenchConfig(iterations=20, duration_s=duration, warmup_s=0.5, warmup_iterations=10, rounds=rounds,
                         threads=THREADS, cold_start=False, fidelity=False, timeout_s=600.0)  # fmt: skip
    requests = {r.key: _timing_request(r, base, work, timing, torch_ref, source) for r in rows if r.ok}
    for index in range(rounds):
        say(f"latency round {index + 1}/{rounds}: {sum(r.ok for r in rows)} candidates, one process each")
        for row in (r for r in rows if r.ok):
            which, request = requests[row.key]
            answer = own_worker(request) if which == "own" else run_worker(request, timing.timeout_s)
            if not answer.get("ok") or not answer.get("samples_ns"):
                row.error = f"timing: {answer.get('stage', 'worker')}: {answer.get('error', 'failed')}"[:300]
                say(f"  {row.label}: FAILED ({row.error})")
                continue
            stats = summarize([ns / 1e6 for ns in answer["samples_ns"]])
            row.rounds_p50_ms.append(round(stats.p50, 4))
            row.rounds_p90_ms.append(round(stats.p90, 4))
            reported = str(answer.get("precision") or (answer.get("info") or {}).get("precision") or "")
            row.precision = f"{row.scheme} ({reported} elsewhere)" if row.scheme else reported
            say(f"  {row.label}: p50 {stats.p50:.2f} ms ({stats.n} calls)")


def measure_fidelity(rows: list[Row], source: Path, texts: Sequence[str], work: Path) -> None:
    """Mean/min cosine of each row's pooled, normalised embedding to torch FP32, sentence by sentence."""
    path = work / "feeds" / "heldout.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    items = [_token_feeds(source, [t]) for t in texts]
    np.savez(path, count=np.array(len(items)), **{f"{k}/{i}": v for i, f in enumerate(items) for k, v in f.items()})
    say(f"fidelity: torch FP32 reference on {len(texts)} held-out sentences (sentence-transformers) ...")
    ref_path = work / "feeds" / "torch.npy"
    answer = own_worker({"runtime": "torch", "model": str(source), "embed_feeds": str(path),
                         "embed_out": str(ref_path)})  # fmt: skip
    if not answer.get("ok"):
        for row in rows:
            row.error = row.error or f"no torch reference: {answer.get('error')}"
        return
    ref = np.load(ref_path)
    for row in rows:
        if row.runtime == "torch":
            row.fidelity = {"mean_cosine": 1.0, "min_cosine": 1.0}
            continue
        twin = next((r for r in rows if r is not row and r.fidelity and (r.runtime, r.path) == (row.runtime, row.path)),
                    None)  # fmt: skip
        if not row.ok or twin is not None:
            row.fidelity = dict(twin.fidelity) if twin is not None else {}
            continue
        out = work / "feeds" / f"{row.key}.emb.npy"
        answer = own_worker({"runtime": row.runtime, "model": row.path, "embed_feeds": str(path),
                             "embed_out": str(out)})  # fmt: skip
        if not answer.get("ok"):
            row.error = f"fidelity run: {answer.get('error')}"[:300]
            continue
        cos = (np.load(out) * ref).sum(axis=1)
        row.fidelity = {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
                        "p05_cosine": float(np.quantile(cos, 0.05))}  # fmt: skip
        say(f"  {row.label}: mean cosine {cos.mean():.5f}, min {cos.min():.5f}")


def speeds(rows: list[Row]) -> None:
    """Per-round ratios to each baseline measured in the same rounds (torch, ORT FP32, OpenVINO FP32)."""
    by_key = {r.key: r for r in rows}
    for row in rows:
        if not row.rounds_p50_ms:
            continue
        for base in ("torch", "ort_fp32", "ov_fp32"):
            b = by_key[base]
            if b.rounds_p50_ms and len(b.rounds_p50_ms) == len(row.rounds_p50_ms):
                row.speed[f"vs_{base}"] = paired(b.rounds_p50_ms, row.rounds_p50_ms)


def verdict(rows: list[Row]) -> dict[str, Any]:
    """edgekit's fastest variant meeting the goal against the fastest non-edgekit candidate meeting it (torch
    eager aside), by the median of their per-round ratio."""

    def meets(r: Row) -> bool:
        return bool(r.ok and r.rounds_p50_ms and r.fidelity.get("mean_cosine", 0.0) >= GOAL)

    def p50(r: Row) -> float:
        return statistics.median(r.rounds_p50_ms)

    mine = sorted((r for r in rows if r.tool == "edgekit" and meets(r)), key=p50)
    others = (r for r in rows if r.tool in ("peer", "baseline") and r.runtime != "torch" and meets(r))
    theirs = sorted(others, key=p50)
    out: dict[str, Any] = {"goal": f"mean cosine >= {GOAL}",
                           "edgekit_fastest": mine[0].key if mine else None,
                           "peer_fastest": theirs[0].key if theirs else None}  # fmt: skip
    if theirs:  # every edgekit variant against that peer, meeting the goal or not
        out["each_edgekit_vs_peer"] = {
            r.key: paired(theirs[0].rounds_p50_ms, r.rounds_p50_ms)
            for r in rows
            if r.tool == "edgekit" and r.rounds_p50_ms and len(r.rounds_p50_ms) == len(theirs[0].rounds_p50_ms)
        }
    if mine and theirs:
        ratio = paired(theirs[0].rounds_p50_ms, mine[0].rounds_p50_ms)
        out["edgekit_speed_vs_peer"] = ratio
        out["edgekit_at_least_as_fast"] = bool(ratio and ratio["median"] >= 1.0)
    return out


# ---------------------------------------------------------------------------------------------------- results


def cpu_facts() -> dict[str, Any]:
    """The CPU model, its ISA flags that decide INT8/bf16 speed, and the rest of edgekit's machine facts."""
    from edgekit.benchmark.facts import machine_facts

    facts = machine_facts()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        flags = next((ln.split(":", 1)[1].split() for ln in lscpu.splitlines() if ln.startswith("Flags:")), [])
    except OSError:
        flags = []
    facts["isa_flags"] = {f: f in flags for f in ISA_FLAGS}
    facts["amx"] = any(f.startswith("amx") for f in flags)
    return facts


def _fmt_speed(row: Row, key: str) -> str:
    """A speed ratio as ``1.23x``, ``-`` where there is none."""
    value = row.speed.get(key, {}).get("median")
    return f"{value:.2f}x" if value else "-"


def table(result: Mapping[str, Any]) -> str:
    """The markdown table (also what the terminal shows)."""
    cols = ["candidate", "runtime", "precision", "p50 ms (range over rounds)", "vs torch", "vs ORT FP32", "vs OV FP32",
            "mean cos", "min cos", "meets 0.99", "file MB"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in (Row(**d) for d in result["rows"]):
        if not r.ok:
            lines.append(f"| {r.label} | {r.runtime} | failed | " + "- | " * 7 + f"{r.error} |")
            continue
        mean, low = r.fidelity.get("mean_cosine"), r.fidelity.get("min_cosine")
        p50 = f"{statistics.median(r.rounds_p50_ms):.2f}" if r.rounds_p50_ms else "-"
        if r.rounds_p50_ms:
            p50 += f" ({min(r.rounds_p50_ms):.1f}-{max(r.rounds_p50_ms):.1f})"
        cells = [r.label, r.runtime, r.precision or "-", p50, _fmt_speed(r, "vs_torch"), _fmt_speed(r, "vs_ort_fp32"),
                 _fmt_speed(r, "vs_ov_fp32"), "-" if mean is None else f"{mean:.5f}",
                 "-" if low is None else f"{low:.5f}", "yes" if mean is not None and mean >= GOAL else "no",
                 f"{r.file_bytes / 1e6:.1f}" if r.file_bytes else "-"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(result: Mapping[str, Any]) -> str:
    """peers.md: the machine, the method, the table, the verdict, what each tool ran."""
    m, v = result["machine"], result["verdict"]
    flags = ", ".join(f"{k} {'yes' if on else 'no'}" for k, on in m["isa_flags"].items())
    libs = lambda d: ", ".join(f"{k} {val}" for k, val in sorted(d.items()))  # noqa: E731
    lines = [
        "# all-MiniLM-L6-v2: INT8 options side by side (peers vs edgekit auto)", "",
        f"Run {result['date']} on {m['cpu_model']} ({m['usable_cores']} usable cores). ISA: {flags}.", "",
        f"Project venv: {libs(result['versions']['project'])}.",
        f"Peers venv (`build/peers-venv`): {libs(result['versions']['peers'])}.", "",
        f"Latency: batch 1, seq {SEQ}, {THREADS} threads, p50 of single calls (warm-up 10 calls and 0.5 s, then >= "
        f"{result['duration_s']:g} s); every candidate in its own fresh process, {result['rounds']} rounds "
        "alternating; "
        "speed = median over rounds of the per-round ratio (baseline p50 / candidate p50). The table's p50 is the "
        "median of the per-round p50s. Timers: edgekit's worker for ONNX files and torch, this script's own worker "
        "(bare OpenVINO API, same loop) for OpenVINO IR; the timer-check row runs the same FP32 ONNX on OpenVINO "
        "through the own worker, so its ratio to the OpenVINO FP32 row says how far the two timers agree. "
        f"Load average (1 min) at start / end: {result['load_average'][0]:.1f} / {result['load_average'][1]:.1f} "
        "on this shared machine (other work ran alongside; the per-round ratios absorb slow drift, not bursts).",
        f"Fidelity: cosine of the pooled, normalised embedding to torch FP32 (sentence-transformers) on {EVAL_N} "
        f"generated everyday sentences (`heldout_texts({EVAL_N}, seed={EVAL_SEED})`), one at a time, natural "
        f"length; calibration: the first {CALIB_N} lines of `benchmarks/data/sentences.txt` for the peers, "
        "edgekit's own split of the same file for edgekit.", "",
        table(result), "",
        f"Verdict ({v['goal']}): edgekit's fastest = `{v['edgekit_fastest']}`, fastest other = `{v['peer_fastest']}`"
        + (f"; edgekit vs it: {v['edgekit_speed_vs_peer']['median']:.3f}x (per-round "
           f"{v['edgekit_speed_vs_peer']['rounds']}), at least as fast: **{v['edgekit_at_least_as_fast']}**."
           if v.get("edgekit_speed_vs_peer") else "; no comparison (one side has no candidate meeting the goal)."),
        "Each edgekit variant against that peer, goal met or not (median per-round ratio, > 1 = edgekit faster): "
        + (", ".join(f"`{k}` {x['median']:.3f}x" for k, x in v.get("each_edgekit_vs_peer", {}).items() if x) or "-")
        + ".",
        "", "What each tool ran:", "",
    ]  # fmt: skip
    for step, rec in result["conversions"].items():
        lines.append(f"- `{step}`: {rec.get('error') or rec.get('how') or rec.get('command')}"
                     + (f" ({rec['seconds']} s)" if rec.get("seconds") else ""))  # fmt: skip
    if result["edgekit"].get("variants"):
        lines.append(f"- edgekit chose {result['edgekit']['variants']}")
    lines += ["", f"Reproduce: `{result['command']}`", ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The orchestrator's options (the ``peer`` and ``worker`` modes parse their own)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7, help="Alternating rounds (>= 5 for a headline).")
    p.add_argument("--duration", type=float, default=1.5, help="Seconds timed per candidate per round (>= 1).")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "peers")
    p.add_argument("--venv", type=Path, default=ROOT / "build" / "peers-venv")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--torch-pin", default=None, help="Default: TORCH_PIN from the Makefile.")
    p.add_argument("--reuse", action="store_true", help="Reuse conversions already in --work.")
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    """Install, convert, measure fidelity and latency, write peers.json/.md and print the table."""
    args = parse_args(argv)
    from edgekit.benchmark.texts import heldout_texts
    from edgekit.sources import bundled_minilm_dir

    source, work = bundled_minilm_dir(), args.work.resolve()
    load_start = os.getloadavg()[0]
    work.mkdir(parents=True, exist_ok=True)
    machine = cpu_facts()
    flags = [f for f, on in machine["isa_flags"].items() if on]
    say(f"CPU: {machine['cpu_model']}; ISA: {' '.join(flags)}; model: {source}")
    pin = args.torch_pin or torch_pin()
    installs = ensure_peers_venv(args.venv.resolve(), pin)
    broken = next((f"install of {req} failed: {err}" for req, err in installs.items() if err), None)
    conversions: dict[str, dict[str, Any]] = run_peer_steps(args.venv, source, work, flags, broken, args.reuse)
    edgekit = run_edgekit(source, work, args.reuse)
    conversions["edgekit"] = edgekit
    rows = candidate_rows(work)
    for row in rows:
        if row.tool == "edgekit":
            chosen = (edgekit.get("variants") or {}).get(row.runtime)
            row.error = edgekit.get("error") or (None if chosen else f"no variant for {row.runtime}")
            row.path = str(work / "edgekit-auto" / chosen) if chosen else ""
            row.label += f" ({chosen})" if chosen else ""
        elif row.made_by:
            row.error = conversions[row.made_by].get("error")
        if row.key == "ortquantizer" and conversions["ortquantizer"].get("preset"):
            row.label = row.label.replace("preset", conversions["ortquantizer"]["preset"])
        if row.ok and row.path:
            row.file_bytes = model_bytes(Path(row.path))
    texts = heldout_texts(EVAL_N, seed=EVAL_SEED)
    measure_fidelity(rows, source, texts, work)
    torch_ref = work / "edgekit-auto" if (work / "edgekit-auto" / "edgekit.json").is_file() else None
    measure_rounds(rows, latency_feeds(source, texts), work, args.rounds, args.duration, source, torch_ref)
    speeds(rows)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "command": ".venv/bin/python benchmarks/peers.py" + "".join(f" {a}" for a in argv),
        "machine": machine, "rounds": args.rounds, "duration_s": args.duration, "seq": SEQ, "threads": THREADS,
        "calibration": {"file": str(SENTENCES.relative_to(ROOT)), "peer_sentences": CALIB_N},
        "evaluation": {"texts": f"edgekit.benchmark.texts.heldout_texts({EVAL_N}, seed={EVAL_SEED})"},
        "versions": {"project": venv_versions(Path(sys.executable)),
                     "peers": venv_versions(args.venv / "bin" / "python")},
        "installs": installs, "conversions": conversions, "edgekit": edgekit,
        "rows": [asdict(r) for r in rows], "verdict": verdict(rows),
    }  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "peers.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "peers.md").write_text(markdown(result))
    print("\n" + markdown(result))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's edgekit, also where the venv has another one installed editable
    if sys.argv[1:2] == ["peer"]:  # inside the peers venv: no edgekit here
        cli = argparse.ArgumentParser()
        cli.add_argument("step", choices=sorted(PEER_STEPS))
        for name in ("--source", "--work", "--calib"):
            cli.add_argument(name, type=Path, required=True)
        cli.add_argument("--flags", default="")
        a = cli.parse_args(sys.argv[2:])
        print(json.dumps(peer_convert(a.step, a.source, a.work, a.calib, a.flags.split(","))), flush=True)
        sys.exit(0)
    if sys.argv[1:2] == ["worker"]:  # one measurement in a fresh process of the project venv
        print(json.dumps(worker_main(json.loads(sys.stdin.read()))), flush=True)
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
