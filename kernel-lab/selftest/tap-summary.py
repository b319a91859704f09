#!/usr/bin/env python3
# tap-summary.py CONSOLE.log: per device, per test (all IOMMU variants): pass/fail/skip counts
# from the kselftest TAP lines between the init's "===== run" markers.
import re, sys, collections
dev = None
res = collections.OrderedDict()
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"STINIT: ===== run (\S+)", line)
    if m:
        dev = m.group(1); continue
    m = re.match(r"(ok|not ok) \d+ vfio_pci_dmabuf_test\.(\w+)\.(\w+)( # SKIP)?", line)
    if m and dev:
        st = "skip" if m.group(4) else ("pass" if m.group(1) == "ok" else "FAIL")
        res.setdefault((dev, m.group(3)), collections.Counter())[st + ":" + m.group(2)] += 1
for (d, t), c in res.items():
    p = sorted(k.split(":")[1] for k in c if k.startswith("pass"))
    f = sorted(k.split(":")[1] for k in c if k.startswith("FAIL"))
    s = sorted(k.split(":")[1] for k in c if k.startswith("skip"))
    print("%-14s %-28s pass=%d fail=%d skip=%d%s" % (d, t, len(p), len(f), len(s), (" FAIL in " + ",".join(f)) if f else ""))
