# Warnings and include roots per target, never global. -fno-semantic-interposition: the code is
# position-independent (CMakeLists.txt) but nothing interposes its functions, so calls within a
# file stay inlinable as they are in a position-independent executable.
function(tandem_target_defaults target)
    target_compile_options(${target} PRIVATE
        $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wno-missing-field-initializers
                                  -fno-semantic-interposition>)
    # In a unity build (presets ci, asan) each .cc is #included into the batch's source, so GCC
    # warns that a class in it has a field of an anonymous-namespace type, as it would in a header.
    if(CMAKE_UNITY_BUILD AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
        target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-subobject-linkage>)
    endif()
endfunction()

# Extra compile options for the test code of tandem_add_test (not the libraries under test).
set(TANDEM_TEST_COMPILE_OPTIONS "" CACHE STRING "Extra compile options for test code")

# Compile options for the libraries whose speed the unit tests feel (models, kernels, the tokenizer
# loading real tokenizer.json files, the config loader and wire decoder the fuzz replays hammer):
# preset asan builds everything at -O0, the cheapest instrumented compile, and these at -O1, without
# which the text task suite ran past its 120 s timeout under ASan.
set(TANDEM_HOT_LIBRARY_OPTIONS "" CACHE STRING "Extra compile options for test-hot libraries")
function(tandem_hot_library target)
    target_compile_options(${target} PRIVATE ${TANDEM_HOT_LIBRARY_OPTIONS})
endfunction()

# tandem_add_test(NAME name LABEL unit|integration|gpu|fuzz SOURCES ... LIBS ... [TIMEOUT s])
function(tandem_add_test)
    cmake_parse_arguments(T "" "NAME;LABEL;TIMEOUT" "SOURCES;LIBS" ${ARGN})
    add_executable(${T_NAME} ${T_SOURCES})
    tandem_target_defaults(${T_NAME})
    target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
    target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
    # Test code itself (assertions, fixtures, small references) is compiled at -O0 in Release: the
    # cheapest compile for a large part of the build, which keeps CI in its budget; the code
    # under test is the libraries' Release build (their templates, Transformer<double> included,
    # are instantiated there). GPU suites stay at -O1: their CPU references run on the device
    # machine's short lease. (No -O level reassociates floating point without -ffast-math, so the
    # test's own arithmetic gives the same bits.)
    if(T_LABEL STREQUAL "gpu")
        set(_test_opt -O1)
    else()
        set(_test_opt -O0)
    endif()
    target_compile_options(${T_NAME} PRIVATE $<$<CONFIG:Release>:${_test_opt}>
                           ${TANDEM_TEST_COMPILE_OPTIONS})
    if(NOT T_TIMEOUT)
        set(T_TIMEOUT 120)
    endif()
    add_test(NAME ${T_NAME} COMMAND ${T_NAME})
    set_tests_properties(${T_NAME} PROPERTIES LABELS ${T_LABEL} TIMEOUT ${T_TIMEOUT})
    if(T_LABEL STREQUAL "unit")
        # tests/CMakeLists.txt collects these into tandem_unit_and_fuzz_suites (make test-asan).
        set_property(GLOBAL APPEND PROPERTY TANDEM_UNIT_SUITES ${T_NAME})
    endif()
    if(T_LABEL STREQUAL "integration")
        # Several processes each, with deadlines (heartbeats, UCX replies): never share the two
        # cores with another suite under `ctest -j`.
        set_tests_properties(${T_NAME} PROPERTIES RUN_SERIAL TRUE)
    endif()
    if(T_LABEL STREQUAL "gpu")
        # GPU suites skip with a reason without a device; report them as skipped, not passed.
        set_tests_properties(${T_NAME} PROPERTIES SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
    endif()
    # Tests find checked-in configs and built binaries through these, not through the environment.
    target_compile_definitions(${T_NAME} PRIVATE
        TANDEM_SOURCE_DIR="${PROJECT_SOURCE_DIR}" TANDEM_BINARY_DIR="${PROJECT_BINARY_DIR}")
endfunction()
