# `cpack -G DEB` in the build folder: cortex_<version>_<arch>.deb, stripped, with its debug
# info split into cortex-dbgsym_<version>_<arch>.ddeb (Debian's -dbgsym convention). Its
# library dependencies are computed by dpkg-shlibdeps from the binary itself.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME cortex)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "The Cortex developers <cortex@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Manifest-driven orchestration of AI agents, tools, services and workflows")
set(CPACK_PACKAGE_DESCRIPTION
    "One binary: `cortex serve` runs the registry, the sandboxed executor, the durable workflow\n"
    "engine, the deployer and the agent runtime on an embedded SQLite state; the other verbs\n"
    "are its command line.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The sandbox and the tools' network; python3 for the examples' tools; Docker for compose relics.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "bubblewrap, passt, python3")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "docker.io, docker-compose")
# CPackDeb splits the debug info out and strips the binary itself (it finds unstripped ELF
# files with `file`): CPACK_STRIP_FILES would leave it nothing to split.
set(CPACK_STRIP_FILES OFF)
set(CPACK_DEBIAN_DEBUGINFO_PACKAGE ON)
include(CPack)
