"""A stdlib multiprocessing.connection peer, run by test_connection.py in
another process (and maybe another interpreter).

  peer.py echo-fd FD            wrap FD in a stdlib Connection, echo until EOF
  peer.py client ADDRESS KEY    connect (KEY '-' for none), echo until EOF
  peer.py listen FAMILY KEY     listen, print the address, accept one, echo
  peer.py xml-client ADDRESS    XmlClient: recv() objects, send() them back
  peer.py xml-listen FAMILY     XmlListener: print the address, accept, echo
  peer.py handles FD            recv_handle() on FD's Connection, then read
                                each handle's file and send its contents
  peer.py give FD PATH          send_handle() PATH's descriptor, send b"done",
                                then echo

ADDRESS is repr() of a Python address. Echo: each message back as is. On
AuthenticationError the peer prints AUTHFAIL and exits 3. With
CQW_PEER_LIB=billiard the peer is billiard's connection module instead.
"""
import ast
import os
import sys

if os.environ.get("CQW_PEER_LIB") == "billiard":
    from billiard import AuthenticationError
    from billiard.connection import (Client, Connection, Listener,
                                     XmlClient, XmlListener)
    from billiard.reduction import recv_handle, send_handle
else:
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import (Client, Connection, Listener,
                                            XmlClient, XmlListener)
    from multiprocessing.reduction import recv_handle, send_handle


def echo(conn):
    while True:
        try:
            msg = conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(msg)


def echo_objects(conn):
    while True:
        try:
            obj = conn.recv()
        except EOFError:
            return
        conn.send(obj)


def handles(conn):
    while True:
        try:
            fd = recv_handle(conn)
        except EOFError:
            return
        with os.fdopen(fd, "rb") as f:
            f.seek(0)
            conn.send_bytes(f.read())


def key(arg):
    return None if arg == "-" else arg.encode()


def main():
    mode = sys.argv[1]
    try:
        if mode == "echo-fd":
            echo(Connection(int(sys.argv[2])))
        elif mode == "client":
            echo(Client(ast.literal_eval(sys.argv[2]), authkey=key(sys.argv[3])))
        elif mode == "listen":
            with Listener(family=sys.argv[2], authkey=key(sys.argv[3])) as l:
                print(repr(l.address), flush=True)
                echo(l.accept())
        elif mode == "xml-client":
            echo_objects(XmlClient(ast.literal_eval(sys.argv[2])))
        elif mode == "xml-listen":
            with XmlListener(family=sys.argv[2]) as l:
                print(repr(l.address), flush=True)
                echo_objects(l.accept())
        elif mode == "handles":
            handles(Connection(int(sys.argv[2])))
        elif mode == "give":
            conn = Connection(int(sys.argv[2]))
            with open(sys.argv[3], "rb") as f:
                send_handle(conn, f.fileno(), os.getppid())
            conn.send_bytes(b"done")
            echo(conn)
    except AuthenticationError:
        print("AUTHFAIL", flush=True)
        sys.exit(3)


main()
