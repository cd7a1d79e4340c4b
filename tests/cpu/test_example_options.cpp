// The svhn_to_mnist example's command line (examples/svhn_to_mnist/options.hpp): values are parsed
// whole and by type, and what the program cannot use is refused with a message naming the option,
// before any data is read.
#include <doctest/doctest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../../examples/svhn_to_mnist/options.hpp"

namespace {

digits::Options parse(std::vector<std::string> args) {
  args.insert(args.begin(), "svhn_to_mnist");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return digits::parse_options(static_cast<int>(argv.size()), argv.data());
}

std::string refusal(const std::vector<std::string>& args) {
  try {
    parse(args);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace

TEST_CASE("svhn_to_mnist options: integers and numbers are parsed whole, by type") {
  const digits::Options o = parse({"--batch", "128", "--dtn-steps", "+20000", "--seed", "18446744073709551615",
                                   "--lr", "1e-4", "--alpha", "0", "--time-limit-min", "2.5", "--threads", "0"});
  CHECK(o.batch == 128);
  CHECK(o.dtn_steps == 20000);
  CHECK(o.seed == UINT64_MAX);  // all 64 bits (through a double it became 2^64, then undefined)
  CHECK(o.lr == 1e-4);
  CHECK(o.alpha == 0);
  CHECK(o.time_limit_min == 2.5);
  CHECK(o.threads == 0);
  const digits::Options d = parse({});
  CHECK(d.batch == 64);
  CHECK(d.seed == 1);
}

TEST_CASE("svhn_to_mnist options: a value that is not what the option takes is refused, naming the option") {
  // Before: integer options went through std::stod and a cast, so "1.5" became 1, "1e3" 1000, and
  // "1e12" or "nan" an undefined conversion.
  CHECK(refusal({"--batch", "1.5"}) == "option --batch expects an integer, got '1.5'");
  CHECK(refusal({"--dtn-steps", "1e3"}) == "option --dtn-steps expects an integer, got '1e3'");
  CHECK(refusal({"--threads", "2x"}) == "option --threads expects an integer, got '2x'");
  CHECK(refusal({"--batch", ""}) == "option --batch expects an integer, got ''");
  CHECK(refusal({"--batch", "-"}) == "option --batch expects an integer, got '-'");
  CHECK(refusal({"--batch", "nan"}) == "option --batch expects an integer, got 'nan'");
  CHECK(refusal({"--batch", "3000000000"}) == "option --batch expects an integer from -2147483648 to 2147483647, got '3000000000'");
  CHECK(refusal({"--f-steps", "99999999999999999999"}).find("option --f-steps expects an integer from") == 0);
  CHECK(refusal({"--seed", "-1"}) == "option --seed expects an integer from 0 to 18446744073709551615, got '-1'");
  CHECK(refusal({"--seed", "18446744073709551616"}).find("option --seed expects an integer from 0 to") == 0);
  CHECK(refusal({"--lr", "fast"}) == "option --lr expects a number, got 'fast'");
  CHECK(refusal({"--lr", "1e-4x"}) == "option --lr expects a number, got '1e-4x'");
  CHECK(refusal({"--alpha", "inf"}) == "option --alpha expects a finite number, got 'inf'");
  CHECK(refusal({"--beta", "nan"}) == "option --beta expects a finite number, got 'nan'");
  CHECK(refusal({"--lr", "1e400"}) == "option --lr expects a number, got '1e400'");
  CHECK(refusal({"--batch"}) == "option --batch needs a value");
  CHECK(refusal({"--bach", "64"}) == "unknown option --bach");
}

TEST_CASE("svhn_to_mnist options: values the program cannot run with are refused before it starts") {
  // N of --log-every, --sample-every and --ckpt-every divides the step number: 0 was a division by zero.
  for (const char* opt : {"--log-every", "--sample-every", "--ckpt-every"}) {
    CAPTURE(opt);
    CHECK(refusal({opt, "0"}) == "--sample-every, --ckpt-every and --log-every must be >= 1");
    CHECK(refusal({opt, "-5"}) == "--sample-every, --ckpt-every and --log-every must be >= 1");
    CHECK(refusal({opt, "1"}) == "(accepted)");
  }
  CHECK(refusal({"--eval-limit", "-1"}) == "--eval-limit, --threads and --time-limit-min must be >= 0");
  CHECK(refusal({"--threads", "-2"}) == "--eval-limit, --threads and --time-limit-min must be >= 0");
  CHECK(refusal({"--time-limit-min", "-0.5"}) == "--eval-limit, --threads and --time-limit-min must be >= 0");
  CHECK(refusal({"--gamma", "-1"}) == "--alpha, --beta and --gamma must be >= 0");
  CHECK(refusal({"--batch", "0"}) == "batch must be >= 1 and step counts >= 0");
  CHECK(refusal({"--dtn-steps", "-1"}) == "batch must be >= 1 and step counts >= 0");
  CHECK(refusal({"--d-updates", "0"}) == "--d-updates and --g-updates must be >= 1");
  CHECK(refusal({"--lr", "0"}) == "learning rates must be > 0");
  CHECK(refusal({"--g-average", "1"}) == "--g-average must be in [0, 1)");
  CHECK(refusal({"--device", "tpu"}) == "--device must be cpu or cuda, got tpu");
  CHECK(refusal({"--f-split", "test"}) == "--f-split must be train or extra");
  CHECK(refusal({"--val-every", "0", "--val-size", "0", "--eval-limit", "0"}) == "(accepted)");
  // MiB to bytes must not overflow size_t (the GPU's dtn::cuda::set_conv_workspace_limit).
  CHECK(refusal({"--conv-workspace-mib", "-1"}) == "--conv-workspace-mib must be from 0 (no limit) to 2^44 - 1");
  CHECK(refusal({"--conv-workspace-mib", "17592186044416"}) == "--conv-workspace-mib must be from 0 (no limit) to 2^44 - 1");
  CHECK(parse({"--conv-workspace-mib", "17592186044415"}).conv_workspace_mib == (std::int64_t{1} << 44) - 1);
  CHECK(parse({"--conv-workspace-mib", "64"}).conv_workspace_mib == 64);
  CHECK(parse({}).conv_workspace_mib == 0);
}
