"""The daemon's action loop and input queues, without a kernel: one failure never stops it."""

from __future__ import annotations

import asyncio
import logging
import time
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest
from mip6agent import wire
from mip6agent.config import validate_mapping
from mip6agent.core import actions as act
from mip6agent.daemon import agent as agent_module
from mip6agent.daemon.agent import INPUT_QUEUE, Agent
from mip6agent.io.transport import Received


def _config(tmp_path: Path) -> Any:
    return validate_mapping(
        {
            "role": "cn",
            "state_dir": str(tmp_path / "state"),
            "control_socket": str(tmp_path / "agent.sock"),
        }
    )


def test_a_failing_action_is_logged_counted_and_the_next_one_still_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    done: list[act.Action] = []

    async def scenario() -> Agent:
        agent = Agent(_config(tmp_path))

        async def do(action: act.Action) -> None:
            if isinstance(action, act.SendPacket):
                raise ValueError("sending to ff02::1 needs an outgoing interface")
            done.append(action)

        agent._do = do  # type: ignore[method-assign]
        agent._consumer = asyncio.create_task(agent._carry_out())
        bad = act.SendPacket(b"\x60" + bytes(39), IPv6Address("ff02::1"))
        agent.feed([bad, act.Log("info", "first")])
        agent.feed([act.Log("info", "second batch")])
        await asyncio.wait_for(agent._queue.join(), 5)
        assert not agent._consumer.done(), "the action loop ended"
        agent._consumer.cancel()
        return agent

    with caplog.at_level(logging.ERROR, logger="mip6agent"):
        agent = asyncio.run(scenario())
    assert [a.message for a in done if isinstance(a, act.Log)] == ["first", "second batch"]
    assert agent.agent_counters["action_failed.SendPacket"] == 1
    assert any("SendPacket failed" in r.getMessage() for r in caplog.records)


def test_shutdown_is_bounded_when_an_action_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_module, "SHUTDOWN_GRACE", 0.3)

    async def scenario() -> float:
        agent = Agent(_config(tmp_path))

        async def hang(action: act.Action) -> None:
            await asyncio.sleep(3600)

        agent._do = hang  # type: ignore[method-assign]
        agent._consumer = asyncio.create_task(agent._carry_out())
        agent.feed([act.Log("info", "never finishes")])
        await asyncio.sleep(0.05)
        start = time.monotonic()
        await agent.close()
        return time.monotonic() - start

    # 0.3 s of grace plus the close itself; an unbounded join would wait an hour.
    assert asyncio.run(scenario()) < 10


def _received(packet_bytes: bytes, urgent: bool = False) -> Received:
    packet = wire.parse_packet(packet_bytes)
    return Received(packet, 1, 64, True, "mh", packet_bytes, 0.0, urgent)


def test_input_beyond_the_queue_bound_is_dropped_and_counted(tmp_path: Path) -> None:
    src, dst = IPv6Address("2001:db8:2::7"), IPv6Address("2001:db8:4::9")
    data = wire.build_packet(src, dst, wire.BindingUpdate(1, 0xC000, 10))

    async def scenario() -> tuple[int, int, int]:
        agent = Agent(_config(tmp_path))
        seen: list[object] = []
        agent.core = type("Core", (), {})()  # any core: the correspondent's path is plain
        agent.core.receive = lambda p, now, i: seen.append(p) or []  # type: ignore[attr-defined]
        agent.core.get_timer = lambda: None  # type: ignore[attr-defined]
        for _ in range(INPUT_QUEUE + 100):
            agent._received(_received(data))
        queued = len(agent._other_input)
        for _ in range(1000):  # let the drain batches run (32 unknown-sender packets each)
            await asyncio.sleep(0)
        return queued, agent.agent_counters["input_dropped"], len(seen)

    queued, dropped, handled = asyncio.run(scenario())
    assert queued == INPUT_QUEUE
    assert dropped == 100
    assert handled == INPUT_QUEUE


def test_urgent_input_is_handled_before_input_that_waited_longer(tmp_path: Path) -> None:
    other = wire.build_packet(
        IPv6Address("2001:db8:2::7"), IPv6Address("2001:db8:1::1"), wire.BindingUpdate(1, 0xC000, 9)
    )
    urgent = wire.build_packet(
        IPv6Address("2001:db8:3::5"), IPv6Address("2001:db8:1::1"), wire.BindingUpdate(2, 0xC000, 9)
    )

    async def scenario() -> list[int]:
        agent = Agent(_config(tmp_path))
        order: list[int] = []
        agent.core = type("Core", (), {})()
        agent.core.receive = lambda p, now, i: order.append(p.payload.sequence) or []  # type: ignore[attr-defined]
        agent.core.get_timer = lambda: None  # type: ignore[attr-defined]
        for _ in range(5):
            agent._received(_received(other))
        agent._received(_received(urgent, urgent=True))
        await asyncio.sleep(0)
        return order

    assert asyncio.run(scenario()) == [2, 1, 1, 1, 1, 1]


