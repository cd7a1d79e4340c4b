#pragma once
// Command-line options of the svhn_to_mnist example.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace digits {

struct Options {
  std::string data_dir;     // folder with mnist/ and synthdigits/ (or svhn/); default $DTN_DATA_DIR
  std::string source_dir;   // source-domain .mat files (default <data_dir>/synthdigits, else <data_dir>/svhn)
  std::string mnist_dir;    // MNIST IDX files (default <data_dir>/mnist)
  std::string source_name;  // name used in reports: "SynthDigits" or "SVHN" (derived from source_dir)
  std::string f_split = "train";  // source split f is pretrained on (the paper: extra)
  std::string out_dir = "runs/svhn_to_mnist";
  std::string device = "cpu";
  long f_steps = 1000, clf_steps = 3000, dtn_steps = 400;
  int batch = 64, eval_batch = 128, threads = 0;
  int d_updates = 1, g_updates = 1;  // D and g updates per DTN step
  std::uint64_t seed = 1;
  double alpha = 15, beta = 15, gamma = 0, lr = 2e-4, d_lr = 0, clf_lr = 1e-3;  // d_lr 0: same as lr
  long sample_every = 50, ckpt_every = 100, log_every = 10;
  int val_size = 1000;   // source train images held out for validation (0: none)
  long val_every = 100;  // validation accuracy every N DTN steps (0: never)
  double time_limit_min = 0;  // stop DTN training after this many minutes (0: no limit)
  long eval_limit = 0;        // evaluate on the first N source test images (0: all)
  bool reuse = false;         // reuse f and the MNIST classifier from out_dir when present
  bool resume = false;        // resume DTN training from out_dir/dtn.safetensors
  bool tf32 = false;          // TF32 convolutions on the GPU
  bool conv_autotune = false; // cuDNN convolution algorithms chosen by timing them (GPU)
  bool conv_nondeterministic = false; // cuDNN's non-deterministic algorithms allowed (GPU)
  bool conv_cudnn = false;    // convolutions on cuDNN's heuristic algorithms, not the GEMM engine (GPU)
  bool no_graph = false;      // GPU: run DTN steps eagerly instead of as one CUDA graph
  bool conv_overlap = false;  // GPU: convolution weight gradients on a second stream
  std::int64_t conv_workspace_mib = 0;  // GPU: at most this many MiB of workspace per convolution pass (0: none)
  bool joint_batches = false; // DtnConfig::joint_batches: one g pass, one D pass per update (f: one per batch)
  double g_average = 0.99;    // decay of the average of g's weights evaluated beside g (0: none)
};

inline const char* usage() {
  return "usage: svhn_to_mnist [options]\n"
         "  --data-dir DIR       folder holding mnist/ and synthdigits/ (or svhn/); default $DTN_DATA_DIR\n"
         "  --source-dir DIR     source .mat files (train_32x32.mat, test_32x32.mat[, extra_32x32.mat])\n"
         "  --mnist-dir DIR      MNIST IDX files (.gz or raw)\n"
         "  --source-name NAME   name of the source domain in reports (default: SynthDigits if the folder\n"
         "                       name contains 'synth', else SVHN)\n"
         "  --f-split SPLIT      source split to pretrain f on: train (default) or extra\n"
         "  --out DIR            output folder (default runs/svhn_to_mnist)\n"
         "  --device cpu|cuda    (cuda needs a build with the CUDA backend)\n"
         "  --f-steps N --clf-steps N --dtn-steps N   steps of each stage (default 1000, 3000, 400)\n"
         "  --batch N            batch size (default 64); --eval-batch N for evaluation (default 128)\n"
         "  --seed N             seed of initialisation and data order (default 1)\n"
         "  --alpha A --beta B --gamma C   weights of L_CONST, L_TID, L_TV (default 15, 15, 0)\n"
         "  --lr X               Adam learning rate of g and D (default 2e-4); --clf-lr for classifiers (1e-3)\n"
         "  --d-lr X             Adam learning rate of D alone (default: --lr)\n"
         "  --d-updates N --g-updates N   D and g updates per DTN step (default 1, 1)\n"
         "  --sample-every N --ckpt-every N --log-every N   (default 50, 100, 10)\n"
         "  --val-size N         hold out the last N source train images for validation (default 1000; 0: none)\n"
         "  --val-every N        every N DTN steps: MNIST classifier accuracy on G(x) of the validation images,\n"
         "                       logged to validation.csv; the best model is kept as dtn_best.safetensors and\n"
         "                       evaluated on the test split beside the final one (default 100; 0: never)\n"
         "  --time-limit-min M   stop DTN training after M minutes, then evaluate\n"
         "  --eval-limit N       evaluate on the first N source test images only (default: all)\n"
         "  --threads N          CPU threads (default: all cores)\n"
         "  --reuse              reuse f and the MNIST classifier checkpoints found in --out\n"
         "  --resume             resume DTN training from --out/dtn.safetensors\n"
         "  --tf32               allow TF32 convolutions on the GPU\n"
         "  --conv-autotune      GPU: run each convolution pass on whichever times fastest: cuDNN's\n"
         "                       legacy algorithms, its graph-API plans or the GEMM engine (the choice,\n"
         "                       and so the last bits of the results, may differ between runs)\n"
         "  --conv-cudnn         GPU: convolutions on cuDNN's heuristic algorithms instead of dtn's GEMM\n"
         "                       engine (im2col/gather + cuBLAS, the default: twice as fast on an H200)\n"
         "  --conv-nondeterministic  GPU: cuDNN's non-deterministic convolution algorithms allowed like the\n"
         "                       others (default: deterministic ones wherever cuDNN has one)\n"
         "  --no-graph           GPU: run each DTN step eagerly, not as one captured CUDA graph\n"
         "  --conv-overlap       GPU: each convolution's weight gradient on a second stream beside its\n"
         "                       input gradient (the same results bit for bit)\n"
         "  --conv-workspace-mib N  GPU: at most N MiB of workspace per convolution pass and stream\n"
         "                       (default: no limit beyond each engine's own, 128 MiB to 1 GiB)\n"
         "  --joint-batches      g once on both batches, D once per update on all of its batches\n"
         "                       (batch norm per batch: the same step up to float rounding, fewer passes)\n"
         "  --g-average D        also evaluate the exponential moving average of g's weights with decay D\n"
         "                       (dtn::WeightAverage; default 0.99, about the last 100 steps; 0: off)\n"
         "  --full               the long run: 3000 f steps, 3000 classifier steps, 20000 DTN steps, batch 128\n";
}

