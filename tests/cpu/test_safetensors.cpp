// safetensors checkpoints: round trips, the exact byte layout of the format, rejection of every kind
// of malformed file with a message that names the file, and atomic saves under SIGKILL.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "dtn/io/safetensors.hpp"
#include "../scratch_dir.hpp"

namespace fs = std::filesystem;
using dtn::io::TensorRecord;

namespace {

using dtn_test::ScratchDir;

std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// A file assembled by hand: u64 little-endian header length, the JSON text as given, the data.
std::vector<std::uint8_t> hand_file(const std::string& json, const std::vector<std::uint8_t>& data = {}) {
  std::vector<std::uint8_t> b;
  std::uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<std::uint8_t>(n >> (8 * i)));
  b.insert(b.end(), json.begin(), json.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::vector<std::uint8_t> le_length(std::uint64_t n) {
  std::vector<std::uint8_t> b;
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<std::uint8_t>(n >> (8 * i)));
  return b;
}

// One tensor of every supported dtype, with extreme values (NaN payload, -0, infinities,
// denormals, integer limits) so that any conversion on the way would show.
std::vector<TensorRecord> all_dtype_records() {
  const float fnan = std::numeric_limits<float>::quiet_NaN();
  std::vector<TensorRecord> r;
  r.push_back(dtn::io::make_record<float>(
      "g.0.weight", {2, 3},
      {1.5f, -0.0f, std::numeric_limits<float>::infinity(), fnan, std::numeric_limits<float>::denorm_min(), 3e38f}));
  r.push_back(dtn::io::make_record<double>("g.0.bias", {3}, {0.1, -1e-300, std::numeric_limits<double>::max()}));
  r.push_back(dtn::io::make_record<std::int64_t>(
      "steps", {2}, {std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()}));
  r.push_back(dtn::io::make_record<std::int32_t>("labels", {2, 2}, {-1, 0, 7, std::numeric_limits<std::int32_t>::min()}));
  std::vector<std::uint8_t> bytes(256);
  for (int i = 0; i < 256; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(255 - i);
  r.push_back(dtn::io::make_record<std::uint8_t>("image", {4, 8, 8}, bytes));
  r.push_back(dtn::io::make_record<float>("scalar", {}, {42.0f}));
  r.push_back(dtn::io::make_record<float>("empty", {0, 5}, {}));
  return r;
}

void check_same(const std::vector<TensorRecord>& got, const std::vector<TensorRecord>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("tensor " << want[i].name);
    CHECK(got[i].name == want[i].name);
    CHECK(got[i].dtype == want[i].dtype);
    CHECK(got[i].shape == want[i].shape);
    CHECK(got[i].data == want[i].data);  // bytes: NaN payloads and -0 included
  }
}

std::string parse_error(const std::vector<std::uint8_t>& bytes, const std::string& source) {
  try {
    dtn::io::parse_safetensors(bytes.data(), bytes.size(), source);
  } catch (const dtn::io_error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string load_error(const std::string& path) {
  try {
    dtn::io::load_safetensors(path);
  } catch (const dtn::io_error& e) {
    return e.what();
  }
  return "(no error)";
}

const std::string kF32x2 = R"({"dtype":"F32","shape":[2],"data_offsets":)";

}  // namespace

TEST_CASE("safetensors: every dtype round-trips through save/load and serialize/parse, bit for bit") {
  ScratchDir d("roundtrip");
  const auto records = all_dtype_records();
  const std::map<std::string, std::string> meta{{"format", "dtn"}, {"note", "ünïcode ✓"}, {"empty", ""}};
  const std::string path = d.file("all.safetensors");
  dtn::io::save_safetensors(path, records, meta);

  const auto loaded = dtn::io::load_safetensors(path);
  CHECK(loaded.source == path);
  check_same(loaded.tensors, records);
  CHECK(loaded.metadata == meta);

  const auto bytes = dtn::io::serialize_safetensors(records, meta);
  CHECK(bytes == read_bytes(path));
  const auto parsed = dtn::io::parse_safetensors(bytes.data(), bytes.size(), "memory");
  check_same(parsed.tensors, records);
  CHECK(parsed.metadata == meta);

  // Typed access: values<T>() gives the elements back, and refuses a mismatched type.
  CHECK(loaded.find("steps")->values<std::int64_t>() ==
        std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()});
  CHECK(loaded.find("scalar")->values<float>() == std::vector<float>{42.0f});
  CHECK(loaded.find("empty")->values<float>().empty());
  CHECK_THROWS_AS(loaded.find("steps")->values<double>(), dtn::argument_error);
  CHECK(loaded.find("missing") == nullptr);
  CHECK(d.entries() == std::vector<std::string>{"all.safetensors"});  // no temporary left behind
}

TEST_CASE("safetensors: saving from references to external memory writes the same file as records") {
  ScratchDir d("refs");
  std::vector<float> w{1, 2, 3, 4, 5, 6};
  std::vector<std::int32_t> idx{9, 8, 7};
  const std::vector<dtn::io::TensorRef> refs{dtn::io::make_ref("w", {2, 3}, w.data(), w.size()),
                                             dtn::io::make_ref("idx", {3}, idx.data(), idx.size())};
  const std::vector<TensorRecord> recs{dtn::io::make_record<float>("w", {2, 3}, w),
                                       dtn::io::make_record<std::int32_t>("idx", {3}, idx)};
  dtn::io::save_safetensors(d.file("a"), refs, {{"k", "v"}});
  dtn::io::save_safetensors(d.file("b"), recs, {{"k", "v"}});
  CHECK(read_bytes(d.file("a")) == read_bytes(d.file("b")));
  CHECK(dtn::io::load_safetensors(d.file("a")).find("w")->values<float>() == w);
}

TEST_CASE("safetensors: the bytes written match a file built by hand from the format") {
  // Spec: u64 LE header length N; N bytes of JSON (metadata first, tensors in the order given,
  // fields dtype/shape/data_offsets), padded with spaces to a multiple of 8; then the data.
  const std::string json =
      R"({"__metadata__":{"format":"dtn","step":"12"},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"U8","shape":[1,3],"data_offsets":[8,11]}})";
  std::string padded = json;
  while (padded.size() % 8 != 0) padded += ' ';
  REQUIRE(padded.size() > json.size());  // this header does exercise the padding
  std::vector<std::uint8_t> expected = le_length(padded.size());
  expected.insert(expected.end(), padded.begin(), padded.end());
  const std::vector<std::uint8_t> data{0x00, 0x00, 0xC0, 0x3F,  // 1.5f  = 0x3FC00000
                                       0x00, 0x00, 0x00, 0xC0,  // -2.0f = 0xC0000000
                                       1,    2,    250};
  expected.insert(expected.end(), data.begin(), data.end());

  const std::vector<TensorRecord> recs{dtn::io::make_record<float>("b", {2}, {1.5f, -2.0f}),
                                       dtn::io::make_record<std::uint8_t>("a", {1, 3}, {1, 2, 250})};
  const auto bytes = dtn::io::serialize_safetensors(recs, {{"step", "12"}, {"format", "dtn"}});
  CHECK(std::string(bytes.begin(), bytes.end()) == std::string(expected.begin(), expected.end()));

  // And the hand-built file reads back as those tensors.
  const auto f = dtn::io::parse_safetensors(expected.data(), expected.size(), "hand");
  check_same(f.tensors, recs);
  CHECK(f.metadata.at("step") == "12");

  // No metadata: no "__metadata__" key at all (as the reference writes it).
  const auto plain = dtn::io::serialize_safetensors(std::vector<TensorRecord>{}, {});
  CHECK(std::string(plain.begin() + 8, plain.end()) == "{}      ");
}

TEST_CASE("safetensors: the reader accepts other writers' layouts (key order, whitespace, offset order)") {
  // Fields in another order, spaces and newlines, tensors listed out of data order, no metadata.
  const std::string json = "{ \"z\" : {\"data_offsets\": [4, 12], \"shape\": [1, 2], \"dtype\": \"F32\"},\n"
                           "  \"a\" : {\"shape\": [], \"dtype\": \"I32\", \"data_offsets\": [0, 4]} }\n";
  std::vector<std::uint8_t> data{7, 0, 0, 0, 0, 0, 0x80, 0x3F, 0, 0, 0, 0x40};  // 7; 1.0f, 2.0f
  const auto bytes = hand_file(json, data);
  const auto f = dtn::io::parse_safetensors(bytes.data(), bytes.size(), "other");
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.tensors[0].name == "a");  // file (offset) order
  CHECK(f.tensors[0].values<std::int32_t>() == std::vector<std::int32_t>{7});
  CHECK(f.tensors[1].values<float>() == std::vector<float>{1.0f, 2.0f});
  CHECK(f.metadata.empty());
}

