#pragma once
// Checkpoints in the safetensors format (https://github.com/huggingface/safetensors), readable by
// numpy, PyTorch and the `safetensors` Python package:
//
//   8 bytes      N, the header length, unsigned 64-bit little-endian
//   N bytes      UTF-8 JSON object, padded with spaces so that N is a multiple of 8:
//                  {"__metadata__": {"key": "value", ...},
//                   "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//   the rest     the data section: each tensor's elements, row-major, little-endian, at
//                [begin, end) relative to the start of the data section; the tensors tile the
//                data section exactly (contiguous, no overlap, no gap, nothing after the last).
//
// dtypes supported here: F32, F64, I64, I32, U8. The writer emits "__metadata__" first (omitted
// when empty), then the tensors in the order given, each as {"dtype", "shape", "data_offsets"}, the
// layout the reference implementation writes. The reader checks everything it reads and never
// touches a byte outside the buffer; any violation is a dtn::io_error naming the file, the tensor
// and what was expected against what was found.
//
// dtn checkpoints carry the metadata keys "format" = "dtn", "format_version" = "1", "signature"
// (a description of the network the parameters belong to) and "step" (see checkpoint_metadata).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dtn/core/error.hpp"
#include "dtn/core/version.hpp"
#include "dtn/io/atomic_file.hpp"

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "dtn/io/safetensors.hpp copies tensor bytes as they are: it needs a little-endian host");
#endif

namespace dtn::io {

// ---- dtypes

// Bytes per element of a safetensors dtype name; 0 for a dtype this library does not handle.
inline std::size_t dtype_size(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "U8") return 1;
  return 0;
}

inline const char* supported_dtypes() { return "F32, F64, I64, I32, U8"; }

template <class T>
constexpr const char* dtype_of() {
  if constexpr (std::is_same_v<T, float>) return "F32";
  else if constexpr (std::is_same_v<T, double>) return "F64";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "I64";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "I32";
  else if constexpr (std::is_same_v<T, std::uint8_t>) return "U8";
  else static_assert(sizeof(T) == 0, "dtn::io::dtype_of: no safetensors dtype for this type "
                                     "(supported: float, double, int64_t, int32_t, uint8_t)");
}

inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace detail {

// Element count of a shape, or false when a dimension is negative or the product overflows
// `limit` (so that count * element size still fits).
inline bool checked_numel(const std::vector<std::int64_t>& shape, std::uint64_t limit, std::uint64_t& numel) {
  std::uint64_t n = 1;
  for (const std::int64_t d : shape) {
    if (d < 0) return false;
    const auto u = static_cast<std::uint64_t>(d);
    if (u != 0 && n > limit / u) return false;
    n *= u;
  }
  numel = n;
  return true;
}

}  // namespace detail

// ---- records

// One named tensor with its own bytes (what the reader returns).
struct TensorRecord {
  std::string name;
  std::string dtype;                 // "F32", "F64", "I64", "I32" or "U8"
  std::vector<std::int64_t> shape;   // row-major; {} is a scalar
  std::vector<std::uint8_t> data;    // little-endian elements

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (const auto d : shape) n *= d;
    return n;
  }

  // A copy of the elements as T; T must match the dtype exactly (no silent conversion).
  template <class T>
  std::vector<T> values() const {
    if (dtype != dtype_of<T>())
      throw argument_error("tensor " + name + " holds " + dtype + ", not " + dtype_of<T>());
    if (data.size() % sizeof(T) != 0)
      throw argument_error("tensor " + name + ": " + std::to_string(data.size()) + " bytes is not a whole number of " +
                           dtype + " elements");
    std::vector<T> out(data.size() / sizeof(T));
    if (!out.empty()) std::memcpy(out.data(), data.data(), data.size());
    return out;
  }
};