inline Options parse_options(int argc, char** argv) {
  Options o;
  if (const char* d = std::getenv("DTN_DATA_DIR")) o.data_dir = d;
  std::vector<std::string> a(argv + 1, argv + argc);
  auto value = [&](std::size_t& i) -> const std::string& {
    if (i + 1 >= a.size()) throw std::invalid_argument("option " + a[i] + " needs a value");
    return a[++i];
  };
  // A real number: the whole value must parse, and it must be finite.
  auto number = [&](std::size_t& i) {
    const std::string& opt = a[i];
    const std::string& v = value(i);
    double d = 0;
    try {
      std::size_t used = 0;
      d = std::stod(v, &used);
      if (used != v.size()) throw std::invalid_argument("");
    } catch (const std::exception&) {
      throw std::invalid_argument("option " + opt + " expects a number, got '" + v + "'");
    }
    if (!std::isfinite(d)) throw std::invalid_argument("option " + opt + " expects a finite number, got '" + v + "'");
    return d;
  };
  // An integer in T's range, written in decimal digits with an optional sign: "1.5", "1e3", "12x"
  // and values T cannot hold are refused, not truncated.
  auto integer = [&](std::size_t& i, auto /*type tag*/ tag) {
    using T = decltype(tag);
    const std::string& opt = a[i];
    const std::string& v = value(i);
    const bool digits = !v.empty() && v.find_first_not_of("0123456789", v[0] == '-' || v[0] == '+' ? 1 : 0) == std::string::npos &&
                        v.find_first_of("0123456789") != std::string::npos;
    if (!digits) throw std::invalid_argument("option " + opt + " expects an integer, got '" + v + "'");
    bool fits = true;
    T x = 0;
    try {
      if constexpr (std::is_signed<T>::value) {
        const long long w = std::stoll(v);
        fits = w >= static_cast<long long>(std::numeric_limits<T>::min()) &&
               w <= static_cast<long long>(std::numeric_limits<T>::max());
        x = static_cast<T>(w);
      } else {
        const unsigned long long w = std::stoull(v);
        fits = v[0] != '-' && w <= static_cast<unsigned long long>(std::numeric_limits<T>::max());
        x = static_cast<T>(w);
      }
    } catch (const std::out_of_range&) {
      fits = false;
    }
    if (!fits)
      throw std::invalid_argument("option " + opt + " expects an integer from " + std::to_string(std::numeric_limits<T>::min()) +
                                  " to " + std::to_string(std::numeric_limits<T>::max()) + ", got '" + v + "'");
    return x;
  };
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::string& k = a[i];
    if (k == "--help" || k == "-h") throw std::runtime_error("help");
    else if (k == "--data-dir") o.data_dir = value(i);
    else if (k == "--source-dir") o.source_dir = value(i);
    else if (k == "--mnist-dir") o.mnist_dir = value(i);
    else if (k == "--source-name") o.source_name = value(i);
    else if (k == "--f-split") o.f_split = value(i);
    else if (k == "--out") o.out_dir = value(i);
    else if (k == "--device") o.device = value(i);
    else if (k == "--f-steps") o.f_steps = integer(i, 0L);
    else if (k == "--clf-steps") o.clf_steps = integer(i, 0L);
    else if (k == "--dtn-steps") o.dtn_steps = integer(i, 0L);
    else if (k == "--batch") o.batch = integer(i, 0);
    else if (k == "--eval-batch") o.eval_batch = integer(i, 0);
    else if (k == "--seed") o.seed = integer(i, std::uint64_t{0});
    else if (k == "--alpha") o.alpha = number(i);
    else if (k == "--beta") o.beta = number(i);
    else if (k == "--gamma") o.gamma = number(i);
    else if (k == "--lr") o.lr = number(i);
    else if (k == "--clf-lr") o.clf_lr = number(i);
    else if (k == "--d-lr") o.d_lr = number(i);
    else if (k == "--d-updates") o.d_updates = integer(i, 0);
    else if (k == "--g-updates") o.g_updates = integer(i, 0);
    else if (k == "--sample-every") o.sample_every = integer(i, 0L);
    else if (k == "--ckpt-every") o.ckpt_every = integer(i, 0L);
    else if (k == "--log-every") o.log_every = integer(i, 0L);
    else if (k == "--time-limit-min") o.time_limit_min = number(i);
    else if (k == "--val-size") o.val_size = integer(i, 0);
    else if (k == "--val-every") o.val_every = integer(i, 0L);
    else if (k == "--eval-limit") o.eval_limit = integer(i, 0L);
    else if (k == "--threads") o.threads = integer(i, 0);
    else if (k == "--reuse") o.reuse = true;
    else if (k == "--resume") o.resume = true;
    else if (k == "--tf32") o.tf32 = true;
    else if (k == "--conv-autotune") o.conv_autotune = true;
    else if (k == "--conv-nondeterministic") o.conv_nondeterministic = true;
    else if (k == "--conv-cudnn") o.conv_cudnn = true;
    else if (k == "--no-graph") o.no_graph = true;
    else if (k == "--conv-overlap") o.conv_overlap = true;
    else if (k == "--conv-workspace-mib") o.conv_workspace_mib = integer(i, std::int64_t{0});
    else if (k == "--joint-batches") o.joint_batches = true;
    else if (k == "--g-average") o.g_average = number(i);
    else if (k == "--full") {
      o.f_steps = 3000;
      o.clf_steps = 3000;
      o.dtn_steps = 20000;
      o.batch = 128;
      o.sample_every = 1000;
      o.ckpt_every = 1000;
      o.log_every = 50;
    } else
      throw std::invalid_argument("unknown option " + k);
  }
  if (o.d_updates < 1 || o.g_updates < 1) throw std::invalid_argument("--d-updates and --g-updates must be >= 1");
  if (!(o.lr > 0) || !(o.d_lr >= 0) || !(o.clf_lr > 0)) throw std::invalid_argument("learning rates must be > 0");
  if (o.val_size < 0 || o.val_every < 0) throw std::invalid_argument("--val-size and --val-every must be >= 0");
  if (o.batch < 1 || o.f_steps < 0 || o.clf_steps < 0 || o.dtn_steps < 0 || o.eval_batch < 1)
    throw std::invalid_argument("batch must be >= 1 and step counts >= 0");
  if (!(o.g_average >= 0 && o.g_average < 1)) throw std::invalid_argument("--g-average must be in [0, 1)");
  // Each of these divides the step number (s % N): 0 would stop the program with a division by zero.
  if (o.sample_every < 1 || o.ckpt_every < 1 || o.log_every < 1)
    throw std::invalid_argument("--sample-every, --ckpt-every and --log-every must be >= 1");
  if (o.eval_limit < 0 || o.threads < 0 || o.time_limit_min < 0)
    throw std::invalid_argument("--eval-limit, --threads and --time-limit-min must be >= 0");
  if (o.alpha < 0 || o.beta < 0 || o.gamma < 0) throw std::invalid_argument("--alpha, --beta and --gamma must be >= 0");
  if (o.device != "cpu" && o.device != "cuda") throw std::invalid_argument("--device must be cpu or cuda, got " + o.device);
  if (o.f_split != "train" && o.f_split != "extra") throw std::invalid_argument("--f-split must be train or extra");
  // In bytes it must fit size_t: 2^44 MiB is 16 EiB.
  if (o.conv_workspace_mib < 0 || o.conv_workspace_mib >= (std::int64_t{1} << 44))
    throw std::invalid_argument("--conv-workspace-mib must be from 0 (no limit) to 2^44 - 1");
  return o;
}

}  // namespace digits
