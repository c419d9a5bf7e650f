# Runs a program in a fresh output directory and checks its exit status and output.
#   -DPROGRAM=...      the executable
#   -DOUT=...          output directory, removed first and passed as the first argument
#   -DARGS=a|b         further arguments (| separated)
#   -DEXPECT_RC=n      the exit status the program must return
#   -DEXPECT=a|b       regular expressions its output must contain (| separated)
#   -DEXPECT_FILES=a|b files (relative to OUT) that must exist afterwards
#   -DABSENT_FILES=a|b files (relative to OUT) that must not exist afterwards
file(REMOVE_RECURSE "${OUT}")
string(REPLACE "|" ";" args "${ARGS}")
execute_process(COMMAND ${PROGRAM} ${OUT} ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE text
                ERROR_VARIABLE text)
if(NOT rc EQUAL EXPECT_RC)
  message(FATAL_ERROR "${PROGRAM} exited with ${rc}, expected ${EXPECT_RC}:\n${text}")
endif()
string(REPLACE "|" ";" patterns "${EXPECT}")
foreach(p ${patterns})
  if(NOT text MATCHES "${p}")
    message(FATAL_ERROR "the output of ${PROGRAM} lacks '${p}':\n${text}")
  endif()
endforeach()
string(REPLACE "|" ";" files "${EXPECT_FILES}")
foreach(f ${files})
  if(NOT EXISTS "${OUT}/${f}")
    message(FATAL_ERROR "${PROGRAM} did not leave ${OUT}/${f}:\n${text}")
  endif()
endforeach()
string(REPLACE "|" ";" files "${ABSENT_FILES}")
foreach(f ${files})
  if(EXISTS "${OUT}/${f}")
    message(FATAL_ERROR "${PROGRAM} left ${OUT}/${f}, which should not exist:\n${text}")
  endif()
endforeach()
message(STATUS "${PROGRAM}: exit ${rc} and output as expected")
