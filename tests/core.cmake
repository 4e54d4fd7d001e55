# The core's own regression groups: the fate of ops across fork() and
# loop ownership (per backend and ring flag set), wait() on odd items
# (per backend), and descriptors shared between processes (sync only).
cqw_loop_suite_test(test-loop-fork test-loop-fork.c)
cqw_suite_test(test-wait-items test-wait-items.c)
cqw_sync_test(test-sharing test-sharing.c)
cqw_sync_test(test-signal-frames test-signal-frames.c)
# Servers on the loop: accept, connect and the handshake as ops (issue 9).
cqw_suite_test(test-server test-server.c)
