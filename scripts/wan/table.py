#!/usr/bin/env python3
"""scripts/wan/table.py WAN.TSV: the markdown table of `make bench-wan` (medians per profile,
step and tool; skopeo copy + umoci unpack summed run by run), with the link bound of each step."""
import csv
import statistics
import sys
from collections import defaultdict

PROFILES = {  # name: (RTT ms, Mbit/s, loss ppm, cc)
    "a-bbr": (0, 0, 0, "bbr"), "a-reno": (0, 0, 0, "reno"),
    "b-bbr": (20, 200, 0, "bbr"), "b-reno": (20, 200, 0, "reno"),
    "c-bbr": (100, 50, 0, "bbr"), "c-reno": (100, 50, 0, "reno"),
    "d-bbr": (300, 10, 1000, "bbr"), "d-reno": (300, 10, 1000, "reno"),
}
IMAGE_MB = 62.4  # bytes on the wire for the debian image (layers + config + manifest), MB


def describe(p):
    rtt, mbit, loss, cc = PROFILES.get(p, (None, None, None, "?"))
    if not rtt:
        return f"{p} (direct veth, {cc})"
    extra = f", {loss / 10000:g} % loss" if loss else ""
    return f"{p} ({rtt} ms, {mbit} Mbit/s{extra}, {cc})"


def bound(p, step):
    rtt, mbit, _, _ = PROFILES.get(p, (0, 0, 0, ""))
    if not mbit or step == "push small":
        return ""
    return f"{IMAGE_MB * 8 / mbit + rtt / 1000:.1f}"


def main(path):
    runs = defaultdict(list)
    for row in csv.DictReader(open(path), delimiter="\t"):
        runs[(row["profile"], row["step"], row["tool"])].append(row)
    for (p, step, tool), rows in list(runs.items()):
        if tool == "skopeo copy" and step == "pull debian":
            unpack = {r["run"]: r for r in runs.get((p, step, "umoci unpack"), [])}
            runs[(p, step, "skopeo copy + umoci unpack")] = [
                dict(r, wall_s=str(float(r["wall_s"]) + float(unpack[r["run"]]["wall_s"])),
                     maxrss_kb=unpack[r["run"]]["maxrss_kb"])
                for r in rows if r["run"] in unpack]
    print("| profile | step | tool | median s (min-max) | n | requests | connections | peak RSS MiB | link bound s | failed |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (p, step, tool), rows in runs.items():
        ok = [r for r in rows if r["rc"] == "0"]
        if not ok:
            print(f"| {describe(p)} | {step} | {tool} | failed | 0 | | | | | {len(rows)} |")
            continue
        walls = sorted(float(r["wall_s"]) for r in ok)
        med = statistics.median(walls)
        mid = min(ok, key=lambda r: abs(float(r["wall_s"]) - med))
        rss = int(mid["maxrss_kb"]) / 1024
        print(f"| {describe(p)} | {step} | {tool.replace('|', chr(92) + '|')} | {med:.2f} "
              f"({walls[0]:.2f}-{walls[-1]:.2f}) | {len(ok)} | {mid['requests']} | "
              f"{mid['connections']} | {rss:.1f} | {bound(p, step)} | {len(rows) - len(ok)} |")
    print()
    print("Link bound: the image's bytes at the link rate plus one round trip (uploads of a")
    print("cross-registry push overlap the downloads, so the same bound holds). Requests and")
    print("connections: what the registries logged for the median run (umoci unpack: none).")


if __name__ == "__main__":
    main(sys.argv[1])
