#!/usr/bin/env python3
"""Time from a change to its diagnostics in `nnc lsp`.

Usage: benches/lsp_latency.py [NNC] [MODEL] [CHANGES]
(default: target/release/nnc, models/vgg16.nn, 200 changes).

Opens MODEL, then sends CHANGES full-text changes, alternating the model
with a copy holding a shape mistake, and times each from the moment the
change is written to the moment its diagnostics arrive. Prints the median,
the 95th percentile and the largest, in milliseconds.
"""
import json
import statistics
import subprocess
import sys
import time

nnc = sys.argv[1] if len(sys.argv) > 1 else "target/release/nnc"
model = sys.argv[2] if len(sys.argv) > 2 else "models/vgg16.nn"
changes = int(sys.argv[3]) if len(sys.argv) > 3 else 200
text = open(model, encoding="utf-8").read()
# Shifts every later shape: the checker must redo the whole model.
broken = text.replace("[3, 224, 224]", "[3, 223, 224]", 1)
assert broken != text, "the model has no [3, 224, 224] input to change"

server = subprocess.Popen([nnc, "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def send(message):
    body = json.dumps(message).encode()
    server.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    server.stdin.flush()


def receive():
    length = 0
    while True:
        line = server.stdout.readline().strip()
        if not line:
            break
        if line.startswith(b"Content-Length:"):
            length = int(line.split(b":")[1])
    return json.loads(server.stdout.read(length))


def wait_for_diagnostics():
    while True:
        message = receive()
        if message.get("method") == "textDocument/publishDiagnostics":
            return message["params"]["diagnostics"]


uri = "file:///bench/model.nn"
send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}, "processId": None}})
receive()
send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
document = {"uri": uri, "languageId": "nn", "version": 1, "text": text}
send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": document}})
wait_for_diagnostics()

times = []
for version in range(2, changes + 2):
    body = broken if version % 2 == 0 else text
    start = time.perf_counter()
    send({"jsonrpc": "2.0", "method": "textDocument/didChange",
          "params": {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": body}]}})
    diagnostics = wait_for_diagnostics()
    times.append((time.perf_counter() - start) * 1e3)
    assert (len(diagnostics) > 0) == (body is broken), diagnostics

send({"jsonrpc": "2.0", "id": 2, "method": "shutdown", "params": None})
receive()
send({"jsonrpc": "2.0", "method": "exit", "params": None})
server.wait()
times.sort()
print(f"{model}: {changes} changes, diagnostics after median {statistics.median(times):.2f} ms, "
      f"p95 {times[int(0.95 * len(times)) - 1]:.2f} ms, max {times[-1]:.2f} ms")
