# The Python module's own tests (tests/python/), one ctest entry per
# interpreter the module was built for (python/CMakeLists.txt). Every
# interpreter built for is also a stdlib peer in the interop tests, which
# so cover both handshake forms when 3.11 and 3.12+ are both present.
if(NOT WIN32 AND CQW_PY_TAGS)
  string(REPLACE ";" ":" cqw_py_peers "${CQW_PY_INTERPRETERS}")
  foreach(tag exe IN ZIP_LISTS CQW_PY_TAGS CQW_PY_INTERPRETERS)
    add_test(NAME test-python-${tag}
      COMMAND ${exe} -W ignore::ResourceWarning
        ${CMAKE_CURRENT_SOURCE_DIR}/python/test_connection.py)
    set_tests_properties(test-python-${tag} PROPERTIES TIMEOUT 600
      ENVIRONMENT "PYTHONPATH=${PROJECT_BINARY_DIR}/python/${tag};CQW_PEER_PYTHONS=${cqw_py_peers}")
  endforeach()
endif()

# CPython's own connection test classes against the module
# (tests/python/cpython_driver.py), per interpreter and start method. The
# interpreter's test package is needed (Debian: libpython3.11-testsuite;
# pyenv builds ship it): without it the driver skips (77).
if(NOT WIN32 AND CQW_PY_TAGS)
  foreach(tag exe IN ZIP_LISTS CQW_PY_TAGS CQW_PY_INTERPRETERS)
    foreach(sm fork spawn)
      add_test(NAME test-python-cpython-${tag}-${sm}
        COMMAND ${exe} -W ignore::ResourceWarning
          ${CMAKE_CURRENT_SOURCE_DIR}/python/cpython_driver.py)
      set_tests_properties(test-python-cpython-${tag}-${sm} PROPERTIES
        TIMEOUT 900 SKIP_RETURN_CODE 77
        ENVIRONMENT "PYTHONPATH=${PROJECT_BINARY_DIR}/python/${tag};CQW_START_METHOD=${sm}")
    endforeach()
  endforeach()
endif()

# CPython's Pool / Queue / manager and concurrent.futures process pool
# tests with cqwire.install() in effect (tests/python/install_driver.py),
# per interpreter, start method and suite.
if(NOT WIN32 AND CQW_PY_TAGS)
  foreach(tag exe IN ZIP_LISTS CQW_PY_TAGS CQW_PY_INTERPRETERS)
    foreach(sm fork spawn)
      foreach(suite mp futures)
        add_test(NAME test-python-install-${tag}-${sm}-${suite}
          COMMAND ${exe} -W ignore::ResourceWarning
            ${CMAKE_CURRENT_SOURCE_DIR}/python/install_driver.py)
        set_tests_properties(test-python-install-${tag}-${sm}-${suite}
          PROPERTIES TIMEOUT 900 SKIP_RETURN_CODE 77
          ENVIRONMENT "PYTHONPATH=${PROJECT_BINARY_DIR}/python/${tag};CQW_START_METHOD=${sm};CQW_SUITE=${suite}")
      endforeach()
    endforeach()
  endforeach()
endif()

# pip install --no-build-isolation of the source tree into a temporary
# target directory, for Debian's python3 (setup.py), then imported.
if(NOT WIN32 AND EXISTS /usr/bin/python3 AND "py311" IN_LIST CQW_PY_TAGS)
  add_test(NAME test-python-pip-install
    COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/python/pip_install.py
      ${PROJECT_SOURCE_DIR})
  set_tests_properties(test-python-pip-install PROPERTIES TIMEOUT 900
    SKIP_RETURN_CODE 77)
endif()
