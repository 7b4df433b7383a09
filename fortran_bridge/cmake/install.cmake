# cmake --install: library, C header, Fortran module, CMake package
# (find_package(paramlib_bridge) -> paramlib::bridge and paramlib::column_physics, the column
# interface with the column model it runs), pkg-config file and a Makefile fragment for
# Make-based hosts such as WRF.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(PARAMLIB_INCLUDE_SUBDIR ${CMAKE_INSTALL_INCLUDEDIR}/paramlib)
set(PARAMLIB_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/paramlib_bridge)

install(TARGETS paramlib_bridge paramlib_column_physics paramlib_column EXPORT paramlib_bridgeTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
get_target_property(PARAMLIB_COLUMN_PHYSICS_MOD_DIR paramlib_column_physics Fortran_MODULE_DIRECTORY)
install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/src/paramlib_bridge.h
              ${CMAKE_Fortran_MODULE_DIRECTORY}/paramlib_bridge.mod
              ${PARAMLIB_COLUMN_PHYSICS_MOD_DIR}/paramlib_column_physics.mod
        DESTINATION ${PARAMLIB_INCLUDE_SUBDIR})
install(EXPORT paramlib_bridgeTargets NAMESPACE paramlib:: DESTINATION ${PARAMLIB_CMAKE_DIR})

# The exported target is paramlib::paramlib_bridge; the config adds the short alias.
configure_package_config_file(cmake/paramlib_bridgeConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/paramlib_bridgeConfig.cmake INSTALL_DESTINATION ${PARAMLIB_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/paramlib_bridgeConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/paramlib_bridgeConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/paramlib_bridgeConfigVersion.cmake
        DESTINATION ${PARAMLIB_CMAKE_DIR})

# pkg-config and Make fragment: paths are written at install time, so they are
# right for whatever --prefix was given to cmake --install.
set(PARAMLIB_TORCH_LIBDIR "${TORCH_INSTALL_PREFIX}/lib")
configure_file(cmake/install_paths.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/install_paths.cmake @ONLY)
install(SCRIPT ${CMAKE_CURRENT_BINARY_DIR}/install_paths.cmake)
