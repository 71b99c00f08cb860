"""The sockets a process tree listens on, read from /proc (Linux): what `ss -ltnup` shows, per process."""
from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

_LISTEN_TCP, _UNCONNECTED_UDP = "0A", "07"


@dataclass(frozen=True)
class Listener:
    proto: str
    address: str
    port: int
    pid: int
    name: str

    @property
    def loopback(self) -> bool:
        ip = ipaddress.ip_address(self.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback

    def __str__(self) -> str:
        return f"{self.proto} {self.address}:{self.port} {self.name}[{self.pid}]"


def descendants(root: int) -> set[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _address(hex_ip: str, family: int) -> str:
    raw = bytes.fromhex(hex_ip)
    if family == socket.AF_INET:
        return socket.inet_ntop(family, struct.pack("<I", struct.unpack(">I", raw)[0]))
    words = struct.unpack("<4I", raw)  # /proc prints each 32-bit word in host (little-endian) order
    return socket.inet_ntop(family, struct.pack(">4I", *words))


def _bound_sockets() -> dict[int, tuple[str, str, int]]:
    """inode -> (proto, address, port) of every listening TCP and unconnected bound UDP socket."""
    out = {}
    for proto, state, family, table in (("tcp", _LISTEN_TCP, socket.AF_INET, "tcp"),
                                        ("tcp", _LISTEN_TCP, socket.AF_INET6, "tcp6"),
                                        ("udp", _UNCONNECTED_UDP, socket.AF_INET, "udp"),
                                        ("udp", _UNCONNECTED_UDP, socket.AF_INET6, "udp6")):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != state:
                continue
            ip, port = f[1].split(":")
            out[int(f[9])] = (proto, _address(ip, family), int(port, 16))
    return out


def listeners(root: int) -> list[Listener]:
    """The sockets `root` and its descendants listen on (TCP) or have bound (UDP)."""
    bound = _bound_sockets()
    found = []
    for pid in descendants(root):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m and int(m.group(1)) in bound:
                proto, address, port = bound[int(m.group(1))]
                found.append(Listener(proto, address, port, pid, name))
    return found
