"""XmlListener / XmlClient for cqwire.connection: messages are xmlrpc
method-call documents (one parameter, no method name), as the stdlib's
serializer='xmlrpclib' managers exchange them. Built by the extension
module over its own Listener and Client (build() below).
"""
import xmlrpc.client


def _dumps(obj):
    return xmlrpc.client.dumps((obj,), None, None, None, 1).encode("utf-8")


def _loads(data):
    (obj,), _method = xmlrpc.client.loads(data.decode("utf-8"))
    return obj


class ConnectionWrapper:
    """A connection whose send/recv speak xmlrpc instead of pickle."""

    def __init__(self, conn, dumps=_dumps, loads=_loads):
        self._conn = conn
        self._dumps = dumps
        self._loads = loads
        for attr in ("fileno", "close", "poll", "recv_bytes", "send_bytes"):
            setattr(self, attr, getattr(conn, attr))

    def send(self, obj):
        self._conn.send_bytes(self._dumps(obj))

    def recv(self):
        return self._loads(self._conn.recv_bytes())


def build(listener_type, client):
    class XmlListener(listener_type):
        def accept(self, *args, **kwds):
            return ConnectionWrapper(super().accept(*args, **kwds))

    def XmlClient(*args, **kwds):
        return ConnectionWrapper(client(*args, **kwds))

    XmlListener.__module__ = XmlClient.__module__ = "cqwire.connection"
    XmlListener.__qualname__ = "XmlListener"
    XmlClient.__qualname__ = "XmlClient"
    return XmlListener, XmlClient