TEST_CASE("safetensors: malformed files are io_errors naming the file, the tensor and the problem") {
  struct Case {
    const char* what;
    std::vector<std::uint8_t> bytes;
    std::vector<std::string> fragments;  // all must appear in the message
  };
  const std::vector<std::uint8_t> d8(8, 0), d12(12, 0), d16(16, 0);
  std::vector<std::uint8_t> bad_utf8 = hand_file("{\"w\xff\":{}}");
  std::string deep = "{\"a\":";
  for (int i = 0; i < 200; ++i) deep += "[";
  std::vector<std::uint8_t> huge_len = le_length(200'000'000);
  huge_len.resize(64, ' ');
  std::vector<std::uint8_t> truncated = le_length(100);
  truncated.resize(20, ' ');
  std::vector<std::uint8_t> all_ones(8, 0xFF);

  const std::vector<Case> cases{
      {"empty file", {}, {"0 bytes, shorter than the 8-byte header length"}},
      {"7 bytes", std::vector<std::uint8_t>(7, 0), {"7 bytes, shorter than the 8-byte"}},
      {"absurd header length", huge_len, {"header length 200000000 is larger than the 100000000-byte limit"}},
      {"header length 2^64-1", all_ones, {"header length 18446744073709551615 is larger"}},
      {"header longer than file", truncated, {"header length 100 but the file has only 12 bytes"}},
      {"invalid JSON", hand_file("{\"w\": "), {"not valid JSON"}},
      {"invalid UTF-8", bad_utf8, {"not valid JSON"}},
      {"NUL padding", hand_file(std::string("{}\0\0\0\0\0\0", 8)), {"not valid JSON"}},
      {"not an object", hand_file("[1,2]"), {"must be a JSON object, found an array of 2"}},
      {"entry not an object", hand_file(R"({"w":5})"), {"tensor w:", "expected an object", "found the number 5"}},
      {"unknown dtype", hand_file(R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", {0, 0, 0, 0}),
       {"tensor w:", "dtype \"F16\" is not supported", "F32, F64, I64, I32, U8"}},
      {"dtype not a string", hand_file(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", {0, 0, 0, 0}),
       {"tensor w:", "\"dtype\" must be a string, found the number 4"}},
      {"missing dtype", hand_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", {0, 0, 0, 0}),
       {"tensor w:", "no \"dtype\""}},
      {"missing shape", hand_file(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", {0, 0, 0, 0}),
       {"tensor w:", "no \"shape\""}},
      {"missing offsets", hand_file(R"({"w":{"dtype":"F32","shape":[1]}})", {0, 0, 0, 0}),
       {"tensor w:", "no \"data_offsets\""}},
      {"unknown field", hand_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", {0, 0, 0, 0}),
       {"tensor w:", "unexpected field \"x\""}},
      {"negative dimension", hand_file(R"({"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}})", d16),
       {"tensor w:", "non-negative integers, found the number -1"}},
      {"fractional dimension", hand_file(R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", d8),
       {"tensor w:", "non-negative integers, found the number 2.5"}},
      {"shape not an array", hand_file(R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", d8),
       {"tensor w:", "\"shape\" must be an array, found \"2\""}},
      {"overflowing shape product",
       hand_file(R"({"w":{"dtype":"F64","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", d8),
       {"tensor w:", "shape [4294967296, 4294967296, 16] of F64 has more bytes than 64 bits can count"}},
      {"dimension beyond int64",
       hand_file(R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,8]}})", d8),
       {"tensor w:", "non-negative integers"}},
      {"size mismatch", hand_file(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", d12),
       {"tensor w:", "dtype F32 with shape [2, 2] needs 16 bytes, but data_offsets [0, 12] span 12"}},
      {"offsets out of the data", hand_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", d8),
       {"tensor w:", "data_offsets [0, 16] reach past the end of the 8-byte data section"}},
      {"end before begin", hand_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", d8),
       {"tensor w:", "data_offsets [8, 4] end before they begin"}},
      {"offsets not a pair", hand_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", d8),
       {"tensor w:", "must be [begin, end], found an array of 1"}},
      {"negative offset", hand_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", d8),
       {"tensor w:", "non-negative integers, found the number -4"}},
      {"overlap", hand_file(R"({"a":)" + kF32x2 + R"([0,8]},"b":)" + kF32x2 + "[4,12]}}", d12),
       {"tensor b:", "data_offsets [4, 12] overlap tensor a which ends at 8"}},
      {"gap", hand_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],)"
                        R"("data_offsets":[8,12]}})",
                        d12),
       {"tensor b:", "data begins at 8 but the previous tensor (a) ends at 4"}},
      {"first tensor not at 0", hand_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", d8),
       {"tensor a:", "data begins at 4 but the previous tensor ends at 0"}},
      {"trailing bytes", hand_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", d8),
       {"the data section is 8 bytes but the tensors cover 4"}},
      {"duplicate name", hand_file(R"({"w":)" + kF32x2 + R"([0,8]},"w":)" + kF32x2 + "[8,16]}}", d16),
       {"the key \"w\" twice"}},
      {"duplicate field", hand_file(R"({"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", {0}),
       {"the key \"dtype\" twice"}},
      {"metadata value not a string", hand_file(R"({"__metadata__":{"step":5}})"),
       {"metadata \"step\" must be a string, found the number 5"}},
      {"metadata not an object", hand_file(R"({"__metadata__":["a"]})"),
       {"\"__metadata__\" must be an object of strings, found an array of 1"}},
      {"empty tensor name", hand_file(R"({"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", {0}),
       {"a tensor has an empty name"}},
      {"deep nesting", hand_file(deep), {"nests JSON deeper than 16 levels"}},
  };

  ScratchDir dir("malformed");
  int index = 0;
  for (const auto& c : cases) {
    INFO("case: " << std::string(c.what));
    // In memory.
    const std::string source = std::string("case-") + std::to_string(index) + ".safetensors";
    const std::string msg = parse_error(c.bytes, source);
    INFO("parse message: " << msg);
    CHECK(msg.rfind("checkpoint " + source + ": ", 0) == 0);
    for (const auto& f : c.fragments) CHECK(msg.find(f) != std::string::npos);
    // The same bytes through the file reader.
    const std::string path = dir.file(source);
    write_bytes(path, c.bytes);
    const std::string lmsg = load_error(path);
    INFO("load message: " << lmsg);
    CHECK(lmsg.rfind("checkpoint " + path + ": ", 0) == 0);
    for (const auto& f : c.fragments) CHECK(lmsg.find(f) != std::string::npos);
    ++index;
  }
}

TEST_CASE("safetensors: a missing file is an io_error naming it") {
  const std::string msg = load_error("/nonexistent/dir/ckpt.safetensors");
  CHECK(msg.find("/nonexistent/dir/ckpt.safetensors") != std::string::npos);
  CHECK(msg.find("No such file or directory") != std::string::npos);
}

TEST_CASE("safetensors: every truncation of a valid file is rejected") {
  const auto bytes = dtn::io::serialize_safetensors(all_dtype_records(), {{"format", "dtn"}});
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    INFO("first " << n << " of " << bytes.size() << " bytes");
    // A fresh copy of exactly n bytes, so that a read past n would be caught by the sanitizers.
    const std::vector<std::uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    CHECK_THROWS_AS(dtn::io::parse_safetensors(prefix.data(), prefix.size(), "cut"), dtn::io_error);
  }
}

