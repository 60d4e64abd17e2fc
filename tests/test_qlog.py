"""qlog: QuicConfiguration.quic_logger (aioquic) and qlog_dir (0.6.1) get one trace per
connection with its connection-level events and the engine's packet-level events (every
packet sent and received with its frames), over real UDP between our client and server."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from quic_helpers import (
    ProtocolCollector,
    RecordingProtocol,
    client,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
)

from aiopquic import qlog as aioqlog
from aiopquic.quic import _qlog
from aiopquic.quic._enginelog import packet_events
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.events import ConnectionTerminated, DatagramFrameReceived
from aiopquic.quic.logger import QuicLogger

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

PAYLOAD = bytes(range(256)) * 400  # 100 KiB


def _events(trace: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e["data"] for e in trace["events"] if e["name"] == name]


def _moved(trace: dict[str, Any], kind: str, source: str) -> int:
    return sum(d["length"] for d in _events(trace, f"transport:{kind}_data_moved")
               if d["from"] == source)


async def _session(server_config, client_config, server_kwargs, client_kwargs,
                   while_open=None) -> None:
    """Echo PAYLOAD, send one datagram, close with application error 7 "done"; returns once
    the server has seen the close (so both traces have ended)."""
    servers = ProtocolCollector(RecordingProtocol)
    async with running_server(server_config(max_datagram_frame_size=1200, **server_kwargs),
                              stream_handler=echo_stream_handler,
                              create_protocol=servers) as server:
        with anyio.fail_after(30):
            async with client(server.local_port,
                              client_config(max_datagram_frame_size=1200, **client_kwargs),
                              create_protocol=RecordingProtocol) as protocol:
                assert await echo_roundtrip(protocol, PAYLOAD) == PAYLOAD
                if while_open is not None:
                    await while_open(protocol)
                peer = await servers.next()
                protocol._quic.send_datagram_frame(b"x" * 300)
                protocol.transmit()
                await peer.wait_event(DatagramFrameReceived, timeout=10)
                protocol.close(error_code=7, reason_phrase="done")
                await protocol.wait_closed()
            await peer.wait_event(ConnectionTerminated, timeout=10)


async def test_quic_logger_traces_both_sides(server_config, client_config):
    server_log, client_log = QuicLogger(), QuicLogger()
    await _session(server_config, client_config, {"quic_logger": server_log},
                   {"quic_logger": client_log})
    (ctrace,) = client_log.to_dict()["traces"]
    (strace,) = server_log.to_dict()["traces"]
    json.dumps(client_log.to_dict())  # serialisable as it is
    assert ctrace["vantage_point"]["type"] == "client"
    assert strace["vantage_point"]["type"] == "server"
    for trace in (ctrace, strace):
        assert _events(trace, "transport:alpn_information")[0]["chosen_alpn"]
        assert _events(trace, "connectivity:connection_state_updated") == [
            {"new": "handshake_complete"}]
        assert _events(trace, "connectivity:mtu_updated")
        times = [e["time"] for e in trace["events"]]
        assert times == sorted(times)
    # every byte crossed the application boundary once each way, on both sides
    for trace in (ctrace, strace):
        assert _moved(trace, "stream", "application") == len(PAYLOAD)
        assert _moved(trace, "stream", "transport") == len(PAYLOAD)
    assert _moved(ctrace, "datagram", "application") == 300
    assert _moved(strace, "datagram", "transport") == 300
    # both traces are named by the original destination connection ID
    assert ctrace["common_fields"]["ODCID"] == strace["common_fields"]["ODCID"]
    params = _events(ctrace, "transport:parameters_set")
    assert [p["owner"] for p in params] == ["local", "remote"]
    assert params[1]["max_datagram_frame_size"] == 1200 and params[1]["initial_max_data"] > 0
    # the close, and who closed
    assert ctrace["events"][-1]["name"] == "connectivity:connection_closed"
    assert strace["events"][-1]["name"] == "connectivity:connection_closed"
    closed_c = ctrace["events"][-1]["data"]
    closed_s = strace["events"][-1]["data"]
    assert closed_c["owner"] == "local" and closed_s["owner"] == "remote"
    assert closed_c["application_code"] == closed_s["application_code"] == 7
    assert closed_s["reason"] == "done"
    assert _events(ctrace, "connectivity:close_requested")[0]["error_code"] == 7


async def test_qlog_dir_writes_one_file_per_connection(server_config, client_config, tmp_path):
    """qlog_dir (0.6.1): a JSON-SEQ file per connection named by the original destination
    connection ID, there while the connection runs (0.6.1's picoquic wrote as it went),
    read back with aiopquic.qlog."""
    sdir, cdir = tmp_path / "server", tmp_path / "client"
    sdir.mkdir()
    cdir.mkdir()
    seen_open: list[str] = []

    async def check_while_open(protocol) -> None:
        cids = protocol._quic.connection_ids
        files = [f.name for f in cdir.glob("*.sqlog")]
        assert files == [cids["initial"].hex() + ".sqlog"], (files, cids)
        seen_open.extend(files)

    await _session(server_config, client_config, {"qlog_dir": str(sdir)},
                   {"qlog_dir": str(cdir)}, while_open=check_while_open)
    assert seen_open
    names = {}
    for directory, side in ((sdir, "server"), (cdir, "client")):
        files = list(directory.glob("*.sqlog"))
        assert len(files) == 1, files
        header = aioqlog.load_header(files[0])
        assert header["qlog_format"] == "JSON-SEQ"
        assert header["trace"]["vantage_point"]["type"] == side
        events = aioqlog.load(files[0])
        assert events[-1]["name"] == "connectivity:connection_closed"
        assert any(e["name"] == "transport:parameters_set" for e in events)
        names[side] = files[0].name
    # both sides name the connection by the same original destination connection ID
    assert names["server"] == names["client"]


async def test_trace_is_capped(server_config, client_config, monkeypatch):
    monkeypatch.setattr(_qlog, "MAX_TRACE_EVENTS", 5)
    log = QuicLogger()
    await _session(server_config, client_config, {}, {"quic_logger": log})
    (trace,) = log.to_dict()["traces"]
    names = [e["name"] for e in trace["events"]]
    # 5 kept, then the close and the count of what was dropped
    assert len(names) == 7
    assert names[-2:] == ["connectivity:connection_closed", "aiopquic:events_dropped"]
    dropped = trace["events"][-1]["data"]
    assert dropped["kept"] == 5 and dropped["count"] > 0


def test_bad_logger_and_directory_are_refused(tmp_path):
    with pytest.raises(TypeError, match="quic_logger must be a QuicLogger.*object"):
        QuicConfiguration(is_client=True, quic_logger=object())
    with pytest.raises(FileNotFoundError, match="qlog_dir"):
        QuicConfiguration(is_client=True, qlog_dir=str(tmp_path / "missing"))
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(NotADirectoryError, match="qlog_dir"):
        QuicConfiguration(is_client=True, qlog_dir=str(afile))


def _frames(trace: dict[str, Any], event: str, kind: str) -> list[dict[str, Any]]:
    return [f for d in _events(trace, f"transport:{event}") for f in d["frames"]
            if f["frame_type"] == kind]


async def test_packet_level_events_on_both_sides(server_config, client_config):
    """The engine's packets and frames, as aioquic's tools read them: the payload's STREAM
    frames, the DATAGRAM, the CONNECTION_CLOSE with its code and reason, the handshake's
    Initial and Handshake packets; what one side sent, the other received."""
    server_log, client_log = QuicLogger(), QuicLogger()
    await _session(server_config, client_config, {"quic_logger": server_log},
                   {"quic_logger": client_log})
    (ctrace,) = client_log.to_dict()["traces"]
    (strace,) = server_log.to_dict()["traces"]
    for trace in (ctrace, strace):
        for event in ("packet_sent", "packet_received"):
            types = {d["header"]["packet_type"] for d in _events(trace, f"transport:{event}")}
            assert {"initial", "handshake", "1RTT"} <= types, (event, types)
    sent = _frames(ctrace, "packet_sent", "stream")
    assert sum(f["length"] for f in sent if f["stream_id"] == 0) >= len(PAYLOAD)
    assert any(f.get("fin") for f in sent if f["stream_id"] == 0)
    received = _frames(strace, "packet_received", "stream")
    assert sum(f["length"] for f in received if f["stream_id"] == 0) >= len(PAYLOAD)
    assert [f["length"] for f in _frames(ctrace, "packet_sent", "datagram")] == [300]
    assert [f["length"] for f in _frames(strace, "packet_received", "datagram")] == [300]
    (close,) = _frames(strace, "packet_received", "connection_close")
    assert (close["error_space"], close["error_code"], close["reason"]) == \
        ("application", 7, "done")
    assert _frames(ctrace, "packet_received", "ack")
    assert _frames(ctrace, "packet_received", "handshake_done")
    # the close is still the last event of each trace
    assert ctrace["events"][-1]["name"] == "connectivity:connection_closed"


async def test_qlog_dir_files_hold_packet_events(server_config, client_config, tmp_path):
    await _session(server_config, client_config, {"qlog_dir": str(tmp_path)}, {})
    (path,) = tmp_path.glob("*.sqlog")
    names = {e["name"] for e in aioqlog.load(path)}
    assert {"transport:packet_sent", "transport:packet_received"} <= names


def test_engine_log_lines_become_qlog_packets():
    """The parser alone, on lines in ngtcp2 1.11's format: frames group by packet (a sent
    packet's frames come before its header line), ACK ranges and ECN counts join their
    frame, a reason keeps its spaces, unknown lines are skipped."""
    lines = "\n".join([
        "I00000001 0xaa frm tx 5 1RTT STREAM(0x0f) id=0x4 fin=1 offset=10 len=20 uni=0",
        "I00000001 0xaa frm tx 5 1RTT PATH_CHALLENGE(0x1a) data=0x0011223344556677",
        "I00000001 0xaa pkt tx pkn=5 dcid=0xbb type=1RTT k=1",
        "I00000002 0xaa pkt rx pkn=9 dcid=0xaa type=1RTT k=0",
        "I00000002 0xaa frm rx 9 1RTT ACK(0x03) largest_ack=5 ack_delay=0(0) "
        "ack_range_count=1",
        "I00000002 0xaa frm rx 9 1RTT ACK(0x03) range=[5..4] len=1",
        "I00000002 0xaa frm rx 9 1RTT ACK(0x03) range=[2..0] gap=0 len=2",
        "I00000002 0xaa frm rx 9 1RTT ACK(0x03) ect0=3 ect1=0 ce=1",
        "I00000002 0xaa frm rx 9 1RTT CONNECTION_CLOSE(0x1d) error_code=(unknown)(0x7) "
        "frame_type=0 reason_len=8 reason=[bye, now]",
        "I00000003 0xaa pkt rx 0 VN v=0x00000001",
        "I00000003 0xaa pkt rx 0 VN v=0x6b3343cf",
        "I00000003 0xaa pkt packet was ignored because of mismatched DCID",
        "I00000003 0xaa frm rx x 1RTT garbage",
        "not a log line at all",
    ]).encode()
    out = packet_events(lines, dropped=2)
    assert [name for name, _ in out] == ["packet_sent", "packet_received", "packet_received",
                                         "packets_dropped"]
    sent, received, vn, dropped = (data for _, data in out)
    assert sent["header"] == {"packet_type": "1RTT", "packet_number": 5, "dcid": "bb",
                              "key_phase": 1}
    assert sent["frames"] == [
        {"frame_type": "stream", "stream_id": 4, "offset": 10, "length": 20, "fin": True},
        {"frame_type": "path_challenge", "data": "0011223344556677"}]
    ack, close = received["frames"]
    assert ack["acked_ranges"] == [[4, 5], [0, 2]] and ack["ce"] == 1
    assert close == {"frame_type": "connection_close", "error_space": "application",
                     "error_code": 7, "trigger_frame_type": 0, "reason": "bye, now"}
    assert vn["header"]["packet_type"] == "version_negotiation"
    assert vn["supported_versions"] == ["00000001", "6b3343cf"]
    assert dropped["count"] == 2
