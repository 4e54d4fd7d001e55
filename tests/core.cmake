# The core's own regression groups: the fate of ops across fork() and
# loop ownership (per backend and ring flag set), wait() on odd items
# (per backend), and descriptors shared between processes (sync only).
cqw_loop_suite_test(test-loop-fork test-loop-fork.c)
cqw_suite_test(test-wait-items test-wait-items.c)
cqw_sync_test(test-sharing test-sharing.c)
cqw_sync_test(test-signal-frames test-signal-frames.c)
# Servers on the loop: accept, connect and the handshake as ops (issue 9).
cqw_suite_test(test-server test-server.c)
# A reap that waits for several completions (cqw_reap_min).
cqw_loop_suite_test(test-reap-min test-reap-min.c)
# CQW_EXCLUSIVE receives on the loop: io_uring's multishot receive on
# provided buffers (issue 11), and the fallback a kernel without it takes.
cqw_loop_suite_test(test-multishot test-multishot.c)
if(TARGET test-multishot AND "uring" IN_LIST cqw_test_backends)
  foreach(t test-multishot test-exclusive)
    add_test(NAME ${t}-uring-nomulti COMMAND ${t})
    set_tests_properties(${t}-uring-nomulti PROPERTIES
      TIMEOUT ${cqw_suite_timeout} SKIP_RETURN_CODE 77
      ENVIRONMENT "CQW_TEST_IO=loop;CQW_BACKEND=uring;CQW_EXPECT_BACKEND=uring;CQW_URING_NO_MULTISHOT=1")
  endforeach()
endif()
