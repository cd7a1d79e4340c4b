#pragma once
// Shared helpers for the data tests: a per-process scratch directory, file writers, gzip.
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <dtn/core/error.hpp>

#include "../scratch_dir.hpp"

namespace dtn_test {

using TempDir = ScratchDir;

inline void write_bytes(const std::string& path, const std::vector<std::uint8_t>& b) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!b.empty()) REQUIRE(std::fwrite(b.data(), 1, b.size(), f) == b.size());
  REQUIRE(std::fclose(f) == 0);
}

inline std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  REQUIRE(f != nullptr);
  std::vector<std::uint8_t> b;
  int ch;
  while ((ch = std::fgetc(f)) != EOF) b.push_back(static_cast<std::uint8_t>(ch));
  std::fclose(f);
  return b;
}

// gzip (RFC 1952) of the bytes, via zlib's deflate with the gzip wrapper.
inline std::vector<std::uint8_t> gzip(const std::vector<std::uint8_t>& in) {
  z_stream zs;
  std::memset(&zs, 0, sizeof zs);
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::vector<std::uint8_t> out(deflateBound(&zs, static_cast<uLong>(in.size())) + 32);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

inline void put_be32(std::vector<std::uint8_t>& b, std::uint32_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 24));
  b.push_back(static_cast<std::uint8_t>(v >> 16));
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}

// IDX image file bytes: magic 2051, n, h, w, pixels.
inline std::vector<std::uint8_t> idx_images(std::uint32_t n, std::uint32_t h, std::uint32_t w,
                                            const std::vector<std::uint8_t>& pixels) {
  std::vector<std::uint8_t> b;
  put_be32(b, 2051);
  put_be32(b, n);
  put_be32(b, h);
  put_be32(b, w);
  b.insert(b.end(), pixels.begin(), pixels.end());
  return b;
}

inline std::vector<std::uint8_t> idx_labels(const std::vector<std::uint8_t>& labels) {
  std::vector<std::uint8_t> b;
  put_be32(b, 2049);
  put_be32(b, static_cast<std::uint32_t>(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

// Runs f, requires that it throws dtn::io_error, and that the message contains each of `needles`.
inline void require_io_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  bool thrown = false;
  try {
    f();
  } catch (const dtn::io_error& e) {
    thrown = true;
    const std::string msg = e.what();
    INFO("message: " << msg);
    for (const auto& n : needles) CHECK_MESSAGE(msg.find(n) != std::string::npos, "missing \"" << n << "\"");
  }
  CHECK_MESSAGE(thrown, "expected dtn::io_error");
}

// Real-data tests: the data directory, or exit 77 (CTest's skip code for these tests).
inline std::string data_dir_or_skip() {
  const char* d = std::getenv("DTN_DATA_DIR");
  if (!d || !*d) {
    std::cout << "SKIPPED: DTN_DATA_DIR not set" << std::endl;
    std::exit(77);
  }
  return d;
}

}  // namespace dtn_test
