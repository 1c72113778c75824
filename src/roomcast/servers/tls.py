"""TLS for the node's listeners: one server context, built once, used by every port."""

from __future__ import annotations

import ssl


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A TLS server context holding the PEM certificate chain ``cert`` and its key ``key``.

    Build it once per node and hand the same object to the TCP and web listeners.
    Raises :class:`ssl.SSLError` or :class:`OSError` when the files do not load (the
    settings checks at start report that first, naming the setting).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
