#!/usr/bin/env python3
"""Turns `containerd config default` (stdin) into the local cluster's containerd config.

usage: containerd config default | containerd_config.py CLUSTER_DIR SOCKET [STATE_DIR]

STATE_DIR (default CLUSTER_DIR/containerd) holds its root and state: a second node's
containerd has its own; the CNI config (and so the pods' address pool) is shared.
"""
import re
import sys

cluster, sock = sys.argv[1:3]
own = sys.argv[3] if len(sys.argv) > 3 else f"{cluster}/containerd"
cfg = sys.stdin.read()


def sub(pattern: str, repl: str) -> None:
    global cfg
    cfg, n = re.subn(pattern, repl, cfg, flags=re.M)
    if n == 0:
        sys.exit(f"containerd_config.py: no line matches {pattern!r} in containerd's default config")


sub(r'^root = .*', f'root = "{own}/root"')
sub(r'^state = .*', f'state = "{own}/state"')
sub(r'(^\[grpc\]\n(?:[ \t]+.*\n)*?[ \t]+address = )".*"', rf'\g<1>"{sock}"')
sub(r'(^\[ttrpc\]\n(?:[ \t]+.*\n)*?[ \t]+address = )".*"', rf'\g<1>"{sock}.ttrpc"')
sub(r'restrict_oom_score_adj = .*', 'restrict_oom_score_adj = true')
sub(r'sandbox_image = .*', 'sandbox_image = "k8s.gcr.io/pause:3.2"')
sub(r'bin_dir = .*', 'bin_dir = "/usr/lib/cni"')
sub(r'conf_dir = .*', f'conf_dir = "{cluster}/cni/net.d"')
sub(r'SystemdCgroup = .*', 'SystemdCgroup = false')
sys.stdout.write(cfg)
