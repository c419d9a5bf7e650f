# Runs the compiler on SOURCE and requires it to FAIL with a message matching EXPECT.
# -DCOMPILER=... -DSOURCE=... -DINCLUDE=... -DEXPECT=... [-DFLAGS="-mno-avx512f;..."]
execute_process(
  COMMAND ${COMPILER} -std=c++20 -fsyntax-only -fopenmp -I${INCLUDE} -I/usr/include/eigen3 ${FLAGS} ${SOURCE}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it must be rejected")
endif()
if(NOT err MATCHES "${EXPECT}")
  message(FATAL_ERROR "${SOURCE} failed without the expected message '${EXPECT}':\n${err}")
endif()
