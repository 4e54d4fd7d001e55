# The core's own regression groups: the fate of ops across fork() and
# loop ownership (per backend), and descriptors shared between processes.
cqw_suite_test(test-loop-fork test-loop-fork.c)
cqw_suite_test(test-wait-items test-wait-items.c)

# Sync API only: runs once, whatever the backend.
add_executable(test-sharing test-sharing.c)
cqw_target_defaults(test-sharing)
target_include_directories(test-sharing PRIVATE ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test-sharing PRIVATE cqwire PkgConfig::CMOCKA
  Threads::Threads)
add_test(NAME test-sharing COMMAND test-sharing)
set_tests_properties(test-sharing PROPERTIES TIMEOUT 120)