template <class T>
TensorRecord make_record(std::string name, std::vector<std::int64_t> shape, const std::vector<T>& values) {
  TensorRecord r{std::move(name), dtype_of<T>(), std::move(shape), {}};
  r.data.resize(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(r.data.data(), values.data(), r.data.size());
  return r;
}

// One named tensor whose bytes live elsewhere (a parameter tensor): saving without a copy.
struct TensorRef {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  const void* data = nullptr;
  std::size_t nbytes = 0;
};

inline TensorRef ref_of(const TensorRecord& r) { return {r.name, r.dtype, r.shape, r.data.data(), r.data.size()}; }

template <class T>
TensorRef make_ref(std::string name, std::vector<std::int64_t> shape, const T* values, std::size_t count) {
  return {std::move(name), dtype_of<T>(), std::move(shape), values, count * sizeof(T)};
}

// What load_safetensors / parse_safetensors return: the tensors in file (data offset) order.
struct SafetensorsFile {
  std::string source;  // the file name (or the name given to parse_safetensors)
  std::vector<TensorRecord> tensors;
  std::map<std::string, std::string> metadata;

  const TensorRecord* find(const std::string& name) const {
    for (const auto& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
};

// ---- writing

namespace detail {

// The header bytes (JSON padded with spaces to a multiple of 8) for the given tensors. Checks the
// tensors first: argument_error names `target` and the tensor.
inline std::string safetensors_header(const std::vector<TensorRef>& tensors,
                                      const std::map<std::string, std::string>& metadata,
                                      const std::string& target) {
  const auto bad = [&](const std::string& what) { return argument_error("cannot save " + target + ": " + what); };
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::set<std::string> names;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.name.empty()) throw bad("a tensor has an empty name");
    if (t.name == "__metadata__") throw bad("\"__metadata__\" is reserved and cannot name a tensor");
    if (!names.insert(t.name).second) throw bad("two tensors are named " + t.name);
    const std::size_t es = dtype_size(t.dtype);
    if (es == 0)
      throw bad("tensor " + t.name + " has dtype \"" + t.dtype + "\"; supported: " + supported_dtypes());
    std::uint64_t numel = 0;
    if (!checked_numel(t.shape, std::numeric_limits<std::uint64_t>::max() / es, numel))
      throw bad("tensor " + t.name + " has an invalid shape " + shape_string(t.shape));
    if (numel * es != t.nbytes)
      throw bad("tensor " + t.name + " (" + t.dtype + ", shape " + shape_string(t.shape) + ") needs " +
                std::to_string(numel * es) + " bytes but " + std::to_string(t.nbytes) + " were given");
    if (t.nbytes != 0 && t.data == nullptr) throw bad("tensor " + t.name + " has no data pointer");
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = t.dtype;
    e["shape"] = t.shape;
    e["data_offsets"] = {offset, offset + t.nbytes};
    header[t.name] = std::move(e);
    offset += t.nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // a name or metadata string that is not UTF-8
    throw bad(std::string("the header cannot be written as JSON: ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

inline void put_u64_le(std::uint64_t v, unsigned char out[8]) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(v >> (8 * i));
}

inline std::uint64_t get_u64_le(const unsigned char in[8]) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(in[i]) << (8 * i);
  return v;
}

inline std::vector<TensorRef> refs_of(const std::vector<TensorRecord>& records) {
  std::vector<TensorRef> refs;
  refs.reserve(records.size());
  for (const auto& r : records) refs.push_back(ref_of(r));
  return refs;
}

}  // namespace detail

// The complete file as bytes (for tests, fuzzing seeds, sending elsewhere).
inline std::vector<std::uint8_t> serialize_safetensors(const std::vector<TensorRef>& tensors,
                                                       const std::map<std::string, std::string>& metadata) {
  const std::string header = detail::safetensors_header(tensors, metadata, "<memory>");
  std::size_t total = 8 + header.size();
  for (const auto& t : tensors) total += t.nbytes;
  std::vector<std::uint8_t> out;
  out.reserve(total);
  unsigned char len[8];
  detail::put_u64_le(header.size(), len);
  out.insert(out.end(), len, len + 8);
  out.insert(out.end(), header.begin(), header.end());
  for (const auto& t : tensors) {
    const auto* p = static_cast<const std::uint8_t*>(t.data);
    if (t.nbytes) out.insert(out.end(), p, p + t.nbytes);
  }
  return out;
}

inline std::vector<std::uint8_t> serialize_safetensors(const std::vector<TensorRecord>& tensors,
                                                       const std::map<std::string, std::string>& metadata) {
  return serialize_safetensors(detail::refs_of(tensors), metadata);
}

// Writes the file atomically (see atomic_file.hpp): `path` holds either its previous content or
// the complete new checkpoint, whatever happens during the save. The bytes are streamed from the
// tensors, never gathered into one buffer.
inline void save_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  const std::string header = detail::safetensors_header(tensors, metadata, path);
  AtomicFileWriter w(path);
  unsigned char len[8];
  detail::put_u64_le(header.size(), len);
  w.write(len, 8);
  w.write(header.data(), header.size());
  for (const auto& t : tensors) w.write(t.data, t.nbytes);
  w.commit();
}

inline void save_safetensors(const std::string& path, const std::vector<TensorRecord>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  save_safetensors(path, detail::refs_of(tensors), metadata);
}

// ---- reading

// Limit on the header length, as in the reference implementation: a larger value is a corrupt file.
constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;

namespace detail {

struct HeaderEntry {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;
};

struct ParsedHeader {
  std::vector<HeaderEntry> entries;  // sorted by data offset
  std::map<std::string, std::string> metadata;
};

// A name as shown in error messages: cut after 100 bytes (a corrupt header can hold anything).
inline std::string shown(const std::string& name) {
  return name.size() <= 100 ? name : name.substr(0, 100) + "...(" + std::to_string(name.size()) + " bytes)";
}

// A short description of a JSON value for error messages (never dumps a big or deep value).
inline std::string describe(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::object: return "an object";
    case nlohmann::json::value_t::array: return "an array of " + std::to_string(j.size());
    case nlohmann::json::value_t::string: {
      const auto& s = j.get_ref<const std::string&>();
      if (s.size() > 40) return "a string of " + std::to_string(s.size()) + " bytes";
      return "\"" + s + "\"";  // already validated UTF-8 by the parser
    }
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::boolean: return j.get<bool>() ? "true" : "false";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float: return "the number " + j.dump();
    default: return "a value of another type";
  }
}

// A non-negative JSON integer that fits in int64, or false.
inline bool json_index(const nlohmann::json& j, std::uint64_t& out) {
  if (j.is_number_unsigned()) {
    out = j.get<std::uint64_t>();
    return out <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  }
  if (j.is_number_integer()) {
    const auto v = j.get<std::int64_t>();
    if (v < 0) return false;
    out = static_cast<std::uint64_t>(v);
    return true;
  }
  return false;
}

// Parses and checks the JSON header against a data section of `data_size` bytes.
inline ParsedHeader parse_safetensors_header(const char* text, std::size_t n, std::uint64_t data_size,
                                             const std::string& source) {
  const std::string where = "checkpoint " + source + ": ";
  const auto fail = [&](const std::string& what) { return io_error(where + what); };

  // Duplicate keys (which nlohmann would silently merge) and absurd nesting (a valid header is
  // three levels deep) are caught while parsing: one set of keys per open object.
  constexpr int kMaxDepth = 16;
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  const nlohmann::json::parser_callback_t cb = [&](int depth, nlohmann::json::parse_event_t ev,
                                                   nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if ((ev == E::object_start || ev == E::array_start) && depth >= kMaxDepth)
      throw fail("the header nests JSON deeper than " + std::to_string(kMaxDepth) + " levels");
    if (ev == E::object_start) open_objects.emplace_back();
    if (ev == E::object_end && !open_objects.empty()) open_objects.pop_back();
    if (ev == E::key && !open_objects.empty() && duplicate.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second) duplicate = key;
    }
    return true;
  };
  // nlohmann's lexer takes a NUL byte for the end of the input and would ignore what follows.
  if (const void* nul = std::memchr(text, 0, n))
    throw fail("the header holds a NUL byte at offset " +
               std::to_string(static_cast<const char*>(nul) - text) + " (not valid JSON)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, text + n, cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {
    throw fail(std::string("the header is not valid JSON: ") + e.what());
  }
  if (!duplicate.empty()) throw fail("the header has the key \"" + shown(duplicate) + "\" twice");
  if (!header.is_object()) throw fail("the header must be a JSON object, found " + describe(header));

  ParsedHeader out;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) throw fail("\"__metadata__\" must be an object of strings, found " + describe(value));
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string())
          throw fail("metadata \"" + shown(k) + "\" must be a string, found " + describe(v));
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string t = "tensor " + shown(name) + ": ";
    if (name.empty()) throw fail("a tensor has an empty name");
    if (!value.is_object()) throw fail(t + "expected an object {dtype, shape, data_offsets}, found " + describe(value));
    for (const auto& [k, v] : value.items()) {
      (void)v;
      if (k != "dtype" && k != "shape" && k != "data_offsets") throw fail(t + "unexpected field \"" + shown(k) + "\" (expected dtype, shape, data_offsets)");
    }
    HeaderEntry e;
    e.name = name;

    const auto dt = value.find("dtype");
    if (dt == value.end()) throw fail(t + "no \"dtype\"");
    if (!dt->is_string()) throw fail(t + "\"dtype\" must be a string, found " + describe(*dt));
    e.dtype = dt->get<std::string>();
    const std::size_t es = dtype_size(e.dtype);
    if (es == 0) throw fail(t + "dtype " + describe(*dt) + " is not supported (expected one of " + supported_dtypes() + ")");

    const auto sh = value.find("shape");
    if (sh == value.end()) throw fail(t + "no \"shape\"");
    if (!sh->is_array()) throw fail(t + "\"shape\" must be an array, found " + describe(*sh));
    for (const auto& d : *sh) {
      std::uint64_t u = 0;
      if (!json_index(d, u)) throw fail(t + "shape dimensions must be non-negative integers, found " + describe(d));
      e.shape.push_back(static_cast<std::int64_t>(u));
    }

    const auto off = value.find("data_offsets");
    if (off == value.end()) throw fail(t + "no \"data_offsets\"");
    if (!off->is_array() || off->size() != 2)
      throw fail(t + "\"data_offsets\" must be [begin, end], found " + describe(*off));
    if (!json_index((*off)[0], e.begin) || !json_index((*off)[1], e.end))
      throw fail(t + "data_offsets must be non-negative integers, found " + describe((*off)[0]) + " and " +
                 describe((*off)[1]));
    const std::string offs = "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
    if (e.end < e.begin) throw fail(t + "data_offsets " + offs + " end before they begin");
    if (e.end > data_size)
      throw fail(t + "data_offsets " + offs + " reach past the end of the " + std::to_string(data_size) +
                 "-byte data section");
    std::uint64_t numel = 0;
    if (!checked_numel(e.shape, std::numeric_limits<std::uint64_t>::max() / es, numel))
      throw fail(t + "shape " + shape_string(e.shape) + " of " + e.dtype + " has more bytes than 64 bits can count");
    if (e.end - e.begin != numel * es)
      throw fail(t + "dtype " + e.dtype + " with shape " + shape_string(e.shape) + " needs " +
                 std::to_string(numel * es) + " bytes, but data_offsets " + offs + " span " +
                 std::to_string(e.end - e.begin));
    out.entries.push_back(std::move(e));
  }

  // The tensors must tile the data section: sorted by offset, each begins where the previous ends.
  std::sort(out.entries.begin(), out.entries.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t expected = 0;
  const HeaderEntry* prev = nullptr;
  for (const auto& e : out.entries) {
    if (e.begin < expected)
      throw fail("tensor " + shown(e.name) + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                 "] overlap tensor " + shown(prev->name) + " which ends at " + std::to_string(expected));
    if (e.begin > expected)
      throw fail("tensor " + shown(e.name) + ": data begins at " + std::to_string(e.begin) + " but the previous tensor" +
                 (prev ? " (" + shown(prev->name) + ")" : std::string()) + " ends at " + std::to_string(expected) +
                 " (the data must be contiguous)");
    expected = e.end;
    prev = &e;
  }
  if (expected != data_size)
    throw fail("the data section is " + std::to_string(data_size) + " bytes but the tensors cover " +
               std::to_string(expected) + " (trailing bytes)");
  return out;
}

