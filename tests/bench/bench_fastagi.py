"""Benchmark the FastAGI server: full signal sessions from concurrent fake-Asterisk clients.

Run by hand: python tests/bench/bench_fastagi.py [--clients 50] [--seconds 5]
The server runs in a child process (its own CPU), the clients here. Prints signals/s and p50/p99
connect-to-close latency for FastAgiServer and for a bare asyncio server speaking the same
exchange with no checks (the baseline), and their ratio. Target: >= 2,000 signals/s, p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ENV = (
    b"agi_network: yes\nagi_network_script: botmeter/usage?module=asr&quantity=12&unit=seconds\n"
    b"agi_request: agi://127.0.0.1:4573/botmeter/usage?module=asr&quantity=12&unit=seconds\n"
    b"agi_channel: PJSIP/bot-00000012\nagi_language: en\nagi_type: PJSIP\n"
    b"agi_uniqueid: 1795706738.7\nagi_version: 20.5.0\nagi_callerid: 0612345678\n"
    b"agi_calleridname: Alice\nagi_callingpres: 0\nagi_context: voicebot\nagi_extension: s\n"
    b"agi_priority: 4\nagi_enhanced: 0.0\nagi_accountcode: \nagi_threadid: 140213411874560\n\n"
)


# -- servers (child process) ----------------------------------------------------------------------


async def serve_baseline(stop: asyncio.Event) -> tuple[int, int]:
    """A bare server doing the same exchange, no checks, no limits."""
    count = 0

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        try:
            await reader.readuntil(b"\n\n")
            writer.write(b"GET VARIABLE CHANNEL(linkedid)\n")
            await reader.readline()
            count += 1
            writer.write(b"SET VARIABLE BOTMETER_STATUS ok\n")
            await reader.readline()
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await stop.wait()
    server.close()
    return count, 0


async def serve_fastagi(stop: asyncio.Event) -> tuple[int, int]:
    from agent.bot.fastagi import FastAgiServer
    from agent.logs import setup_logging

    setup_logging("warning")
    count = 0

    def on_signal(sig: object) -> None:
        nonlocal count
        count += 1

    server = FastAgiServer(port=0, on_signal=on_signal)
    await server.start()
    print(server.port, flush=True)
    await stop.wait()
    await server.stop()
    return count, server.stats.errors


async def child(kind: str) -> None:
    """Serve until stdin closes, then print `signals errors cpu_seconds`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: (sys.stdin.readline() or True) and stop.set())
    serve = serve_fastagi if kind == "fastagi" else serve_baseline
    cpu = time.process_time()
    count, errors = await serve(stop)
    print(count, errors, round(time.process_time() - cpu, 3), flush=True)


# -- clients (this process) -----------------------------------------------------------------------


async def one_session(port: int) -> float:
    """One full session as Asterisk does it; seconds from connect to the server's close."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(ENV)
    while line := await reader.readline():
        if line.startswith(b"GET VARIABLE"):
            writer.write(b"200 result=1 (1795706738.4)\n")
        else:
            writer.write(b"200 result=1\n")
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed


async def load(port: int, clients: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            latencies.append(await one_session(port))

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def run(kind: str, clients: int, seconds: float) -> dict[str, float]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    port = int(proc.stdout.readline())
    asyncio.run(load(port, clients, 0.5))  # warm-up
    start = time.perf_counter()
    latencies = asyncio.run(load(port, clients, seconds))
    wall = time.perf_counter() - start
    proc.stdin.close()
    served, errors, cpu = proc.stdout.readline().split()
    proc.wait(timeout=10)
    latencies.sort()
    return {
        "sessions": len(latencies),
        "per_s": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "served": int(served),
        "errors": int(errors),
        "server_cpu_per_session_us": float(cpu) / max(1, int(served)) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", choices=["fastagi", "baseline"], help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve:
        asyncio.run(child(opts.serve))
        return
    print(f"{opts.clients} concurrent clients, {opts.seconds:g} s per server, loopback")
    results = {}
    for kind in ("baseline", "fastagi"):
        r = results[kind] = run(kind, opts.clients, opts.seconds)
        print(f"{kind:9s} {r['per_s']:8.0f} signals/s  p50 {r['p50_ms']:5.2f} ms  "
              f"p99 {r['p99_ms']:5.2f} ms  server CPU {r['server_cpu_per_session_us']:4.0f} us/session"
              f"  ({r['sessions']} sessions, server counted {r['served']} incl. warm-up, errors {r['errors']})")
    ratio = results["fastagi"]["per_s"] / results["baseline"]["per_s"]
    ok = results["fastagi"]["per_s"] >= 2000 and results["fastagi"]["p99_ms"] < 20
    print(f"fastagi/baseline throughput ratio {ratio:.2f}; target >= 2000/s and p99 < 20 ms: "
          f"{'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
