# Imported target openvino::runtime: OpenVINO's C++ headers and libopenvino, as ./setup.sh unpacks
# them from PyPI's openvino wheel into ORCHARD_OPENVINO (the wheel's layout: openvino/include,
# openvino/libs). The wheel's own OpenVINOConfig.cmake insists on every frontend library, which
# setup.sh does not unpack (Orchard builds its graph in C++ and reads only its own IR), hence this
# small target. ./setup.sh passes the folder; a plain `cmake` takes the one .deps/openvino-* there
# is (the version is pinned in setup.sh only).
file(GLOB _openvino_dirs LIST_DIRECTORIES true "${CMAKE_SOURCE_DIR}/.deps/openvino-*")
list(LENGTH _openvino_dirs _n)
set(_openvino_default "")
if(_n EQUAL 1)
  set(_openvino_default "${_openvino_dirs}")
endif()
set(ORCHARD_OPENVINO "${_openvino_default}" CACHE PATH "OpenVINO unpacked from the openvino wheel by ./setup.sh")
file(GLOB _openvino_lib "${ORCHARD_OPENVINO}/openvino/libs/libopenvino.so.*")
if(NOT _openvino_lib OR NOT EXISTS "${ORCHARD_OPENVINO}/openvino/include/openvino/openvino.hpp")
  message(FATAL_ERROR "ORCHARD_OPENVINO='${ORCHARD_OPENVINO}' holds no openvino/libs/libopenvino.so.* and headers: run ./setup.sh, which unpacks OpenVINO into .deps/ and passes it")
endif()
add_library(openvino::runtime SHARED IMPORTED)
set_target_properties(openvino::runtime PROPERTIES
  IMPORTED_LOCATION "${_openvino_lib}"
  INTERFACE_INCLUDE_DIRECTORIES "${ORCHARD_OPENVINO}/openvino/include")
set(ORCHARD_OPENVINO_LIBS "${ORCHARD_OPENVINO}/openvino/libs")
message(STATUS "OpenVINO: ${ORCHARD_OPENVINO}")
# The binaries find libopenvino (and it finds its CPU plugin beside it) without LD_LIBRARY_PATH.
list(APPEND CMAKE_BUILD_RPATH "${ORCHARD_OPENVINO_LIBS}")
list(APPEND CMAKE_INSTALL_RPATH "${ORCHARD_OPENVINO_LIBS}")
