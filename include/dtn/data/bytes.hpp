#pragma once
// Whole-file reads and in-memory gzip decoding (zlib) for the data readers.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../core/error.hpp"

namespace dtn {
namespace data {

// The whole file as bytes; io_error naming the file when it cannot be opened or read.
inline std::vector<std::uint8_t> read_file_bytes(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw io_error(path + ": cannot open for reading: " + std::strerror(errno));
  std::vector<std::uint8_t> out;
  // Size from seeking when the file is seekable; otherwise grow while reading.
  if (std::fseek(f, 0, SEEK_END) == 0) {
    const long end = std::ftell(f);
    if (end > 0) out.reserve(static_cast<std::size_t>(end));
    std::rewind(f);
  }
  std::uint8_t chunk[1 << 16];
  for (;;) {
    const std::size_t got = std::fread(chunk, 1, sizeof chunk, f);
    out.insert(out.end(), chunk, chunk + got);
    if (got < sizeof chunk) break;
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) throw io_error(path + ": read error");
  return out;
}

// True when the bytes start with the gzip magic 1f 8b.
inline bool is_gzip(const std::uint8_t* data, std::size_t size) {
  return size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
}

// Decodes a gzip stream (one or more concatenated members) held in memory. `name` is used in
// error messages. Throws io_error on a corrupt or truncated stream, on bytes after the last member
// that are not another member, or when the output would exceed `max_output` bytes (a guard against
// decompression bombs; the default, 8 GiB, is far above any data set this library reads).
inline std::vector<std::uint8_t> gunzip(const std::uint8_t* data, std::size_t size, const std::string& name,
                                        std::size_t max_output = std::size_t(8) << 30) {
  if (!is_gzip(data, size)) throw io_error(name + ": expected the gzip magic 1f 8b, found other bytes");
  std::vector<std::uint8_t> out;
  // Inflate straight into `out`, sized first from the gzip trailer (the uncompressed size mod
  // 2^32: exact for one member under 4 GiB), grown by doubling when that is short.
  std::size_t cap = std::size_t(1) << 16;
  if (size >= 18) {
    const std::uint32_t isize = std::uint32_t(data[size - 4]) | std::uint32_t(data[size - 3]) << 8 |
                                std::uint32_t(data[size - 2]) << 16 | std::uint32_t(data[size - 1]) << 24;
    if (isize <= max_output && isize <= std::size_t(1032) * size) cap = std::max<std::size_t>(cap, isize + 1);
  }
  out.resize(std::min(cap, max_output + 1));
  z_stream zs;
  std::memset(&zs, 0, sizeof zs);
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw io_error(name + ": zlib inflateInit2 failed");
  struct Guard {
    z_stream* z;
    ~Guard() { inflateEnd(z); }
  } guard{&zs};

  std::size_t in_pos = 0, produced = 0;
  constexpr std::size_t kMaxChunk = std::size_t(1) << 30;  // zlib counts in uInt
  for (;;) {
    if (produced == out.size()) {
      if (out.size() > max_output)
        throw io_error(name + ": gzip stream decodes to more than " + std::to_string(max_output) + " bytes");
      out.resize(std::min(out.size() * 2, max_output + 1));
    }
    const std::size_t in_feed = std::min(size - in_pos, kMaxChunk);
    const std::size_t out_room = std::min(out.size() - produced, kMaxChunk);
    zs.next_in = const_cast<Bytef*>(reinterpret_cast<const Bytef*>(data + in_pos));
    zs.avail_in = static_cast<uInt>(in_feed);
    zs.next_out = out.data() + produced;
    zs.avail_out = static_cast<uInt>(out_room);
    const int rc = inflate(&zs, Z_NO_FLUSH);
    in_pos += in_feed - zs.avail_in;
    produced += out_room - zs.avail_out;
    if (produced > max_output)
      throw io_error(name + ": gzip stream decodes to more than " + std::to_string(max_output) + " bytes");
    // Z_BUF_ERROR: no progress possible, i.e. the input ended inside the stream.
    if (rc == Z_BUF_ERROR || (rc == Z_OK && in_pos == size && zs.avail_out != 0))
      throw io_error(name + ": truncated gzip stream (ends after " + std::to_string(size) + " bytes, " +
                     std::to_string(produced) + " decoded)");
    if (rc != Z_OK && rc != Z_STREAM_END)
      throw io_error(name + ": corrupt gzip stream after " + std::to_string(produced) + " decoded bytes: " +
                     (zs.msg ? std::string(zs.msg) : "zlib error " + std::to_string(rc)));
    if (rc == Z_STREAM_END) {
      if (in_pos == size) break;
      if (!is_gzip(data + in_pos, size - in_pos))
        throw io_error(name + ": " + std::to_string(size - in_pos) +
                       " unexpected bytes after the end of the gzip stream");
      if (inflateReset(&zs) != Z_OK) throw io_error(name + ": zlib inflateReset failed");
    }
  }
  out.resize(produced);
  return out;
}

}  // namespace data
}  // namespace dtn
