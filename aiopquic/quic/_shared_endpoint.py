"""The argument checks every shared client endpoint (asyncio's and anyio's
``ClientEndpoint``) makes, in one place."""

from __future__ import annotations

import ipaddress
from typing import Optional

from aiopquic.quic._checks import check_int, check_port
from aiopquic.quic.configuration import QuicConfiguration


def check_shared_client(configuration: Optional[QuicConfiguration], threads: int,
                        local_host: str, local_port: int
                        ) -> tuple[QuicConfiguration, int, int]:
    """(configuration, threads, local_port) checked.  Raises :class:`TypeError` for an
    argument of the wrong type and :class:`ValueError` for a server configuration, one
    carrying ``session_ticket`` / ``session_ticket_file`` / ``token`` (they belong to one
    server), ``threads`` outside 1..64, an IPv6 ``local_host`` or a port outside 0..65535."""
    if configuration is not None and not isinstance(configuration, QuicConfiguration):
        raise TypeError(f"ClientEndpoint configuration must be a QuicConfiguration, "
                        f"got {type(configuration).__name__}")
    if configuration is None:
        configuration = QuicConfiguration(is_client=True)
    configuration.validate()
    if not configuration.is_client:
        raise ValueError("ClientEndpoint needs a client configuration (is_client=True)")
    for name in ("session_ticket", "session_ticket_file"):
        if getattr(configuration, name, None) is not None:
            raise ValueError(f"ClientEndpoint: QuicConfiguration.{name} belongs to one "
                             f"server: use connect() without an endpoint to resume")
    if configuration.token:
        raise ValueError("ClientEndpoint: QuicConfiguration.token belongs to one server: "
                         "use connect() without an endpoint")
    if not isinstance(local_host, str):
        raise TypeError(f"ClientEndpoint local_host must be a str, "
                        f"got {type(local_host).__name__}")
    if ipaddress.ip_address(local_host).version != 4:
        raise ValueError(f"ClientEndpoint local_host must be an IPv4 address (IPv6 sockets "
                         f"bind '::'), got {local_host!r}")
    return (configuration, check_int("threads", threads, 1, 65),
            check_port(local_port, "local_port"))
