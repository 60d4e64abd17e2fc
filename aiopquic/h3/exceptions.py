"""Exceptions raised by :class:`aiopquic.h3.connection.H3Connection` to its caller (aioquic's
names).  Protocol errors of the *peer* are never raised: they close the connection with the
matching HTTP/3 error code."""

from __future__ import annotations

__all__ = ["H3Error", "InvalidStreamTypeError", "NoAvailablePushIDError", "FrameUnexpected"]


class H3Error(Exception):
    """Base class for HTTP/3 usage errors."""


class InvalidStreamTypeError(H3Error):
    """An operation was attempted on a stream of the wrong kind (for example an HTTP/3
    datagram for a stream that is not a client-initiated bidirectional stream)."""


class NoAvailablePushIDError(H3Error):
    """Server push is not possible now: the client granted no push id, all of them are used,
    or its GOAWAY forbids more (answer without the push)."""


class FrameUnexpected(H3Error):
    """A frame cannot be sent in the stream's current state (DATA before HEADERS, anything
    after the stream was ended, a third header section)."""

    error_code = 0x105
    "H3_FRAME_UNEXPECTED, as on aioquic's exception of this name."
