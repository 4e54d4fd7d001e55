# The core's own regression groups: the fate of ops across fork() and
# loop ownership (per backend), and descriptors shared between processes.
cqw_suite_test(test-loop-fork test-loop-fork.c)
