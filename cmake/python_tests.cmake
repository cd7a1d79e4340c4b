# Python interop tests (tests/python/): dtn checkpoints read by the reference `safetensors`
# package and numpy, and files written by them read by dtn. The C++ side is the helper program
# dtn_st_roundtrip. The CTest entries report "skipped" (exit 77) where python3 cannot import
# numpy, safetensors and pytest (python/interop_torch: and torch), or where a test skipped.
if(NOT DTN_BUILD_TESTS)
  return()
endif()
add_executable(dtn_st_roundtrip ${dtn_SOURCE_DIR}/tests/python/st_roundtrip.cpp)
target_link_libraries(dtn_st_roundtrip PRIVATE dtn::dtn)
dtn_warnings(dtn_st_roundtrip)
add_executable(dtn_net_interop ${dtn_SOURCE_DIR}/tests/python/net_interop.cpp)
target_link_libraries(dtn_net_interop PRIVATE dtn::dtn)
dtn_warnings(dtn_net_interop)
# DTN steps of the trainer on the benchmark's or the example's networks, recomputed in PyTorch by
# tests/python/test_step_interop.py.
if(EXISTS ${dtn_SOURCE_DIR}/benchmarks/bench_common.hpp AND EXISTS ${dtn_SOURCE_DIR}/examples/svhn_to_mnist/networks.hpp)
  add_executable(dtn_step_interop ${dtn_SOURCE_DIR}/tests/python/step_interop.cpp)
  target_link_libraries(dtn_step_interop PRIVATE dtn::dtn)
  dtn_warnings(dtn_step_interop)
endif()

find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND)
  # Each entry has a pytest base temporary directory of its own: under `ctest -j` two pytest
  # sessions sharing /tmp/pytest-of-<user> run pytest's numbered-directory creation and clean-up
  # side by side, which is not safe between processes (pytest-dev/pytest#5456, #4245).
  set(dtn_pytest_tmp ${CMAKE_CURRENT_BINARY_DIR}/pytest-tmp)
  add_test(NAME python/interop
           COMMAND ${Python3_EXECUTABLE} ${dtn_SOURCE_DIR}/tests/python/run_interop.py
                   --basetemp=${dtn_pytest_tmp}/interop)
  # The comparison with PyTorch on its own, so that "torch not installed" shows as a skip.
  add_test(NAME python/interop_torch
           COMMAND ${Python3_EXECUTABLE} ${dtn_SOURCE_DIR}/tests/python/run_interop.py --torch
                   --basetemp=${dtn_pytest_tmp}/interop_torch)
  # The benchmark scripts' layer-by-layer comparison (compare.py, torch_dtn.py --profile-step).
  add_test(NAME python/bench_tools
           COMMAND ${Python3_EXECUTABLE} ${dtn_SOURCE_DIR}/tests/python/run_interop.py --bench
                   --basetemp=${dtn_pytest_tmp}/bench_tools)
  add_test(NAME python/bench_tools_torch
           COMMAND ${Python3_EXECUTABLE} ${dtn_SOURCE_DIR}/tests/python/run_interop.py --bench --torch
                   --basetemp=${dtn_pytest_tmp}/bench_tools_torch)
  set(dtn_interop_env "DTN_ST_ROUNDTRIP=$<TARGET_FILE:dtn_st_roundtrip>;DTN_NET_INTEROP=$<TARGET_FILE:dtn_net_interop>")
  if(TARGET dtn_step_interop)
    list(APPEND dtn_interop_env "DTN_STEP_INTEROP=$<TARGET_FILE:dtn_step_interop>")
  endif()
  set_tests_properties(python/interop python/interop_torch python/bench_tools python/bench_tools_torch PROPERTIES
    SKIP_RETURN_CODE 77
    ENVIRONMENT "${dtn_interop_env};PYTHONDONTWRITEBYTECODE=1")
else()
  message(STATUS "dtn: no python3 found: the Python interop tests are not registered")
endif()
