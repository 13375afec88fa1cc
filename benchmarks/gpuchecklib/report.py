"""The summary lines benchmarks/gpu_check.py prints from its JSON report."""
from gpuchecklib.common import PARTS


def summary_lines(report):
    lines = [f"gpu_check: {', '.join(g['name'] for g in report['environment']['gpus'])}, "
             f"torch {report['environment']['torch']}, commit {report['environment']['git_commit']}"]
    parts = report["parts"]
    for name in PARTS:
        part = parts.get(name)
        if part is None:
            continue
        if "skipped" in part or ("error" in part and name != "ddp"):
            lines.append(f"  {name:<7} {part.get('skipped') or 'FAILED: ' + part['error']}")
        elif name == "parity":
            worst = {}
            for row in part["rows"]:
                ratio = max(row[k]["max_abs_diff"] / max(row[k]["tolerance"], 1e-300)
                            for k in row if k == "forward" or k.startswith("grad_"))
                worst[row["dtype"]] = max(worst.get(row["dtype"], 0.0), ratio)
            lines.append(f"  parity  {'ok' if part['passed'] else 'FAILED'}: {len(part['rows'])} rows, "
                         f"{part['failed_rows']} over tolerance; worst diff / tolerance "
                         + ", ".join(f"{k} {v:.2g}" for k, v in worst.items())
                         + "; build " + ", ".join(f"{k} {v} s" for k, v in part["build_s"].items()))
        elif name == "speed":
            cuda, native = part.get("cuda", {}), part.get("native", {})
            lines.append(f"  speed   forward {cuda.get('forward_ms')} ms (cuda) / {native.get('forward_ms')} ms (native); "
                         f"train step b{part['train_batch']} {cuda.get('train_step_ms')} / "
                         f"{native.get('train_step_ms')} ms")
        elif name == "bf16":
            lines.append(f"  bf16    {'ok' if part['passed'] else 'FAILED'}: forward {part['forward_ms']} ms, "
                         f"train step {part['train_step_ms']} ms, relative diff vs fp32 "
                         f"{part['forward_relative_diff']:.2g} (tolerance {part['tolerance_relative']}), "
                         f"losses finite: {part['train_losses_finite']}")
        elif name == "ddp":
            lines.append(f"  ddp     {'ok' if part.get('passed') else 'FAILED'}: {part.get('gpus')} GPUs, "
                         f"step {part.get('global_step')}, {part.get('wall_s_including_start_up')} s"
                         + (f"; {part['error']}" if part.get("error") else ""))
        elif name == "rtf":
            lines.append("  rtf     " + "; ".join(
                f"{label}: {row.get('rtf', row.get('skipped'))}" for label, row in part["samplers"].items()))
    return lines
