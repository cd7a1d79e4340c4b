# Packaging tests (tests/packaging/) and the custom-networks example's test.
#   packaging/install           cmake --install into a temporary prefix, then find_package(dtn)
#                               (with version checks) and pkg-config from outside projects
#   packaging/add_subdirectory  an outside project with add_subdirectory(<dtn source>)
#   packaging/fetchcontent      the same through FetchContent_Declare(dtn SOURCE_DIR ...), offline
#   packaging/doc_snippets      every C++ block in docs/ compiles and runs
# Each configures and compiles a small program from scratch (about 20-40 s on 2 cores).
if(NOT DTN_BUILD_TESTS)
  return()
endif()

find_program(DTN_BASH bash)
if(DTN_BASH)
  foreach(mode install add_subdirectory fetchcontent)
    add_test(NAME packaging/${mode}
      COMMAND ${CMAKE_COMMAND} -E env CMAKE=${CMAKE_COMMAND} CXX=${CMAKE_CXX_COMPILER} JOBS=2 DTN_OPENMP=${DTN_OPENMP}
              ${DTN_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/tests/packaging/run_packaging_test.sh
              ${mode} ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_BINARY_DIR}/pkgtest/${mode})
    set_tests_properties(packaging/${mode} PROPERTIES TIMEOUT 300 LABELS packaging)
  endforeach()
else()
  message(STATUS "dtn: bash not found, the packaging tests are not registered")
endif()

# Every ```cpp block of docs/*.md compiles (-Wall -Wextra -Werror) and runs (about 1-2 min).
find_package(Python3 COMPONENTS Interpreter)
file(GLOB dtn_docs ${CMAKE_CURRENT_SOURCE_DIR}/docs/*.md)
if(Python3_Interpreter_FOUND AND dtn_docs)
  add_test(NAME packaging/doc_snippets
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/packaging/check_doc_snippets.py
            --cxx ${CMAKE_CXX_COMPILER} --include ${CMAKE_CURRENT_SOURCE_DIR}/include --include ${EIGEN3_INCLUDE_DIR}
            "--openmp-flags=${DTN_OPENMP_FLAGS}"
            --work ${CMAKE_BINARY_DIR}/pkgtest/doc_snippets ${dtn_docs})
  set_tests_properties(packaging/doc_snippets PROPERTIES TIMEOUT 400 LABELS packaging)
endif()

# examples/custom_generator: a user's own f, g, D and layer type through DomainTransfer on
# generated data, with a checkpoint round trip (cmake/examples.cmake builds the target).
if(TARGET custom_generator)
  add_test(NAME examples/custom_generator
    COMMAND custom_generator --out ${CMAKE_BINARY_DIR}/examples_out/custom_generator)
  set_tests_properties(examples/custom_generator PROPERTIES TIMEOUT 120 LABELS examples)
  # A --steps value that is not a whole integer is refused (exit 2 with the message), not read in part.
  add_test(NAME examples/custom_generator_bad_steps
    COMMAND ${CMAKE_COMMAND} -DPROG=$<TARGET_FILE:custom_generator> -P ${CMAKE_CURRENT_SOURCE_DIR}/tests/examples/bad_steps.cmake)
  set_tests_properties(examples/custom_generator_bad_steps PROPERTIES TIMEOUT 30 LABELS examples)
endif()
