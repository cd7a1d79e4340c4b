# custom_generator --steps V for values that are not a positive whole int: each must exit with 2
# and say so, before any work (run with -DPROG=path/to/custom_generator).
foreach(v "2x" "1.5" "1e9" "" "-3" "0" "99999999999")
  execute_process(COMMAND ${PROG} --steps "${v}" --out ${CMAKE_CURRENT_BINARY_DIR}/bad_steps_out
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 2 OR NOT err MATCHES "--steps must be a positive integer")
    message(FATAL_ERROR "custom_generator --steps '${v}': exit ${rc}, stderr '${err}', stdout '${out}'")
  endif()
endforeach()
message(STATUS "custom_generator refused every malformed --steps value")
