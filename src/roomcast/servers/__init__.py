"""Network servers: they move bytes between sockets and the protocol/dispatch layers."""
