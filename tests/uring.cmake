# io_uring backend tests (registered by tests/CMakeLists.txt: test-uring).
if("uring" IN_LIST CQW_BACKENDS)
  # test-uring uses the shared helpers in tests/t-util.h.
  target_include_directories(test-uring PRIVATE ${PROJECT_SOURCE_DIR}/tests)
endif()
