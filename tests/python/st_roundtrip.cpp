// Helper program for tests/python/test_interop.py: the C++ side of the safetensors interop tests,
// on the checkpoint API alone (dtn/io/safetensors.hpp).
//
//   dtn_st_roundtrip write <path>      the reference tensors with dtn checkpoint metadata
//   dtn_st_roundtrip write-min <path>  the same tensors with only {"format": "dtn"} as metadata
//   dtn_st_roundtrip read <path>       loads a file and prints it as JSON on stdout:
//       {"metadata": {...}, "tensors": [{"name", "dtype", "shape", "values"}]}
//       integers as JSON integers, floats as C99 hex strings ("%a") so that every bit survives.
// Errors: the message on stderr, exit status 1; bad usage: exit status 2.
//
// The reference tensors are defined by formulas that test_interop.py evaluates the same way; they
// are listed in the order the reference writer (safetensors.numpy.save) sorts them: by dtype
// (I64, F64, F32, I32, U8), then by name, so that write-min can be compared byte for byte.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dtn/io/safetensors.hpp"
#include "hex_float.hpp"

namespace {

using dtn::io::make_record;
using dtn::io::TensorRecord;

std::vector<TensorRecord> reference_tensors() {
  std::vector<TensorRecord> r;
  // I64: values a double cannot hold exactly.
  r.push_back(make_record<std::int64_t>("opt.steps", {3},
                                        {-9007199254740993LL, 0, std::numeric_limits<std::int64_t>::max()}));
  // F64: k / 3 - 1, k = 0..4 (correctly rounded division in both languages).
  std::vector<double> f64(5);
  for (int k = 0; k < 5; ++k) f64[static_cast<std::size_t>(k)] = k / 3.0 - 1.0;
  r.push_back(make_record<double>("d.0.bias", {5}, f64));
  // F32: float(37 k - 400) / 100 in single precision, k = 0..23, shape [2, 3, 4] (row-major): one
  // correctly rounded operation on exact operands, so no compiler can fuse or reorder it (a
  // product and a sum, as before, became one FMA under Clang, whose -ffp-contract=on allows that).
  std::vector<float> f32(24);
  for (int k = 0; k < 24; ++k) f32[static_cast<std::size_t>(k)] = static_cast<float>(37 * k - 400) / 100.0f;
  r.push_back(make_record<float>("empty", {0, 4}, {}));
  r.push_back(make_record<float>("g.0.weight", {2, 3, 4}, f32));
  r.push_back(make_record<float>("scalar", {}, {-0.0f}));
  // I32: the extremes.
  r.push_back(make_record<std::int32_t>("labels", {2, 2},
                                        {std::numeric_limits<std::int32_t>::min(), -1, 0,
                                         std::numeric_limits<std::int32_t>::max()}));
  // U8: (k * 37) mod 256, shape [3, 4, 4].
  std::vector<std::uint8_t> u8(48);
  for (int k = 0; k < 48; ++k) u8[static_cast<std::size_t>(k)] = static_cast<std::uint8_t>((k * 37) % 256);
  r.push_back(make_record<std::uint8_t>("image", {3, 4, 4}, u8));
  return r;
}

template <class T>
nlohmann::ordered_json values_json(const TensorRecord& t) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (const T v : t.values<T>()) {
    if constexpr (std::is_floating_point_v<T>) a.push_back(interop::hex(static_cast<double>(v)));
    else a.push_back(static_cast<std::int64_t>(v));
  }
  return a;
}

int read(const std::string& path) {
  const auto f = dtn::io::load_safetensors(path);
  nlohmann::ordered_json out;
  out["metadata"] = f.metadata;
  out["tensors"] = nlohmann::ordered_json::array();
  for (const auto& t : f.tensors) {
    nlohmann::ordered_json j;
    j["name"] = t.name;
    j["dtype"] = t.dtype;
    j["shape"] = t.shape;
    if (t.dtype == "F32") j["values"] = values_json<float>(t);
    else if (t.dtype == "F64") j["values"] = values_json<double>(t);
    else if (t.dtype == "I64") j["values"] = values_json<std::int64_t>(t);
    else if (t.dtype == "I32") j["values"] = values_json<std::int32_t>(t);
    else j["values"] = values_json<std::uint8_t>(t);
    out["tensors"].push_back(std::move(j));
  }
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " write|write-min|read <file>\n";
    return 2;
  }
  const std::string mode = argv[1], path = argv[2];
  try {
    if (mode == "write") {
      dtn::io::save_safetensors(path, reference_tensors(), dtn::io::checkpoint_metadata("interop-test", 42));
      return 0;
    }
    if (mode == "write-min") {
      dtn::io::save_safetensors(path, reference_tensors(), {{"format", "dtn"}});
      return 0;
    }
    if (mode == "read") return read(path);
  } catch (const dtn::error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  std::cerr << "unknown mode " << mode << " (write, write-min, read)\n";
  return 2;
}
