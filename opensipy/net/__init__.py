"""Transports: listening sockets and the receive loops."""
