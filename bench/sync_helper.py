#!/usr/bin/env python3
"""Helper for bench/sync.sh: data generation, configuration of cairn and Syncthing pairs,
and everything that has to be timed or polled precisely (one process, no fork per poll).

Subcommands (all called by bench/sync.sh; see --help of each):
  gen          generate the data sets under bench/data/sync (kept if already complete)
  pick-ports   N free 127.0.0.1 TCP ports from a start port on
  cairn-config write a cairnd config.toml for one side of a pair
  st-config    edit a generated Syncthing config.xml for one side of a pair
  st-default   print fsWatcherDelayS of a generated config's folder defaults
  pair         write the pair description (JSON) the other subcommands read
  ready        wait until both peers are connected, idle and in sync
  sync         copy a data set (or rename a file) into the sender, time until the receiver
               has it; then wait until both sides settle and count the bytes on the wire
  latency      small-write propagation latency, median of N
  edit-one     overwrite a few bytes of one existing file on the sender, time until the
               receiver has it; median of N (the scale data set)
  monitor      sample /v1/status latency and RSS of both daemons every 200 ms until SIGTERM
  stall        read cairn_loop_stall_seconds from both cairn daemons' /metrics
  rsync        rsync --no-whole-file from a new version onto a copy of the old, locally:
               the bytes its --stats counts (sent + received)
  record       append one result (JSON line)
  report       render the result tables

The pair's two nodes are "sender" (a) and "receiver" (b). Only stdlib is used.
"""
import argparse
import copy
import json
import os
import random
import math
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

MiB = 1 << 20
FOLDER_ID = "shared"


def die(msg, code=1):
    print(f"sync_helper: error: {msg}", file=sys.stderr)
    sys.exit(code)


# ---------------------------------------------------------------------------------------
# Data sets

def _write_random(path, size, rng_bytes=os.urandom):
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(rng_bytes(n))
            left -= n
    os.replace(tmp, path)


