# Imported target torch::cpu: LibTorch's headers, libtorch_cpu and libc10, as ./setup.sh unpacks
# them from PyPI's torch wheel into ORCHARD_LIBTORCH (the wheel's layout: torch/include, torch/lib).
# ./setup.sh passes it; a plain `cmake` takes the one .deps/libtorch-* there is (the version is
# pinned in setup.sh only).
file(GLOB _libtorch_dirs LIST_DIRECTORIES true "${CMAKE_SOURCE_DIR}/.deps/libtorch-*")
list(LENGTH _libtorch_dirs _n)
set(_libtorch_default "")
if(_n EQUAL 1)
  set(_libtorch_default "${_libtorch_dirs}")
endif()
set(ORCHARD_LIBTORCH "${_libtorch_default}" CACHE PATH "LibTorch unpacked from the torch wheel by ./setup.sh")
if(NOT EXISTS "${ORCHARD_LIBTORCH}/torch/lib/libtorch_cpu.so")
  message(FATAL_ERROR "ORCHARD_LIBTORCH='${ORCHARD_LIBTORCH}' holds no torch/lib/libtorch_cpu.so: run ./setup.sh, which unpacks LibTorch into .deps/ and passes it")
endif()
set(_torch_lib "${ORCHARD_LIBTORCH}/torch/lib")
add_library(torch::c10 SHARED IMPORTED)
set_target_properties(torch::c10 PROPERTIES IMPORTED_LOCATION "${_torch_lib}/libc10.so")
add_library(torch::cpu SHARED IMPORTED)
set_target_properties(torch::cpu PROPERTIES
  IMPORTED_LOCATION "${_torch_lib}/libtorch_cpu.so"
  INTERFACE_INCLUDE_DIRECTORIES "${ORCHARD_LIBTORCH}/torch/include;${ORCHARD_LIBTORCH}/torch/include/torch/csrc/api/include"
  INTERFACE_LINK_LIBRARIES torch::c10)
message(STATUS "LibTorch: ${ORCHARD_LIBTORCH}")
# The binaries find libtorch_cpu and libc10 without LD_LIBRARY_PATH.
list(APPEND CMAKE_BUILD_RPATH "${_torch_lib}")
list(APPEND CMAKE_INSTALL_RPATH "${_torch_lib}")
