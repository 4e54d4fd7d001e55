# POSIX I/O (src/posix, src/poll): pipes and pipe-like files (RWF_NOWAIT
# per descriptor, SIGPIPE), the signal check (CQW_EINTR), and accept on a
# listener shared by several processes.

# Through the loop of each backend (CQW_BACKEND), and the sync API.
cqw_suite_test(test-pipes test-pipes.c)

# The signal check and CQW_EINTR: the sync API's blocking calls, and the
# poll backend's wait (forced by the loop option). Once, not per backend.
add_executable(test-signals test-signals.c)
cqw_target_defaults(test-signals)
target_include_directories(test-signals PRIVATE ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test-signals PRIVATE cqwire PkgConfig::CMOCKA
  Threads::Threads)
add_test(NAME test-signals COMMAND test-signals)
set_tests_properties(test-signals PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77)

# accept() on a listener shared by several processes. Once.
add_executable(test-accept test-accept.c)
cqw_target_defaults(test-accept)
target_include_directories(test-accept PRIVATE ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test-accept PRIVATE cqwire PkgConfig::CMOCKA
  Threads::Threads)
add_test(NAME test-accept COMMAND test-accept)
set_tests_properties(test-accept PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77)
