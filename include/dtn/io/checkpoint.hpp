#pragma once
// Networks and optimizers in safetensors checkpoints: every named tensor of a network
// ("g.3.weight", "g.1.running_mean", ...) as one record, so the file opens in numpy/PyTorch
// with the names torch.nn.Sequential would give the same modules.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "../core/tensor.hpp"
#include "../optim/adam.hpp"
#include "safetensors.hpp"

namespace dtn {
namespace io {

inline std::vector<std::int64_t> dims_of(const Shape& s) {
  std::vector<std::int64_t> d;
  for (int i = 0; i < s.rank(); ++i) d.push_back(s[i]);
  return d;
}

// Host copies of every named tensor of `net` (parameters and buffers), appended to `out`.
template <class NetT>
void append_network(std::vector<TensorRecord>& out, NetT& net) {
  using T = typename NetT::value_type;
  for (const auto& e : net.entries())
    out.push_back(make_record<T>(e.name, dims_of(e.param->shape), to_vector(View<const T, typename NetT::device>(
                                                                          e.param->value))));
}

// Loads every named tensor of `net` from `file`, checking names, dtypes and shapes.
template <class NetT>
void load_network(const SafetensorsFile& file, NetT& net) {
  using T = typename NetT::value_type;
  using Dev = typename NetT::device;
  for (const auto& e : net.entries()) {
    const TensorRecord& r = require(file, e.name, dtype_of<T>(), dims_of(e.param->shape));
    const std::vector<T> v = r.values<T>();
    Copy<Dev, Cpu>::run(e.param->value.data, v.data(), v.size() * sizeof(T));
  }
}

// The metadata value under `key` (which the caller has found there) as a non-negative integer
// count; otherwise an io_error naming the file, the key and the value.
inline std::int64_t metadata_count(const SafetensorsFile& file, const std::string& key) {
  const std::string& value = file.metadata.at(key);
  try {
    std::size_t used = 0;
    const std::int64_t n = std::stoll(value, &used);
    if (used != value.size() || n < 0) throw std::invalid_argument("bad");
    return n;
  } catch (const std::exception&) {
    throw io_error("checkpoint " + file.source + ": " + key + " is \"" + value + "\", not a non-negative integer");
  }
}

// Adam's state under `prefix` ("opt.g.m", "opt.g.v"); the step count goes into the metadata.
template <class T, class Dev>
void append_adam(std::vector<TensorRecord>& out, std::map<std::string, std::string>& meta, const std::string& prefix,
                 const Adam<T, Dev>& opt) {
  out.push_back(make_record<T>(prefix + ".m", dims_of(opt.first_moment().shape), to_vector(opt.first_moment())));
  out.push_back(make_record<T>(prefix + ".v", dims_of(opt.second_moment().shape), to_vector(opt.second_moment())));
  meta[prefix + ".steps"] = std::to_string(opt.steps());
}
template <class T, class Dev>
void load_adam(const SafetensorsFile& file, const std::string& prefix, Adam<T, Dev>& opt) {
  const std::vector<std::int64_t> dims = dims_of(opt.first_moment().shape);
  const std::vector<T> m = require(file, prefix + ".m", dtype_of<T>(), dims).template values<T>();
  const std::vector<T> v = require(file, prefix + ".v", dtype_of<T>(), dims).template values<T>();
  if (!file.metadata.count(prefix + ".steps"))
    throw io_error("checkpoint " + file.source + ": metadata has no " + prefix + ".steps");
  const std::int64_t steps = metadata_count(file, prefix + ".steps");
  Copy<Dev, Cpu>::run(opt.first_moment().data, m.data(), m.size() * sizeof(T));
  Copy<Dev, Cpu>::run(opt.second_moment().data, v.data(), v.size() * sizeof(T));
  opt.set_steps(steps);
}

// One network alone: save (atomic) and load (checks the architecture signature).
template <class NetT>
void save_network(const std::string& path, NetT& net, std::int64_t step = 0) {
  std::vector<TensorRecord> recs;
  append_network(recs, net);
  save_safetensors(path, recs, checkpoint_metadata(net.signature(), step));
}
template <class NetT>
std::int64_t load_network(const std::string& path, NetT& net) {
  const SafetensorsFile file = load_safetensors(path);
  const std::int64_t step = check_checkpoint(file, net.signature());
  load_network(file, net);
  return step;
}

}  // namespace io
}  // namespace dtn
