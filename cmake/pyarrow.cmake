# Imported targets arrow::arrow and arrow::parquet from the pyarrow wheel (headers + shared libs).
execute_process(
  COMMAND "${ORCHARD_PYTHON}" -c "import pyarrow as pa; pa.create_library_symlinks(); print(pa.get_include()); print(pa.get_library_dirs()[0])"
  OUTPUT_VARIABLE _pa_out RESULT_VARIABLE _pa_rc OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _pa_rc EQUAL 0)
  message(FATAL_ERROR "pyarrow not importable from ${ORCHARD_PYTHON}: run ./setup.sh first")
endif()
string(REPLACE "\n" ";" _pa_lines "${_pa_out}")
list(GET _pa_lines 0 PYARROW_INCLUDE_DIR)
list(GET _pa_lines 1 PYARROW_LIB_DIR)
message(STATUS "Arrow C++ from pyarrow: ${PYARROW_LIB_DIR}")

foreach(_lib arrow arrow_s3 parquet)
  find_library(PYARROW_${_lib}_LIB NAMES ${_lib} PATHS "${PYARROW_LIB_DIR}" NO_DEFAULT_PATH REQUIRED)
  add_library(arrow::${_lib} SHARED IMPORTED)
  set_target_properties(arrow::${_lib} PROPERTIES
    IMPORTED_LOCATION "${PYARROW_${_lib}_LIB}"
    INTERFACE_INCLUDE_DIRECTORIES "${PYARROW_INCLUDE_DIR}")
endforeach()
# The binaries find the wheel's libraries without LD_LIBRARY_PATH.
set(CMAKE_BUILD_RPATH "${PYARROW_LIB_DIR}")
set(CMAKE_INSTALL_RPATH "${PYARROW_LIB_DIR}")