TEST_CASE("safetensors: random corruption gives a valid parse or a dtn::error, nothing else") {
  const auto bytes = dtn::io::serialize_safetensors(all_dtype_records(), {{"format", "dtn"}, {"step", "3"}});
  std::mt19937 rng(1234);
  int parsed = 0, rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    auto b = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Mostly inside the header, where the structure is.
      const std::size_t limit = (rng() % 4 == 0) ? b.size() : std::min<std::size_t>(b.size(), 8 + 400);
      b[rng() % limit] = static_cast<std::uint8_t>(rng());
    }
    try {
      const auto f = dtn::io::parse_safetensors(b.data(), b.size(), "fuzzed");
      // Whatever parsed must serialize and parse back to the same thing.
      const auto again = dtn::io::serialize_safetensors(f.tensors, f.metadata);
      const auto g = dtn::io::parse_safetensors(again.data(), again.size(), "again");
      check_same(g.tensors, f.tensors);
      CHECK(g.metadata == f.metadata);
      ++parsed;
    } catch (const dtn::error&) {
      ++rejected;
    }
  }
  // Both outcomes must occur, or the corruption did not exercise the reader.
  CHECK(parsed > 0);
  CHECK(rejected > 0);
}

TEST_CASE("safetensors: the writer refuses inconsistent tensors and writes nothing") {
  ScratchDir d("writer");
  const std::string path = d.file("w.safetensors");
  const auto expect_refused = [&](const std::vector<TensorRecord>& recs, const std::string& fragment) {
    std::string msg;
    try {
      dtn::io::save_safetensors(path, recs, {});
    } catch (const dtn::argument_error& e) {
      msg = e.what();
    }
    INFO(msg);
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find(fragment) != std::string::npos);
    CHECK(d.entries().empty());
  };
  const auto ok = dtn::io::make_record<float>("w", {2}, {1, 2});
  expect_refused({ok, ok}, "two tensors are named w");
  auto bad_dtype = ok;
  bad_dtype.dtype = "BF16";
  expect_refused({bad_dtype}, "tensor w has dtype \"BF16\"");
  auto bad_size = ok;
  bad_size.shape = {3};
  expect_refused({bad_size}, "tensor w (F32, shape [3]) needs 12 bytes but 8 were given");
  auto negative = ok;
  negative.shape = {-2, -1};
  expect_refused({negative}, "invalid shape [-2, -1]");
  auto reserved = ok;
  reserved.name = "__metadata__";
  expect_refused({reserved}, "reserved");
  auto unnamed = ok;
  unnamed.name = "";
  expect_refused({unnamed}, "empty name");
  auto not_utf8 = ok;
  not_utf8.name = "w\xff";
  expect_refused({not_utf8}, "cannot be written as JSON");
}

