"""A stdlib multiprocessing.connection peer, run by test_connection.py in
another process (and maybe another interpreter).

  peer.py echo-fd FD            wrap FD in a stdlib Connection, echo until EOF
  peer.py client ADDRESS KEY    connect (KEY '-' for none), echo until EOF
  peer.py listen FAMILY KEY     listen, print the address, accept one, echo

ADDRESS is repr() of a Python address. Echo: each message back as is. On
AuthenticationError the peer prints AUTHFAIL and exits 3.
"""
import ast
import sys
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener


def echo(conn):
    while True:
        try:
            msg = conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(msg)


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
    except AuthenticationError:
        print("AUTHFAIL", flush=True)
        sys.exit(3)


main()
