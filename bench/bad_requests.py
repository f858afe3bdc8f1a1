"""Bad requests under load (issue 17): p99 of the good ones with 2% bad requests mixed in, against none.

One generated data set and example model (as `serving.py` makes them); the predictor with and
without `--direct`, each measured by wrk (Debian's package) on loopback at `--connections` (16)
for `--seconds` per run, two runs per server: every request a good v1 predict of one row, then
the same with every 50th request a bad one, in turn: JSON that does not parse, a binary v2 body
whose Inference-Header-Content-Length is "abc", a feature of 1e300, a datatype "fp32", and a
v1 request of `--big-rows` rows (100,000 rows, 5 MB: under the 8 MiB body limit and over the
10,000-row limit, so it is read, parsed off the event loop, then answered 413). wrk's latency
percentiles are over all requests; its non-2xx count says how many were bad. Bounded: each wrk
run is `--seconds` long (after a 3 s warm-up), and the bench stops its servers at exit.

    .venv/bin/python bench/bad_requests.py [--seconds 15] [--connections 16] [--big-rows 100000]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import MODEL, Server, make_data, make_model, running

LUA = """
local good = {good}
local bad = {{{bad}}}
local n = 0
request = function()
  n = n + 1
  if {every} > 0 and n % {every} == 0 then
    local b = bad[(n / {every}) % #bad + 1]
    return wrk.format("POST", b[1], b[2], b[3])
  end
  return wrk.format("POST", "/v1/models/{model}:predict", {{["Content-Type"] = "application/json"}}, good)
end
"""


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string for this ASCII text


def script(row: list[float], every: int, big_rows: int) -> str:
    v1 = f"/v1/models/{MODEL}:predict"
    v2 = f"/v2/models/{MODEL}/infer"
    good = json.dumps({"instances": [row]})
    bad = [
        (v1, {"Content-Type": "application/json"}, '{"instances": [nope'),
        (v2, {"Inference-Header-Content-Length": "abc"}, '{"inputs": []}'),
        (v1, {"Content-Type": "application/json"}, json.dumps({"instances": [[1e300, *row[1:]]]})),
        (
            v2,
            {"Content-Type": "application/json"},
            json.dumps({"inputs": [{"name": "features", "datatype": "fp32", "shape": [1, len(row)], "data": row}]}),
        ),
        (v1, {"Content-Type": "application/json"}, json.dumps({"instances": [row] * big_rows})),
    ]
    entries = ", ".join(
        "{"
        + f"{lua_string(path)}, {{{', '.join(f'[{lua_string(k)}] = {lua_string(v)}' for k, v in headers.items())}}}, "
        f"{lua_string(body)}" + "}"
        for path, headers, body in bad
    )
    return LUA.format(good=lua_string(good), bad=entries, every=every, model=MODEL)


def parse_wrk(text: str) -> dict[str, float]:
    """p50/p90/p99 (ms), requests/s and the count of non-2xx answers from wrk's --latency report."""
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    out: dict[str, float] = {}
    for q in ("50", "90", "99"):
        match = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if match:
            out[f"p{q}_ms"] = float(match.group(1)) * units[match.group(2)]
    match = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(match.group(1)) if match else 0.0
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx"] = float(match.group(1)) if match else 0.0
    match = re.search(r"(\d+) requests in", text)
    out["requests"] = float(match.group(1)) if match else 0.0
    return out


def run_wrk(url: str, lua: Path, seconds: int, connections: int) -> dict[str, float]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s", "-s", str(lua), url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(done.stdout)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--big-rows", type=int, default=100_000)
    p.add_argument("--customers", type=int, default=300)
    args = p.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    from feature_repo import store as fs

    from slipway.controlplane.server import free_port

    with tempfile.TemporaryDirectory(prefix="slipway-bench-bad-") as tmp:
        workdir = Path(tmp)
        feast, _, rows = make_data(workdir, args.customers)
        features = fs.feature_names(fs.open_store(fs.REPO_DIR, feast))
        run_dir = make_model(workdir, rows, features)
        row = [round(float(v), 3) for v in rows[0]]
        scripts = {}
        for name, every in (("none", 0), ("2% bad", 50)):
            scripts[name] = workdir / f"{every}.lua"
            scripts[name].write_text(script(row, every, args.big_rows))
        started = {}
        for name, extra in (("predictor", []), ("predictor-kserve-routes", ["--direct=false"])):
            port = free_port()
            cmd = [sys.executable, "-m", "pipelines.predictor", f"--model_name={MODEL}", f"--http_port={port}", *extra]
            env = {"STORAGE_URI": str(run_dir), "SLIPWAY_MODEL_VERSION": "1"}
            started[name] = Server(name, cmd, env, f"http://127.0.0.1:{port}", workdir / f"{name}.log")
        results: dict[str, dict[str, dict[str, float]]] = {}
        with running(started):
            for name, server in started.items():
                results[name] = {}
                for mix, lua in scripts.items():
                    run_wrk(server.url, lua, 3, args.connections)  # warm-up
                    results[name][mix] = run_wrk(server.url, lua, args.seconds, args.connections)
                    print(name, mix, results[name][mix], flush=True)
        print(json.dumps({"connections": args.connections, "seconds": args.seconds, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
