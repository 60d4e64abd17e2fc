"""What asyncio's and anyio's ``ClientEndpoint`` share: the argument checks, the native
endpoints per address family and thread, and the choice of one for a new connection."""

from __future__ import annotations

import ipaddress
from typing import Callable, Optional

from aiopquic.quic._checks import check_int, check_port
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicEndpoint


def check_client_configuration(what: str, configuration: Optional[QuicConfiguration]
                               ) -> QuicConfiguration:
    """The client configuration to use: ``configuration`` validated, or a default client
    one for ``None``.  Raises :class:`TypeError` when it is not a
    :class:`QuicConfiguration`, :class:`ValueError` for a server one (``what`` names the
    caller in the message) or one :meth:`QuicConfiguration.validate` refuses."""
    if configuration is not None and not isinstance(configuration, QuicConfiguration):
        raise TypeError(f"{what} configuration must be a QuicConfiguration, "
                        f"got {type(configuration).__name__}")
    if configuration is None:
        configuration = QuicConfiguration(is_client=True)
    configuration.validate()
    if not configuration.is_client:
        raise ValueError(f"{what} needs a client configuration (is_client=True)")
    return configuration


class SharedEndpoints:
    """Up to ``threads`` shared native client endpoints per address family, opened on
    first use.  Raises :class:`TypeError` for an argument of the wrong type and
    :class:`ValueError` for a server configuration, one carrying ``session_ticket`` /
    ``session_ticket_file`` / ``token`` (they belong to one server), ``threads`` outside
    1..64, an IPv6 ``local_host`` or a port outside 0..65535."""

    def __init__(self, configuration: Optional[QuicConfiguration], threads: int,
                 local_host: str, local_port: int) -> None:
        configuration = check_client_configuration("ClientEndpoint", configuration)
        for name in ("session_ticket", "session_ticket_file"):
            if getattr(configuration, name, None) is not None:
                raise ValueError(f"ClientEndpoint: QuicConfiguration.{name} belongs to one "
                                 f"server: use connect() without an endpoint to resume")
        if configuration.token:
            raise ValueError("ClientEndpoint: QuicConfiguration.token belongs to one "
                             "server: use connect() without an endpoint")
        if not isinstance(local_host, str):
            raise TypeError(f"ClientEndpoint local_host must be a str, "
                            f"got {type(local_host).__name__}")
        if ipaddress.ip_address(local_host).version != 4:
            raise ValueError(f"ClientEndpoint local_host must be an IPv4 address (IPv6 "
                             f"sockets bind '::'), got {local_host!r}")
        self.configuration = configuration
        self.threads = check_int("threads", threads, 1, 65)
        self._local_host = local_host
        self._local_port = check_port(local_port, "local_port")
        self._endpoints: dict[int, list[QuicEndpoint]] = {}  # IP version -> per thread

    @property
    def connection_count(self) -> int:
        """Connections open on this endpoint."""
        return sum(len(ep.connections) for eps in self._endpoints.values() for ep in eps)

    @property
    def local_ports(self) -> list[int]:
        """The local UDP port of every socket opened so far (IPv4 first)."""
        return [ep.local_port for family in (4, 6) for ep in self._endpoints.get(family, [])]

    def _local_host_for(self, version: int) -> str:
        return self._local_host if version == 4 else "::"

    def _pick(self, version: int, started: Callable[[QuicEndpoint, str], None]
              ) -> QuicEndpoint:
        """The endpoint a new connection to an IPv``version`` address goes to: a new one
        while fewer than ``threads`` exist (``started(endpoint, host)`` wires it to the
        event loop), else the one carrying the fewest connections."""
        eps = self._endpoints.setdefault(version, [])
        if len(eps) < self.threads:
            host = self._local_host_for(version)
            port = self._local_port if (version == 4 and not eps) else 0
            ep = QuicEndpoint(self.configuration, host, port, shared=True)
            started(ep, host)
            ep.start()
            eps.append(ep)
            return ep
        return min(eps, key=lambda e: len(e.connections))

    def _take_endpoints(self) -> list[QuicEndpoint]:
        """Every endpoint opened, forgotten here (the caller closes them)."""
        eps = [ep for group in self._endpoints.values() for ep in group]
        self._endpoints.clear()
        return eps
