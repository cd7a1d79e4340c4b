// Helper program for tests/python/test_net_interop.py: a dtn network's checkpoint read by numpy
// and safetensors, and weights written by numpy driving dtn's forward pass.
//
//   dtn_net_interop save <ckpt> <x.safetensors> <out.json>
//       builds the network (seed 7), sets non-trivial running statistics, saves the checkpoint,
//       runs the evaluation-mode forward on the tensor "x" of <x.safetensors>, writes {"y": [...]}
//   dtn_net_interop forward <weights.safetensors> <x.safetensors> <out.json>
//       loads every tensor of the network from a file written in Python (no dtn metadata) and
//       writes the evaluation-mode forward of "x" the same way
// Floats are written as C99 hex strings ("%a") so that every bit survives.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <dtn/dtn.hpp>
#include <nlohmann/json.hpp>

#include "hex_float.hpp"

namespace {
// The equivalent PyTorch module: nn.Sequential(Conv2d(3, 4, 3, padding=1), BatchNorm2d(4), ReLU(),
// MaxPool2d(2), ConvTranspose2d(4, 2, 4, stride=2, padding=1), Tanh(), Flatten(), Linear(72, 5)).
using Spec = dtn::Sequential<dtn::Conv2d<4, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>,
                             dtn::ConvTranspose2d<2, 4, 2, 1>, dtn::Tanh, dtn::Flatten, dtn::Linear<5>>;
using NetT = dtn::Net<Spec, float, dtn::Cpu>;

dtn::Tensor<float> read_x(const std::string& path) {
  const dtn::io::SafetensorsFile f = dtn::io::load_safetensors(path);
  const dtn::io::TensorRecord& r = dtn::io::require(f, "x", "F32", {2, 3, 6, 6});
  return dtn::from_vector(dtn::Shape{2, 3, 6, 6}, r.values<float>());
}
void write_y(NetT& net, const dtn::Tensor<float>& x, const std::string& out) {
  net.eval();
  const std::vector<float> y = dtn::to_vector(net.forward(x.view()));
  nlohmann::json j;
  j["y"] = nlohmann::json::array();
  for (float v : y) j["y"].push_back(interop::hex(static_cast<double>(v)));
  std::ofstream(out) << j.dump();
}
}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (argc != 5 || (cmd != "save" && cmd != "forward")) {
      std::fprintf(stderr, "usage: dtn_net_interop save|forward <file> <x.safetensors> <out.json>\n");
      return 2;
    }
    NetT net(dtn::Shape{3, 6, 6}, "net", dtn::InitScheme::pytorch, 7);
    if (cmd == "save") {
      // Running statistics away from (0, 1), so that the evaluation-mode forward uses them.
      for (auto& e : net.entries()) {
        if (e.name == "net.1.running_mean")
          for (std::size_t i = 0; i < e.param->value.size(); ++i) e.param->value.data[i] = 0.1f * static_cast<float>(i);
        if (e.name == "net.1.running_var")
          for (std::size_t i = 0; i < e.param->value.size(); ++i) e.param->value.data[i] = 0.5f + 0.25f * static_cast<float>(i);
      }
      dtn::io::save_network(argv[2], net, 3);
    } else {
      dtn::io::load_network(dtn::io::load_safetensors(argv[2]), net);
    }
    write_y(net, read_x(argv[3]), argv[4]);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dtn_net_interop: %s\n", e.what());
    return 1;
  }
}
