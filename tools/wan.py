"""A thin site WAN for an edge, built from network namespaces (tests/test_thin_wan.py).

    with ThinWan(rate_mbit=8) as wan:        # needs root, `ip`, `tc`, `iptables`
        broker = Mosquitto.start(tmp / "mqtt", also_on=(wan.host_ip,))
        cam = wan.testcam(tmp / "cams", ["cam1=h264file:..."])   # on the edge's LAN
        edge = Edge(tmp / "edge", cams, host=wan.edge_ip, mqtt=...)
        edge.netns = wan.edge_ns
        wan.cut()                            # silent: every packet dropped, no RST
        wan.restore()
        wan.loss(0.02)                       # random loss each way

Topology (every name carries this process's PID, so parallel runs never clash):

    host netns: broker, S3, hub     vw<pid>a  <host_ip>/30
                                      |
    router netns vw<pid>r           vw<pid>b ... vw<pid>c   tbf on each egress, iptables FORWARD
                                                   |
    edge netns vw<pid>e: edge, cams              vw<pid>d  <edge_ip>/30, default route via the router

The router shapes each direction with `tbf` on its egress (so the queue is on the path, not in the
sender's own qdisc, where TCP Small Queues would hide it), and cuts or drops with iptables in its
FORWARD chain, so neither end sees an error: packets just vanish. This kernel has no `sch_netem`,
so there is no added delay. In the host namespace only the veth end `vw<pid>a` (its address and
the route to the edge's /30 through it) is created; `close()` deletes both namespaces, which
removes every interface, qdisc and rule made here, also after a failed test.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path
from typing import Self

from tools.cameras import TestCam

__all__ = ["ThinWan", "netns_available"]


def _run(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def netns_available() -> str | None:
    """None when this machine can build a ThinWan, else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns, tc, iptables)"
    for tool in ("ip", "tc", "iptables"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            return f"{tool} is not installed (scripts/setup.sh installs iptables)"
    return None


class ThinWan:
    def __init__(self, rate_mbit: float = 8.0, queue_ms: int = 100) -> None:
        tag = f"vw{os.getpid()}"
        self.edge_ns, self.router_ns = f"{tag}e", f"{tag}r"
        self.host_if, self.router_up, self.router_down, self.edge_if = (f"{tag}{s}" for s in "abcd")
        self.rate_mbit = rate_mbit
        self.queue_ms = queue_ms
        net = self._free_subnet()
        self.host_ip, self.router_up_ip = str(net[1]), str(net[2])
        self.router_down_ip, self.edge_ip = str(net[5]), str(net[6])
        self.edge_net = f"{net[4]}/30"
        self._built = False
        self.fq = False

    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        """A /29 in 10.0.0.0/8 from this PID that no interface or route here uses yet."""
        used = _run("ip", "-o", "-4", "addr") + _run("ip", "-4", "route")
        pid = os.getpid()
        for i in range(64):
            n = (pid * 64 + i * 7919) % (1 << 21)
            net = ipaddress.IPv4Network((0x0A000000 + (n << 3), 29))
            if f"10.{(n >> 13) & 255}.{(n >> 5) & 255}." not in used:
                return net
        raise RuntimeError("no free 10.x.y.0/29 for the thin WAN")

    # -- build and tear down -----------------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> None:
        r, e = ("ip", "netns", "exec", self.router_ns), ("ip", "netns", "exec", self.edge_ns)
        self._built = True
        _run("ip", "netns", "add", self.router_ns)
        _run("ip", "netns", "add", self.edge_ns)
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.router_up, "netns", self.router_ns)
        _run("ip", "-n", self.router_ns, "link", "add", self.router_down, "type", "veth", "peer", "name",
             self.edge_if, "netns", self.edge_ns)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        _run("ip", "route", "add", self.edge_net, "via", self.router_up_ip, "dev", self.host_if)
        _run("ip", "-n", self.router_ns, "addr", "add", f"{self.router_up_ip}/30", "dev", self.router_up)
        _run("ip", "-n", self.router_ns, "addr", "add", f"{self.router_down_ip}/30", "dev", self.router_down)
        for dev in ("lo", self.router_up, self.router_down):
            _run("ip", "-n", self.router_ns, "link", "set", dev, "up")
        _run(*r, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        _run("ip", "-n", self.edge_ns, "addr", "add", f"{self.edge_ip}/30", "dev", self.edge_if)
        for dev in ("lo", self.edge_if):
            _run("ip", "-n", self.edge_ns, "link", "set", dev, "up")
        _run("ip", "-n", self.edge_ns, "route", "add", "default", "via", self.router_down_ip)
        # the edge as the Ansible role leaves it: BBR, with fq where the kernel has it (without it
        # TCP paces BBR itself; this machine kind has no sch_fq)
        _run(*e, "sysctl", "-q", "-w", "net.ipv4.tcp_congestion_control=bbr")
        self.fq = subprocess.run([*e, "tc", "qdisc", "replace", "dev", self.edge_if, "root", "fq"],
                                 capture_output=True, timeout=30).returncode == 0
        # the link: a token bucket each way at the router, a queue of `queue_ms` at the rate
        burst = max(16_000, int(self.rate_mbit * 1e6 / 8 / 250))     # 4 ms at the rate
        limit = int(self.rate_mbit * 1e6 / 8 * self.queue_ms / 1000) + burst
        for dev in (self.router_up, self.router_down):
            _run(*r, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{self.rate_mbit}mbit",
                 "burst", str(burst), "limit", str(limit))

    def close(self) -> None:
        """Delete both namespaces (their interfaces, qdiscs and rules go with them) and the host's
        veth end (already gone with its peer; deleted here should the build have stopped half-way)."""
        if not self._built:
            return
        for ns in (self.edge_ns, self.router_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)
        self._built = False

    # -- what the link does ------------------------------------------------------------------------
    def _iptables(self, *args: str) -> None:
        _run("ip", "netns", "exec", self.router_ns, "iptables", "-w", *args)

    def cut(self) -> None:
        """Drop every packet both ways, silently (no RST, no ICMP): a failing site WAN."""
        self._iptables("-I", "FORWARD", "1", "-m", "comment", "--comment", "vigil-wan-cut", "-j", "DROP")

    def restore(self) -> None:
        self._iptables("-D", "FORWARD", "-m", "comment", "--comment", "vigil-wan-cut", "-j", "DROP")

    def loss(self, probability: float) -> None:
        """Drop this share of the packets at random, each way (0 ends it)."""
        self._iptables("-F", "FORWARD")
        if probability > 0:
            self._iptables("-A", "FORWARD", "-m", "statistic", "--mode", "random", "--probability",
                           f"{probability:.4f}", "-j", "DROP")

    def counters(self) -> str:
        """iptables -L FORWARD -v of the router (packets dropped so far)."""
        return _run("ip", "netns", "exec", self.router_ns, "iptables", "-L", "FORWARD", "-v", "-n", "-x")

    # -- processes on the edge's side ----------------------------------------------------------------
    def testcam(self, workdir: Path, mounts: list[str]) -> TestCam:
        """A test camera server on the edge's LAN (in its namespace, on its loopback)."""
        cam = TestCam(workdir, mounts, None)
        cam.netns = self.edge_ns
        cam._launch()
        return cam

    def __repr__(self) -> str:
        return f"<ThinWan {self.edge_ns} edge {self.edge_ip} host {self.host_ip} {self.rate_mbit} Mbit/s>"

