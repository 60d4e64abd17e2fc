"""Exceptions of aiopquic's codec layer (aiopquic 0.6.1's ``aiopquic.exceptions``).

They belong to the transport library, not to any protocol built on it; aiomoqt, for one,
imports :class:`StreamUnderflow` as its own ``MOQTUnderflow``.
"""

__all__ = ["StreamUnderflow"]


class StreamUnderflow(Exception):
    """A :class:`~aiopquic.streamchain.StreamChain` read needs bytes that have not arrived yet.

    ``pos`` is the cursor when the read started and ``needed`` the position the read would
    have reached, so ``needed - pos`` is the size of the read that failed.  The caller rolls
    back to its last ``save()`` and parses again once more data was ``extend()``-ed.
    """

    def __init__(self, pos: int, needed: int) -> None:
        super().__init__(pos, needed)
        self.pos = pos
        self.needed = needed
