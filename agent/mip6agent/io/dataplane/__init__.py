"""Kernel data plane for Mobile IPv6: RFC 2473 tunnels, proxy NDP and policy routing.

Two backends carry the same packets (plain IPv6-in-IPv6, next header 41): ``seg6``
(seg6 lightweight tunnels and policy rules) and ``ip6tnl`` (tunnel devices). Pick one with
:func:`select_backend`, which probes the running kernel. docs/dataplane.md has the
kernel objects each one installs.
"""

from .base import (
    RTPROT_MIP6,
    BackendUnavailableError,
    DataPlane,
    DataPlaneConfig,
    DataPlaneError,
    ReconcileReport,
)
from .ip6tnl import Ip6tnlDataPlane
from .probe import Capabilities, probe, select_backend
from .seg6 import Seg6DataPlane

__all__ = [
    "RTPROT_MIP6",
    "BackendUnavailableError",
    "Capabilities",
    "DataPlane",
    "DataPlaneConfig",
    "DataPlaneError",
    "Ip6tnlDataPlane",
    "ReconcileReport",
    "Seg6DataPlane",
    "probe",
    "select_backend",
]
