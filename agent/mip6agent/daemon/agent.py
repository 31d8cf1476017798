"""The mip6agent process: one asyncio loop around one role's sans-I/O core.

Received packets and netlink events go into the core; the actions it returns are carried
out strictly in order by one consumer task. Kernel calls run on one worker thread, both
because they block and because pyroute2 0.9 will not run inside a running event loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import copy
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv6Address, IPv6Interface
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

from .. import __version__
from ..config import AgentConfig, ConfigError, load_config, to_dict, validate_mapping
from ..config.model import MetricsConfig
from ..control.protocol import ControlError
from ..control.server import ControlServer
from ..core import actions as act
from ..core.correspondent import Correspondent, CorrespondentSettings
from ..core.home_agent import HomeAgent
from ..core.mobile_node import MobileNode
from ..core.return_routability import MAX_RR_BINDING_LIFETIME
from ..dump.text import format_line
from ..io import nft
from ..io.dataplane import BackendUnavailableError, DataPlane, DataPlaneError, probe, select_backend
from ..io.dataplane.base import DataPlaneConfig
from ..io.transport import (
    BindingUpdatePeek,
    Gate,
    Received,
    SignalingTransport,
    TransportError,
    peek_binding_update,
)
from ..wire import BindingUpdate, parse_packet
from ..wire.addresses import home_agents_anycast
from . import kernel
from .correspondent_path import BACKEND as CN_BACKEND
from .correspondent_path import CorrespondentPath
from .logthrottle import LogThrottle
from .mobile_path import MobilePath
from .movement import InterfaceState, MovementWatcher
from .persistence import BindingStore, StateStore
from .restore import BindingJournal, reconcile_home_agent, reconcile_plan, restore_home_agent
from .sdnotify import Notifier
from .settings import (
    SettingsError,
    correspondent_settings,
    describe_key_changes,
    home_agent_settings,
    key_changes,
    key_lookup,
    mobile_node_settings,
)

if TYPE_CHECKING:  # prometheus-client is imported only when metrics are on
    from .metrics import Metrics, Snapshot

log = logging.getLogger("mip6agent")
TABLES = {"ha": "binding_cache", "mn": "binding_update_list"}
ROLE_NAMES = {"ha": "home agent", "mn": "mobile node", "cn": "correspondent node"}
ONE_ROLE = "the home agent and mobile node functions cannot be active on one host"
SAVE_DELAY = 1.0  # seconds a lifetime-only change may wait before it is written
KNOWN_SENDERS_DELAY = 0.2  # seconds binding changes are gathered into one nft batch
SHUTDOWN_GRACE = 5.0  # seconds the actions already queued get to finish at SIGTERM
STATUS_INTERVAL = 10.0  # seconds between systemd STATUS= updates without a watchdog
INPUT_BATCH = 256  # received packets handled per turn of the event loop
OTHER_BATCH = 32  # of which from unknown senders: the sockets are read again in between
INPUT_QUEUE = 4096  # packets from unknown senders waiting; beyond it they are dropped
CN_USE_POLL = 2.0  # seconds between reads of the correspondent bindings' packet counters
KAME_BR_UPDATE = 60  # percent: KAME's default br_update (mip6config -w)
MN_TRAFFIC_POLL = 1.0  # seconds between reads of the mobile node's traffic set (nft)


class AgentError(Exception):
    """A start-up failure with a message for the operator; the agent exits non-zero."""


class Agent:
    def __init__(self, config: AgentConfig, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.started = time.time()
        self.store = StateStore(config.state_dir)  # the mobile node's binding update list
        # The home agent's binding cache: a row per binding, written as bindings change.
        self.binding_store = BindingStore(config.state_dir)
        self._journal = BindingJournal()
        self.restored: dict[str, Any] | None = None  # what the last start-up restore found
        self._reconciling: asyncio.Future | None = None
        self.core: HomeAgent | MobileNode | Correspondent | None = None
        self.dataplane: DataPlane | None = None
        self.transport: SignalingTransport | None = None
        self.control: ControlServer | None = None
        self.watcher: MovementWatcher | None = None
        self.anycast: kernel.AnycastMembership | None = None
        # Correspondent node: the route-optimisation data path (TC eBPF) and its poller.
        self.cn_path: CorrespondentPath | None = None
        self.mn_path: MobilePath | None = None
        self._cn_poll: asyncio.Task | None = None
        self._mn_poll: asyncio.Task | None = None
        self._watched_homes: set[IPv6Address] | None = None  # in the nft set now
        self.ha_enabled = True
        self._carrier_changes: dict[str, int] = {}
        self._if_index: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # retries started from actions
        self._dirty: set[str] = set()
        self._save_timer: asyncio.TimerHandle | None = None
        # Saves run in order on their own thread so that a newer state is never overtaken.
        self._saver = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mip6-save")
        self._kernel = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mip6-kernel")
        self._queue: asyncio.Queue[Sequence[_Carried]] = asyncio.Queue()
        # Batches that only send, log and note state for bindings with no batch waiting in
        # _queue (a refresh): they must not wait behind another binding's kernel change.
        self._fast: asyncio.Queue[Sequence[_Carried]] = asyncio.Queue()
        self._waiting: collections.Counter[IPv6Address] = collections.Counter()
        self._fast_consumer: asyncio.Task | None = None
        # Received packets wait here: refreshes of known bindings and BUs naming a known
        # key go first, so a flood from unknown senders cannot starve them.
        self._urgent_input: collections.deque[Received] = collections.deque()
        self._other_input: collections.deque[Received] = collections.deque()
        self._draining = False
        self.agent_counters: collections.Counter[str] = collections.Counter()
        self.config_generation = 1
        # Care-of addresses in the kernel's known-senders set.
        self._known: set[IPv6Address] = set()
        self._known_timer: asyncio.TimerHandle | None = None
        self.throttle: LogThrottle | None = None  # set by the CLI when it installs one
        self.last_reload: dict[str, object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.notifier = Notifier()
        self.errors = RecentErrors()
        logging.getLogger("mip6agent").addHandler(self.errors)
        self.metrics: Metrics | None = None

    # --- life cycle ---------------------------------------------------------------------

    async def kernel(self, func: Callable[..., Any], *args: Any) -> Any:
        return await self._loop.run_in_executor(self._kernel, func, *args)

    async def start(self) -> None:
        for warning in self.config.warnings:
            log.warning("%s", warning)
        # Everything that can fail is checked before the kernel is touched: a start that
        # fails later would already have reconciled (and perhaps removed) kernel state.
        problems = self._preflight()
        if problems:
            raise AgentError("; ".join(problems))
        try:  # before the kernel too: a port in use must not cost a reconciliation
            self._start_metrics()
        except OSError as exc:
            raise AgentError(f"metrics endpoint: {exc}") from None
        try:
            if self.config.role in ("ha", "mn"):
                self.dataplane = await self.kernel(select_backend, self.config.dataplane)
                log.info("data plane: %s", self.dataplane.name)
            self.core = await self._build_core()
            # A correspondent also reads data packets with a Home Address option (no
            # binding: Binding Error status 1, RFC 6275 9.3.1).
            self.transport = SignalingTransport(receive_hao_data=self.config.role == "cn").open()
            await self.kernel(
                partial(
                    nft.install,
                    admission_rate=self._admission_rate(),
                    watch_traffic=self.config.role == "mn",
                )
            )
        except (BackendUnavailableError, SettingsError, TransportError, nft.NftError) as exc:
            await self.close()
            raise AgentError(str(exc)) from None
        except DataPlaneError as exc:
            await self.close()
            raise AgentError(f"data plane: {exc}") from None
        await self._restore()
        self._start_reconcile()
        self._known_senders_changed()
        self.transport.gate = self._gate
        self.transport.attach(self._loop, self._received)
        self.control = ControlServer(str(self.config.control_socket), self.handle_command)
        try:
            await self.control.start()
        except OSError as exc:
            await self.close()
            raise AgentError(f"control socket {self.config.control_socket}: {exc}") from None
        self._consumer = asyncio.create_task(self._carry_out(self._queue, slow=True))
        self._fast_consumer = asyncio.create_task(self._carry_out(self._fast, slow=False))
        if isinstance(self.core, MobileNode):
            self.watcher = MovementWatcher(self.core.settings.interfaces, self._loop, self._moved)
            self.watcher.start()
        if isinstance(self.core, Correspondent):
            self._cn_poll = asyncio.create_task(self._poll_correspondent_use())
        if isinstance(self.core, MobileNode):
            self._mn_poll = asyncio.create_task(self._poll_mobile_traffic())
        self._reschedule()
        log.info("mip6agent %s started as %s", __version__, self.config.role)

    def _start_metrics(self, settings: MetricsConfig | None = None) -> None:
        settings = settings or self.config.metrics
        if not settings.enabled and settings.textfile is None:
            return
        from .metrics import Metrics

        self.metrics = Metrics(self._loop, self._metrics_snapshot)
        if settings.enabled:
            self.metrics.serve(str(settings.address), settings.port)
        if settings.textfile is not None:
            self.metrics.write_every(settings.textfile, settings.interval)

    def _switch_metrics(self, config: AgentConfig) -> None:
        """New metrics settings on reload: the endpoint and textfile writer start again with
        them (the BU histogram starts empty). When the new ones cannot start, the old ones
        are started again and the reload is refused."""
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        try:
            self._start_metrics(config.metrics)
        except OSError as exc:
            if self.metrics is not None:
                self.metrics.close()
                self.metrics = None
            with contextlib.suppress(OSError):
                self._start_metrics(self.config.metrics)
            log.error("reload refused, keeping the running configuration: metrics: %s", exc)
            raise ControlError(f"configuration not reloaded: metrics endpoint: {exc}") from None
        log.info("metrics restarted with the new settings")

    async def _metrics_snapshot(self) -> Snapshot:
        from .metrics import Snapshot

        snap = Snapshot(counters=await self._cmd_counters(), status=await self._cmd_status())
        core = self.core
        if isinstance(core, HomeAgent):
            recovered = sum(1 for b in core.cache if b.recovered)
            snap.home_bindings = {"active": len(core.cache) - recovered, "recovered": recovered}
        elif isinstance(core, MobileNode):
            snap.bul = dict(collections.Counter(e.state for e in core.entries.values()))
            if core.settings.route_optimization:
                states = (r.state for r in core.correspondents.values())
                snap.correspondents = dict(collections.Counter(states))
        elif isinstance(core, Correspondent):
            snap.correspondent_bindings = len(core.bindings)
        return snap

    def _start_reconcile(self) -> None:
        """HA: make the kernel match the restored cache while already serving.

        Submitted to the kernel thread before anything else can be, so every route change
        the core asks for later applies on top of it. Until it ends, packets follow what the
        previous run left in the kernel, and refreshes are answered (they change nothing
        there); a new or moved binding's BA waits for its route, hence for this.
        """
        if not isinstance(self.core, HomeAgent) or self.dataplane is None or not self.restored:
            return
        plans = reconcile_plan(self.core)
        remove_stale = self.restored["status"] != "damaged"
        began = time.monotonic()
        future = self._loop.run_in_executor(
            self._kernel, reconcile_home_agent, self.dataplane, plans, remove_stale
        )
        self._reconciling = asyncio.ensure_future(self._reconciled(future, began))

    async def _reconciled(self, future: asyncio.Future, began: float) -> None:
        assert self.restored is not None
        try:
            reports = await future
        except Exception as exc:  # the agent goes on serving with the kernel as it is
            self.agent_counters["reconcile_failed"] += 1
            self.restored["reconcile_error"] = str(exc)
            log.error(
                "reconciling the kernel with the restored bindings failed: %s",
                exc,
                exc_info=not isinstance(exc, DataPlaneError),
            )
            return
        for interface, report in reports.items():
            log.info(
                "reconciled bindings on %s: %d adopted, %d added, %d updated, %d removed",
                interface,
                len(report.adopted),
                len(report.added),
                len(report.updated),
                len(report.removed),
            )
        self.restored["removed"] = sum(len(r.removed) for r in reports.values())
        self.restored["reconciled"] = True
        self.restored["reconcile_s"] = round(time.monotonic() - began, 3)

    def _preflight(self) -> list[str]:
        config, problems = self.config, []
        section = config.home_agent if config.role == "ha" else config.mobile_node
        for ifname in getattr(section, "interfaces", ()):
            try:
                socket.if_nametoindex(ifname)
            except OSError:
                problems.append(f"interface {ifname} does not exist on this host")
        for what, directory in (
            ("state_dir", Path(config.state_dir)),
            ("control_socket directory", Path(config.control_socket).parent),
        ):
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                problems.append(f"{what} {directory} cannot be created: {exc.strerror}")
                continue
            if not os.access(directory, os.W_OK | os.X_OK):
                problems.append(f"{what} {directory} is not writable")
        if config.role == "ha" and config.keys is not None:
            open_keys = [nai for nai, e in config.keys.entries if e.home_addresses is None]
            if open_keys:
                log.warning(
                    "%d key(s) without home_addresses may register any home address in the "
                    "home prefixes (%s); list each key's home addresses in %s",
                    len(open_keys),
                    ", ".join(open_keys[:5]) + (" ..." if len(open_keys) > 5 else ""),
                    config.keys_file,
                )
        return problems

    def _admission_rate(self) -> int | None:
        ha = self.config.home_agent
        return ha.unknown_sender_rate if self.config.role == "ha" and ha is not None else None

    def _known_senders_changed(self) -> None:
        """Bindings changed: bring the kernel's known-senders set up to date soon."""
        if self._admission_rate() and self._known_timer is None:
            self._known_timer = self._loop.call_later(
                KNOWN_SENDERS_DELAY, lambda: asyncio.ensure_future(self._sync_known_senders())
            )

    async def _sync_known_senders(self) -> None:
        """One nft batch with the care-of addresses that came and went since the last one."""
        self._known_timer = None
        if not isinstance(self.core, HomeAgent):
            return
        cache = self.core.cache
        # Only the CoAs whose bindings came or went: no walk over the cache per change.
        changed = cache.take_care_of_changes()
        wanted = {c for c in changed if cache.has_care_of(c)}
        add, remove = wanted - self._known, (changed - wanted) & self._known
        if not add and not remove:
            return
        try:
            # Text for nft on the kernel thread: 100,000 str() calls after a restart.
            await self.kernel(_set_known_senders, add, remove)
        except nft.NftError as exc:
            self.agent_counters["known_senders_failed"] += 1
            log.error("known senders not updated: %s", exc, extra={"mip6_kind": "nft"})
            # Start again from what the kernel holds, against every CoA in the cache.
            try:
                self._known = {IPv6Address(c) for c in await self.kernel(nft.known_senders)}
            except nft.NftError as again:  # the table itself is gone: assume nothing in it
                log.error("known senders not read: %s", again, extra={"mip6_kind": "nft"})
                self._known = set()
            cache.mark_care_of_changed(cache.care_of_addresses())
            cache.mark_care_of_changed(self._known)
            self._known_senders_changed()
            return
        self._known = (self._known | wanted) - remove

    async def _build_core(self) -> HomeAgent | MobileNode | Correspondent:
        if self.config.role == "ha":
            settings = await self.kernel(home_agent_settings, self.config, kernel.addresses)
            assert self.dataplane is not None  # selected in start() before the core is built
            for link in settings.links:
                await self.kernel(self.dataplane.ha_setup, link.interface, link.address)
            self.anycast = kernel.AnycastMembership()
            for link in settings.links:
                for prefix in link.prefixes:
                    self.anycast.join(home_agents_anycast(prefix), link.interface)
            return HomeAgent(settings, key_lookup(self.config))
        if self.config.role == "mn":
            ro = await self._mobile_path_started(self.config)
            settings = await self.kernel(
                mobile_node_settings,
                self.config,
                kernel.addresses,
                kernel.interface_identifier,
                ro,
            )
            for ifname in settings.interfaces:
                try:
                    await self.kernel(kernel.enable_optimistic_dad, ifname)
                except OSError as exc:
                    log.warning("optimistic DAD not enabled on %s: %s", ifname, exc)
            return MobileNode(settings, int.from_bytes(os.urandom(2), "big"), os.urandom)
        return Correspondent(settings=await self._correspondent_settings(self.config))

    async def _correspondent_settings(self, config: AgentConfig) -> CorrespondentSettings:
        """CN: route optimisation only with a data path that can carry its bindings.

        Without one (no eBPF), the reason is logged and the correspondent refuses return
        routability with Binding Error status 2, so mobile nodes stay on the tunnel.
        """
        if self.cn_path is None:
            self.cn_path = CorrespondentPath()
        path = self.cn_path
        if config.correspondent_node.route_optimization and not path.active:
            if await self.kernel(path.start):
                log.info(
                    "route optimisation on: %s programs on %s",
                    path.backend or CN_BACKEND,
                    ", ".join(path.interfaces) or "no interface yet",
                )
            else:
                log.error(
                    "route optimisation refused (Binding Error status 2 to HoTI, CoTI and BU): %s",
                    path.reason,
                )
        return correspondent_settings(config, path.active)

    async def _mobile_path_started(self, config: AgentConfig) -> bool:
        """MN: route optimisation only with a data path that can carry its bindings;
        without one the reason is logged and every correspondent stays on the tunnel."""
        mn = config.mobile_node
        if mn is None or not mn.route_optimization:
            return False
        if self.mn_path is None:
            pref = self.dataplane.config.mn_pref if self.dataplane else DataPlaneConfig().mn_pref
            self.mn_path = MobilePath(pref)
        if self.mn_path.active or await self.kernel(self.mn_path.start):
            listed = ", ".join(str(c) for c in mn.correspondents) or "no listed correspondent"
            picked = (
                f", and up to {mn.max_correspondents} picked from tunnelled traffic"
                if mn.route_optimization_from_traffic
                else ""
            )
            log.info("route optimisation on (%s): %s%s", self.mn_path.backend, listed, picked)
            return True
        log.error("route optimisation off, the tunnel carries everything: %s", self.mn_path.reason)
        return False

    async def _reinstall_on(self, ifname: str) -> None:
        """MN: the tunnels and route-optimisation programs that used ``ifname``, again on
        the interface that replaced it, in a task of its own: the new interface may not
        have its address or routes yet, so each step is retried every 250 ms (10 s)."""
        if isinstance(self.core, MobileNode) and self.dataplane is not None:
            self._tasks.add(task := asyncio.create_task(self._reinstall(ifname)))
            task.add_done_callback(self._tasks.discard)

    async def _reinstall(self, ifname: str, tries: int = 40) -> None:
        steps = [self._reinstall_tunnels, self._reinstall_route_optimised]
        for attempt in range(tries):
            try:
                while steps:
                    await steps[0](ifname)
                    steps.pop(0)
                return
            except Exception as exc:  # netlink, OS or our own refusal: retried alike
                if attempt == tries - 1:
                    log.error("%s was replaced: its kernel state not reinstalled: %s", ifname, exc)
                    if isinstance(self.core, MobileNode):
                        self.core.counters.add("reinstall_failed")
                    return
                await asyncio.sleep(0.25)

    async def _reinstall_tunnels(self, ifname: str) -> None:
        core, dataplane = self.core, self.dataplane
        if not isinstance(core, MobileNode) or dataplane is None:
            return
        tunnels = [e for e in core.entries.values() if e.tunnel is not None]
        if not any(e.tunnel[1] == ifname for e in tunnels if e.tunnel is not None):
            return
        wanted = {
            e.home_address: (e.tunnel[0], e.home_agent)
            for e in tunnels
            if e.tunnel is not None and e.home_agent is not None
        }
        report = await self.kernel(dataplane.mn_reconcile, wanted, ifname)
        log.info("%s was replaced: mobile node tunnels reinstalled: %s", ifname, report)

    async def _reinstall_route_optimised(self, ifname: str) -> None:
        path = self.mn_path
        if path is None or not path.active:
            return
        count = await self.kernel(path.reinstall)
        if count:
            log.info("%s was replaced: %d route-optimised binding(s) again", ifname, count)

    async def _stop_mobile_path(self) -> None:
        if self.mn_path is not None and self.mn_path.active:
            try:
                await self.kernel(self.mn_path.stop)
            except Exception as exc:
                log.error("route optimisation data path not removed: %s", exc)

    async def _stop_correspondent_path(self) -> None:
        if self.cn_path is not None and self.cn_path.active:
            try:
                await self.kernel(self.cn_path.stop)
            except Exception as exc:
                log.error("route optimisation data path not removed: %s", exc)
            else:
                log.info("route optimisation data path removed")

    async def _poll_correspondent_use(self) -> None:
        """Feed Correspondent.note_use from the eBPF per-binding packet counters."""
        while True:
            await asyncio.sleep(CN_USE_POLL)
            core, path = self.core, self.cn_path
            if not isinstance(core, Correspondent) or path is None or not path.active:
                continue
            if not core.bindings:
                continue
            try:
                used = await self.kernel(path.used)
            except Exception as exc:  # the poller must outlive a failed read
                self.agent_counters["ro_poll_failed"] += 1
                log.error("route optimisation counters not read: %s", exc)
                continue
            now = time.time()
            for home in used:
                core.note_use(home, now)
            if used:
                self._reschedule()

    async def _poll_mobile_traffic(self) -> None:
        """Feed MobileNode.note_traffic from the nft traffic set: the correspondents the
        home addresses exchanged packets with (through the tunnel or, once optimised,
        direct) in the last poll interval."""
        while True:
            await asyncio.sleep(MN_TRAFFIC_POLL)
            core = self.core
            if not isinstance(core, MobileNode):
                continue
            on = core.settings.route_optimization and core.settings.ro_from_traffic
            homes = set(core.entries) if on else set()
            try:
                if homes != self._watched_homes:
                    await self.kernel(nft.watch_homes, sorted(map(str, homes)))
                    self._watched_homes = homes
                if not homes:
                    continue
                seen = await self.kernel(nft.traffic_seen, 2 * MN_TRAFFIC_POLL)
            except nft.NftError as exc:  # the poller must outlive a failed read
                self.agent_counters["ro_poll_failed"] += 1
                log.error("route optimisation: traffic set not read: %s", exc)
                self._watched_homes = None
                continue
            now = time.time()
            actions: list[act.Action] = []
            for home, peer in seen:
                try:
                    actions += core.note_traffic(IPv6Address(home), IPv6Address(peer), now)
                except ValueError:
                    continue
            if actions:
                self.feed(actions)
            else:  # a refresh may have been brought forward
                self._reschedule()

    async def _restore(self) -> None:
        """Reload persisted state and make the kernel match it: adopt, add, remove stale."""
        table = TABLES.get(self.config.role)
        if table is None or self.core is None:
            return
        now = time.time()
        if isinstance(self.core, HomeAgent):
            # Kernel state is removed only on the word of a file that loaded cleanly.
            self.restored = await restore_home_agent(
                self.core, self.binding_store, self.dataplane, self.kernel, now, log
            )
            self._journal.saved(self.core)
            log.info(
                "binding cache %s: %d loaded, %d recovered from the kernel, %d damaged rows",
                self.restored["status"],
                self.restored["loaded"],
                self.restored["recovered"],
                self.restored["damaged_rows"],
            )
            return
        found = self.store.load_checked(table)
        if found.status == "damaged":
            log.error(
                "state file %s is damaged, starting without it and leaving the kernel's "
                "tunnels as they are: %s",
                found.path,
                "; ".join(found.problems),
            )
        self.restored = {"status": found.status, "problems": found.problems}
        self.core.restore(found.state or {}, now)  # type: ignore[union-attr]
        if found.status == "damaged":
            return
        if isinstance(self.core, MobileNode) and self.dataplane is not None:
            # One call with every home address: a call per address would detach the others.
            wanted = {
                e.home_address: (e.tunnel[0], e.home_agent)
                for e in self.core.entries.values()
                if e.tunnel is not None and e.home_agent is not None
            }
            ifname = next(
                (e.tunnel[1] for e in self.core.entries.values() if e.tunnel is not None),
                self.core.settings.interfaces[0],
            )
            report = await self.kernel(self.dataplane.mn_reconcile, wanted, ifname)
            log.info("reconciled mobile node tunnels: %s", report)

    async def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._stop.set)
        self._loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        supervision = asyncio.create_task(self._supervised())
        try:
            await self._stop.wait()
        finally:
            supervision.cancel()
            self.notifier.notify(stopping=1, status="stopping")

    async def _supervised(self) -> None:
        """systemd (Type=notify): READY=1 once the kernel is reconciled, then STATUS= and,
        with WatchdogSec=, WATCHDOG=1 from this loop: a stalled loop sends none."""
        if not self.notifier.enabled:
            return
        if self._reconciling is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._reconciling)
        self.notifier.notify(ready=1, status=self._status_line())
        interval = self.notifier.watchdog_interval
        while True:
            await asyncio.sleep(interval or STATUS_INTERVAL)
            if interval:
                self.notifier.notify(watchdog=1, status=self._status_line())
            else:
                self.notifier.notify(status=self._status_line())

    def _status_line(self) -> str:
        core = self.core
        if isinstance(core, HomeAgent):
            count, what = len(core.cache), "bindings"
        elif isinstance(core, MobileNode):
            registered = sum(e.state == "registered" for e in core.entries.values())
            count, what = registered, f"of {len(core.entries)} home addresses registered"
        elif isinstance(core, Correspondent):
            count, what = len(core.bindings), "correspondent bindings"
        else:
            return f"role {self.config.role}"
        return f"role {self.config.role}, {count} {what}"

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        """Stop. Kernel routes stay: registered mobile nodes keep their forwarding."""
        if self._timer is not None:
            self._timer.cancel()
        if self._known_timer is not None:
            self._known_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for poll in (self._cn_poll, self._mn_poll):
            if poll is not None:
                poll.cancel()
        if self.watcher is not None:
            await self._loop.run_in_executor(None, self.watcher.close)
        if getattr(self, "_consumer", None) is not None:
            # Bounded: a kernel call that hangs must not keep SIGTERM from ending the agent.
            try:
                await asyncio.wait_for(
                    asyncio.gather(self._queue.join(), self._fast.join()), SHUTDOWN_GRACE
                )
            except TimeoutError:
                log.warning(
                    "stopping with %d action batches not carried out after %g s",
                    self._queue.qsize() + self._fast.qsize(),
                    SHUTDOWN_GRACE,
                )
            self._consumer.cancel()
            if self._fast_consumer is not None:
                self._fast_consumer.cancel()
        if self._reconciling is not None and not self._reconciling.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reconciling), SHUTDOWN_GRACE)
        await self._save()
        self._saver.shutdown(wait=True)
        self.binding_store.close()
        if self.control is not None:
            await self.control.close()
        if self.transport is not None:
            self.transport.close()
        if self.anycast is not None:
            self.anycast.close()
        with contextlib.suppress(nft.NftError):
            await self.kernel(nft.remove)
        await self._stop_correspondent_path()
        await self._stop_mobile_path()
        if self.dataplane is not None:
            await self.kernel(self.dataplane.close)
        self._kernel.shutdown(wait=True)
        self.notifier.close()
        logging.getLogger("mip6agent").removeHandler(self.errors)
        if self.metrics is not None:
            self.metrics.close()

    # --- inputs into the core --------------------------------------------------------------

    def _gate(
        self, via: str, src: IPv6Address, data: bytes, headers: list[tuple[int, bytes]]
    ) -> Gate:
        """Before a packet is parsed: known senders first, the rest only while there is room.

        Reading and gating cost a few microseconds, handling a BU some tens: under a flood
        the agent keeps reading everything, so a known mobile node's BU is never stuck in
        the kernel's queue behind the flood.
        """
        core = self.core
        if not isinstance(core, HomeAgent):
            return Gate.URGENT
        peek = peek_binding_update(via, src, data, headers)
        if peek is not None and self._known_sender(core, peek):
            return Gate.URGENT
        if len(self._other_input) >= INPUT_QUEUE:
            self.agent_counters["input_dropped"] += 1
            return Gate.DROP
        return Gate.NORMAL

    @staticmethod
    def _known_sender(core: HomeAgent, peek: BindingUpdatePeek) -> bool:
        """A refresh of a cached binding from its CoA, or a BU naming a key that has not
        failed to verify in the last second (so spoofing a known NAI loses the priority)."""
        binding = core.cache.get(peek.home_address)
        if binding is not None and binding.care_of_address == peek.source:
            return True
        if peek.nai is None:
            return False
        nai = peek.nai.decode("utf-8", "replace")
        return core.keys(nai) is not None and not core.failed_recently(nai, time.time())

    def _received(self, received: Received) -> None:
        if self.core is None:
            return
        queue = self._urgent_input if received.urgent else self._other_input
        if len(queue) < INPUT_QUEUE:
            queue.append(received)
        else:
            self.agent_counters["input_dropped"] += 1
        if not self._draining:
            self._draining = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Handle a batch of received packets, urgent ones first, then yield to the loop."""
        self._draining = False
        core = self.core
        if core is None:
            return
        debug = log.isEnabledFor(logging.DEBUG)
        others = OTHER_BATCH
        for _ in range(INPUT_BATCH):
            if self._urgent_input:
                received = self._urgent_input.popleft()
            elif self._other_input and others:
                received = self._other_input.popleft()
                others -= 1
            else:
                break
            interface = _ifname(received.ifindex)
            if debug:
                log.debug("in  %s: %s", interface, format_line(received.packet, verbose=True))
            try:
                # One batch per packet: a refresh's BA must not wait for another packet's
                # kernel change (see _enqueue).
                actions: Sequence[_Carried] = core.receive(received.packet, time.time(), interface)
                if (
                    actions
                    and self.metrics is not None
                    and isinstance(received.packet.payload, BindingUpdate)
                ):
                    actions = [*actions, _Answered(received.timestamp)]
                self._enqueue(actions)
            except Exception:  # one packet must never stop the agent
                self.agent_counters["receive_failed"] += 1
                log.exception("packet from %s not handled", received.src)
        self._reschedule()
        if (self._urgent_input or self._other_input) and not self._draining:
            self._draining = True
            self._loop.call_soon(self._drain)

    def _moved(self, states: list[InterfaceState]) -> None:
        if not isinstance(self.core, MobileNode):
            return
        now = time.time()
        out: list[act.Action] = []
        replaced = []
        for state in states:
            previous = self._carrier_changes.get(state.name)
            self._carrier_changes[state.name] = state.carrier_changes
            known = self._if_index.get(state.name)
            if state.index:
                self._if_index[state.name] = state.index
                if known is not None and known != state.index:
                    replaced.append(state.name)
            if previous is not None and state.carrier_changes != previous and state.up:
                # Down and up again between two reads: still a link change.
                out += self.core.link_changed(state.name, False, now)
            out += self.core.link_changed(state.name, state.up, now)
            out += self.core.addresses_changed(state.name, list(state.addresses), now)
        # First: a replaced interface took the tunnel's routes and filters with it, which
        # no move re-creates when the node stays on the same link.
        self.feed([*(_Replaced(name) for name in replaced), *out])

    def _on_timer(self) -> None:
        self._timer = None
        if self.core is not None:
            self.feed(self.core.handle_timer(time.time()))

    def feed(self, actions: Sequence[_Carried]) -> None:
        self._enqueue(actions)
        self._reschedule()

    def _enqueue(self, actions: Sequence[_Carried]) -> None:
        """A home agent's batch that needs no kernel change, for bindings no queued batch
        changes, goes to the fast lane; everything else keeps its order in _queue."""
        if not actions:
            return
        keys = _binding_keys(actions)
        if keys is not None and isinstance(self.core, HomeAgent):
            if all(type(a) in _NO_KERNEL for a in actions) and not any(
                self._waiting[k] for k in keys
            ):
                self._fast.put_nowait(actions)
                return
            self._waiting.update(keys)
        self._queue.put_nowait(actions)

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.core.get_timer() if self.core is not None else None
        if deadline is not None:
            self._timer = self._loop.call_later(max(0.0, deadline - time.time()), self._on_timer)

    # --- carrying out actions ---------------------------------------------------------------

    async def _carry_out(
        self, queue: asyncio.Queue[Sequence[_Carried]] | None = None, slow: bool = True
    ) -> None:
        """Carry out every action; one that fails is logged and counted, never fatal."""
        queue = self._queue if queue is None else queue
        while True:
            batch = await queue.get()
            try:
                for action in batch:
                    try:
                        await self._do(action)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # the loop must outlive any action
                        name = type(action).__name__
                        self.agent_counters[f"action_failed.{name}"] += 1
                        expected = (DataPlaneError, TransportError, OSError, LookupError)
                        log.error(
                            "%s failed: %s",
                            name,
                            exc,
                            exc_info=not isinstance(exc, expected),
                            extra={"mip6_kind": f"action_failed.{name}"},
                        )
            finally:
                if slow and isinstance(self.core, HomeAgent):
                    for key in _binding_keys(batch) or ():
                        self._waiting[key] -= 1
                        if self._waiting[key] <= 0:
                            del self._waiting[key]
                queue.task_done()

    async def _do(self, action: _Carried) -> None:
        transport, dataplane = self.transport, self.dataplane
        assert transport is not None
        match action:
            case _Answered():
                if self.metrics is not None:
                    self.metrics.observe_bu(time.monotonic() - action.received)
            case _Replaced():
                await self._reinstall_on(action.interface)
            case act.SendPacket():
                index = socket.if_nametoindex(action.interface) if action.interface else None
                transport.send(action.data, action.destination, index)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("out %s", format_line(parse_packet(action.data), verbose=True))
            case act.Log():
                extra: dict[str, object] | None = None
                if action.kind or action.fields:
                    extra = {"mip6_kind": action.kind, "mip6_fields": action.fields}
                level = logging.getLevelName(action.level.upper())
                if action.args:
                    log.log(level, action.message, *action.args, extra=extra)
                else:
                    log.log(level, "%s", action.message, extra=extra)
            case act.StateChanged():
                self._dirty.add(action.table)
                if isinstance(self.core, HomeAgent):
                    self._journal.touch(getattr(action, "key", None))
                if action.urgent:
                    await self._save()
                elif self._save_timer is None:
                    self._save_timer = self._loop.call_later(
                        SAVE_DELAY, lambda: asyncio.ensure_future(self._save())
                    )
            case act.LeaveOldLinks():
                keep = set(self.core.entries) if isinstance(self.core, MobileNode) else set()
                done = await self.kernel(
                    kernel.leave_old_links, action.interface, action.router, action.prefixes, keep
                )
                if done:
                    log.info(
                        "left the old link on %s: removed %s", action.interface, ", ".join(done)
                    )
            case act.SendRouterSolicitation():
                transport.send_router_solicitation(socket.if_nametoindex(action.interface))
            case act.AnnounceHomeAddress():
                transport.send_unsolicited_na(
                    socket.if_nametoindex(action.interface), action.address
                )
            case act.StartDAD():
                index, joined = None, False
                try:
                    index = socket.if_nametoindex(action.interface)
                    transport.join_solicited_node(action.address, index)
                    joined = True
                    transport.send_dad_ns(index, action.address)
                except (OSError, TransportError) as exc:
                    # A DAD that cannot run (e.g. ENOMEM: the multicast group limit) must not
                    # pass as if the address were free.
                    assert isinstance(self.core, HomeAgent)
                    if joined and index is not None:
                        with contextlib.suppress(OSError, TransportError):
                            transport.leave_solicited_node(action.address, index)
                    self.feed(self.core.dad_unavailable(action.address, str(exc), time.time()))
            case act.StopDAD():
                transport.leave_solicited_node(
                    action.address, socket.if_nametoindex(action.interface)
                )
            case act.InstallBinding():
                assert dataplane is not None
                await self.kernel(
                    dataplane.ha_bind,
                    action.home_address,
                    action.care_of_address,
                    action.home_agent,
                    action.interface,
                )
                self._known_senders_changed()
            case act.RemoveBinding():
                assert dataplane is not None
                await self.kernel(dataplane.ha_unbind, action.home_address)
                self._known_senders_changed()
            case act.ProxyAddress():
                assert dataplane is not None
                await self.kernel(dataplane.ha_proxy, action.address, action.interface)
            case act.UnproxyAddress():
                assert dataplane is not None
                await self.kernel(dataplane.ha_unproxy, action.address, action.interface)
            case act.AttachTunnel():
                assert dataplane is not None
                await self.kernel(kernel.remove_from_links, action.home_address)
                await self.kernel(
                    dataplane.mn_attach,
                    action.home_address,
                    action.care_of_address,
                    action.home_agent,
                    action.interface,
                )
            case act.LeaveHomeLink():
                await self.kernel(kernel.remove_from_links, action.home_address)
            case act.PrepareCareOf():
                assert dataplane is not None
                await self.kernel(
                    dataplane.mn_prepare,
                    action.care_of_address,
                    action.home_agent,
                    action.interface,
                )
            case act.InstallCorrespondentBinding() if self.mn_path is not None:
                await self.kernel(
                    self.mn_path.install,
                    action.home_address,
                    action.care_of_address,
                    action.correspondent,
                )
            case act.RemoveCorrespondentBinding() if self.mn_path is not None:
                await self.kernel(self.mn_path.remove, action.home_address, action.correspondent)
            case act.InstallCorrespondentBinding():
                assert self.cn_path is not None
                await self.kernel(
                    self.cn_path.install,
                    action.home_address,
                    action.care_of_address,
                    action.correspondent,
                )
            case act.RemoveCorrespondentBinding():
                if self.cn_path is not None:
                    await self.kernel(
                        self.cn_path.remove, action.home_address, action.correspondent
                    )
            case act.DetachTunnel():
                assert dataplane is not None
                await self.kernel(dataplane.mn_detach, action.home_address)
                if action.at_home:
                    address = IPv6Interface(f"{action.home_address}/{action.prefix.prefixlen}")
                    await self.kernel(kernel.place_home_address, address, action.interface)
            case _:  # mypy: every action has a case above
                assert_never(action)

    async def _save(self) -> None:
        if self._save_timer is not None:
            self._save_timer.cancel()
            self._save_timer = None
        if self.core is None or not self._dirty:
            return
        tables, self._dirty = self._dirty, set()
        if isinstance(self.core, HomeAgent):
            # Only the rows of the bindings that changed, in one SQLite transaction.
            tables.discard(TABLES["ha"])
            if self._journal:
                method, args = self._journal.pending(self.core)
                if method == "replace_all" or any(args):
                    try:
                        write = getattr(self.binding_store, method)
                        await self._loop.run_in_executor(self._saver, write, *args)
                    except Exception:
                        self._journal.failed()  # the next save rewrites the store whole
                        raise
        if not tables:
            return
        snapshot = self.core.snapshot()
        for table in tables:
            await self._loop.run_in_executor(self._saver, self.store.save, table, snapshot)

    # --- configuration and control ------------------------------------------------------------

    async def reload(self, config: AgentConfig | None = None) -> dict:
        """Apply a new configuration without dropping bindings (SIGHUP, `reload`, mip6config)."""
        if config is None:
            if self.config_path is None:
                raise ControlError("the agent was started without a configuration file")
            try:
                config = load_config(self.config_path)
            except ConfigError as exc:
                log.error("reload refused, keeping the running configuration: %s", exc)
                raise ControlError(f"configuration not reloaded: {exc}") from None
        if config.role != self.config.role:
            raise ControlError(
                f"the role changes from {self.config.role} to {config.role}: restart the agent"
            )
        if config.metrics != self.config.metrics:
            self._switch_metrics(config)  # first: a port in use refuses the whole reload
        now = time.time()
        changes: dict[str, object] = {}
        try:
            if isinstance(self.core, HomeAgent):
                settings = await self.kernel(
                    home_agent_settings, config, kernel.addresses, self.ha_enabled
                )
                out = self.core.reconfigure(settings, now)
                changes = key_changes(self.config.keys, config.keys)
                # The new key set takes effect at once, for every BU from here on.
                revoked = self.core.set_keys(key_lookup(config))
                changes["bindings_removed"] = sum(isinstance(a, act.RemoveBinding) for a in revoked)
                self.feed(out + revoked)
            elif isinstance(self.core, MobileNode):
                ro = await self._mobile_path_started(config)
                settings = await self.kernel(
                    mobile_node_settings,
                    config,
                    kernel.addresses,
                    kernel.interface_identifier,
                    ro,
                )
                self.feed(self.core.reconfigure(settings, now))
            elif isinstance(self.core, Correspondent):
                await self._reload_correspondent(config, now)
        except SettingsError as exc:
            raise ControlError(str(exc)) from None
        old_rate = self._admission_rate()
        self.config = config
        if self._admission_rate() != old_rate:
            # The table is made anew, with an empty set: fill it again.
            try:
                await self.kernel(
                    partial(
                        nft.install,
                        admission_rate=self._admission_rate(),
                        watch_traffic=config.role == "mn",
                    )
                )
            except nft.NftError as exc:
                log.error("admission limit not changed: %s", exc)
            self._known = set()
            if isinstance(self.core, HomeAgent):
                self.core.cache.mark_care_of_changed(self.core.cache.care_of_addresses())
            self._known_senders_changed()
        self.config_generation += 1
        self.last_reload = {"time": round(now, 3), "generation": self.config_generation, **changes}
        logging.getLogger().setLevel(config.effective_log_level.upper())
        log.info(
            "configuration reloaded (generation %d)%s",
            self.config_generation,
            describe_key_changes(changes),
        )
        return to_dict(config)

    async def _reload_correspondent(self, config: AgentConfig, now: float) -> None:
        """New correspondent_node settings. Route optimisation off: every binding and its
        map entry goes, then the programs; on again: the data path starts anew."""
        settings = await self._correspondent_settings(config)
        assert isinstance(self.core, Correspondent)
        self.feed(self.core.reconfigure(settings, now))
        if not settings.route_optimization and self.cn_path is not None and self.cn_path.active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), SHUTDOWN_GRACE)
            await self._stop_correspondent_path()

    async def _change(self, edit: Callable[[dict], None]) -> dict:
        data = copy.deepcopy(to_dict(self.config))
        edit(data)
        try:
            config = validate_mapping(data, source="control request")
        except ConfigError as exc:
            raise ControlError(str(exc)) from None
        return await self.reload(config)

    async def handle_command(self, command: str, args: dict) -> object:
        handler = getattr(self, "_cmd_" + command.replace("-", "_"))
        try:
            return await handler(**args)
        except TypeError as exc:
            if "argument" not in str(exc):
                raise
            raise ControlError(f"{command}: bad arguments: {exc}") from None

    def _lists(self) -> list[str]:
        if isinstance(self.core, HomeAgent):
            return ["bindings", "home-agents", "counters"]
        if isinstance(self.core, MobileNode):
            ro = ["correspondents"] if self.core.settings.route_optimization else []
            return ["bul", *ro, "home-addresses", "home-agents", "counters"]
        return ["bindings", "counters"]

    async def _cmd_status(self) -> dict:
        return {
            "role": self.config.role,
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
            "dataplane": self._dataplane_name(),
            "enabled": self._enabled(),
            "debug": self.config.debug,
            "lists": self._lists(),
            "config_generation": self.config_generation,
            "last_reload": self.last_reload,
            "keys": len(self.config.keys) if self.config.keys is not None else 0,
            "tasks": len(asyncio.all_tasks()),
            "input_queued": len(self._urgent_input) + len(self._other_input),
            "restored": self.restored,
            "last_errors": self.errors.lines(),
            **self._correspondent_status(),
        }

    def _dataplane_name(self) -> str | None:
        if self.dataplane is not None:
            return self.dataplane.name
        if self.cn_path is not None and self.cn_path.active:
            return self.cn_path.backend or CN_BACKEND
        return None

    def _correspondent_status(self) -> dict:
        if not isinstance(self.core, Correspondent):
            return {}
        path = self.cn_path
        return {
            "route_optimization": {
                "configured": self.config.correspondent_node.route_optimization,
                "enabled": self.core.settings.route_optimization,
                "reason": path.reason if path is not None else None,
                "bindings": len(self.core.bindings),
                "interfaces": path.interfaces if path is not None else [],
            }
        }

    async def _cmd_capabilities(self) -> dict:
        caps = await self.kernel(probe)
        return {
            "seg6": caps.seg6,
            "ip6tnl": caps.ip6tnl,
            "bpf": caps.bpf,
            "esp": caps.esp,
            "mip6": caps.mip6,
            "signaling": "raw sockets",
            "reasons": dict(caps.reasons),
        }

    async def _cmd_show_config(self) -> dict:
        return to_dict(self.config)

    async def _cmd_set_config(self, config: dict, merge: bool = False) -> dict:
        def edit(data: dict) -> None:
            if not merge:
                data.clear()
            _deep_merge(data, config)

        return await self._change(edit)

    async def _cmd_reload(self) -> dict:
        return await self.reload()

    async def _cmd_enable_ha(self, preference: int | None = None) -> dict:
        if self.config.role != "ha":
            raise ControlError(f"this host is a {ROLE_NAMES[self.config.role]}: {ONE_ROLE}")
        self.ha_enabled = True
        if preference is not None:
            return await self._change(
                lambda d: d["home_agent"].__setitem__("preference", preference)
            )
        return await self.reload(self.config)

    def _enabled(self) -> bool:
        if isinstance(self.core, MobileNode):
            return self.core.enabled
        return self.ha_enabled if self.config.role == "ha" else True

    async def _cmd_enable(self) -> dict:
        if isinstance(self.core, MobileNode):
            self.feed(self.core.start(time.time()))
        elif self.config.role == "ha":
            await self._cmd_enable_ha()
        return await self._cmd_status()

    async def _cmd_disable(self) -> dict:
        if isinstance(self.core, HomeAgent):
            self.ha_enabled = False
            self.feed(self.core.clear_bindings())
            await self.reload(self.config)
        elif isinstance(self.core, MobileNode):
            self.feed(self.core.stop())
        return await self._cmd_status()

    def _require_mn(self) -> None:
        if self.config.role != "mn":
            raise ControlError(f"this host is a {ROLE_NAMES[self.config.role]}: {ONE_ROLE}")

    async def _cmd_set_home_address(
        self, address: str, interface: str, home_agent: str | None = None
    ) -> dict:
        self._require_mn()
        entry = {"address": address, "interface": interface, "home_agent": home_agent}

        def edit(data: dict) -> None:
            mn = data["mobile_node"]
            kept = [e for e in mn.get("home_addresses") or [] if e["address"] != address]
            mn.update(home_addresses=[*kept, entry], home_prefix=None, autoconfigure=False)

        return await self._change(edit)

    async def _cmd_set_home_prefix(self, prefix: str) -> dict:
        self._require_mn()
        return await self._change(
            lambda d: d["mobile_node"].update(
                home_prefix=prefix, home_addresses=None, autoconfigure=False
            )
        )

    async def _cmd_autoconfigure(self) -> dict:
        self._require_mn()
        return await self._change(
            lambda d: d["mobile_node"].update(
                autoconfigure=True, home_addresses=None, home_prefix=None
            )
        )

    async def _cmd_set_lifetimes(self, **values: int) -> dict:
        self._require_mn()
        return await self._change(lambda d: d["mobile_node"].update(values))

    async def _cmd_add_foreign_address(self, address: str, interface: str) -> dict:
        self._require_mn()

        def edit(data: dict) -> None:
            entries = data["mobile_node"].get("foreign_addresses") or []
            if not any(e["address"] == address for e in entries):
                entries.append({"address": address, "interface": interface})
            data["mobile_node"]["foreign_addresses"] = entries

        return await self._change(edit)

    async def _cmd_remove_foreign_address(self, address: str, interface: str | None = None) -> dict:
        self._require_mn()

        def edit(data: dict) -> None:
            entries = data["mobile_node"].get("foreign_addresses") or []
            data["mobile_node"]["foreign_addresses"] = [
                e for e in entries if e["address"] != address
            ]

        return await self._change(edit)

    async def _cmd_route_optimization(self, on: bool) -> dict:
        """mip6config -r: the mobile node's BUs to correspondents, or accepting them."""
        if self.config.role == "ha":
            raise ControlError(
                "route optimisation is a mobile node's (BUs to correspondents) or a "
                "correspondent node's (role cn) function; this agent is a home agent"
            )
        section = "mobile_node" if self.config.role == "mn" else "correspondent_node"

        def edit(data: dict) -> None:
            data.setdefault(section, {})["route_optimization"] = on

        return await self._change(edit)

    async def _cmd_binding_refresh(
        self, on: bool | None = None, percent: int | None = None
    ) -> dict:
        """mip6config -q / -w. KAME's br_time was a percentage of the binding lifetime left;
        the key is seconds before expiry, of the 420 s correspondent binding lifetime."""
        if on is False and percent is not None:
            raise ControlError("a percentage with Binding Refresh Requests off")
        if percent is not None and not 1 <= percent <= 99:
            raise ControlError(f"percent must be 1..99, not {percent}")

        def edit(data: dict) -> None:
            cn = data.setdefault("correspondent_node", {})
            current = cn.get("binding_refresh_request_before")
            if on is False:
                cn["binding_refresh_request_before"] = None
            elif percent is not None:
                cn["binding_refresh_request_before"] = round(
                    MAX_RR_BINDING_LIFETIME * percent / 100
                )
            elif current is None:
                cn["binding_refresh_request_before"] = round(
                    MAX_RR_BINDING_LIFETIME * KAME_BR_UPDATE / 100
                )

        return await self._change(edit)

    async def _cmd_debug(self, on: bool) -> dict:
        if not isinstance(on, bool):  # bool("false") is True
            raise ControlError(f"debug: 'on' must be true or false, got {on!r}")
        return await self._change(lambda d: d.__setitem__("debug", on))

    async def _cmd_bindings(self) -> list:
        if isinstance(self.core, Correspondent):
            return await self._correspondent_bindings()
        return [b.to_dict() for b in self.core.cache] if isinstance(self.core, HomeAgent) else []

    async def _correspondent_bindings(self) -> list:
        """The correspondent bindings, each with its data-path entry (``dataplane``: the
        care-of address in the eBPF map, or null, and the packets it rewrote)."""
        assert isinstance(self.core, Correspondent)
        entries = {}
        if self.cn_path is not None and self.cn_path.active:
            entries = await self.kernel(self.cn_path.bindings)
        rows = []
        for binding in self.core.bindings.values():
            row = binding.to_dict()
            entry = entries.get((binding.correspondent, binding.home_address))
            row["dataplane_care_of_address"] = str(entry.coa) if entry is not None else None
            row["dataplane_packets"] = entry.packets if entry is not None else 0
            rows.append(row)
        return rows

    async def _cmd_clear_bindings(self) -> dict:
        if isinstance(self.core, HomeAgent):
            self.feed(self.core.clear_bindings())
        elif isinstance(self.core, Correspondent):
            self.feed(self.core.stop(time.time()))
        return {"cleared": "bindings"}

    async def _cmd_correspondents(self) -> list:
        """MN: the binding update list's correspondent entries (return routability state),
        each with its data-path entry (the care-of address in the eBPF map, or null)."""
        core, path = self.core, self.mn_path
        if not isinstance(core, MobileNode):
            return []
        entries = await self.kernel(path.bindings) if path is not None and path.active else {}
        rows = []
        for row in core.correspondent_entries():
            found = entries.get(
                (IPv6Address(str(row["home_address"])), IPv6Address(str(row["correspondent"])))
            )
            rows.append(
                {
                    **row,
                    "dataplane": str(found.coa) if found else None,
                    "packets": found.packets if found else 0,
                }
            )
        return rows

    async def _cmd_bul(self) -> list:
        if isinstance(self.core, MobileNode):
            return [e.to_dict() for e in self.core.entries.values()]
        return []

    async def _cmd_clear_bul(self) -> dict:
        if isinstance(self.core, MobileNode):
            self.feed(self.core.stop())
        return {"cleared": "bul"}

    async def _cmd_home_agents(self) -> list:
        core = self.core
        if isinstance(core, (HomeAgent, MobileNode)):
            return [e.to_dict() for e in core.home_agents.entries()]
        return []

    async def _cmd_clear_home_agents(self) -> dict:
        if isinstance(self.core, (HomeAgent, MobileNode)):
            self.core.home_agents.clear()
        return {"cleared": "home-agents"}

    async def _cmd_home_addresses(self) -> list:
        return self.core.home_addresses() if isinstance(self.core, MobileNode) else []

    async def _cmd_clear_home_addresses(self) -> dict:
        self._require_mn()
        return await self._change(
            lambda d: d["mobile_node"].update(
                home_addresses=None, home_prefix=None, autoconfigure=True
            )
        )

    async def _cmd_counters(self) -> dict:
        counters = self.core.counters.snapshot() if self.core is not None else {}
        counters.update(self.agent_counters)
        if self.throttle is not None:
            counters["log_suppressed"] = self.throttle.suppressed_total
        if self.transport is not None:
            counters.update(
                {f"transport.{k}": v for k, v in self.transport.counters.as_dict().items()}
            )
        if isinstance(self.core, Correspondent):
            # The return routability messages always show, at 0 until one is counted.
            for name in _CN_MESSAGE_COUNTERS:
                counters.setdefault(name, 0)
            if self.cn_path is not None and self.cn_path.active:
                with contextlib.suppress(Exception):
                    for name, value in (await self.kernel(self.cn_path.counters)).items():
                        counters[f"ro.{name}"] = value
        with contextlib.suppress(nft.NftError):
            for name, value in (await self.kernel(nft.counters)).items():
                if name == nft.TUNNELLED_IN:
                    key = "tunnelled_in"
                elif name in (nft.ADMITTED, nft.UNKNOWN_DROPPED):
                    key = f"admission.{name}"
                else:
                    key = f"param_problem_dropped.{name}"
                counters[key] = value
        if self.dataplane is not None:
            with contextlib.suppress(Exception):
                for name, value in (await self.kernel(self.dataplane.counters)).items():
                    counters[f"tunnel.{name}"] = value
                # eBPF decapsulates before netfilter's prerouting hook sees protocol 41.
                counters["tunnelled_in"] = counters.get("tunnelled_in", 0) + counters.get(
                    "tunnel.decapsulated", 0
                )
        return counters

    async def _cmd_clear_counters(self) -> dict:
        if self.core is not None:
            self.core.counters.clear()
        return {"cleared": "counters"}