def _small_files(root, count, dirs, lo, hi, seed):
    rng = random.Random(seed)
    for i in range(count):
        d = os.path.join(root, f"dir{i % dirs:04}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"file{i:06}.dat"), "wb") as f:
            f.write(os.urandom(rng.randint(lo, hi)))


def scale_name(count):
    return f"scale-{count}"


def _scale_files(root, count, seed=44, per_dir=1000):
    """COUNT files of 1-4 KiB, sizes and bytes from one seeded generator (the first K files
    are the same whatever COUNT), PER_DIR to a directory: d0000/f0000000.dat ..."""
    rng = random.Random(seed)
    made = None
    for i in range(count):
        d = os.path.join(root, f"d{i // per_dir:04}")
        if d != made:
            os.makedirs(d)
            made = d
        with open(os.path.join(d, f"f{i:07}.dat"), "wb") as f:
            f.write(rng.randbytes(rng.randint(1024, 4096)))
        if count >= 100_000 and (i + 1) % 100_000 == 0:
            print(f"gen: {scale_name(count)}: {i + 1:,} files", flush=True)


def _edited(data, seed=7):
    """Ten 100-byte insertions at spread positions and one 1 MiB overwrite."""
    rng = random.Random(seed)
    size = len(data)
    out = bytearray(data)
    # Overwrite first (on the original offsets), at an unaligned offset near 60%.
    off = int(size * 0.6) + 12345
    out[off:off + MiB] = os.urandom(MiB)
    # Insertions from the end backwards so earlier offsets stay valid: one in each tenth.
    positions = [int(size * (i + rng.random()) / 10) for i in range(10)]
    for pos in sorted(positions, reverse=True):
        out[pos:pos] = os.urandom(100)
    return bytes(out), positions, off


def gen(a):
    base = a.base
    os.makedirs(base, exist_ok=True)

    def done(name):
        return os.path.exists(os.path.join(base, f".{name}.complete"))

    def mark(name):
        open(os.path.join(base, f".{name}.complete"), "w").close()

    def fresh(name):
        d = os.path.join(base, name)
        subprocess.run(["rm", "-rf", d], check=True)
        os.makedirs(d)
        return d

    if not done("large"):
        print("gen: large (4 x 256 MiB)", flush=True)
        d = fresh("large")
        for i in range(4):
            _write_random(os.path.join(d, f"large-{i}.bin"), 256 * MiB)
        mark("large")
    if not done("small10k"):
        print("gen: small10k (10,000 files of 1-64 KiB)", flush=True)
        _small_files(fresh("small10k"), 10_000, 100, 1024, 64 * 1024, seed=42)
        mark("small10k")
    if not done("edit"):
        print("gen: edit (256 MiB file and its edited version)", flush=True)
        d = fresh("edit")
        os.makedirs(os.path.join(d, "base"))
        os.makedirs(os.path.join(d, "edited"))
        orig = os.urandom(256 * MiB)
        with open(os.path.join(d, "base", "big.bin"), "wb") as f:
            f.write(orig)
        edited, positions, off = _edited(orig)
        with open(os.path.join(d, "edited", "big.bin"), "wb") as f:
            f.write(edited)
        with open(os.path.join(d, "edits.txt"), "w") as f:
            f.write(f"insertions of 100 bytes at (original offsets): {sorted(positions)}\n")
            f.write(f"1 MiB overwrite at original offset {off}\n")
        mark("edit")
    if not done("identical"):
        print("gen: identical (8 x the same 32 MiB)", flush=True)
        d = fresh("identical")
        blob = os.urandom(32 * MiB)
        for i in range(8):
            with open(os.path.join(d, f"same-{i}.bin"), "wb") as f:
                f.write(blob)
        mark("identical")
    if a.with_huge and not done("huge10g"):
        print("gen: huge10g (one 10 GiB file)", flush=True)
        _write_random(os.path.join(fresh("huge10g"), "huge.bin"), 10 * 1024 * MiB)
        mark("huge10g")
    if a.with_100k and not done("small100k"):
        print("gen: small100k (100,000 files of 1-8 KiB)", flush=True)
        _small_files(fresh("small100k"), 100_000, 1000, 1024, 8 * 1024, seed=43)
        mark("small100k")
    if a.scale and not done(scale_name(a.scale)):
        name = scale_name(a.scale)
        print(f"gen: {name} ({a.scale:,} files of 1-4 KiB, 1,000 to a directory)", flush=True)
        _scale_files(fresh(name), a.scale)
        mark(name)


# ---------------------------------------------------------------------------------------
# Ports

def _port_free(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As the daemons do: a previous listener's TIME_WAIT sockets do not block the port.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_ports(a):
    """Print N free 127.0.0.1 TCP ports, the first at or after START, skipping busy ones."""
    ports = []
    p = a.start
    while len(ports) < a.count:
        if p > a.start + 1000:
            die(f"no {a.count} free ports in {a.start}..{a.start + 1000}; set BENCH_PORT_BASE")
        if _port_free(p):
            ports.append(p)
        p += 1
    print(" ".join(map(str, ports)))


# ---------------------------------------------------------------------------------------
# Configuration

def cairn_config(a):
    text = f"""[network]
listen = ["/ip4/127.0.0.1/tcp/{a.port}"]
mdns = false
bootstrap = []

[control]
listen = "127.0.0.1:0"

[[peers]]
id = "{a.peer_id}"
name = "{a.peer_name}"
addresses = ["/ip4/127.0.0.1/tcp/{a.peer_port}"]

[[folders]]
id = "{FOLDER_ID}"
path = "{os.path.abspath(a.folder)}"
peers = ["{a.peer_id}"]
"""
    with open(os.path.join(a.home, "config.toml"), "w") as f:
        f.write(text)


def _set(parent, tag, value):
    el = parent.find(tag)
    if el is None:
        el = ET.SubElement(parent, tag)
    el.text = str(value)


def st_config(a):
    path = os.path.join(a.home, "config.xml")
    tree = ET.parse(path)
    root = tree.getroot()
    me = root.find("device")
    if me is None:
        die(f"{path}: no <device> element; was it generated by `syncthing generate`?")
    me.set("name", a.name)
    gui = root.find("gui")
    _set(gui, "address", f"127.0.0.1:{a.gui_port}")
    _set(gui, "apikey", a.apikey)
    opts = root.find("options")
    for el in opts.findall("listenAddress"):
        opts.remove(el)
    _set(opts, "listenAddress", f"tcp://127.0.0.1:{a.port}")
    for tag, value in [
        ("globalAnnounceEnabled", "false"),
        ("localAnnounceEnabled", "false"),
        ("relaysEnabled", "false"),
        ("natEnabled", "false"),
        ("urAccepted", "-1"),
        ("crashReportingEnabled", "false"),
        ("startBrowser", "false"),
        ("autoUpgradeIntervalH", "0"),
        # Syncthing lowers its own CPU priority by default; cairn does not. Off for fairness.
        ("setLowPriority", "false"),
        # Only matters if the first dial fails (peer not up yet): retry soon, not in 60 s.
        ("reconnectionIntervalS", "5"),
    ]:
        _set(opts, tag, value)
    defaults = root.find("defaults")
    # The peer, with its static address.
    peer = copy.deepcopy(defaults.find("device"))
    peer.set("id", a.peer_id)
    peer.set("name", a.peer_name)
    for el in peer.findall("address"):
        peer.remove(el)
    addr = ET.Element("address")
    addr.text = f"tcp://127.0.0.1:{a.peer_port}"
    peer.insert(0, addr)
    root.insert(list(root).index(me) + 1, peer)
    # The shared folder, with both devices, the watcher on with its default delay.
    folder = copy.deepcopy(defaults.find("folder"))
    folder.set("id", FOLDER_ID)
    folder.set("label", FOLDER_ID)
    folder.set("path", os.path.abspath(a.folder))
    folder.set("type", "sendreceive")
    folder.set("rescanIntervalS", "3600")
    folder.set("fsWatcherEnabled", "true")
    # Without --watch-delay the version's own default (from <defaults><folder>) stays.
    if a.watch_delay is not None:
        folder.set("fsWatcherDelayS", str(a.watch_delay))
    print(f"fsWatcherDelayS={folder.get('fsWatcherDelayS')}")
    for el in folder.findall("device"):
        folder.remove(el)
    for i, dev in enumerate([me.get("id"), a.peer_id]):
        d = ET.Element("device", {"id": dev, "introducedBy": ""})
        ET.SubElement(d, "encryptionPassword").text = ""
        folder.insert(1 + i, d)
    root.insert(list(root).index(peer) + 1, folder)
    tree.write(path)


def st_default(a):
    """fsWatcherDelayS of the folder defaults in a config.xml that `syncthing generate` wrote
    (the version's default watcher delay); "?" if the config has none."""
    root = ET.parse(os.path.join(a.home, "config.xml")).getroot()
    folder = root.find("defaults/folder")
    print("?" if folder is None else folder.get("fsWatcherDelayS", "?"))


# ---------------------------------------------------------------------------------------
# Talking to the two tools

class Node:
    def __init__(self, pair, role):
        self.tool = pair["tool"]
        self.name = _name(pair)
        self.role = role
        self.info = pair[role]
        self.other = pair["receiver" if role == "sender" else "sender"]
        self.dir = self.info["dir"]
        self._cairn_ctl = None

    # -- plumbing
    def _http(self, path, method="GET", timeout=10):
        if self.tool == "cairn":
            if self._cairn_ctl is None:
                p = os.path.join(self.info["home"], "control.json")
                with open(p) as f:
                    self._cairn_ctl = json.load(f)
            url = f"http://{self._cairn_ctl['address']}{path}"
            headers = {"Authorization": f"Bearer {self._cairn_ctl['token']}"}
        else:
            url = f"http://{self.info['gui']}{path}"
            headers = {"X-API-Key": self.info["apikey"]}
        req = urllib.request.Request(url, method=method, headers=headers,
                                     data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read().decode()

    def get_json(self, path):
        return json.loads(self._http(path))

    def alive(self):
        pid = self.pid()
        if pid is None:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            return state not in ("Z", "X")
        except FileNotFoundError:
            return False

    def pid(self):
        try:
            with open(os.path.join(self.info["home"], "bench.pid")) as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    # -- state
    def status(self):
        """A small dict: connected, idle (the tool says in sync and has nothing to do), raw."""
        if self.tool == "cairn":
            s = self.get_json("/v1/status")
            folder = next(f for f in s["folders"] if f["id"] == FOLDER_ID)
            connected = any(p["id"] == self.other["id"] and p["connected"] for p in s["peers"])
            idle = folder["in_sync"] and folder["state"] == "idle"
            return {"connected": connected, "idle": idle, "state": folder["state"],
                    "error": folder.get("last_error"), "raw": s}
        conns = self.get_json("/rest/system/connections")["connections"]
        connected = conns.get(self.other["id"], {}).get("connected", False)
        st = self.get_json(f"/rest/db/status?folder={FOLDER_ID}")
        idle = (st["state"] == "idle" and st["needFiles"] == 0 and st["needBytes"] == 0
                and st.get("needDeletes", 0) == 0
                and st["localFiles"] == st["globalFiles"] and st["localBytes"] == st["globalBytes"])
        return {"connected": connected, "idle": idle, "state": st["state"],
                "error": st.get("error") or None, "raw": st}

    def peer_done(self):
        """The sender's view: does the receiver have everything (Syncthing: completion)?"""
        if self.tool == "cairn":
            return self.status()["idle"]
        c = self.get_json(f"/rest/db/completion?folder={FOLDER_ID}&device={self.other['id']}")
        return c["completion"] >= 100 and c["needBytes"] == 0 and c.get("needDeletes", 0) == 0

    def counters(self):
        """Bytes counted by the tool itself, for the link to the other peer."""
        if self.tool == "cairn":
            text = self._http("/metrics")
            out = {"chunk_rx": 0, "chunk_tx": 0, "meta_tx": 0, "meta_rx": 0}
            peer = self.other["id"]
            for line in text.splitlines():
                if line.startswith("#"):
                    continue
                m = re.match(r'^(\w+)(\{[^}]*\})?\s+([0-9.eE+]+)$', line)
                if not m:
                    continue
                name, labels, value = m.group(1), m.group(2) or "", int(float(m.group(3)))
                if name == "cairn_bytes_received_total" and f'peer="{peer}"' in labels:
                    out["chunk_rx"] = value
                elif name == "cairn_bytes_sent_total" and f'peer="{peer}"' in labels:
                    out["chunk_tx"] = value
                elif name == "cairn_meta_bytes_sent_total":
                    out["meta_tx"] = value
                elif name == "cairn_meta_bytes_received_total":
                    out["meta_rx"] = value
            return out
        c = self.get_json("/rest/system/connections")["connections"].get(self.other["id"], {})
        return {"in": c.get("inBytesTotal", 0), "out": c.get("outBytesTotal", 0)}


def load_pair(path):
    with open(path) as f:
        return json.load(f)


def _name(pair):
    """The tool as bench/sync.sh names it (cairn, syncthing, syncthing-1.29-d1, ...);
    pair["tool"] is the kind (cairn or syncthing), which decides how to talk to it."""
    return pair.get("name") or pair["tool"]


def tcp_snapshot(ports):
    """bytes_received of every established TCP socket with an end on one of `ports`.
    Both ends of a loopback connection are listed, so the sum is both directions."""
    flt = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( {flt} )"],
                         capture_output=True, text=True, check=True).stdout
    socks = {}
    key = None
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            parts = line.split()
            # Recv-Q Send-Q Local Peer (state is omitted when filtered on one state)
            key = f"{parts[-2]}>{parts[-1]}" if len(parts) >= 4 else None
            if key:
                socks[key] = 0
            m = re.search(r"bytes_received:(\d+)", line)
            if key and m:
                socks[key] = int(m.group(1))
        elif key:
            m = re.search(r"bytes_received:(\d+)", line)
            if m:
                socks[key] = int(m.group(1))
    return socks


def snapshot(pair):
    return {
        "sender": Node(pair, "sender").counters(),
        "receiver": Node(pair, "receiver").counters(),
        "tcp": tcp_snapshot(pair["ports"]),
    }


def wire_bytes(pair, before, after):
    """(tool-counted bytes, TCP payload bytes) between two snapshots."""
    r0, r1 = before["receiver"], after["receiver"]
    if pair["tool"] == "cairn":
        # Chunk bytes both ways on the receiver's link to the sender, plus all folder metadata.
        chunks = sum(r1[k] - r0[k] for k in ("chunk_rx", "chunk_tx"))
        meta = sum(r1[k] - r0[k] for k in ("meta_tx", "meta_rx"))
        detail = {"chunks": chunks, "metadata": meta}
    else:
        inb, outb = r1["in"] - r0["in"], r1["out"] - r0["out"]
        detail = {"sender->receiver": inb, "receiver->sender": outb}
    tool = sum(detail.values())
    tcp = 0
    for k, v in after["tcp"].items():
        b = before["tcp"].get(k, 0)
        tcp += v - b if v >= b else v
    lost = [k for k in before["tcp"] if k not in after["tcp"]]
    return tool, tcp, lost, detail


# ---------------------------------------------------------------------------------------
# Waiting

def _both(pair):
    return Node(pair, "sender"), Node(pair, "receiver")


def _check_alive(nodes):
    for n in nodes:
        if not n.alive():
            die(f"{n.name} {n.role} (pid {n.pid()}) exited; see its log {n.info.get('log')}", 3)


def wait_ready(pair, timeout, quiet=False):
    """Both connected, both idle and in sync. Returns seconds waited."""
    nodes = _both(pair)
    t0 = time.monotonic()
    last = None
    while True:
        _check_alive(nodes)
        try:
            sts = [n.status() for n in nodes]
            last = sts
            if all(s["connected"] and s["idle"] for s in sts) and nodes[0].peer_done():
                return time.monotonic() - t0
            for n, s in zip(nodes, sts):
                if s["state"] == "error":
                    die(f"{n.name} {n.role}: folder in error state: {s['error']}", 3)
        except (OSError, urllib.error.URLError, KeyError, StopIteration, ValueError):
            pass  # not up yet
        if time.monotonic() - t0 > timeout:
            detail = [{k: v for k, v in s.items() if k != "raw"} for s in last] if last else "no API answer"
            die(f"{_name(pair)}: peers not connected+idle after {timeout:.0f} s: {detail}", 2)
        time.sleep(0.05)


def ready(a):
    wait_ready(load_pair(a.pair), a.timeout)


def expected_files(root):
    """{relative path: size} of every regular file under root (a data set, not watched)."""
    out = {}
    for d, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(d, name)
            out[os.path.relpath(full, root)] = os.stat(full).st_size
    return out


def _jiffies(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (FileNotFoundError, TypeError, IndexError, ValueError):
        return 0


def cpu_snapshot(nodes):
    """Busy CPU of the whole machine, of the two daemons and of this process (seconds)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    hz = os.sysconf("SC_CLK_TCK")
    t = os.times()
    return {"busy": busy / hz, "daemons": sum(_jiffies(n.pid()) for n in nodes) / hz,
            "self": t.user + t.system}


def cpu_delta(c0, c1):
    daemons = c1["daemons"] - c0["daemons"]
    other = (c1["busy"] - c0["busy"]) - daemons - (c1["self"] - c0["self"])
    return round(daemons, 2), round(max(other, 0.0), 2)


def sync(a):
    """Put the data into the sender, time until the receiver has it all, then settle.

    The receiver is checked with stat() on the expected paths only: listing or opening files
    in a watched folder is itself a file-system event for a watcher that listens to opens
    (cairn's does), and the check must not make the tool under test do extra work."""
    pair = load_pair(a.pair)
    nodes = _both(pair)
    sender, receiver = nodes
    expected = expected_files(a.expect)
    exp_files, exp_bytes = len(expected), sum(expected.values())
    before = snapshot(pair)
    if a.copy:
        c0 = time.monotonic()
        subprocess.run(["cp", "-R", "--", os.path.join(a.copy, "."), sender.dir + "/"], check=True)
        copy_s = time.monotonic() - c0
    elif a.rename:
        old, new = a.rename.split(":", 1)
        c0 = time.monotonic()
        os.rename(os.path.join(sender.dir, old), os.path.join(sender.dir, new))
        copy_s = time.monotonic() - c0
    else:
        src, dst = a.replace.split(":", 1)
        c0 = time.monotonic()
        os.replace(src, os.path.join(sender.dir, dst))
        copy_s = time.monotonic() - c0
    cpu0 = cpu_snapshot(nodes)
    t0 = time.monotonic()
    pending = dict(expected)
    seen = None
    api_s = None
    while True:
        w0 = time.monotonic()
        for rel, size in list(pending.items()):
            try:
                if os.stat(os.path.join(receiver.dir, rel)).st_size == size:
                    del pending[rel]
            except FileNotFoundError:
                pass
        if not pending:
            if seen is None:
                seen = time.monotonic() - t0
            try:
                if receiver.status()["idle"]:
                    api_s = time.monotonic() - t0
                    # Confirm nothing went away meanwhile (cheap: stat only).
                    pending = {r: z for r, z in expected.items()
                               if not os.path.exists(os.path.join(receiver.dir, r))
                               or os.stat(os.path.join(receiver.dir, r)).st_size != z}
                    if not pending:
                        break
                    seen = api_s = None
            except (OSError, urllib.error.URLError, KeyError, ValueError):
                pass
        walk = time.monotonic() - w0
        now = time.monotonic() - t0
        if now > a.timeout:
            try:
                st = [{k: v for k, v in n.status().items() if k != "raw"} for n in nodes]
            except Exception as e:  # noqa: BLE001 - diagnostics only
                st = f"status unavailable: {e}"
            print(f"sync_helper: timeout after {a.timeout:.0f} s: the receiver lacks "
                  f"{len(pending)} of {exp_files} files (or has a wrong size)"
                  f"{'' if seen is None else f'; all files were there at {seen:.2f} s but it never reported in sync'}"
                  f"; status sender, receiver: {st}", file=sys.stderr)
            cpu_daemons, cpu_other = cpu_delta(cpu0, cpu_snapshot(nodes))
            with open(a.out, "w") as f:
                json.dump({"timeout": True, "seconds": None, "files_seen_s": seen, "copy_s": copy_s,
                           "missing": len(pending), "cpu_daemons_s": cpu_daemons,
                           "cpu_other_s": cpu_other}, f)
            sys.exit(2)
        _check_alive(nodes)
        # While files are missing, poll at a cost of at most a fifth of one core; once they
        # are all there, ask the tool often (an in-sync moment can be short).
        time.sleep(0.02 if not pending else max(0.05, 4 * walk))
    cpu_daemons, cpu_other = cpu_delta(cpu0, cpu_snapshot(nodes))
    # Settle: the sender agrees too, then trailing index/ack messages get a moment.
    s0 = time.monotonic()
    settled = False
    while time.monotonic() - s0 < a.settle_timeout:
        try:
            if sender.peer_done() and (pair["tool"] == "cairn" or sender.status()["idle"]):
                settled = True
                break
        except (OSError, urllib.error.URLError, KeyError, ValueError):
            pass
        time.sleep(0.05)
    if not settled:
        print(f"sync_helper: warning: the sender never reported in sync within {a.settle_timeout:.0f} s "
              f"after the receiver was done; bytes counted anyway", file=sys.stderr)
    time.sleep(2)
    after = snapshot(pair)
    tool, tcp, lost, detail = wire_bytes(pair, before, after)
    res = {"timeout": False, "seconds": api_s, "files_seen_s": seen, "copy_s": copy_s,
           "tool_bytes": tool, "tcp_bytes": tcp, "tcp_sockets_lost": lost, "bytes_detail": detail,
           "files": exp_files, "bytes": exp_bytes, "settled": settled,
           "cpu_daemons_s": cpu_daemons, "cpu_other_s": cpu_other,
           "counters_before": before, "counters_after": after}
    with open(a.out, "w") as f:
        json.dump(res, f)
    print(f"  {_name(pair):<9} {api_s:8.2f} s  (files complete at {seen:.2f} s, copy took {copy_s:.2f} s)"
          f"  wire: {tool:,} B counted by the tool, {tcp:,} B TCP payload; daemons used "
          f"{cpu_daemons:.1f} CPU-s, other processes {cpu_other:.1f} CPU-s", flush=True)


def latency(a):
    pair = load_pair(a.pair)
    sender, receiver = _both(pair)
    times = []
    for i in range(a.runs):
        wait_ready(pair, a.timeout)
        time.sleep(1.0)
        name = f"latency-{i}.txt"
        content = f"small write {i} {time.time_ns()}\n".encode()
        with open(os.path.join(sender.dir, name), "wb") as f:
            f.write(content)
        t0 = time.monotonic()
        target = os.path.join(receiver.dir, name)
        # stat() until the size is right (no open: see sync()), then read it once.
        while True:
            try:
                if os.stat(target).st_size == len(content):
                    dt = time.monotonic() - t0
                    with open(target, "rb") as f:
                        if f.read() == content:
                            break
            except FileNotFoundError:
                pass
            if time.monotonic() - t0 > a.timeout:
                die(f"{_name(pair)}: small write {i} not on the receiver after {a.timeout:.0f} s", 2)
            time.sleep(0.002)
        times.append(dt)
        print(f"  {_name(pair):<9} write {i + 1}: {dt:.3f} s", flush=True)
    res = {"timeout": False, "seconds": statistics.median(times), "runs": times}
    with open(a.out, "w") as f:
        json.dump(res, f)


def edit_one(a):
    """Overwrite 16 bytes in the middle of one existing file on the sender (in place, same
    size), time until the receiver has the new content; RUNS times, a different file each
    time, median. The receiver is polled with stat() only (the tools write a temp file and
    rename it over the old one, so the inode or mtime changes); its file is opened once per
    change seen, to compare the content. Picks from SOURCE, the data set the folder was
    filled from (not the watched folder: no listing there)."""
    pair = load_pair(a.pair)
    sender, receiver = _both(pair)
    files = sorted(expected_files(a.source))
    picks = random.Random(a.seed).sample(files, min(a.runs, len(files)))
    times = []
    res = {"timeout": False, "seconds": None, "runs": times, "files": picks}

    def write(**kw):
        res.update(kw)
        with open(a.out, "w") as f:
            json.dump(res, f)

    try:
        for i, rel in enumerate(picks):
            wait_ready(pair, a.ready_timeout)
            time.sleep(1.0)
            with open(os.path.join(a.source, rel), "rb") as f:
                orig = f.read()
            off = len(orig) // 2 - 8
            patch = bytes(b ^ 0xFF for b in orig[off:off + 16])
            new = orig[:off] + patch + orig[off + 16:]
            target = os.path.join(receiver.dir, rel)
            st = os.stat(target)
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
            with open(os.path.join(sender.dir, rel), "r+b") as f:
                f.seek(off)
                f.write(patch)
            t0 = time.monotonic()
            last_alive = t0
            while True:
                try:
                    st = os.stat(target)
                    key = (st.st_ino, st.st_mtime_ns, st.st_size)
                    if key != seen:
                        dt = time.monotonic() - t0
                        seen = key
                        with open(target, "rb") as f:
                            if f.read() == new:
                                break
                except FileNotFoundError:
                    pass
                now = time.monotonic()
                if now - t0 > a.timeout:
                    die(f"{_name(pair)}: edit {i + 1} of {rel} not on the receiver after {a.timeout:.0f} s", 2)
                if now - last_alive > 1:
                    _check_alive((sender, receiver))
                    last_alive = now
                time.sleep(0.002)
            times.append(dt)
            print(f"  {_name(pair):<9} edit {i + 1} ({rel}): {dt:.3f} s", flush=True)
    except SystemExit:
        write(timeout=True)
        raise
    write(seconds=statistics.median(times))


def _proc_kib(pid, field):
    """VmRSS, VmHWM, ... of a process in KiB (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError, TypeError):
        pass
    return None


def _steal_ms():
    """Milliseconds of CPU time the hypervisor took from this machine (all CPUs, the steal
    column of /proc/stat), None where there is none to read."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _pct(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(p * len(sorted_values)) - 1)]


class _NullServer:
    """An HTTP server in a process of its own that answers every GET with "{}" at once:
    the monitor's baseline (same client, same instants, no daemon behind it)."""
    role = "baseline"
    CODE = (
        "import http.server, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.send_header('Content-Length', '2')\n"
        "        self.end_headers(); self.wfile.write(b'{}')\n"
        "    def log_message(self, *a): pass\n"
        "s = http.server.HTTPServer(('127.0.0.1', 0), H)\n"
        "print(s.server_address[1], flush=True)\n"
        "s.serve_forever()\n")

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE], stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def _http(self, path, timeout=10):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return r.read().decode()

    def close(self):
        self.proc.terminate()
        self.proc.wait(5)


def monitor(a):
    """Until SIGTERM: every INTERVAL s, for each daemon (one thread each, so a slow one does
    not delay the other's samples), time one GET /v1/status (cairn only, unless --no-api)
    and read its VmRSS. A sample that overruns the interval skips the slots it covered.
    On SIGTERM, writes the summary (JSON) to OUT; every sample also goes to TIMELINE (CSV)."""
    pair = load_pair(a.pair)
    nodes = _both(pair)
    api = pair["tool"] == "cairn" and not a.no_api
    path = "/v1/status"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    t0 = time.monotonic()
    lock = threading.Lock()
    tl = open(a.timeline, "w", buffering=1) if a.timeline else None
    if tl:
        tl.write("t_s,role,status_ms,status_ok,rss_kib\n")
    def fresh():
        return {"max": -1.0, "max_at": None, "errors": 0, "last_error": None,
                "by_slot": {}, "late_by_slot": {}, "steal_by_slot": {}, "steal_prev": None, "rss": [], "rss_max": -1, "rss_max_at": None,
                "hwm": None, "dead_at": None}
    data = {n.role: fresh() for n in nodes}

    def run(node):
        d = data[node.role]
        pid = node.pid()
        k = 0
        while not stop.is_set():
            t = time.monotonic() - t0
            if not node.alive():
                d["dead_at"] = t
                return
            ms, ok = None, True
            if api:
                # How late this sample starts after its slot: the monitor itself was not
                # running (the machine stalled it), which the answer's time includes too.
                # Not the first, which waits for the threads to start.
                if k > 0:
                    d["late_by_slot"][k] = max(0.0, (t - k * a.interval) * 1000)
                s0 = time.perf_counter()
                try:
                    node._http(path, timeout=a.request_timeout)
                except Exception as e:  # noqa: BLE001 - any failure is a failed sample
                    ok = False
                    d["errors"] += 1
                    d["last_error"] = f"{type(e).__name__}: {e}"
                ms = (time.perf_counter() - s0) * 1000
                if ms > d["max"]:
                    d["max"], d["max_at"] = ms, t
                # Every role samples at the same slots (t0 + k * interval): a daemon's answer
                # is compared with the baseline's at the same slot.
                d["by_slot"][k] = ms
            if node.role == "baseline":
                # The time the host gave this VM's CPUs to others (steal), per slot.
                steal = _steal_ms()
                if steal is not None and d.get("steal_prev") is not None:
                    d["steal_by_slot"][k] = steal - d["steal_prev"]
                d["steal_prev"] = steal
            rss = _proc_kib(pid, "VmRSS")
            hwm = _proc_kib(pid, "VmHWM")
            if rss is not None:
                if rss > d["rss_max"]:
                    d["rss_max"], d["rss_max_at"] = rss, t
                d["rss"].append(rss)
            if hwm is not None:
                d["hwm"] = hwm
            if tl:
                with lock:
                    tl.write(f"{t:.3f},{node.role},{'' if ms is None else f'{ms:.2f}'},"
                             f"{int(ok)},{'' if rss is None else rss}\n")
            k = max(k + 1, math.floor((time.monotonic() - t0) / a.interval) + 1)
            stop.wait(max(0.0, t0 + k * a.interval - time.monotonic()))

    # A baseline at the same instants: the same GET to a server that does nothing (a
    # process of its own), so slow answers the machine causes (every process waiting for
    # a core, the monitor included) are told from slow answers of a daemon.
    baseline = _NullServer() if api else None
    if baseline:
        data[baseline.role] = fresh()
    threads = [threading.Thread(target=run, args=(n,), daemon=True)
               for n in list(nodes) + ([baseline] if baseline else [])]
    for th in threads:
        th.start()
    while not stop.is_set() and any(th.is_alive() for th in threads):
        time.sleep(0.2)
    stop.set()
    for th in threads:
        th.join(a.request_timeout + 1)
    if baseline:
        baseline.close()
    out = {"interval_s": a.interval, "duration_s": round(time.monotonic() - t0, 2), "api": api,
           "path": path if api else None}
    base_slots = data["baseline"]["by_slot"] if baseline else {}
    base_late = data["baseline"]["late_by_slot"] if baseline else {}
    steal_slots = data["baseline"]["steal_by_slot"] if baseline else {}
    for role, d in data.items():
        lat = sorted(d["by_slot"].values())
        # Slow answers while the do-nothing server at the same instant was fast, counted
        # from the slot (a baseline sample that started late waited for the machine as
        # well): the daemon's own share of the slow answers (the rest, the machine
        # stalled everyone, the monitor included).
        own_slow = sum(1 for k, ms in d["by_slot"].items()
                       if ms >= 50 and k in base_slots
                       and base_slots[k] + base_late.get(k, 0.0) < 50)
        rss = d["rss"]
        out[role] = {
            "status": None if not api else {
                "samples": len(lat), "errors": d["errors"], "last_error": d["last_error"],
                "p50_ms": _pct(lat, 0.50), "p99_ms": _pct(lat, 0.99),
                "max_ms": lat[-1] if lat else None, "max_at_s": d["max_at"],
                "over_50ms": sum(1 for x in lat if x >= 50),
                "late_max_ms": max(d["late_by_slot"].values(), default=None),
                "over_50ms_baseline_fast": own_slow if baseline else None,
                # Steal in the slots of this role's answers of 50 ms or more.
                "slow_steal_ms": [round(steal_slots.get(k, 0.0)) for k, ms in
                                  sorted(d["by_slot"].items()) if ms >= 50],
                "steal_total_ms": round(sum(steal_slots.values())),
                "steal_slot_max_ms": max(steal_slots.values(), default=None)},
            "rss": {"samples": len(rss), "max_kib": max(rss) if rss else None,
                    "max_at_s": d["rss_max_at"], "hwm_kib": d["hwm"]},
            "dead_at_s": d["dead_at"],
        }
    with open(a.out, "w") as f:
        json.dump(out, f)
    if tl:
        tl.close()


def parse_histogram(text, name):
    """A Prometheus histogram from /metrics text: {"buckets": [[le, cumulative], ...] (le as
    written, "+Inf" last), "count", "sum_s"} (None if the histogram is not there)."""
    buckets, count, total = [], None, None
    for line in text.splitlines():
        m = re.match(rf'^{name}_bucket\{{le="([^"]+)"\}}\s+(\S+)$', line)
        if m:
            buckets.append([m.group(1), int(float(m.group(2)))])
            continue
        m = re.match(rf'^{name}_(sum|count)\s+(\S+)$', line)
        if m:
            if m.group(1) == "sum":
                total = float(m.group(2))
            else:
                count = int(float(m.group(2)))
    if not buckets or count is None:
        return None
    buckets.sort(key=lambda b: float(b[0]))
    return {"buckets": buckets, "count": count, "sum_s": total}


def histogram_stats(h, q=0.99):
    """p99 as the upper bound of the first bucket whose cumulative count reaches 99% of all,
    and the highest bucket that holds an observation (its lower and upper bound)."""
    if h is None:
        return None
    n = h["count"]
    out = {"count": n, "sum_s": h["sum_s"], "p99_le": None, "max_le": None, "max_gt": None,
           "buckets": h["buckets"]}
    if n == 0:
        return out
    out["p99_le"] = next((le for le, c in h["buckets"] if c >= q * n), "+Inf")
    prev_le, prev_c = "0", 0
    for le, c in h["buckets"]:
        if c > prev_c:
            out["max_le"], out["max_gt"] = le, prev_le
        prev_le, prev_c = le, c
    return out


def stall(a):
    """cairn_loop_stall_seconds of both daemons of a cairn pair, to OUT (JSON)."""
    pair = load_pair(a.pair)
    out = {}
    for node in _both(pair):
        try:
            text = node._http("/metrics", timeout=10)
            out[node.role] = histogram_stats(parse_histogram(text, "cairn_loop_stall_seconds"))
        except (OSError, urllib.error.URLError, ValueError) as e:
            out[node.role] = None
            print(f"sync_helper: warning: /metrics of the {node.role}: {e}", file=sys.stderr)
    with open(a.out, "w") as f:
        json.dump(out, f)


def pair_cmd(a):
    pair = {
        "tool": a.tool,
        "name": a.name or a.tool,
        "ports": a.ports,
        "sender": {"home": a.sender_home, "dir": a.sender_dir, "id": a.sender_id,
                   "gui": a.sender_gui, "apikey": a.apikey, "log": a.sender_log},
        "receiver": {"home": a.receiver_home, "dir": a.receiver_dir, "id": a.receiver_id,
                     "gui": a.receiver_gui, "apikey": a.apikey, "log": a.receiver_log},
    }
    with open(a.out, "w") as f:
        json.dump(pair, f, indent=1)


def rsync_stat(text, label):
    m = re.search(rf"^{label}: ([0-9,]+)", text, re.M)
    return None if m is None else int(m.group(1).replace(",", ""))


def rsync_cmd(a):
    """rsync -a --no-whole-file --stats SRC/ DEST/ on this machine (no daemon, no ssh: rsync's
    two ends talk through a pipe, with the delta algorithm forced on as over a network).
    Writes the bytes rsync counted (sent + received, from --stats) as tool_bytes, with the
    wall time as seconds (not comparable with a daemon's: nothing is watched or announced)."""
    cmd = ["rsync", "-a", "--no-whole-file", "--stats", a.src.rstrip("/") + "/", a.dest.rstrip("/") + "/"]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        die(f"rsync exited with {p.returncode}", 2)
    sent = rsync_stat(p.stdout, "Total bytes sent")
    received = rsync_stat(p.stdout, "Total bytes received")
    if sent is None or received is None:
        sys.stderr.write(p.stdout)
        die("no 'Total bytes sent/received' in rsync --stats")
    res = {"timeout": False, "seconds": dt, "tool_bytes": sent + received,
           "rsync_sent": sent, "rsync_received": received,
           "rsync_literal": rsync_stat(p.stdout, "Literal data"),
           "rsync_matched": rsync_stat(p.stdout, "Matched data"),
           "bytes_detail": {"sent": sent, "received": received}}
    with open(a.out, "w") as f:
        json.dump(res, f)
    print(f"  {'rsync':<9} {sent + received:,} B (sent {sent:,} + received {received:,}; literal data "
          f"{res['rsync_literal']}, matched {res['rsync_matched']}) in {dt:.2f} s", flush=True)


# ---------------------------------------------------------------------------------------
# Results

DATASETS = {
    "large": ("1 GiB in large files (4 x 256 MiB)", "time"),
    "small10k": ("10,000 files of 1-64 KiB", "time"),
    "edit-initial": ("256 MiB file, first sync (setup for the edit, not a target)", None),
    "edit": ("256 MiB file: ten 100-byte insertions + one 1 MiB overwrite", "time+bytes"),
    "identical": ("8 identical 32 MiB files", "time"),
    "dirrename-initial": ("10,000 files under old/, first sync (setup, not a target)", None),
    "dirrename": ("mv old new: a directory of 10,000 files renamed (target < 2 s)", "time"),
    "latency": ("small write propagation latency (median of runs)", "latency"),
    "small100k": ("100,000 files of 1-8 KiB (BENCH_100K=1)", "time"),
    "huge10g": ("one 10 GiB file (BENCH_HUGE=1; not a target: memory bounded by file size)", None),
    "scale": ("files of 1-4 KiB, 1,000 to a directory (BENCH_ONLY=scale, BENCH_SCALE_FILES)", "scale"),
}

# What rsync is run on, for the data sets where bench/sync.sh runs it (a change to an
# existing version, so rsync's delta transfer is the point of comparison).
RSYNC_WHAT = {"edit": "edited big.bin onto a copy of the original"}

# Issue #13's targets for the scale data set (cairn).
SCALE_EDIT_S = 1.0
SCALE_RSS_MIB = 500
SCALE_STATUS_MS = 50
STALL_P99_S = 0.020


def record(a):
    entry = {"dataset": a.dataset, "tool": a.tool}
    if a.result and os.path.exists(a.result):
        with open(a.result) as f:
            r = json.load(f)
        for k in ("timeout", "seconds", "files_seen_s", "copy_s", "tool_bytes", "tcp_bytes",
                  "tcp_sockets_lost", "bytes_detail", "files", "bytes", "runs", "settled",
                  "cpu_daemons_s", "cpu_other_s", "missing", "rsync_sent", "rsync_received",
                  "rsync_literal", "rsync_matched"):
            if k in r:
                entry[k] = r[k]
    else:
        entry["timeout"] = True
    if a.failed:
        entry["failed"] = a.failed
    if a.verify:
        entry["verify"] = a.verify
    if a.rss:
        entry["rss_kib"] = [int(x) for x in a.rss.split(",") if x]
    for key, path in (("monitor", a.monitor), ("stall", a.stall), ("edit", a.edits)):
        if path and os.path.exists(path):
            with open(path) as f:
                entry[key] = json.load(f)
        elif path:
            entry[key] = None
    with open(a.results, "a") as f:
        f.write(json.dumps(entry) + "\n")


def _fmt_s(e, digits=2):
    if e is None:
        return "-"
    if e.get("failed"):
        return "FAILED"
    if e.get("timeout") or e.get("seconds") is None:
        return "TIMEOUT"
    return f"{e['seconds']:.{digits}f}"


def _fmt_b(v):
    return "-" if v is None else f"{v:,}"


def _ratio(c, s, key):
    try:
        if c.get("failed") or s.get("failed") or c.get("timeout") or s.get("timeout"):
            return None
        if c[key] is None or not s[key]:
            return None
        return c[key] / s[key]
    except (KeyError, TypeError, AttributeError):
        return None


def _verdict(r, limit):
    if r is None:
        return "n/a"
    return "PASS" if r <= limit else "FAIL"


def _ms_bound(le):
    return f"{float(le) * 1000:g}"


def _fmt_p99(st):
    if not st or st.get("p99_le") is None:
        return "-"
    if st["p99_le"] == "+Inf":
        last = [b[0] for b in st["buckets"] if b[0] != "+Inf"]
        return f"> {_ms_bound(last[-1])} ms" if last else "> ?"
    return f"<= {_ms_bound(st['p99_le'])} ms"


def _fmt_longest(st):
    if not st or st.get("max_le") is None:
        return "-"
    if st["max_le"] == "+Inf":
        return f"> {_ms_bound(st['max_gt'])} ms"
    return f"({_ms_bound(st['max_gt'])}, {_ms_bound(st['max_le'])}] ms"


def _stall_pass(st):
    if not st or st.get("p99_le") is None:
        return None
    return float(st["p99_le"]) <= STALL_P99_S


def _pf(ok):
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _stall_row(label, st):
    mean = "-"
    if st and st.get("count") and st.get("sum_s") is not None:
        mean = f"{st['sum_s'] / st['count'] * 1000:.2f}"
    turns = "-" if not st else f"{st['count']:,}"
    return (f"  {label:<22} {turns:>10} {_fmt_p99(st):>12} {_fmt_longest(st):>16} {mean:>8}   "
            f"{_pf(_stall_pass(st))}")


def _peak_kib(e, role_index):
    """The highest of: VmHWM read at the end, the monitor's last VmHWM and its highest VmRSS
    sample (the kernel's RSS counters are approximate, so a sample can top the VmHWM read
    later; and if the daemon died, the end read is 0). None if nothing was read."""
    r = e.get("rss_kib") or []
    rss = ((e.get("monitor") or {}).get(("sender", "receiver")[role_index]) or {}).get("rss") or {}
    vals = [v for v in (r[role_index] if len(r) > role_index else None,
                        rss.get("hwm_kib"), rss.get("max_kib")) if v]
    return max(vals) if vals else None


def _scale_lines(c, others, w=10):
    """The scale data set's extra figures and issue #13's targets. OTHERS: [(name, entry)]
    of the Syncthing variants; W: width of the name column."""
    out = []
    ok_sync = None
    if c:
        ok_sync = not (c.get("failed") or c.get("timeout")) and c.get("verify") == "ok"
    out.append("  one edited file (16 bytes overwritten in place on the sender) until on the receiver:")
    ok_edit = None
    for name, e in [("cairn", c)] + others:
        if e is None:
            continue
        ed = e.get("edit")
        if not ed:
            out.append(f"    {name:<{w}} {'-':>9}   (not run: the first sync did not finish)")
            continue
        runs = ", ".join(f"{x:.3f}" for x in ed.get("runs", []))
        med = ed.get("seconds")
        val = "TIMEOUT" if ed.get("timeout") or med is None else f"{med:.3f} s"
        tgt = ""
        if name == "cairn":
            ok_edit = None if med is None or ed.get("timeout") else med < SCALE_EDIT_S
            if ed.get("timeout"):
                ok_edit = False
            tgt = f"   target median < {SCALE_EDIT_S:g} s -> {_pf(ok_edit)}"
        out.append(f"    {name:<{w}} {val:>9}   median of runs: {runs}{tgt}")
    ok_rss = None
    out.append("  RSS of each daemon, MiB: peak over the whole run (the higher of VmHWM and the samples) / "
               "highest sample (at s):")
    for name, e in [("cairn", c)] + others:
        if e is None:
            continue
        mon = e.get("monitor") or {}
        parts = []
        peaks = []
        for i, role in enumerate(("sender", "receiver")):
            peak = _peak_kib(e, i)
            r = (mon.get(role) or {}).get("rss") or {}
            peaks.append(peak)
            smax, at = r.get("max_kib"), r.get("max_at_s")
            parts.append(f"{role} {'-' if not peak else f'{peak / 1024:.1f}'} / "
                         f"{'-' if not smax else f'{smax / 1024:.1f}'}"
                         f"{'' if at is None else f' ({at:.0f})'}")
        tgt = ""
        if name == "cairn":
            ok_rss = None if not all(peaks) else max(peaks) / 1024 < SCALE_RSS_MIB
            tgt = f"   target < {SCALE_RSS_MIB} MiB each -> {_pf(ok_rss)}"
        out.append(f"    {name:<{w}} {'; '.join(parts)}{tgt}")
    ok_status = None
    mon = (c or {}).get("monitor") or {}
    if mon.get("api"):
        out.append(f"  GET {mon.get('path')} every {mon['interval_s'] * 1000:.0f} ms from each cairn daemon, "
                   f"from before the copy to the end of the edits ({mon.get('duration_s', 0):.0f} s), ms:")
        oks = []
        for role in ("sender", "receiver", "baseline"):
            st = (mon.get(role) or {}).get("status") or {}
            f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
            if role == "baseline":
                if st.get("samples"):
                    out.append(f"    {role:<9} samples {st.get('samples', 0):,}, p50 {f(st.get('p50_ms'))}, "
                               f"p99 {f(st.get('p99_ms'))}, max {f(st.get('max_ms'))}, >= 50 ms: "
                               f"{st.get('over_50ms', 0)}, started up to {f(st.get('late_max_ms'))} ms after "
                               f"its slot   (a server that does nothing, same client and instants: what "
                               f"the machine costs)")
                    if st.get("steal_total_ms") is not None:
                        out.append(f"    host steal (CPU time the hypervisor gave to others, /proc/stat): "
                                   f"{st['steal_total_ms'] / 1000:.1f} s in all, at most "
                                   f"{f(st.get('steal_slot_max_ms'))} ms in one {mon['interval_s'] * 1000:.0f} ms slot")
                continue
            ok = None if not st.get("samples") else (st.get("max_ms") < SCALE_STATUS_MS and not st.get("errors"))
            oks.append(ok)
            at = st.get("max_at_s")
            err = f", last error: {st['last_error']}" if st.get("errors") else ""
            own = ("" if st.get("over_50ms_baseline_fast") is None else
                   f" ({st['over_50ms_baseline_fast']} while the baseline answered in < 50 ms from its slot)")
            if st.get("slow_steal_ms"):
                own += f" (host steal in their slots, ms: {', '.join(map(str, st['slow_steal_ms']))})"
            out.append(f"    {role:<9} samples {st.get('samples', 0):,}, errors {st.get('errors', 0)}, "
                       f"p50 {f(st.get('p50_ms'))}, p99 {f(st.get('p99_ms'))}, max {f(st.get('max_ms'))}"
                       f"{'' if at is None else f' (at {at:.0f} s)'}, >= 50 ms: {st.get('over_50ms', 0)}"
                       f"{own}   target max < {SCALE_STATUS_MS} ms -> {_pf(ok)}{err}")
        ok_status = None if None in oks else all(oks)
    elif c:
        out.append("  GET /v1/status: not sampled (no monitor result)")
    ok_stall = None
    if c and c.get("stall"):
        out.append("  event-loop stall, cairn_loop_stall_seconds at the end of the run (before the check):")
        out.append(f"  {'daemon':<22} {'turns':>10} {'p99':>12} {'longest':>16} {'mean ms':>8}   "
                   f"target p99 < {STALL_P99_S * 1000:g} ms")
        oks = []
        for role in ("sender", "receiver"):
            st = c["stall"].get(role)
            oks.append(_stall_pass(st))
            out.append(_stall_row(f"  cairn {role}", st))
        ok_stall = None if None in oks else all(oks)
    if c:
        out.append(f"  issue #13 targets for cairn at {c.get('files') or 0:,} files: first sync completes "
                   f"{_pf(ok_sync)}; one edit < {SCALE_EDIT_S:g} s {_pf(ok_edit)}; RSS < {SCALE_RSS_MIB} MiB "
                   f"{_pf(ok_rss)}; /v1/status < {SCALE_STATUS_MS} ms {_pf(ok_status)}; "
                   f"stall p99 < {STALL_P99_S * 1000:g} ms {_pf(ok_stall)}")
    return out


def _f2(r):
    return "-" if r is None else f"{r:.2f}"


def report(a):
    entries = []
    if os.path.exists(a.results):
        with open(a.results) as f:
            entries = [json.loads(line) for line in f if line.strip()]
    by = {}
    tools = []  # in the order they ran: cairn, then each Syncthing variant; rsync apart
    for e in entries:
        by[(e["dataset"], e["tool"])] = e
        if e["tool"] not in tools and e["tool"] != "rsync":
            tools.append(e["tool"])
    w = max([10] + [len(t) for t in tools])
    out = []
    summary = []  # (data set, versus, time, CPU s, bytes (tool), bytes (TCP)): cairn/versus
    order = [d for d in DATASETS if any(k[0] == d for k in by)]
    for ds in order:
        title, kind = DATASETS[ds]
        c = by.get((ds, "cairn"))
        others = [(t, by[(ds, t)]) for t in tools if t != "cairn" and (ds, t) in by]
        rs = by.get((ds, "rsync"))
        rows = ([("cairn", c)] if c else []) + others
        if ds == "scale":
            n = next((e.get("files") for _, e in rows if e.get("files")), None)
            title = f"{'?' if n is None else f'{n:,}'} {title}"
        out.append(f"== {ds}: {title}")
        if kind == "latency":
            out.append(f"  {'tool':<{w}} {'median s':>9}   runs (s)")
            for name, e in rows:
                runs = ", ".join(f"{x:.3f}" for x in e.get("runs", []))
                out.append(f"  {name:<{w}} {_fmt_s(e, 3):>9}   {runs}")
            med = c.get("seconds") if c and not c.get("timeout") and not c.get("failed") else None
            for name, e in others if c else []:
                r = _ratio(c, e, "seconds")
                out.append(f"  cairn/{name}: time {'-' if r is None else f'{r:.3f}'}")
                summary.append((ds, name, r, None, None, None))
            if c:
                out.append(f"  target: cairn < 0.5 s -> {'n/a' if med is None else ('PASS' if med < 0.5 else 'FAIL')}")
            out.append("")
            continue
        rcol = f" {'rsync bytes':>13}" if rs else ""
        out.append(f"  {'tool':<{w}} {'seconds':>8} {'(files s)':>9} {'copy s':>6} {'CPU s':>6} "
                   f"{'wire bytes (tool)':>18} {'TCP bytes (ss)':>15}{rcol}  check")
        for name, e in rows:
            fs = e.get("files_seen_s")
            cpu = e.get("cpu_daemons_s")
            notes = [e.get("verify", "-")]
            if e.get("settled") is False:
                notes.append("sender never said in sync")
            if e.get("missing"):
                notes.append(f"{e['missing']} files missing")
            if (e.get("cpu_other_s") or 0) > 0.5:
                notes.append(f"other processes used {e['cpu_other_s']:.1f} CPU-s meanwhile")
            cp = e.get("copy_s")
            rval = f" {_fmt_b(rs.get('tool_bytes')):>13}" if rs else ""
            out.append(f"  {name:<{w}} {_fmt_s(e):>8} {'-' if fs is None else f'{fs:.2f}':>9} "
                       f"{'-' if cp is None else f'{cp:.2f}':>6} {'-' if cpu is None else f'{cpu:.1f}':>6} "
                       f"{_fmt_b(e.get('tool_bytes')):>18} {_fmt_b(e.get('tcp_bytes')):>15}{rval}  "
                       f"{'; '.join(notes)}")
        for name, e in rows:
            if e.get("bytes_detail"):
                parts = ", ".join(f"{k} {v:,}" for k, v in e["bytes_detail"].items())
                out.append(f"  {name} wire bytes (tool) = {parts}")
        if rs:
            if rs.get("failed") or rs.get("tool_bytes") is None:
                out.append(f"  rsync bytes: FAILED ({rs.get('failed') or 'no result'})")
            else:
                out.append(f"  rsync bytes = sent {rs['rsync_sent']:,} + received {rs['rsync_received']:,} "
                           f"(rsync -a --no-whole-file --stats, local, no daemon: {RSYNC_WHAT.get(ds, ds)}; "
                           f"literal data {_fmt_b(rs.get('rsync_literal'))}, matched {_fmt_b(rs.get('rsync_matched'))}; "
                           f"{rs['seconds']:.2f} s; check {rs.get('verify', '-')})")
        for name, e in others:
            if not c:
                continue
            rt = _ratio(c, e, "seconds")
            rcpu = _ratio(c, e, "cpu_daemons_s")
            rb = _ratio(c, e, "tool_bytes")
            rtcp = _ratio(c, e, "tcp_bytes")
            summary.append((ds, name, rt, rcpu, rb, rtcp))
            out.append(f"  cairn/{name}: time {_f2(rt)}, CPU s {_f2(rcpu)}, bytes (tool) {_f2(rb)}, "
                       f"bytes (TCP) {_f2(rtcp)}")
            if kind in ("time", "time+bytes"):
                out.append(f"    target: time <= 0.50 -> {_verdict(rt, 0.5)}")
            if kind == "time+bytes":
                out.append(f"    target: bytes <= 0.33 -> tool counters {_verdict(rb, 1 / 3)}, "
                           f"TCP {_verdict(rtcp, 1 / 3)}")
        if c and rs:
            rb = _ratio(c, rs, "tool_bytes")
            # rsync has one count (its own, above its pipe); both of cairn's are set against it.
            rtcp = None if rb is None or not c.get("tcp_bytes") else c["tcp_bytes"] / rs["tool_bytes"]
            summary.append((ds, "rsync", None, None, rb, rtcp))
            out.append(f"  cairn/rsync: bytes (tool) {_f2(rb)}, bytes (TCP) {_f2(rtcp)}  "
                       f"(cairn's two counts over rsync's one)")
        if kind == "scale":
            out.extend(_scale_lines(c, others, w))
        out.append("")
    if summary:
        out.append("== cairn / each other tool, per data set (below 1: cairn took less; CPU s: both daemons)")
        out.append(f"  {'data set':<17} {'cairn / tool':<{max(w, 5)}} {'time':>6} {'CPU s':>6} "
                   f"{'bytes (tool)':>12} {'bytes (TCP)':>12}")
        for ds, name, rt, rcpu, rb, rtcp in summary:
            out.append(f"  {ds:<17} {name:<{max(w, 5)}} {_f2(rt):>6} {_f2(rcpu):>6} {_f2(rb):>12} {_f2(rtcp):>12}")
        out.append("")
    mem = [e for e in entries if e.get("rss_kib")]
    if mem:
        out.append("== memory: peak RSS (VmHWM) of each daemon after the run (scale: or the highest sample)")
        out.append(f"  {'data set':<10} {'tool':<{w}} {'sender MiB':>11} {'receiver MiB':>13}  target")
        for e in mem:
            sm, rm = ((_peak_kib(e, i) or 0) / 1024 for i in (0, 1))
            tgt = ""
            if e["tool"] == "cairn" and e["dataset"] == "small100k":
                tgt = "< 200 MiB -> " + ("PASS" if max(sm, rm) < 200 else "FAIL")
            elif e["tool"] == "cairn" and e["dataset"] == "scale":
                tgt = f"< {SCALE_RSS_MIB} MiB -> " + ("PASS" if max(sm, rm) < SCALE_RSS_MIB else "FAIL")
            elif e["tool"] == "cairn" and e["dataset"] == "huge10g":
                tgt = "(bounded whatever the file size)"
            elif e["tool"] == "cairn":
                tgt = "(target is for 100,000 files)"
            out.append(f"  {e['dataset']:<10} {e['tool']:<{w}} {sm:>11.1f} {rm:>13.1f}  {tgt}")
        out.append("")
    stalls = [e for e in entries if e.get("stall") and e["dataset"] != "scale"]
    if stalls:
        out.append("== event-loop stall: cairn_loop_stall_seconds of each cairn daemon at the end of the run")
        out.append(f"  {'data set / daemon':<22} {'turns':>10} {'p99':>12} {'longest':>16} {'mean ms':>8}   "
                   f"target p99 < {STALL_P99_S * 1000:g} ms")
        for e in stalls:
            for role in ("sender", "receiver"):
                out.append(_stall_row(f"{e['dataset']} {role}", e["stall"].get(role)))
        out.append("")
    print("\n".join(out))


# ---------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("gen")
    s.add_argument("base")
    s.add_argument("--with-100k", action="store_true")
    s.add_argument("--with-huge", action="store_true")
    s.add_argument("--scale", type=int, default=0, help="also the scale data set of N files")
    s.set_defaults(fn=gen)

    s = sub.add_parser("pick-ports")
    s.add_argument("start", type=int)
    s.add_argument("count", type=int)
    s.set_defaults(fn=pick_ports)

    s = sub.add_parser("cairn-config")
    for arg in ("--home", "--peer-id", "--peer-name", "--folder"):
        s.add_argument(arg, required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--peer-port", type=int, required=True)
    s.set_defaults(fn=cairn_config)

    s = sub.add_parser("st-config")
    for arg in ("--home", "--name", "--apikey", "--peer-id", "--peer-name", "--folder"):
        s.add_argument(arg, required=True)
    for arg in ("--port", "--gui-port", "--peer-port"):
        s.add_argument(arg, type=int, required=True)
    s.add_argument("--watch-delay", type=int, help="fsWatcherDelayS (default: the version's)")
    s.set_defaults(fn=st_config)

    s = sub.add_parser("st-default")
    s.add_argument("--home", required=True)
    s.set_defaults(fn=st_default)

    s = sub.add_parser("pair")
    s.add_argument("--out", required=True)
    s.add_argument("--tool", choices=["cairn", "syncthing"], required=True)
    s.add_argument("--name", help="the tool's name in bench/sync.sh (default: --tool)")
    s.add_argument("--ports", type=int, nargs=2, required=True)
    for side in ("sender", "receiver"):
        for field in ("home", "dir", "id", "log"):
            s.add_argument(f"--{side}-{field}", required=True)
        s.add_argument(f"--{side}-gui", default="")
    s.add_argument("--apikey", default="")
    s.set_defaults(fn=pair_cmd)

    s = sub.add_parser("ready")
    s.add_argument("--pair", required=True)
    s.add_argument("--timeout", type=float, default=120)
    s.set_defaults(fn=ready)

    s = sub.add_parser("sync")
    s.add_argument("--pair", required=True)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--copy", help="directory whose contents are copied into the sender")
    g.add_argument("--replace", help="TMP:NAME: rename TMP over NAME in the sender's folder")
    g.add_argument("--rename", help="OLD:NEW: rename OLD to NEW inside the sender's folder")
    s.add_argument("--expect", required=True, help="directory the receiver must match (count, bytes)")
    s.add_argument("--out", required=True)
    s.add_argument("--timeout", type=float, default=600)
    s.add_argument("--settle-timeout", type=float, default=60)
    s.set_defaults(fn=sync)

    s = sub.add_parser("latency")
    s.add_argument("--pair", required=True)
    s.add_argument("--runs", type=int, default=5)
    s.add_argument("--out", required=True)
    s.add_argument("--timeout", type=float, default=120)
    s.set_defaults(fn=latency)

    s = sub.add_parser("edit-one")
    s.add_argument("--pair", required=True)
    s.add_argument("--source", required=True, help="the data set the folder was filled from")
    s.add_argument("--runs", type=int, default=3)
    s.add_argument("--seed", type=int, default=13)
    s.add_argument("--out", required=True)
    s.add_argument("--timeout", type=float, default=120, help="per edit, until on the receiver")
    s.add_argument("--ready-timeout", type=float, default=600, help="before each edit: both in sync")
    s.set_defaults(fn=edit_one)

    s = sub.add_parser("monitor")
    s.add_argument("--pair", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--timeline", help="CSV of every sample")
    s.add_argument("--interval", type=float, default=0.2)
    s.add_argument("--request-timeout", type=float, default=5)
    s.add_argument("--no-api", action="store_true", help="RSS only")
    s.set_defaults(fn=monitor)

    s = sub.add_parser("stall")
    s.add_argument("--pair", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=stall)

    s = sub.add_parser("rsync")
    s.add_argument("--src", required=True, help="the new version (a directory)")
    s.add_argument("--dest", required=True, help="a copy of the old version (a directory), updated")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=rsync_cmd)

    s = sub.add_parser("record")
    s.add_argument("--results", required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--tool", required=True)
    s.add_argument("--result")
    s.add_argument("--failed")
    s.add_argument("--verify")
    s.add_argument("--rss")
    s.add_argument("--monitor", help="summary written by `monitor`")
    s.add_argument("--stall", help="written by `stall`")
    s.add_argument("--edits", help="written by `edit-one`")
    s.set_defaults(fn=record)

    s = sub.add_parser("report")
    s.add_argument("--results", required=True)
    s.set_defaults(fn=report)

    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
