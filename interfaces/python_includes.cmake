# Injected by tools/build_interfaces.py through CMAKE_PROJECT_INCLUDE (see README.md here).
# The PyPI message wheels export *__rosidl_generator_py targets whose
# INTERFACE_INCLUDE_DIRECTORIES name the wheel builder's Python (/opt/python/...), which does not
# exist here; CMake refuses to generate with them. At the end of the top directory, when every
# find_package() has imported its targets, point them at PYTHON_NUMPY_INCLUDES instead.
function(_x23d_override_python_includes)
  get_directory_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    if(_target MATCHES "__rosidl_generator_py$")
      set_target_properties(${_target} PROPERTIES
        INTERFACE_INCLUDE_DIRECTORIES "${PYTHON_NUMPY_INCLUDES}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _x23d_override_python_includes)