def _deep_merge(target: dict, source: dict) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = value


def _ifname(index: int) -> str | None:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


def _set_known_senders(add: set[IPv6Address], remove: set[IPv6Address]) -> None:
    nft.set_known_senders(sorted(map(str, add)), sorted(map(str, remove)))


# Correspondent node: the RFC 6275 9 messages it receives and sends, always shown.
_CN_MESSAGE_COUNTERS = (
    "mh_in.hoti",
    "mh_in.coti",
    "mh_in.bu",
    "mh_out.hot",
    "mh_out.cot",
    "mh_out.ba",
    "mh_out.be",
    "mh_out.brr",
)


# What a home agent's fast lane may carry out: nothing that waits for the kernel thread.
class RecentErrors(logging.Handler):
    """The last error lines, for status (the fleet report shows them)."""

    def __init__(self, keep: int = 5) -> None:
        super().__init__(logging.ERROR)
        self._lines: collections.deque[dict[str, object]] = collections.deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format must not break logging
            message = str(record.msg)
        self._lines.append({"time": round(record.created, 3), "message": message[:300]})

    def lines(self) -> list[dict[str, object]]:
        return list(self._lines)


@dataclass(frozen=True, slots=True)
class _Answered:
    """Last in the batch that answers a Binding Update: when carried out, the BU's time
    from arrival (``time.monotonic()``, as the transport stamps it) goes to the metrics."""

    received: float


@dataclass(frozen=True, slots=True)
class _Replaced:
    """A movement interface came back under the same name with a new index (a Podman
    network reconnect, a re-plugged adapter): the kernel state on it is gone."""

    interface: str


# What a batch holds: the core's actions and the daemon's own markers; _do matches each.
_Carried = act.Action | _Answered | _Replaced

_NO_KERNEL = (act.SendPacket, act.Log, act.StateChanged, _Answered)  # _Replaced needs it


def _binding_keys(batch: Sequence[_Carried]) -> set[IPv6Address] | None:
    """The home addresses a batch acts on; None when it may act on any (StateChanged for
    a whole table)."""
    keys: set[IPv6Address] = set()
    for action in batch:
        if isinstance(action, act.StateChanged):
            if action.key is None:
                return None
            keys.add(action.key)
        elif isinstance(action, (act.InstallBinding, act.RemoveBinding)):
            keys.add(action.home_address)
    return keys
