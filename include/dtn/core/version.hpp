#pragma once
// The library's version: the one place it is written. CMakeLists.txt reads these three lines for
// project(VERSION), and so for the CMake package's version checks and dtn.pc; checkpoints record
// DTN_VERSION_STRING as "dtn_version" (which library wrote them; not checked on loading: the
// format has its own version, format_version).
#define DTN_VERSION_MAJOR 0
#define DTN_VERSION_MINOR 1
#define DTN_VERSION_PATCH 0

// One number for comparisons in the preprocessor: major * 10000 + minor * 100 + patch.
#define DTN_VERSION (DTN_VERSION_MAJOR * 10000 + DTN_VERSION_MINOR * 100 + DTN_VERSION_PATCH)

#define DTN_VERSION_STR_(x) #x
#define DTN_VERSION_STR(x) DTN_VERSION_STR_(x)
// "major.minor.patch"
#define DTN_VERSION_STRING \
  DTN_VERSION_STR(DTN_VERSION_MAJOR) "." DTN_VERSION_STR(DTN_VERSION_MINOR) "." DTN_VERSION_STR(DTN_VERSION_PATCH)
