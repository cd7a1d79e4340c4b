# The custom-g example (dtn::dtn only) and the bundled SVHN -> MNIST example (needs dtn::data).
if(NOT DTN_BUILD_EXAMPLES)
  return()
endif()
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/examples/custom_generator/main.cpp)
  add_executable(custom_generator examples/custom_generator/main.cpp)
  target_link_libraries(custom_generator PRIVATE dtn::dtn)
  dtn_warnings(custom_generator)
endif()
if(NOT DTN_HAVE_DATA)
  return()
endif()
add_executable(svhn_to_mnist examples/svhn_to_mnist/main.cpp)
target_link_libraries(svhn_to_mnist PRIVATE dtn::data)
dtn_warnings(svhn_to_mnist)
if(DTN_HAVE_CUDA)
  target_sources(svhn_to_mnist PRIVATE examples/svhn_to_mnist/main_cuda.cu)
  target_link_libraries(svhn_to_mnist PRIVATE dtn::cuda)
  target_compile_definitions(svhn_to_mnist PRIVATE DTN_EXAMPLE_CUDA)
endif()

# End-to-end smoke test on the real data (skipped, exit 77, where DTN_DATA_DIR does not hold it).
if(DTN_BUILD_TESTS)
  add_test(NAME examples/svhn_to_mnist_smoke
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tests/examples/svhn_to_mnist_smoke.sh $<TARGET_FILE:svhn_to_mnist>
            ${CMAKE_BINARY_DIR}/examples_out/svhn_to_mnist_smoke)
  set_tests_properties(examples/svhn_to_mnist_smoke PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77 LABELS examples)
endif()
