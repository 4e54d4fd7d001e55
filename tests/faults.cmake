# Fault injection (issue 7, "Prove it" 4): allocation failures, short reads
# and writes, EINTR storms, io_uring refused at run time, descriptors
# exhausted. Each concept is one binary, run once (the backends they cover
# are chosen inside).

# cqw_fault_test(NAME SOURCE): a public-API test registered once.
function(cqw_fault_test name)
  add_executable(${name} ${ARGN})
  cqw_target_defaults(${name})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_link_libraries(${name} PRIVATE cqwire PkgConfig::CMOCKA
    Threads::Threads)
  if(CQW_SANITIZE)
    target_compile_definitions(${name} PRIVATE CQW_T_SANITIZED=1)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77)
endfunction()

# Replaces malloc and friends, so it cannot run under ASan or TSan (their
# runtime owns the allocator): there it exits 77 and says so.
cqw_fault_test(test-fault-alloc test-fault-alloc.c)

# Library bugs these tests found. Fixed ones are checked strictly, always;
# a bug still open has an option (default OFF) that turns its finding from
# a counted, reported case into a failure: turn it on with the fix, then
# move it to the fixed list.
set(cqw_fault_fixed
  # cqw_pipe(): when the second connection could not be allocated, *a
  # was left pointing at the freed first one (src/common/conn.c).
  PIPE_OUT
  # cqw__hmac(): HMAC() failing for lack of memory was reported as
  # CQW_ENOSYS, so a handshake said "not implemented" (src/posix/crypto.c).
  HMAC_ENOSYS
  # poll backend: add_waiting() failing (ENOMEM) completed a resumed send
  # after part of its frame was written: the stream was torn and the
  # reader waited mid-frame (src/poll/loop.c, poll_start()).
  POLL_TORN
  # setup_ring(): io_uring_get_probe_ring() returning NULL (no memory) was
  # reported as CQW_ENOSYS (src/uring/loop.c).
  URING_PROBE
)
set(cqw_fault_bugs)
foreach(bug IN LISTS cqw_fault_fixed)
  target_compile_definitions(test-fault-alloc PRIVATE CQW_T_KNOWN_BUG_${bug}=1)
endforeach()
foreach(bug IN LISTS cqw_fault_bugs)
  option(CQW_KNOWN_BUG_${bug} "Fail test-fault-alloc on known bug ${bug}" OFF)
  if(CQW_KNOWN_BUG_${bug})
    target_compile_definitions(test-fault-alloc PRIVATE
      CQW_T_KNOWN_BUG_${bug}=1)
  endif()
endforeach()

# io_uring refused after the ring was made (enter, register, both).
if("uring" IN_LIST CQW_BACKENDS)
  cqw_fault_test(test-fault-uring test-fault-uring.c)
  # Fixed: with io_uring_enter refused (setup allowed), cqw_loop_new
  # kept the ring and every reap failed; it now falls back (auto) or fails.
  target_compile_definitions(test-fault-uring PRIVATE
    CQW_T_KNOWN_BUG_URING_ENTER=1)
endif()

# Descriptors exhausted: accept, pipe, loop, connect under EMFILE.
cqw_fault_test(test-fault-emfile test-fault-emfile.c)

# EINTR storms: a signal every 100 us in every process of a case.
cqw_fault_test(test-fault-eintr test-fault-eintr.c)

# Short reads and writes (smallest kernel buffers), once per backend: the
# loop modes run on the backend CQW_BACKEND names.
add_executable(test-fault-short test-fault-short.c)
cqw_target_defaults(test-fault-short)
target_include_directories(test-fault-short PRIVATE ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test-fault-short PRIVATE cqwire PkgConfig::CMOCKA
  Threads::Threads)
foreach(b IN LISTS cqw_test_backends)
  add_test(NAME test-fault-short-${b} COMMAND test-fault-short)
  set_tests_properties(test-fault-short-${b} PROPERTIES TIMEOUT 600
    SKIP_RETURN_CODE 77 ENVIRONMENT "CQW_BACKEND=${b}")
endforeach()