TEST_CASE("safetensors: require() checks name, dtype and shape with a message for the user") {
  const std::vector<TensorRecord> recs{dtn::io::make_record<float>("g.3.weight", {64, 3}, std::vector<float>(192))};
  const auto bytes = dtn::io::serialize_safetensors(recs, {});
  const auto f = dtn::io::parse_safetensors(bytes.data(), bytes.size(), "run/ckpt.safetensors");
  CHECK(&dtn::io::require(f, "g.3.weight", "F32", {64, 3}) == &f.tensors[0]);
  const auto msg = [&](const std::string& name, const std::string& dtype, const std::vector<std::int64_t>& shape) {
    try {
      dtn::io::require(f, name, dtype, shape);
    } catch (const dtn::io_error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK(msg("g.3.weight", "F32", {64, 4}) ==
        "checkpoint run/ckpt.safetensors: tensor g.3.weight has shape [64, 3], the network expects [64, 4]");
  CHECK(msg("g.3.weight", "F64", {64, 3}) ==
        "checkpoint run/ckpt.safetensors: tensor g.3.weight has dtype F32, the network expects F64");
  CHECK(msg("g.4.weight", "F32", {64, 3}) ==
        "checkpoint run/ckpt.safetensors: no tensor g.4.weight, the network expects one");
  // A record built by hand whose bytes are not whole elements of its dtype.
  TensorRecord odd{"odd", "F32", {1}, std::vector<std::uint8_t>(6)};
  CHECK_THROWS_WITH_AS(odd.values<float>(), "tensor odd: 6 bytes is not a whole number of F32 elements",
                       dtn::argument_error);
}

TEST_CASE("version: DTN_VERSION_STRING is major.minor.patch, DTN_VERSION their number, and CMake's project version the same") {
  const std::string parts = std::to_string(DTN_VERSION_MAJOR) + "." + std::to_string(DTN_VERSION_MINOR) + "." +
                            std::to_string(DTN_VERSION_PATCH);
  CHECK(std::string(DTN_VERSION_STRING) == parts);
  CHECK(DTN_VERSION == DTN_VERSION_MAJOR * 10000 + DTN_VERSION_MINOR * 100 + DTN_VERSION_PATCH);
  CHECK((DTN_VERSION_MINOR < 100 && DTN_VERSION_PATCH < 100));  // else DTN_VERSION would be ambiguous
  CHECK(std::string(DTN_TEST_PROJECT_VERSION) == parts);         // what CMakeLists.txt read from version.hpp
}

TEST_CASE("safetensors: dtn checkpoint metadata (format, version, signature, step)") {
  const auto meta = dtn::io::checkpoint_metadata("G(conv 64x3x4x4, ...)", 1500);
  CHECK(meta.at("format") == "dtn");
  CHECK(meta.at("format_version") == "1");
  CHECK(meta.at("step") == "1500");
  CHECK(meta.at("dtn_version") == DTN_VERSION_STRING);
  CHECK(meta.size() == 5);
  CHECK_THROWS_AS(dtn::io::checkpoint_metadata("x", -1), dtn::argument_error);

  const auto with = [](std::map<std::string, std::string> m) {
    dtn::io::SafetensorsFile f;
    f.source = "c.safetensors";
    f.metadata = std::move(m);
    return f;
  };
  CHECK(dtn::io::check_checkpoint(with(meta), "G(conv 64x3x4x4, ...)") == 1500);
  const auto message = [&](const std::map<std::string, std::string>& m, const std::string& sig) {
    try {
      dtn::io::check_checkpoint(with(m), sig);
    } catch (const dtn::io_error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK(message(meta, "G(other)") ==
        "checkpoint c.safetensors: it was written for the network \"G(conv 64x3x4x4, ...)\", this network is "
        "\"G(other)\"");
  auto v2 = meta;
  v2["format_version"] = "2";
  CHECK(message(v2, "G(conv 64x3x4x4, ...)").find("format_version is \"2\"") != std::string::npos);
  auto other = meta;
  other["format"] = "pytorch";
  CHECK(message(other, "G(conv 64x3x4x4, ...)").find("format is \"pytorch\", expected \"dtn\"") != std::string::npos);
  auto bad_step = meta;
  bad_step["step"] = "12a";
  CHECK(message(bad_step, "G(conv 64x3x4x4, ...)").find("step \"12a\"") != std::string::npos);
  CHECK(message({}, "x").find("metadata has no \"format\"") != std::string::npos);
}

namespace {

// Saves `count` float elements (value i * 0.25 + seed, in 4 tensors) over `path`; run in a child.
[[noreturn]] void child_save(const std::string& path, std::size_t count, float seed) {
  try {
    std::vector<float> v(count);
    for (std::size_t i = 0; i < count; ++i) v[i] = static_cast<float>(i % 4096) * 0.25f + seed;
    const std::size_t q = count / 4;
    std::vector<dtn::io::TensorRef> refs;
    for (int k = 0; k < 4; ++k)
      refs.push_back(dtn::io::make_ref("t" + std::to_string(k), {static_cast<std::int64_t>(q)}, v.data() + k * q, q));
    dtn::io::save_safetensors(path, refs, {{"seed", std::to_string(seed)}});
  } catch (...) {
    ::_exit(3);
  }
  ::_exit(0);
}

// A temporary file of `pid` saving over `path`, or "".
std::string temp_of(const std::string& path, pid_t pid) {
  const std::string prefix = fs::path(path).filename().string() + ".tmp." + std::to_string(pid) + ".";
  for (const auto& e : fs::directory_iterator(fs::path(path).parent_path()))
    if (e.path().filename().string().rfind(prefix, 0) == 0) return e.path().string();
  return "";
}

}  // namespace

TEST_CASE("safetensors: SIGKILL in the middle of saving a 200 MB checkpoint leaves the previous one intact") {
  ScratchDir d("sigkill");
  const std::string path = d.file("ckpt.safetensors");
  const auto previous = all_dtype_records();
  const std::map<std::string, std::string> previous_meta{{"step", "100"}};
  dtn::io::save_safetensors(path, previous, previous_meta);

  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) child_save(path, 50'000'000, 1.0f);  // 200 MB of F32

  // Wait until the child's temporary holds at least 8 MB: the save is then under way and far
  // from done (192 MB and an fsync still to go).
  std::string temp;
  bool writing = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    temp = temp_of(path, pid);
    std::error_code ec;
    if (!temp.empty() && fs::file_size(temp, ec) >= (8u << 20) && !ec) {
      writing = true;
      break;
    }
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) break;  // finished (or failed) before we saw it write
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  // While the child writes, readers still see the previous checkpoint.
  if (writing) check_same(dtn::io::load_safetensors(path).tensors, previous);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(writing);
  // The child was still running when it was killed, and its temporary was not yet renamed.
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  REQUIRE(fs::exists(temp));
  CHECK(fs::file_size(temp) < 200'000'000u);

  const auto after = dtn::io::load_safetensors(path);
  check_same(after.tensors, previous);
  CHECK(after.metadata == previous_meta);
}

TEST_CASE("safetensors: killed at any moment, a save leaves the old checkpoint or the new one, never a broken one") {
  ScratchDir d("anytime");
  const std::string path = d.file("ckpt.safetensors");
  const std::size_t count = 4'000'000;  // 16 MB
  int saw_old = 0, saw_new = 0;
  for (int trial = 0; trial < 12; ++trial) {
    // The old checkpoint: written by a child that runs to completion.
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) child_save(path, count, 0.0f);
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    // The new one, killed after a delay that sweeps from "before it starts" to "after it ends";
    // the last trial lets it finish, so that both outcomes are seen.
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) child_save(path, count, 1.0f);
    if (trial < 11) {
      std::this_thread::sleep_for(std::chrono::milliseconds(trial * trial * 3));
      ::kill(pid, SIGKILL);
    }
    ::waitpid(pid, &status, 0);
    if (trial == 11) REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));

    const auto f = dtn::io::load_safetensors(path);  // must not throw: never a half-written file
    REQUIRE(f.tensors.size() == 4);
    const std::string seed = f.metadata.at("seed");
    const float base = seed == std::to_string(0.0f) ? 0.0f : 1.0f;
    CHECK((seed == std::to_string(0.0f) || seed == std::to_string(1.0f)));
    (seed == std::to_string(0.0f) ? saw_old : saw_new) += 1;
    // Check the content matches the metadata (old data with old metadata, new with new).
    const auto v = f.tensors[3].values<float>();
    REQUIRE(v.size() == count / 4);
    for (std::size_t i = 0; i < v.size(); i += 9973) {
      const std::size_t global = 3 * (count / 4) + i;
      REQUIRE(v[i] == static_cast<float>(global % 4096) * 0.25f + base);
    }
    for (const auto& name : d.entries())  // remove the killed child's temporary
      if (name != "ckpt.safetensors") fs::remove(d.path / name);
  }
  MESSAGE("old checkpoint survived " << saw_old << " times, new one completed " << saw_new << " times");
  // Both outcomes occurred: killed at once (trial 0), the old file survives; run to the end (the
  // last trial), the new one replaced it. (Their sum is 12 by construction.)
  CHECK(saw_old > 0);
  CHECK(saw_new > 0);
}
