// svhn_to_mnist: the bundled DTN experiment (see pipeline.hpp and README.md).
#include <cstdio>
#include <exception>

#include "pipeline.hpp"

#if defined(DTN_EXAMPLE_CUDA)
int run_cuda(const digits::Options& o);  // main_cuda.cu
#endif

int main(int argc, char** argv) {
  digits::Options o;
  try {
    o = digits::parse_options(argc, argv);
  } catch (const std::runtime_error& e) {  // --help
    std::fputs(digits::usage(), stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "svhn_to_mnist: %s\n%s", e.what(), digits::usage());
    return 2;
  }
  try {
    if (o.device == "cuda") {
#if defined(DTN_EXAMPLE_CUDA)
      return run_cuda(o);
#else
      std::fprintf(stderr, "svhn_to_mnist: this build has no CUDA backend (configure with -DDTN_CUDA=ON on a machine "
                           "with nvcc and cuDNN)\n");
      return 2;
#endif
    }
    return digits::run_pipeline<dtn::Cpu>(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "svhn_to_mnist: error: %s\n", e.what());
    return 1;
  }
}