inline SafetensorsFile make_file(ParsedHeader&& h, const std::string& source) {
  SafetensorsFile f;
  f.source = source;
  f.metadata = std::move(h.metadata);
  f.tensors.reserve(h.entries.size());
  for (auto& e : h.entries) f.tensors.push_back({std::move(e.name), std::move(e.dtype), std::move(e.shape), {}});
  return f;
}

}  // namespace detail

// Parses a complete safetensors file held in memory; `source_name` names it in errors.
inline SafetensorsFile parse_safetensors(const std::uint8_t* bytes, std::size_t n, const std::string& source_name) {
  const std::string where = "checkpoint " + source_name + ": ";
  if (bytes == nullptr && n != 0) throw io_error(where + "no data");
  if (n < 8)
    throw io_error(where + "the file is " + std::to_string(n) + " bytes, shorter than the 8-byte header length");
  const std::uint64_t header_len = detail::get_u64_le(bytes);
  if (header_len > kMaxSafetensorsHeader)
    throw io_error(where + "header length " + std::to_string(header_len) + " is larger than the " +
                   std::to_string(kMaxSafetensorsHeader) + "-byte limit (not a safetensors file, or corrupt)");
  if (header_len > n - 8)
    throw io_error(where + "header length " + std::to_string(header_len) + " but the file has only " +
                   std::to_string(n - 8) + " bytes after the length field (truncated?)");
  const std::uint64_t data_size = n - 8 - header_len;
  auto header = detail::parse_safetensors_header(reinterpret_cast<const char*>(bytes + 8),
                                                 static_cast<std::size_t>(header_len), data_size, source_name);
  const std::uint8_t* data = bytes + 8 + header_len;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (const auto& e : header.entries) ranges.emplace_back(e.begin, e.end);
  SafetensorsFile f = detail::make_file(std::move(header), source_name);
  for (std::size_t i = 0; i < f.tensors.size(); ++i)  // ranges were checked against data_size
    f.tensors[i].data.assign(data + ranges[i].first, data + ranges[i].second);
  return f;
}

