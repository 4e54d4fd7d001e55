# POSIX I/O (src/posix, src/poll): pipes and pipe-like files (RWF_NOWAIT
# per descriptor, SIGPIPE).

# Through the loop of each backend (CQW_BACKEND), and the sync API.
cqw_suite_test(test-pipes test-pipes.c)
