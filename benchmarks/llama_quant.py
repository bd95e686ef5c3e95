"""Speed and perplexity of the bundled SmolLM2 GGUF per quantization type on this CPU (not a test).

The bundled file is Q4_1; each other type is made from it with the real llama-quantize (so no type
can be better than Q4_1 in quality, only equal or worse). Speed is llama-bench's prompt evaluation
(pp128) and generation (tg32) in tokens/s at 1 and 2 threads; quality is llama-perplexity over a
fixed English text (the GPL-3 text Debian ships), lower is better. Writes docs/bench/llama-quant.json.

    .venv/bin/python benchmarks/llama_quant.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

from ivrbot_sidecars import models

TEXT = Path("/usr/share/common-licenses/GPL-3")


def bench(tool: Path, model: Path, threads: str, repetitions: int) -> dict[str, dict[str, float]]:
    out = subprocess.run(
        [str(tool), "-m", str(model), "-t", threads, "-p", "128", "-n", "32", "-r", str(repetitions), "-o", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    result: dict[str, dict[str, float]] = {}
    for row in json.loads(out):
        test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        result.setdefault(f"{row['n_threads']} threads", {})[test] = round(row["avg_ts"], 1)
    return result


def perplexity(tool: Path, model: Path, text: Path) -> float:
    out = subprocess.run([str(tool), "-m", str(model), "-f", str(text), "-c", "512", "-t", "2"],
                         capture_output=True, text=True, check=True)
    found = re.search(r"Final estimate: PPL = ([0-9.]+)", out.stdout + out.stderr)
    if found is None:
        raise RuntimeError(f"llama-perplexity printed no estimate: {(out.stderr or out.stdout)[-300:]}")
    return round(float(found.group(1)), 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--types", default="Q4_1,Q8_0,Q4_0", help="the bundled type (Q4_1) is used as shipped")
    p.add_argument("--repetitions", type=int, default=5, help="llama-bench repetitions per figure")
    p.add_argument("--text", type=Path, default=TEXT, help="text for llama-perplexity")
    p.add_argument("--out", type=Path, default=Path("docs/bench/llama-quant.json"))
    a = p.parse_args()
    source = models.bundled_llama_model_path()
    llama_bench, llama_perplexity = models.llama_tool_bin("llama-bench"), models.llama_tool_bin("llama-perplexity")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for quant in a.types.split(","):
            model = source if quant == "Q4_1" else models.requantized(source, quant, Path(tmp))
            rows.append({
                "type": quant,
                "size_mib": round(model.stat().st_size / 2**20, 1),
                "tokens_per_s": bench(llama_bench, model, "1,2", a.repetitions),
                "perplexity": perplexity(llama_perplexity, model, a.text),
            })
            print(json.dumps(rows[-1]), flush=True)
    result = {"source": source.name, "text": str(a.text), "cpus": os.cpu_count(),
              "load_avg_1m": os.getloadavg()[0], "types": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
