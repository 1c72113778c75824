"""Pure encode/decode for each wire: no sockets here, only bytes, strings and events."""
