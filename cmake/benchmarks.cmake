# Benchmarks: bench_dtn (CPU) and, where the CUDA backend is built, bench_dtn_cuda.
# Run them through benchmarks/run_cpu.sh and benchmarks/run_gpu.sh, which also run the PyTorch peer.
if(NOT DTN_BUILD_BENCHMARKS)
  return()
endif()

# -march=native (DTN_NATIVE, DTN_NATIVE_FLAGS of CMakeLists.txt: -mcpu=native where only that is
# understood) is a property of these benchmark programs only: the library (an INTERFACE target)
# never forces it on its users.
set(dtn_bench_native_flags ${DTN_NATIVE_FLAGS})
if(DTN_NATIVE_FLAGS AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  # GCC 12 reports a false -Wmaybe-uninitialized inside its own avx512fintrin.h once Eigen's
  # AVX-512 kernels are inlined (GCC bug 105593); it is not in dtn's code.
  list(APPEND dtn_bench_native_flags -Wno-maybe-uninitialized)
endif()

set(dtn_bench_dir ${CMAKE_CURRENT_SOURCE_DIR}/benchmarks)

if(EXISTS ${dtn_bench_dir}/bench_dtn.cpp)
  add_executable(bench_dtn ${dtn_bench_dir}/bench_dtn.cpp)
  target_link_libraries(bench_dtn PRIVATE dtn::dtn)
  target_compile_options(bench_dtn PRIVATE -O3 ${dtn_bench_native_flags})
  dtn_warnings(bench_dtn)
endif()

if(DTN_HAVE_CUDA AND EXISTS ${dtn_bench_dir}/bench_dtn_cuda.cu)
  add_executable(bench_dtn_cuda ${dtn_bench_dir}/bench_dtn_cuda.cu)
  target_link_libraries(bench_dtn_cuda PRIVATE dtn::cuda)
  set(dtn_bench_cuda_host_flags -O3)
  if(dtn_bench_native_flags)
    list(APPEND dtn_bench_cuda_host_flags ${dtn_bench_native_flags})
  endif()
  list(JOIN dtn_bench_cuda_host_flags "," dtn_bench_cuda_host_flags)
  target_compile_options(bench_dtn_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-O3 -Xcompiler=${dtn_bench_cuda_host_flags}>
    $<$<COMPILE_LANGUAGE:CXX>:-O3 ${dtn_bench_native_flags}>)
  dtn_warnings(bench_dtn_cuda)
endif()
