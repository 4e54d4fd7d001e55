# A real network path (tests/netns): netem-tun, a user-space link with
# delay, loss and reordering between two network namespaces. Linux only.
if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
  add_executable(netem-tun ${CMAKE_CURRENT_LIST_DIR}/netns/netem-tun.c)
  cqw_target_defaults(netem-tun)
endif()
