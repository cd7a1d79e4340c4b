# Tests: doctest executables run through CTest, one CTest entry per test case.
if(NOT DTN_BUILD_TESTS)
  return()
endif()
enable_testing()
find_package(doctest REQUIRED)
include(${doctest_DIR}/doctest.cmake)

# CPU tests: tests/cpu/*.cpp into one executable.
file(GLOB dtn_cpu_test_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/cpu/*.cpp)
add_executable(dtn_tests tests/main.cpp ${dtn_cpu_test_sources})
target_link_libraries(dtn_tests PRIVATE dtn::dtn doctest::doctest)
# What the build was configured with, for the test that checks the library's thread count against it.
target_compile_definitions(dtn_tests PRIVATE DTN_TEST_EXPECT_OPENMP=$<BOOL:${DTN_HAVE_OPENMP}>)
# The version CMake read from include/dtn/core/version.hpp, for the test that the two agree.
target_compile_definitions(dtn_tests PRIVATE DTN_TEST_PROJECT_VERSION="${PROJECT_VERSION}")
dtn_warnings(dtn_tests)
doctest_discover_tests(dtn_tests TEST_PREFIX "cpu/" )
# ... and all of them once more in one process, in a shuffled order (fixed seed): one process a
# case hides a case that leaves state behind for the next. Clang's OpenMP kept a thread count a
# pass had asked for (tests/cpu/test_backend_reference.cpp, "... leave no thread count behind"),
# seen only when the whole executable ran, never under CTest. Not in the sanitizer builds, where
# it would run every case a second time at their pace (the other builds catch such a leak).
function(dtn_add_one_process_run name target)
  if(NOT CMAKE_CXX_FLAGS MATCHES "-fsanitize=" AND NOT CMAKE_CUDA_FLAGS MATCHES "-fsanitize=")
    add_test(NAME ${name} COMMAND ${target} --order-by=rand --rand-seed=20261207 ${ARGN})
  endif()
endfunction()
dtn_add_one_process_run(cpu/all_cases_in_one_process dtn_tests)

# Data tests (readers, image output): tests/data/*.cpp; real-data cases read DTN_DATA_DIR.
if(DTN_HAVE_DATA)
  file(GLOB dtn_data_test_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/data/*.cpp)
  if(NOT MATIO_FOUND)
    # mat_test.cpp writes its .mat files with libmatio.
    list(FILTER dtn_data_test_sources EXCLUDE REGEX "/mat_test\\.cpp$")
  endif()
  if(dtn_data_test_sources)
    add_executable(dtn_data_tests tests/main.cpp ${dtn_data_test_sources})
    target_link_libraries(dtn_data_tests PRIVATE dtn::data doctest::doctest)
    dtn_warnings(dtn_data_tests)
    doctest_discover_tests(dtn_data_tests TEST_PREFIX "data/" PROPERTIES SKIP_RETURN_CODE 77)
    # (the real-data cases, which end their process with 77 where there is no data, only one a process)
    dtn_add_one_process_run(data/all_cases_in_one_process dtn_data_tests -sfe=*real_data_test*)
  endif()
  # The same .mat tests against dtn's zlib-only MAT v5 reader (the files are written with libmatio).
  if(MATIO_FOUND)
    add_executable(dtn_data_native_tests tests/main.cpp tests/data/mat_test.cpp)
    target_link_libraries(dtn_data_native_tests PRIVATE dtn::data doctest::doctest)
    target_compile_definitions(dtn_data_native_tests PRIVATE DTN_NO_MATIO)
    dtn_warnings(dtn_data_native_tests)
    doctest_discover_tests(dtn_data_native_tests TEST_PREFIX "data-native/")
  endif()
  # The download script's checksum logic, offline (file:// mirrors); skipped without curl.
  add_test(NAME data/download_data_script
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tests/data/download_data_test.sh ${CMAKE_CURRENT_SOURCE_DIR}/scripts/download_data.sh)
  set_tests_properties(data/download_data_script PROPERTIES SKIP_RETURN_CODE 77)
endif()

# GPU tests: tests/cuda/*.cu; compiled wherever nvcc exists, reported as skipped (exit 77)
# where no GPU is present.
if(DTN_HAVE_CUDA)
  file(GLOB dtn_cuda_test_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/cuda/*.cu)
  if(dtn_cuda_test_sources)
    list(FILTER dtn_cuda_test_sources EXCLUDE REGEX "/main\\.cu$")
    add_executable(dtn_cuda_tests ${CMAKE_CURRENT_SOURCE_DIR}/tests/cuda/main.cu ${dtn_cuda_test_sources})
    target_link_libraries(dtn_cuda_tests PRIVATE dtn::cuda doctest::doctest)
    dtn_warnings(dtn_cuda_tests)
    doctest_discover_tests(dtn_cuda_tests TEST_PREFIX "cuda/" PROPERTIES SKIP_RETURN_CODE 77)
  endif()
  # The GPU kernels' per-thread code run on the host (tests/cuda_host): built by nvcc, needs no
  # GPU, so it runs wherever the CUDA backend compiles.
  file(GLOB dtn_cuda_host_test_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/cuda_host/*.cu)
  if(dtn_cuda_host_test_sources)
    add_executable(dtn_cuda_host_tests tests/main.cpp ${dtn_cuda_host_test_sources})
    target_link_libraries(dtn_cuda_host_tests PRIVATE dtn::cuda doctest::doctest)
    dtn_warnings(dtn_cuda_host_tests)
    doctest_discover_tests(dtn_cuda_host_tests TEST_PREFIX "cuda-host/")
    dtn_add_one_process_run(cuda-host/all_cases_in_one_process dtn_cuda_host_tests)
  endif()
endif()

# The GPU backend's host-side logic against a fake CUDA runtime (tests/cuda_fake: the runtime
# functions it calls, defined over a model of streams, events, captures and device memory; no
# libcudart linked). Plain C++ for the host compiler, so it needs no GPU and no nvcc, only an
# installed CUDA toolkit (as FindCUDAToolkit finds it) and cudnn.h, and is built wherever they
# are, the CPU-only builds included: the sanitizer builds (ASan, TSan) and Clang run it too.
# dtn's CPU library itself never includes a CUDA header.
find_package(CUDAToolkit QUIET)
find_path(DTN_FAKE_CUDNN_INCLUDE cudnn.h HINTS ${DTN_CUDNN_INCLUDE} ${CUDAToolkit_INCLUDE_DIRS} /usr/include
          PATH_SUFFIXES include)
file(GLOB dtn_cuda_fake_test_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/cuda_fake/*.cpp)
if(CUDAToolkit_FOUND AND DTN_FAKE_CUDNN_INCLUDE AND dtn_cuda_fake_test_sources)
  find_package(Threads REQUIRED)
  add_executable(dtn_cuda_fake_tests tests/main.cpp ${dtn_cuda_fake_test_sources})
  target_include_directories(dtn_cuda_fake_tests SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS} ${DTN_FAKE_CUDNN_INCLUDE})
  target_link_libraries(dtn_cuda_fake_tests PRIVATE dtn::dtn doctest::doctest Threads::Threads)
  dtn_warnings(dtn_cuda_fake_tests)
  doctest_discover_tests(dtn_cuda_fake_tests TEST_PREFIX "cuda-fake/")
  dtn_add_one_process_run(cuda-fake/all_cases_in_one_process dtn_cuda_fake_tests)
else()
  message(STATUS "dtn: no CUDA toolkit or no cudnn.h found: the fake-runtime tests (tests/cuda_fake) are not built")
endif()

# No TEST_CASE name may contain ';': CTest would split it into entries that run no test.
add_test(NAME meta/test_case_names COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tests/check_test_names.sh
                                           ${CMAKE_CURRENT_SOURCE_DIR})
# No OpenMP directive with both num_threads and if (include/dtn/backend/cpu/parallel.hpp).
add_test(NAME meta/omp_clauses COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tests/check_omp_clauses.sh
                                       ${CMAKE_CURRENT_SOURCE_DIR})

# A user's layer that breaks the contract must fail to compile with the readable message.
separate_arguments(dtn_openmp_flags NATIVE_COMMAND "${DTN_OPENMP_FLAGS}")
add_test(NAME compile_fail/bad_layer
  COMMAND ${CMAKE_CXX_COMPILER} -std=c++17 -fsyntax-only ${dtn_openmp_flags}
          -I${CMAKE_CURRENT_SOURCE_DIR}/include -I${EIGEN3_INCLUDE_DIR} -I/usr/include/eigen3
          ${CMAKE_CURRENT_SOURCE_DIR}/tests/compile_fail/bad_layer.cpp)
set_tests_properties(compile_fail/bad_layer PROPERTIES
  PASS_REGULAR_EXPRESSION "dtn layer contract: the layer type needs `void backward")

# Exact resume across processes (tests/resume/run.sh).
add_executable(dtn_resume_tool tests/resume/resume_tool.cpp)
target_link_libraries(dtn_resume_tool PRIVATE dtn::dtn)
dtn_warnings(dtn_resume_tool)
add_test(NAME cpu/exact_resume_across_processes
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tests/resume/run.sh $<TARGET_FILE:dtn_resume_tool>)