def test_peek_reads_home_address_source_and_nai_without_decoding() -> None:
    """The gate's view of a BU as each receive socket hands it over."""
    from mip6agent.io.transport import peek_binding_update

    coa, hoa, ha = (
        IPv6Address("2001:db8:2::7"),
        IPv6Address("2001:db8:1::100"),
        IPv6Address("2001:db8:1::1"),
    )
    bu = wire.BindingUpdate(1, 0xC000, 10, [wire.MobileNodeIdentifier(b"mn1@example.net")])
    data = wire.build_packet(coa, ha, bu, home_address=hoa)
    # Destination Options socket: the data starts at the Destination Options header.
    peek = peek_binding_update("dstopts", coa, data[40:])
    assert peek is not None
    assert (peek.home_address, peek.source, peek.nai) == (hoa, coa, b"mn1@example.net")
    # MH socket on a kernel with MIP6: source already swapped to the HoA, option holds the CoA.
    dstopts = bytearray(data[40 : 40 + (data[41] + 1) * 8])
    at = bytes(dstopts).index(hoa.packed)
    dstopts[at : at + 16] = coa.packed
    peek = peek_binding_update("mh", hoa, data[40 + len(dstopts) :], [(60, bytes(dstopts))])
    assert peek is not None and (peek.home_address, peek.source) == (hoa, coa)
    # Not a BU, or cut short: nothing.
    ack = wire.build_packet(ha, coa, wire.BindingAck(0, 0, 1, 10))
    assert peek_binding_update("mh", ha, ack[40:]) is None
    assert peek_binding_update("dstopts", coa, data[40:50]) is None


def test_a_refresh_does_not_wait_behind_another_bindings_kernel_change(tmp_path: Path) -> None:
    """Home agent lanes: a batch that only sends and saves, for a binding with nothing
    queued, goes past a kernel change that is still running (a restart's reconciliation
    or a slow route install); one for the binding being changed keeps its order."""
    from mip6agent.core.home_agent import HomeAgent, HomeAgentSettings, HomeLink

    moved, other = IPv6Address("2001:db8:1::100"), IPv6Address("2001:db8:1::200")
    coa, ha = IPv6Address("2001:db8:2::100"), IPv6Address("2001:db8:1::1")
    order: list[str] = []

    async def scenario() -> None:
        agent = Agent(_config(tmp_path))
        link = HomeLink("eth0", ha, (IPv6Network("2001:db8:1::/64"),))
        agent.core = HomeAgent(HomeAgentSettings(links=(link,)))
        kernel_free = asyncio.Event()

        async def do(action: act.Action) -> None:
            if isinstance(action, act.InstallBinding):
                await kernel_free.wait()
            order.append(f"{type(action).__name__} {getattr(action, 'key', '') or ''}".strip())

        agent._do = do  # type: ignore[method-assign]
        agent._consumer = asyncio.create_task(agent._carry_out(agent._queue, slow=True))
        agent._fast_consumer = asyncio.create_task(agent._carry_out(agent._fast, slow=False))
        agent.feed(
            [
                act.InstallBinding(moved, coa, ha, "eth0"),
                act.StateChanged("binding_cache", key=moved),
            ]
        )
        agent.feed(
            [act.Log("info", "refresh"), act.StateChanged("binding_cache", urgent=False, key=other)]
        )
        agent.feed([act.Log("info", "moved again"), act.StateChanged("binding_cache", key=moved)])
        await asyncio.sleep(0.05)
        assert order == ["Log", f"StateChanged {other}"], "the refresh went first"
        kernel_free.set()
        await asyncio.wait_for(asyncio.gather(agent._queue.join(), agent._fast.join()), 5)
        assert order[2:] == [
            "InstallBinding",
            f"StateChanged {moved}",
            "Log",
            f"StateChanged {moved}",
        ]
        assert dict(agent._waiting) == {}, "nothing is left counted as waiting, not even a 0"
        # A registration storm: thousands of bindings through the slow lane leave no entry.
        for n in range(2000):
            home = IPv6Address(f"2001:db8:1::1:{n:x}")
            agent.feed(
                [
                    act.InstallBinding(home, coa, ha, "eth0"),
                    act.StateChanged("binding_cache", key=home),
                ]
            )
        await asyncio.wait_for(agent._queue.join(), 30)
        assert dict(agent._waiting) == {}, "the storm left keys behind"
        agent._consumer.cancel()
        agent._fast_consumer.cancel()

    asyncio.run(scenario())
