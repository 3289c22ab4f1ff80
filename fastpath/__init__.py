"""The fast path: sans-IO parsers for DNS, TLS, QUIC and HTTP, and the compiled domain table.

Everything here is Cython; the Python-visible API of each module is described by its .pyi file."""
