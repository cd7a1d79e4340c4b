// The program every packaging test builds against dtn the way a user would (find_package,
// pkg-config, add_subdirectory, FetchContent). It uses the layers, a forward and backward pass,
// and a checkpoint round trip (which pulls in nlohmann_json), so a missing include directory,
// compile flag or dependency in any of the packaged forms fails here.
//
// Usage: dtn_consumer <scratch directory>. Exit 0 on success, 1 with a message otherwise.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <dtn/dtn.hpp>
#include <dtn/io/checkpoint.hpp>

namespace {

using Spec = dtn::Sequential<dtn::Linear<3>, dtn::ReLU, dtn::Linear<1>>;

int fail(const std::string& what) {
  std::fprintf(stderr, "dtn_consumer: FAILED: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return fail("usage: dtn_consumer <scratch directory>");
  try {
#ifdef DTN_CONSUMER_PACKAGE_VERSION
    // Built through find_package: the headers found are those of the package version found.
    if (std::string(DTN_VERSION_STRING) != DTN_CONSUMER_PACKAGE_VERSION)
      return fail(std::string("headers say version ") + DTN_VERSION_STRING + ", the CMake package " +
                  DTN_CONSUMER_PACKAGE_VERSION);
#endif
    dtn::Net<Spec> net(dtn::Shape{2}, "net");
    // Known parameters: layer 0 is W0 [3, 2], b0 [3]; layer 2 is W2 [1, 3], b2 [1].
    const std::vector<float> w0 = {1, 2, -1, 0.5f, 0.25f, -3}, b0 = {0.5f, -1, 0.125f};
    const std::vector<float> w2 = {2, -1, 4}, b2 = {0.75f};
    const std::vector<const std::vector<float>*> values = {&w0, &b0, &w2, &b2};
    if (net.entries().size() != values.size()) return fail("expected 4 named tensors");
    for (std::size_t i = 0; i < values.size(); ++i) {
      const auto& e = net.entries()[i];
      if (e.param->value.size() != values[i]->size()) return fail("unexpected size of " + e.name);
      std::copy(values[i]->begin(), values[i]->end(), e.param->value.data);
    }
    if (net.entries()[2].name != "net.2.weight") return fail("unexpected name " + net.entries()[2].name);

    const std::vector<float> x = {0.5f, -2};
    dtn::Tensor<float> xt = dtn::from_vector(dtn::Shape{1, 2}, x);
    const float y = dtn::to_vector(net.forward(xt.view()))[0];
    // The same network by hand, in double.
    double expect = b2[0];
    for (int j = 0; j < 3; ++j) {
      double h = b0[static_cast<std::size_t>(j)];
      for (int i = 0; i < 2; ++i) h += double(w0[static_cast<std::size_t>(2 * j + i)]) * x[static_cast<std::size_t>(i)];
      expect += double(w2[static_cast<std::size_t>(j)]) * (h > 0 ? h : 0);
    }
    // float arithmetic over six products of exactly representable values: within 1e-5 relative.
    if (!(std::fabs(y - expect) <= 1e-5 * std::fabs(expect) + 1e-6))
      return fail("forward gave " + std::to_string(y) + ", expected " + std::to_string(expect));

    // Backward: d y / d x by hand.
    dtn::Tensor<float> dy = dtn::from_vector(dtn::Shape{1, 1}, std::vector<float>{1});
    const std::vector<float> dx = dtn::to_vector(net.backward(dy.view()));
    for (int i = 0; i < 2; ++i) {
      double g = 0;
      for (int j = 0; j < 3; ++j) {
        double h = b0[static_cast<std::size_t>(j)];
        for (int k = 0; k < 2; ++k) h += double(w0[static_cast<std::size_t>(2 * j + k)]) * x[static_cast<std::size_t>(k)];
        if (h > 0) g += double(w2[static_cast<std::size_t>(j)]) * w0[static_cast<std::size_t>(2 * j + i)];
      }
      if (!(std::fabs(dx[static_cast<std::size_t>(i)] - g) <= 1e-5 * std::fabs(g) + 1e-6))
        return fail("input gradient " + std::to_string(i) + " is " + std::to_string(dx[static_cast<std::size_t>(i)]) +
                    ", expected " + std::to_string(g));
    }

    // Checkpoint round trip into a differently initialised network.
    const std::string path = std::string(argv[1]) + "/consumer.safetensors";
    dtn::io::save_network(path, net, 7);
    dtn::Net<Spec> other(dtn::Shape{2}, "net", dtn::InitScheme::dcgan, 42);
    if (dtn::io::load_network(path, other) != 7) return fail("checkpoint step was not restored");
    if (dtn::to_vector(other.parameters()) != dtn::to_vector(net.parameters()))
      return fail("checkpoint parameters differ after loading");
    std::remove(path.c_str());

    std::printf("dtn_consumer: forward %.6f (expected %.6f), gradients and checkpoint OK\n", y, expect);
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}
