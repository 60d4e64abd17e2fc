"""aioquic's examples/interop.py letters, earned against local servers.

interop.py (aioquic's interoperability client, one test per letter) runs from the example
trees of tests/test_dropin_examples.py against the trees' ``http3_server.py`` (a main port
and a ``--retry`` port), for client in {aioquic, aiopquic} x server in {aioquic, aiopquic};
tests/interop_letters.py does the wiring (it also runs one pair by hand).  Asserted:

1. aioquic's client against aioquic's server earns every letter that can be earned locally
   (all but E, which no test of interop.py sets, and T, which needs HTTPS over TCP on port
   443): the comparisons below are then not vacuous;
2. our client against aioquic's server earns every letter aioquic's client earns there,
   except those in :data:`CLIENT_GAPS`;
3. aioquic's client against our server earns every letter it earns against aioquic's
   server, except those in :data:`SERVER_GAPS`;
4. our client against our server earns at least what it earns against aioquic's server,
   less :data:`SERVER_GAPS`.

The gap lists are strict both ways, like ``xfail(strict=True)``: a listed letter that is
earned after all fails the test, so that the list (and docs/migrating.md, "aioquic's
interop.py scores") is brought up to date.
"""

from __future__ import annotations

import sys

import pytest

pytestmark = [pytest.mark.anyio, pytest.mark.interop, pytest.mark.timeout(300)]

if sys.version_info < (3, 10):
    pytest.skip("aioquic's examples use `X | Y` annotations at run time (Python >= 3.10)",
                allow_module_level=True)

pytest.importorskip("aioquic")

from interop_letters import LETTERS, ServerLogs, earned, run_interop, serving  # noqa: E402
from test_dropin_examples import example_trees  # noqa: E402,F401  (the fixture)

# Letters no local run earns, whoever the client and server are.
NOT_LOCAL = {
    "E": "no test in interop.py sets it",
    "T": "HTTPS over TCP on port 443 of the server's host, timed against HTTP/3: no such "
         "TCP server here (throughput_path=None skips the test)",
}

# Letters aioquic's client earns against aioquic's server that our client does not.
CLIENT_GAPS = {
    "P": "ngtcp2 1.11 does not implement the spin bit, so no connectivity:spin_bit_updated "
         "events",
}

# Letters aioquic's client earns against aioquic's server but not against ours.
SERVER_GAPS = {
    "P": "our server's 1-RTT packets all carry spin bit 0 (ngtcp2 does not set it)",
}


def _check_gaps(name: str, baseline: set[str], got: set[str], gaps: dict[str, str]) -> None:
    unexpected = sorted(baseline - got - set(gaps))
    fixed = sorted(letter for letter in gaps if letter in got)
    assert not unexpected, f"{name}: letters lost, not in the gap list: {unexpected}"
    assert not fixed, f"{name}: listed as gaps but earned (update the list and docs): {fixed}"


async def test_interop_letters(example_trees, certs, tmp_path):  # noqa: F811
    scores: dict[tuple[str, str], str] = {}
    outputs: dict[tuple[str, str], str] = {}
    logs = {stack: ServerLogs() for stack in ("aioquic", "aiopquic")}
    async with serving(example_trees["aioquic"], certs, str(tmp_path / "qlog-aioquic"),
                       logs["aioquic"]) as aq, \
            serving(example_trees["aiopquic"], certs, str(tmp_path / "qlog-aiopquic"),
                    logs["aiopquic"]) as ap:
        for server_stack, server in (("aioquic", aq), ("aiopquic", ap)):
            for client_stack in ("aioquic", "aiopquic"):
                letters, out = await run_interop(example_trees[client_stack],
                                                 f"{server_stack}-server", server, certs.ca)
                scores[client_stack, server_stack] = letters
                outputs[client_stack, server_stack] = out
    table = "\n".join(f"client {c:<8} server {s:<8} {letters}"
                      for (c, s), letters in scores.items())
    print(table)
    # aiopquic's server may log sends on connections its clients had already closed (an
    # aiopquic bug, tolerated: interop_letters.TOLERATED_SERVER_ERROR); aioquic's never does
    print(f"tolerated server tracebacks: {logs['aiopquic'].tolerated} (aiopquic's server)")
    assert logs["aioquic"].tolerated == 0

    baseline = earned(scores["aioquic", "aioquic"])
    assert baseline == set(LETTERS) - set(NOT_LOCAL), \
        f"aioquic's own client and server:\n{table}\n{outputs['aioquic', 'aioquic']}"
    ours_client = earned(scores["aiopquic", "aioquic"])
    ours_server = earned(scores["aioquic", "aiopquic"])
    ours_both = earned(scores["aiopquic", "aiopquic"])
    try:
        _check_gaps("aiopquic client, aioquic server", baseline, ours_client, CLIENT_GAPS)
        _check_gaps("aioquic client, aiopquic server", baseline, ours_server, SERVER_GAPS)
        assert ours_both >= ours_client - set(SERVER_GAPS), "aiopquic client and server"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{table}\n\n" + "\n".join(
            f"--- client {c}, server {s}\n{out}" for (c, s), out in outputs.items())) from None