// Reads a safetensors file: the header first, then each tensor straight into its record.
inline SafetensorsFile load_safetensors(const std::string& path) {
  const std::string where = "checkpoint " + path + ": ";
  std::FILE* fp = std::fopen(path.c_str(), "rb");
  if (fp == nullptr) {
    const int err = errno;
    throw io_error("cannot open checkpoint " + path + ": " + detail::errno_text(err));
  }
  struct Closer {
    std::FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{fp};
  const auto seek_error = [&](const std::string& what) {
    const int err = errno;
    return io_error(where + what + ": " + detail::errno_text(err) + " (a checkpoint must be a regular file)");
  };
  const auto read_error = [&](const std::string& what) {
    const int err = errno;
    return io_error(where + what + (std::ferror(fp) ? ": " + detail::errno_text(err) : std::string(": the file ended")));
  };
  if (std::fseek(fp, 0, SEEK_END) != 0) throw seek_error("cannot seek");
  const long end = std::ftell(fp);
  if (end < 0) throw seek_error("cannot tell its size");
  if (std::fseek(fp, 0, SEEK_SET) != 0) throw seek_error("cannot seek");
  const auto size = static_cast<std::uint64_t>(end);
  if (size < 8)
    throw io_error(where + "the file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  unsigned char len[8];
  if (std::fread(len, 1, 8, fp) != 8) throw read_error("cannot read the header length");
  const std::uint64_t header_len = detail::get_u64_le(len);
  if (header_len > kMaxSafetensorsHeader)
    throw io_error(where + "header length " + std::to_string(header_len) + " is larger than the " +
                   std::to_string(kMaxSafetensorsHeader) + "-byte limit (not a safetensors file, or corrupt)");
  if (header_len > size - 8)
    throw io_error(where + "header length " + std::to_string(header_len) + " but the file has only " +
                   std::to_string(size - 8) + " bytes after the length field (truncated?)");
  std::string text(static_cast<std::size_t>(header_len), '\0');
  if (header_len && std::fread(text.data(), 1, text.size(), fp) != text.size()) throw read_error("cannot read the header");
  auto header = detail::parse_safetensors_header(text.data(), text.size(), size - 8 - header_len, path);
  std::vector<std::uint64_t> sizes;
  for (const auto& e : header.entries) sizes.push_back(e.end - e.begin);
  SafetensorsFile f = detail::make_file(std::move(header), path);
  for (std::size_t i = 0; i < f.tensors.size(); ++i) {  // contiguous and in offset order: read sequentially
    auto& t = f.tensors[i];
    t.data.resize(static_cast<std::size_t>(sizes[i]));
    if (!t.data.empty() && std::fread(t.data.data(), 1, t.data.size(), fp) != t.data.size())
      throw read_error("cannot read the data of tensor " + t.name);
  }
  return f;
}

// ---- checkpoint helpers

// The tensor `name`, checked to have this dtype and shape; otherwise an io_error such as
// "checkpoint run/ckpt.safetensors: tensor g.3.weight has shape [64, 3], the network expects [64, 4]".
inline const TensorRecord& require(const SafetensorsFile& file, const std::string& name, const std::string& dtype,
                                   const std::vector<std::int64_t>& shape) {
  const TensorRecord* t = file.find(name);
  if (t == nullptr) throw io_error("checkpoint " + file.source + ": no tensor " + name + ", the network expects one");
  if (t->dtype != dtype)
    throw io_error("checkpoint " + file.source + ": tensor " + name + " has dtype " + t->dtype +
                   ", the network expects " + dtype);
  if (t->shape != shape)
    throw io_error("checkpoint " + file.source + ": tensor " + name + " has shape " + shape_string(t->shape) +
                   ", the network expects " + shape_string(shape));
  return *t;
}

constexpr const char* kCheckpointFormat = "dtn";
constexpr const char* kCheckpointFormatVersion = "1";

// Metadata of a dtn checkpoint: format, format_version, signature, step, and dtn_version (the
// library that wrote it, DTN_VERSION_STRING; for the record, not checked on loading).
inline std::map<std::string, std::string> checkpoint_metadata(const std::string& signature, std::int64_t step) {
  if (step < 0) throw argument_error("checkpoint_metadata: step must be >= 0, got " + std::to_string(step));
  return {{"format", kCheckpointFormat},
          {"format_version", kCheckpointFormatVersion},
          {"dtn_version", DTN_VERSION_STRING},
          {"signature", signature},
          {"step", std::to_string(step)}};
}

// Checks that `file` is a dtn checkpoint of format version 1 written for a network with
// `expected_signature`; returns its step.
inline std::int64_t check_checkpoint(const SafetensorsFile& file, const std::string& expected_signature) {
  const std::string where = "checkpoint " + file.source + ": ";
  const auto get = [&](const char* key) -> const std::string& {
    const auto it = file.metadata.find(key);
    if (it == file.metadata.end())
      throw io_error(where + "metadata has no \"" + key + "\" (not a dtn checkpoint?)");
    return it->second;
  };
  if (get("format") != kCheckpointFormat)
    throw io_error(where + "format is \"" + get("format") + "\", expected \"" + kCheckpointFormat + "\"");
  if (get("format_version") != kCheckpointFormatVersion)
    throw io_error(where + "format_version is \"" + get("format_version") + "\", this library reads version " +
                   kCheckpointFormatVersion);
  if (get("signature") != expected_signature)
    throw io_error(where + "it was written for the network \"" + get("signature") + "\", this network is \"" +
                   expected_signature + "\"");
  const std::string& s = get("step");
  std::int64_t step = 0;
  bool ok = !s.empty() && s.size() <= 18;
  for (const char c : s) {
    if (c < '0' || c > '9') ok = false;
    else step = step * 10 + (c - '0');
  }
  if (!ok) throw io_error(where + "step \"" + s + "\" is not a non-negative integer");
  return step;
}

}  // namespace dtn::io
