# Every external dependency is found here, once, as an imported target. Targets link what they
# use; nothing is vendored and nothing is downloaded at build time (deploy/install-deps.sh installs
# the Debian packages).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

find_package(fmt REQUIRED)                  # fmt::fmt
find_package(spdlog REQUIRED)               # spdlog::spdlog
find_package(yaml-cpp REQUIRED)             # yaml-cpp
find_package(nlohmann_json 3.10 REQUIRED)   # nlohmann_json::nlohmann_json
find_package(SQLite3 REQUIRED)              # SQLite::SQLite3
find_package(Boost 1.74 REQUIRED)           # Boost::headers (Asio, Beast)
pkg_check_modules(ZMQ REQUIRED IMPORTED_TARGET libzmq)   # PkgConfig::ZMQ
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)  # PkgConfig::SODIUM (CURVE key derivation)
find_package(cppzmq REQUIRED)               # cppzmq (header-only C++ binding)
pkg_check_modules(UCX REQUIRED IMPORTED_TARGET ucx)      # PkgConfig::UCX (ucp, uct, ucs)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)  # PkgConfig::XXHASH
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas) # PkgConfig::OPENBLAS
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)  # PkgConfig::PCRE2 (tokenizer regexes)
pkg_check_modules(ICU REQUIRED IMPORTED_TARGET icu-uc)        # PkgConfig::ICU (Unicode normalization)

if(TANDEM_BUILD_TESTS)
    find_package(GTest REQUIRED)            # GTest::gtest, GTest::gtest_main, GTest::gmock
endif()

# spdlog's Debian build uses the external fmt; make that explicit for every consumer.
if(TARGET spdlog::spdlog AND NOT TARGET tandem_spdlog)
    add_library(tandem_spdlog INTERFACE)
    target_link_libraries(tandem_spdlog INTERFACE spdlog::spdlog fmt::fmt)
endif()
