"""cqwire: multiprocessing.connection's wire format, in C (libcqwire).

The extension module cqwire.connection has the names and behaviour of
multiprocessing.connection.
"""
