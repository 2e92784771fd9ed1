"""Hypothesis strategies producing valid Sandbox specs (as the dicts a user would write)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))

names = st.from_regex(r"\A[a-z]([a-z0-9-]{0,10}[a-z0-9])?\Z")
images = st.sampled_from(
    ["python:3.12-slim", "busybox", "registry.example.com:5000/team/tool:v1", "ghcr.io/org/img@sha256:" + "a" * 64]
)
text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)


def quantity(unit_values: list[str]) -> st.SearchStrategy[int | str]:
    """A quantity as users write it: an integer, or a number with one of the given suffixes."""
    return st.one_of(
        st.integers(min_value=1, max_value=64),
        st.builds(lambda n, unit: f"{n}{unit}", st.integers(min_value=1, max_value=4096), st.sampled_from(unit_values)),
    )


@st.composite
def limit_and_request(draw: st.DrawFn, unit: str) -> tuple[str, str | None]:
    """A limit and an optional request that does not exceed it."""
    limit = draw(st.integers(min_value=1, max_value=8192))
    request = draw(st.none() | st.integers(min_value=0, max_value=limit))
    return f"{limit}{unit}", None if request is None else f"{request}{unit}"


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    """Resources with requests at most the limits."""
    spec: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    for field, unit in (("cpu", "m"), ("memory", "Mi"), ("ephemeralStorage", "Mi")):
        if draw(st.booleans()):
            limit, request = draw(limit_and_request(unit))
            spec[field] = limit
            if request is not None:
                requests[field] = request
    if requests:
        spec["requests"] = requests
    return spec


@st.composite
def cidrs(draw: st.DrawFn) -> str:
    """A CIDR with no host bits that does not lie within link-local addresses (which validation refuses)."""
    version = draw(st.sampled_from([4, 6]))
    address = draw(st.ip_addresses(v=version))
    prefix = draw(st.integers(min_value=0, max_value=32 if version == 4 else 128))
    network = ipaddress.ip_network((address, prefix), strict=False)
    link_local = LINK_LOCAL[0] if version == 4 else LINK_LOCAL[1]
    if network.subnet_of(link_local):  # type: ignore[arg-type]
        network = ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")
    return str(network)


port_rules = st.builds(
    lambda port, proto: {"port": port, "protocol": proto}, st.integers(1, 65535), st.sampled_from(["TCP", "UDP"])
)


@st.composite
def network(draw: st.DrawFn) -> dict[str, Any]:
    """Network settings: any egress mode (allow-list entries when it is AllowList), DNS on or off, exposed ports."""
    mode = draw(st.sampled_from(["None", "AllowList", "Internet"]))
    egress: dict[str, Any] = {"mode": mode}
    if mode == "AllowList":
        egress["allow"] = draw(
            st.lists(
                st.fixed_dictionaries({"cidr": cidrs()}, optional={"ports": st.lists(port_rules, max_size=3)}),
                min_size=1,
                max_size=4,
            )
        )
    ports = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "name": names.filter(lambda n: len(n) <= 15),
                    "port": st.integers(1, 65535),
                    "protocol": st.sampled_from(["TCP", "UDP"]),
                }
            ),
            max_size=3,
            unique_by=(lambda p: p["name"], lambda p: (p["port"], p["protocol"])),
        )
    )
    result: dict[str, Any] = {"egress": egress, "ports": ports}
    tcp = [port["name"] for port in ports if port["protocol"] == "TCP"]
    if tcp and draw(st.booleans()):
        result["readinessPort"] = draw(st.sampled_from(tcp))
    dns = draw(st.none() | st.booleans())
    if dns is not None:
        result["allowDNS"] = dns
    return result


env_vars = st.lists(
    st.one_of(
        st.fixed_dictionaries({"name": st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,8}\Z"), "value": text}),
        st.fixed_dictionaries(
            {
                "name": st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,8}\Z"),
                "valueFrom": st.one_of(
                    st.fixed_dictionaries({"secretKeyRef": st.fixed_dictionaries({"name": names, "key": names})}),
                    st.fixed_dictionaries({"configMapKeyRef": st.fixed_dictionaries({"name": names, "key": names})}),
                ),
            }
        ),
    ),
    max_size=4,
    unique_by=lambda var: var["name"],
)



def rfc3339(moment: datetime, offset_minutes: int) -> str:
    """``moment`` (naive, taken as UTC) written with the given UTC offset, as a user or client might write it."""
    zone = timezone(timedelta(minutes=offset_minutes))
    return moment.replace(tzinfo=UTC).astimezone(zone).replace(microsecond=0).isoformat()


offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59)
# Any time the CRD accepts for expiresAt: from 1970 to the end of 9998 (UTC), written with any offset.
expires_at_texts = st.builds(
    rfc3339, st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30)), offsets
)
# Anything a client may put in the activity annotation: times of any year and offset (far beyond what Python's
# datetime holds once the offset is applied), and text that is no time at all.
activity_annotations = st.one_of(
    st.builds(lambda moment, minutes: moment.isoformat() + (
        "Z" if minutes == 0 else f"{'+' if minutes > 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    ), st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)), offsets),
    st.sampled_from(["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "", "now"]),
    text,
)

lifetimes = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "ttlSeconds": st.integers(1, 31536000),
            "idleTimeoutSeconds": st.integers(1, 31536000),
            "onExpiry": st.sampled_from(["Delete", "Suspend"]),
        },
    ),
    st.fixed_dictionaries(
        {"expiresAt": expires_at_texts},
        optional={
            "idleTimeoutSeconds": st.integers(1, 31536000),
            "onExpiry": st.sampled_from(["Delete", "Suspend"]),
        },
    ),
)

workspaces = st.fixed_dictionaries(
    {},
    optional={
        "size": quantity(["Mi", "Gi"]),
        "persistent": st.booleans(),
        "storageClassName": names,
        "mountPath": st.sampled_from(["/workspace", "/home/sandbox", "/data/work"]),
    },
)


def specs() -> st.SearchStrategy[dict[str, Any]]:
    """Valid Sandbox specs covering every field."""
    return st.fixed_dictionaries(
        {"image": images},
        optional={
            "imagePullPolicy": st.sampled_from(["Always", "IfNotPresent", "Never"]),
            "command": st.lists(text, max_size=3),
            "args": st.lists(text, max_size=3),
            "env": env_vars,
            "resources": resources(),
            "lifetime": lifetimes,
            "network": network(),
            "workspace": workspaces,
            "suspended": st.booleans(),
            "runtimeClassName": st.sampled_from(["gvisor", "kata-qemu"]),
        },
    )
