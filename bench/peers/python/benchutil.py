"""What the Python peers' clients share: options, the result line, percentiles."""
import argparse
import json
import sys


def client_options(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", default="amqp://guest:guest@localhost:5672/%2F")
    p.add_argument("--queue", default="rpc_queue")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--size", type=int, default=16)
    return p.parse_args()


def server_options(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", default="amqp://guest:guest@localhost:5672/%2F")
    p.add_argument("--queue", default="rpc_queue")
    p.add_argument("--prefetch", type=int, default=512)
    return p.parse_args()


def mark(what):
    """Tells the orchestrator the measured window opens ("measure") or closes ("end")."""
    sys.stdout.write("@" + what + "\n")
    sys.stdout.flush()


def percentile(sorted_values, p):
    """Nearest rank, as the C++ bench computes it."""
    if not sorted_values:
        return 0.0
    return sorted_values[int(p / 100.0 * (len(sorted_values) - 1) + 0.5)]


def result(latencies_us, seconds, error=None):
    latencies_us.sort()
    out = {
        "calls": len(latencies_us),
        "seconds": seconds,
        "calls_per_s": len(latencies_us) / seconds if seconds > 0 else 0.0,
        "p50_us": percentile(latencies_us, 50),
        "p99_us": percentile(latencies_us, 99),
        "max_us": latencies_us[-1] if latencies_us else 0.0,
    }
    if error:
        out["error"] = error
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")
    sys.stdout.flush()
