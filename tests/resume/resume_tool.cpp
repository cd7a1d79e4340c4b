// Exact resume across processes: the CTest script tests/resume/run.sh runs this program three
// times (N steps in one run; k steps then save; load in a fresh process and N - k steps) and
// then compares the two final checkpoints tensor by tensor, bit for bit.
//   resume_tool run <steps> <out.safetensors>
//   resume_tool resume <in.safetensors> <steps> <out.safetensors>
//   resume_tool compare <a.safetensors> <b.safetensors>
#include <cstdio>
#include <cstring>
#include <dtn/dtn.hpp>
#include <string>

namespace {
using F = dtn::Sequential<dtn::Conv2d<8, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::ReLU, dtn::Conv2d<16, 3, 1, 1>, dtn::MaxPool2d<8>,
                          dtn::ReLU>;
using G = dtn::Sequential<dtn::ConvTranspose2d<32, 4, 1, 0>, dtn::BatchNorm2d, dtn::ReLU, dtn::ConvTranspose2d<16, 4, 2, 1>,
                          dtn::BatchNorm2d, dtn::ReLU, dtn::ConvTranspose2d<1, 4, 2, 1>, dtn::Tanh>;
using D = dtn::Sequential<dtn::Conv2d<16, 3, 2, 1>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>, dtn::Conv2d<3, 8, 1, 0>>;
using Trainer = dtn::DomainTransfer<F, G, D>;

// The data of step i (1-based) depends on i alone, as a seeded data order would.
void batch(long i, dtn::Tensor<float>& xs, dtn::Tensor<float>& xt) {
  dtn::Rng rng(static_cast<std::uint64_t>(1000 + i));
  xs.resize(dtn::Shape{6, 3, 16, 16});
  xt.resize(dtn::Shape{6, 1, 16, 16});
  for (std::size_t j = 0; j < xs.size(); ++j) xs[j] = static_cast<float>(rng.uniform(-1, 1));
  for (std::size_t j = 0; j < xt.size(); ++j) xt[j] = static_cast<float>(rng.uniform(-1, 1));
}
void train(Trainer& t, long until) {
  dtn::Tensor<float> xs, xt;
  for (long i = t.steps() + 1; i <= until; ++i) {
    batch(i, xs, xt);
    t.step(xs.view(), xt.view());
  }
}
dtn::DtnConfig config() {
  dtn::DtnConfig c;
  c.seed = 11;
  c.gamma = 0.05;
  return c;
}
}  // namespace

int main(int argc, char** argv) {
  dtn::set_num_threads(2);
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "run" && argc == 4) {
      Trainer t(dtn::Shape{3, 16, 16}, dtn::Shape{1, 16, 16}, config());
      train(t, std::stol(argv[2]));
      t.save(argv[3]);
      return 0;
    }
    if (cmd == "resume" && argc == 5) {
      dtn::DtnConfig c = config();
      c.seed = 999;  // a different initialisation: everything must come from the checkpoint
      Trainer t(dtn::Shape{3, 16, 16}, dtn::Shape{1, 16, 16}, c);
      t.load(argv[2]);
      std::printf("resumed at step %lld\n", static_cast<long long>(t.steps()));
      train(t, std::stol(argv[3]));
      t.save(argv[4]);
      return 0;
    }
    if (cmd == "compare" && argc == 4) {
      const auto a = dtn::io::load_safetensors(argv[2]);
      const auto b = dtn::io::load_safetensors(argv[3]);
      int differ = 0;
      if (a.tensors.size() != b.tensors.size()) differ = 1;
      for (const auto& ta : a.tensors) {
        const auto* tb = b.find(ta.name);
        if (!tb || tb->shape != ta.shape || tb->data != ta.data) {
          std::printf("differs: %s\n", ta.name.c_str());
          ++differ;
        }
      }
      if (a.metadata != b.metadata) {
        std::printf("metadata differs\n");
        ++differ;
      }
      std::printf("%zu tensors compared, %d differ\n", a.tensors.size(), differ);
      return differ == 0 ? 0 : 1;
    }
    std::fprintf(stderr, "usage: resume_tool run N out | resume in N out | compare a b\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "resume_tool: %s\n", e.what());
    return 1;
  }
}
