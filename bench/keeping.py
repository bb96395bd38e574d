"""What the benchmarks on bench/keeping_pair.sh share (versions.sh, rewind.sh, sqlite.sh):
the report, file digests, disk use, the cairn CLI and a daemon's /metrics. Their inline
scripts import it (`sys.path.insert(0, os.environ["BENCH"])`); bytes on the wire and
rsync's counts come from sync_helper.py."""
import hashlib
import json
import os
import subprocess
import sys
import urllib.request


class Report:
    """Lines printed as they come and written to the results file at the end."""

    def __init__(self):
        self.lines = []

    def say(self, s):
        print(s, flush=True)
        self.lines.append(s)

    def write(self, path):
        with open(path, "w") as f:
            f.write("\n".join(self.lines) + "\n")


def digest(path):
    """sha256 of a file, None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def du(*dirs):
    """Bytes the files under `dirs` take on disk."""
    total = 0
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                try:
                    total += os.lstat(os.path.join(root, f)).st_blocks * 512
                except OSError:
                    pass
    return total


def cli(cairn, home, *args):
    """`cairn --home HOME --json ARGS`, its answer decoded; exits on failure."""
    r = subprocess.run([cairn, "--home", home, "--json", *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"cairn {args}: {r.stderr}")
    return json.loads(r.stdout)


def metrics(home):
    """Every counter of the daemon at HOME, summed over its labels."""
    with open(os.path.join(home, "control.json")) as f:
        info = json.load(f)
    req = urllib.request.Request(f"http://{info['address']}/metrics",
                                 headers={"Authorization": f"Bearer {info['token']}"})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    sums = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{")[0].split()[0]
        sums[name] = sums.get(name, 0.0) + float(line.split()[-1])
    return sums


def metric(home, name):
    """One counter of the daemon at HOME, summed over its labels."""
    return metrics(home).get(name, 0.0)


def cpu_s(pid):
    """CPU seconds (user + system) the process PID has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
