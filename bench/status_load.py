#!/usr/bin/env python3
"""/v1/status latency of one cairnd (fresh home, no folders) while 6 busy processes
load the machine: 1,000 GETs (BENCH_N), a new connection each, 20 ms apart; prints
p50/p90/p99/max. Compare builds by running it once per binary, alternating:

    bench/status_load.py target/release/cairnd /tmp/cairnd-before
"""
import http.client, json, os, shutil, subprocess, sys, tempfile, time


def run(binary, n):
    home = tempfile.mkdtemp(prefix="ab-")
    env = dict(os.environ, CAIRN_PRIVATE_NETWORK_ONLY="1", CAIRN_LOG="warn")
    d = subprocess.Popen([binary, "--home", home], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        info = None
        for _ in range(200):
            p = os.path.join(home, "control.json")
            if os.path.exists(p):
                try:
                    info = json.load(open(p)); break
                except ValueError:
                    pass
            time.sleep(0.05)
        host, port = info["address"].rsplit(":", 1)
        hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(6)]
        time.sleep(1)
        lat = []
        for i in range(n):
            s0 = time.perf_counter()
            c = http.client.HTTPConnection(host, int(port), timeout=10)
            c.request("GET", "/v1/status", headers={"Authorization": "Bearer " + info["token"]})
            r = c.getresponse(); r.read(); c.close()
            lat.append((time.perf_counter() - s0) * 1000)
            time.sleep(0.02)
        for h in hogs: h.kill()
        lat.sort()
        print(f"{binary}: n {n} p50 {lat[n//2]:.2f} p90 {lat[int(n*.9)]:.2f} p99 {lat[int(n*.99)]:.2f} max {lat[-1]:.2f} ms, >=10ms {sum(x>=10 for x in lat)}")
    finally:
        d.terminate(); d.wait()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    for b in sys.argv[1:]:
        run(b, int(os.environ.get("BENCH_N", "1000")))
