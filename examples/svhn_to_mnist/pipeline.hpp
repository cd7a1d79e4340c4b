#pragma once
// The whole SVHN -> MNIST experiment for one device: (a) pretrain f on the source domain,
// (b) train the MNIST evaluation classifier, (c) train the DTN, (d) evaluate as the paper does
// (accuracy of the MNIST classifier on G(x) over the source test split, beside the same
// classifier on the grayscale source images), (e) sample grids, checkpoints, metrics CSV, a
// loss plot and a progress line.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <dtn/data/batcher.hpp>
#include <dtn/data/idx.hpp>
#include <dtn/data/svhn_mat.hpp>
#include <dtn/dtn.hpp>
#include <dtn/io/checkpoint.hpp>
#include <dtn/io/image.hpp>
#include <dtn/io/plot.hpp>
#include <dtn/io/progress.hpp>
#include <dtn/optim/average.hpp>
#include <dtn/train/domain_transfer.hpp>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "networks.hpp"
#include "options.hpp"

namespace digits {

inline bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}
inline void make_dirs(const std::string& path) {
  std::string cur;
  std::stringstream ss(path);
  std::string part;
  if (!path.empty() && path[0] == '/') cur = "/";
  while (std::getline(ss, part, '/')) {
    if (part.empty()) continue;
    cur += part + "/";
    if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
      throw dtn::io_error("cannot create the output folder " + cur + ": " + std::strerror(errno));
  }
}

// Resolves the data folders and says precisely what is missing.
inline void resolve_paths(Options& o) {
  if (o.source_dir.empty() || o.mnist_dir.empty()) {
    if (o.data_dir.empty())
      throw dtn::argument_error(
          "no data: give --data-dir DIR (holding mnist/ and synthdigits/ or svhn/) or set DTN_DATA_DIR, or give "
          "--source-dir and --mnist-dir (scripts/download_data.sh fetches the official files)");
    if (o.mnist_dir.empty()) o.mnist_dir = o.data_dir + "/mnist";
    if (o.source_dir.empty())
      o.source_dir = file_exists(o.data_dir + "/synthdigits") ? o.data_dir + "/synthdigits" : o.data_dir + "/svhn";
  }
  if (!file_exists(o.source_dir)) throw dtn::io_error("source data folder " + o.source_dir + " does not exist");
  if (!file_exists(o.mnist_dir)) throw dtn::io_error("MNIST folder " + o.mnist_dir + " does not exist");
  if (o.source_name.empty()) {
    std::string lower = o.source_dir;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    o.source_name = lower.find("synth") != std::string::npos ? "SynthDigits" : "SVHN";
  }
}

// Puts a uint8 batch on the device as float in [-1, 1], resized to 32 x 32 where needed
// (MNIST is 28 x 28; bilinear as in the paper's protocol).
template <class Dev>
struct DeviceImages {
  dtn::Tensor<unsigned char, Dev> u8;
  dtn::Tensor<float, Dev> raw, out;
  dtn::Tensor<int, Dev> labels;
  dtn::View<const float, Dev> load(const std::uint8_t* pixels, const int* lab, int n, int c, int h, int w) {
    const std::size_t count = static_cast<std::size_t>(n) * c * h * w;
    u8.resize(dtn::Shape{static_cast<std::int64_t>(count)});
    dtn::Copy<Dev, dtn::Cpu>::run(u8.data(), pixels, count);
    raw.resize(dtn::Shape{n, c, h, w});
    dtn::Backend<Dev>::u8_to_signed(count, u8.data(), raw.data());
    if (lab) {
      labels.resize(dtn::Shape{n});
      dtn::Copy<Dev, dtn::Cpu>::run(labels.data(), lab, sizeof(int) * static_cast<std::size_t>(n));
    }
    if (h == 32 && w == 32) return raw.view();
    out.resize(dtn::Shape{n, c, 32, 32});
    dtn::ResizeGeom g;
    g.n = n;
    g.c = c;
    g.h_in = h;
    g.w_in = w;
    g.h_out = g.w_out = 32;
    dtn::Backend<Dev>::resize_bilinear_forward(g, raw.data(), out.data());
    return out.view();
  }
  dtn::View<const float, Dev> load(const dtn::data::Batch& b) { return load(b.pixels, b.labels, b.n, b.c, b.h, b.w); }
};

template <class Dev>
int count_correct(dtn::View<const float, Dev> logits, const std::uint8_t* labels, int n) {
  dtn::Tensor<int, Dev> pred(dtn::Shape{n});
  dtn::Backend<Dev>::argmax_rows(n, static_cast<int>(logits.size() / static_cast<std::size_t>(n)), logits.data,
                                 pred.data());
  std::vector<int> p = dtn::to_vector(pred.view());
  int ok = 0;
  for (int i = 0; i < n; ++i) ok += p[static_cast<std::size_t>(i)] == labels[i];
  return ok;
}

// Accuracy of `classify` (device logits from a device batch) over a whole set.
template <class Dev, class Classify>
double accuracy(const dtn::data::ImageSet& set, long limit, int batch, Classify&& classify) {
  DeviceImages<Dev> dev;
  const long n = limit > 0 ? std::min<long>(limit, set.n) : set.n;
  long correct = 0;
  for (long i = 0; i < n; i += batch) {
    const int b = static_cast<int>(std::min<long>(batch, n - i));
    auto x = dev.load(set.sample(static_cast<std::size_t>(i)), nullptr, b, set.c, set.h, set.w);
    correct += count_correct<Dev>(classify(x), set.labels.data() + i, b);
  }
  return n > 0 ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
}

// Trains a classifier made of a body network and an optional head on a labelled set (Adam at
// --clf-lr, dropped tenfold for the last quarter of the steps).
template <class Dev, class Body, class Head>
void train_classifier(const char* label, Body& body, Head* head, const dtn::data::ImageSet& set, const Options& o,
                      long steps, std::uint64_t seed) {
  dtn::data::Batcher batcher(set, o.batch, seed);
  dtn::AdamConfig cfg{o.clf_lr, 0.9, 0.999, 1e-8, 0.0};
  dtn::Adam<float, Dev> opt_body(body, cfg);
  std::unique_ptr<dtn::Adam<float, Dev>> opt_head;
  if (head) opt_head = std::make_unique<dtn::Adam<float, Dev>>(*head, cfg);
  dtn::CrossEntropyLoss<float, Dev> ce;
  DeviceImages<Dev> dev;
  dtn::io::Progress progress(label, steps);
  double smooth = 0;
  body.train();
  const long decay_at = steps - steps / 4 + 1;  // the last quarter of the steps runs at lr / 10
  for (long s = 1; s <= steps; ++s) {
    if (s == decay_at && steps >= 4) {
      opt_body.set_lr(cfg.lr * 0.1);
      if (opt_head) opt_head->set_lr(cfg.lr * 0.1);
    }
    auto x = dev.load(batcher.next());
    auto feat = body.forward(x);
    auto logits = head ? head->forward(feat) : feat;
    ce.compute(logits, dev.labels.view());
    body.zero_grad();
    if (head) {
      head->zero_grad();
      body.backward(head->backward(ce.grad(), true), false);
      opt_head->step();
    } else {
      body.backward(ce.grad(), false);
    }
    opt_body.step();
    if (s % 10 == 0 || s == steps) {
      const double l = ce.value();
      if (!std::isfinite(l))
        throw dtn::numeric_error(std::string(label) + ": step " + std::to_string(s) + ", cross-entropy is " +
                                 std::to_string(l));
      smooth = s == 10 ? l : 0.9 * smooth + 0.1 * l;
      char buf[64];
      std::snprintf(buf, sizeof buf, "loss %.4f", smooth);
      progress.update(s, static_cast<double>(s) * o.batch, buf);
    }
  }
  progress.finish();
  body.eval();
}

// Runs DTN steps: on the CPU one step() each; on the GPU the whole step as one CUDA graph
// (dtn::cuda::GraphStep), falling back to plain steps if the graph cannot be captured.
template <class Dev, class Trainer>
struct StepRunner {
  Trainer& trainer;
  explicit StepRunner(Trainer& t, bool /*graph*/) : trainer(t) {}
  dtn::DtnLosses step(dtn::View<const float, Dev> xs, dtn::View<const float, Dev> xt) { return trainer.step(xs, xt); }
  const char* mode() const { return "eager"; }
};
#if defined(__CUDACC__)
template <class Trainer>
struct StepRunner<dtn::Cuda, Trainer> {
  Trainer& trainer;
  dtn::cuda::GraphStep<Trainer> graph;
  bool use_graph;
  // A deferred (graph) step does one D and one g update; other update counts run eagerly.
  StepRunner(Trainer& t, bool g)
      : trainer(t), graph(t), use_graph(g && t.config().d_updates == 1 && t.config().g_updates == 1) {}
  dtn::DtnLosses step(dtn::View<const float, dtn::Cuda> xs, dtn::View<const float, dtn::Cuda> xt) {
    if (!use_graph) return trainer.step(xs, xt);
    try {
      return graph.step(xs, xt);
    } catch (const dtn::cuda_error& e) {
      if (graph.captured()) throw;  // a failure after capture is a real error
      std::fprintf(stderr, "warning: the DTN step could not be captured as a CUDA graph (%s); running it eagerly\n",
                   e.what());
      use_graph = false;
      graph.reset();
      return trainer.step(xs, xt);
    }
  }
  const char* mode() const { return use_graph ? "CUDA graph" : "eager"; }
};
#endif

template <class Dev>
int run_pipeline(Options o) {
  using namespace dtn;
  resolve_paths(o);
  make_dirs(o.out_dir);
  if (o.threads > 0) set_num_threads(o.threads);
  const std::string src = o.source_name;
  std::printf("dtn %s svhn_to_mnist: %s -> MNIST on %s, seed %llu, output %s\n", DTN_VERSION_STRING, src.c_str(),
              o.device.c_str(), static_cast<unsigned long long>(o.seed), o.out_dir.c_str());
  if (o.threads > 1 && !has_openmp())
    std::printf("note: this build has no OpenMP: the CPU runs on one thread, not the %d asked for\n", o.threads);
  if (src != "SVHN")
    std::printf("note: the source domain is %s, a SYNTHETIC stand-in for SVHN: results are %s->MNIST, not SVHN\n",
                src.c_str(), src.c_str());
  auto t0 = std::chrono::steady_clock::now();
  auto minutes = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 60.0; };

  // ---- data (uint8 in memory; scaled per batch on the device). The split f is pretrained on
  // is held only during stage (a) when it is not the DTN's training split: SVHN extra is 1.6 GB.
  const data::ImageSet src_test = data::load_svhn(o.source_dir, "test");
  const data::ImageSet mnist_train = data::load_mnist(o.mnist_dir, "train");
  const data::ImageSet mnist_test = data::load_mnist(o.mnist_dir, "test");
  data::ImageSet src_train;  // the source train split, for the DTN (and f when --f-split train)
  data::ImageSet src_val;    // its last --val-size images, held out from f and the DTN
  // The source train split less its held-out tail: model selection never looks at a test split.
  auto split_validation = [&](data::ImageSet& train) {
    if (o.val_size <= 0) return;
    src_val = data::split_tail(train, static_cast<std::size_t>(o.val_size));
    std::printf("data: %s train: last %d images held out for validation, %d left for training\n", src.c_str(),
                src_val.n, train.n);
  };
  std::printf("data: %s test %d, MNIST train %d, test %d\n", src.c_str(), src_test.n, mnist_train.n, mnist_test.n);

  std::ofstream results(o.out_dir + "/results.txt");
  auto report = [&](const std::string& line) {
    std::printf("%s\n", line.c_str());
    results << line << "\n";
    results.flush();
  };
  char line[256];

  // ---- (a) pretrain f on the source domain
  Net<F, float, Dev> f(Shape{3, 32, 32}, "f", InitScheme::pytorch, o.seed);
  const std::string f_path = o.out_dir + "/f.safetensors", fhead_path = o.out_dir + "/f_head.safetensors";
  Net<FHead, float, Dev> fhead(f.output_sample_shape(), "f_head", InitScheme::pytorch, o.seed + 10);
  auto report_f = [&](const char* how) {
    fhead.eval();
    const double acc = accuracy<Dev>(src_test, o.eval_limit, o.eval_batch,
                                     [&](View<const float, Dev> x) { return fhead.forward(f.forward(x)); });
    std::snprintf(line, sizeof line, "(a) f: %s test accuracy %.2f%% (%s)", src.c_str(), 100 * acc, how);
    report(line);
  };
  if (o.reuse && file_exists(f_path)) {
    io::load_network(f_path, f);
    // Pretrained and frozen from here on, as after training: evaluation mode, or the accuracy
    // below would run on batch statistics and move f's running statistics (which the DTN's f
    // receives) toward the test split's (until 2026-12-05 it did: 98.08% against 98.24%).
    f.eval();
    std::printf("(a) f loaded from %s\n", f_path.c_str());
    if (file_exists(fhead_path)) {
      io::load_network(fhead_path, fhead);
      report_f(("loaded from " + f_path).c_str());
    }
  } else {
    data::ImageSet pretrain = data::load_svhn(o.source_dir, o.f_split);
    if (o.f_split == "train") split_validation(pretrain);
    std::printf("data: %s %s %d (pretraining f)\n", src.c_str(), o.f_split.c_str(), pretrain.n);
    train_classifier<Dev>("(a) pretrain f", f, &fhead, pretrain, o, o.f_steps, o.seed + 100);
    if (o.f_split == "train") src_train = std::move(pretrain);
    pretrain = data::ImageSet();  // frees SVHN extra before anything else is allocated
    io::save_network(f_path, f, o.f_steps);
    io::save_network(fhead_path, fhead, o.f_steps);
    const std::string how =
        "after " + std::to_string(o.f_steps) + " steps, batch " + std::to_string(o.batch) + ", " + o.f_split + " split";
    report_f(how.c_str());
  }

  // ---- (b) the MNIST evaluation classifier
  Net<MnistClassifier, float, Dev> clf(Shape{1, 32, 32}, "mnist_classifier", InitScheme::pytorch, o.seed + 20);
  const std::string clf_path = o.out_dir + "/mnist_classifier.safetensors";
  if (o.reuse && file_exists(clf_path)) {
    io::load_network(clf_path, clf);
    clf.eval();
    std::printf("(b) MNIST classifier loaded from %s\n", clf_path.c_str());
  } else {
    train_classifier<Dev>("(b) MNIST classifier", clf, static_cast<Net<FHead, float, Dev>*>(nullptr), mnist_train, o,
                          o.clf_steps, o.seed + 200);
    io::save_network(clf_path, clf, o.clf_steps);
  }
  {
    const double acc = accuracy<Dev>(mnist_test, 0, o.eval_batch, [&](View<const float, Dev> x) { return clf.forward(x); });
    std::snprintf(line, sizeof line, "(b) MNIST classifier: MNIST test accuracy %.2f%%", 100 * acc);
    report(line);
  }

  // ---- (c) DTN
  DtnConfig cfg;
  cfg.alpha = o.alpha;
  cfg.beta = o.beta;
  cfg.gamma = o.gamma;
  cfg.g_optim.lr = o.lr;
  cfg.d_optim.lr = o.d_lr > 0 ? o.d_lr : o.lr;
  cfg.d_updates = o.d_updates;
  cfg.g_updates = o.g_updates;
  cfg.seed = o.seed + 30;
  cfg.joint_batches = o.joint_batches;
  DomainTransfer<F, G, D, Dev> dtn(Shape{3, 32, 32}, Shape{1, 32, 32}, cfg);
  dtn.f().load_state_from(f);  // parameters and batch norm's running statistics
  if (src_train.n == 0) {
    src_train = data::load_svhn(o.source_dir, "train");
    split_validation(src_train);
    std::printf("data: %s train %d (DTN source)\n", src.c_str(), src_train.n);
  }
  data::Batcher src_batches(src_train, o.batch, o.seed + 300), tgt_batches(mnist_train, o.batch, o.seed + 400);
  const std::string ckpt = o.out_dir + "/dtn.safetensors";
  auto batcher_meta = [](const data::Batcher& b) {
    const data::BatcherState s = b.state(false);
    return std::to_string(s.seed) + " " + std::to_string(s.epoch) + " " + std::to_string(s.position);
  };
  auto restore_batcher = [](data::Batcher& b, const std::string& text) {
    data::BatcherState s = b.state(false);
    std::istringstream is(text);
    if (!(is >> s.seed >> s.epoch >> s.position)) throw io_error("checkpoint: malformed batcher state '" + text + "'");
    b.restore(s);
  };
  // Validation: the MNIST classifier on G(x) of the held-out source train images, every
  // --val-every steps; the best model so far is kept in dtn_best.safetensors.
  const std::string best_ckpt = o.out_dir + "/dtn_best.safetensors";
  double best_val = -1;
  long best_step = 0;
  auto checkpoint_meta = [&]() {
    std::map<std::string, std::string> m = {{"data.source", batcher_meta(src_batches)},
                                            {"data.target", batcher_meta(tgt_batches)}};
    if (best_step > 0) {
      m["val.best_accuracy"] = std::to_string(best_val);
      m["val.best_step"] = std::to_string(best_step);
    }
    return m;
  };
  // The average of g's weights (--g-average): evaluated beside g, saved in the same checkpoints.
  using GNet = typename DomainTransfer<F, G, D, Dev>::GNet;
  std::unique_ptr<WeightAverage<GNet>> g_avg;
  if (o.g_average > 0) g_avg = std::make_unique<WeightAverage<GNet>>(dtn.g(), o.g_average);
  auto save_checkpoint = [&](const std::string& path) {
    std::map<std::string, std::string> meta = checkpoint_meta();
    std::vector<io::TensorRecord> tensors;
    if (g_avg) g_avg->append_to(tensors, meta);
    dtn.save(path, meta, std::move(tensors));
  };
  if (o.resume) {
    const io::SafetensorsFile file = io::load_safetensors(ckpt);
    auto meta = dtn.load(file);
    if (g_avg) {
      if (file.metadata.count(g_avg->network().name() + ".updates")) {
        g_avg->load_from(file);
      } else {  // no update yet: the first one copies the resumed g
        std::printf("(c) %s holds no average of g's weights: the average starts again from step %lld\n", ckpt.c_str(),
                    static_cast<long long>(dtn.steps()));
      }
    }
    restore_batcher(src_batches, meta.at("data.source"));
    restore_batcher(tgt_batches, meta.at("data.target"));
    if (meta.count("val.best_step")) {
      best_val = std::stod(meta.at("val.best_accuracy"));
      best_step = std::stol(meta.at("val.best_step"));
    }
    std::printf("(c) resumed DTN from %s at step %lld\n", ckpt.c_str(), static_cast<long long>(dtn.steps()));
  }
  // Fixed images for the sample grids: the first 16 source test and MNIST test images.
  DeviceImages<Dev> grid_src, grid_tgt;
  const int gn = std::min(16, std::min(src_test.n, mnist_test.n));
  auto gs = grid_src.load(src_test.sample(0), nullptr, gn, src_test.c, src_test.h, src_test.w);
  auto gt = grid_tgt.load(mnist_test.sample(0), nullptr, gn, mnist_test.c, mnist_test.h, mnist_test.w);
  auto write_grid = [&](long step) {
    Tensor<float, Cpu> s = to<Cpu>(gs), t = to<Cpu>(gt);
    Tensor<float, Cpu> ts = to<Cpu>(dtn.transfer(gs));
    Tensor<float, Cpu> tt = to<Cpu>(dtn.transfer(gt));
    char name[64];
    std::snprintf(name, sizeof name, "/samples_%06ld.png", step);
    io::write_image_grid(o.out_dir + name, {s.view(), ts.view(), t.view(), tt.view()});
  };
  const bool validating = o.val_every > 0 && src_val.n > 0;
  std::ofstream val_csv, val_avg_csv;
  if (validating) {
    val_csv.open(o.out_dir + "/validation.csv", o.resume ? std::ios::app : std::ios::trunc);
    if (!o.resume) val_csv << "step,val_accuracy\n";
    if (g_avg) {
      const std::string path = o.out_dir + "/validation_g_average.csv";
      const bool append = o.resume && file_exists(path);
      val_avg_csv.open(path, append ? std::ios::app : std::ios::trunc);
      if (!append) val_avg_csv << "step,val_accuracy,updates\n";
    }
  }
  double last_val = -1, last_val_avg = -1;
  std::ofstream csv(o.out_dir + "/metrics.csv", o.resume ? std::ios::app : std::ios::trunc);
  if (!o.resume) csv << "step,L_D,L_D_source,L_D_target_fake,L_D_target_real,L_GANG,L_CONST,L_TID,L_TV,L_G,images_per_s\n";
  std::vector<io::PlotSeries> series = {{"L_D", {}}, {"L_GANG", {}}, {"L_CONST", {}}, {"L_TID", {}}, {"L_G", {}}};
  if (o.gamma > 0) series.push_back({"L_TV", {}});
  DeviceImages<Dev> xs_dev, xt_dev;
  StepRunner<Dev, DomainTransfer<F, G, D, Dev>> runner(dtn, !o.no_graph);
  const long first = dtn.steps() + 1, last = o.dtn_steps;
  io::Progress progress("(c) DTN", last);
  auto train_start = std::chrono::steady_clock::now();
  long done = 0;
  for (long s = first; s <= last; ++s) {
    auto xs = xs_dev.load(src_batches.next());
    auto xt = xt_dev.load(tgt_batches.next());
    DtnLosses l;
    try {
      l = runner.step(xs, xt);
    } catch (const numeric_error& e) {
      progress.finish();
      std::fprintf(stderr, "training stopped: %s\nthe last good checkpoint is %s\n", e.what(), ckpt.c_str());
      return 3;
    }
    if (g_avg) g_avg->update(dtn.g());
    ++done;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - train_start).count();
    const double ips = el > 0 ? 2.0 * o.batch * static_cast<double>(done) / el : 0;
    if (s % o.log_every == 0 || s == last) {
      csv << s << ',' << l.d << ',' << l.d_source << ',' << l.d_target_fake << ',' << l.d_target_real << ',' << l.gang
          << ',' << l.constancy << ',' << l.tid << ',' << l.tv << ',' << l.g << ',' << ips << '\n';
      csv.flush();
      const double vals[] = {l.d, l.gang, l.constancy, l.tid, l.g, l.tv};
      for (std::size_t k = 0; k < series.size(); ++k) series[k].points.emplace_back(static_cast<double>(s), vals[k]);
      char buf[200];
      int used = std::snprintf(buf, sizeof buf, "L_D %.3f L_GANG %.3f L_CONST %.4f L_TID %.4f", l.d, l.gang,
                               l.constancy, l.tid);
      if (last_val >= 0 && used > 0 && used < static_cast<int>(sizeof buf))
        used += std::snprintf(buf + used, sizeof buf - static_cast<std::size_t>(used), " | val %.2f%%", 100 * last_val);
      if (last_val_avg >= 0 && used > 0 && used < static_cast<int>(sizeof buf))
        std::snprintf(buf + used, sizeof buf - static_cast<std::size_t>(used), " (g average %.2f%%)", 100 * last_val_avg);
      progress.update(s, 2.0 * o.batch * static_cast<double>(s - first + 1), buf);
    }
    if (s % o.sample_every == 0 || s == last) write_grid(s);
    const bool out_of_time = o.time_limit_min > 0 && minutes() > o.time_limit_min;
    if (validating && (s % o.val_every == 0 || s == last || out_of_time)) {
      last_val = accuracy<Dev>(src_val, 0, o.eval_batch,
                               [&](View<const float, Dev> x) { return clf.forward(dtn.transfer(x)); });
      val_csv << s << ',' << last_val << '\n';
      val_csv.flush();
      if (g_avg) {
        last_val_avg = accuracy<Dev>(src_val, 0, o.eval_batch, [&](View<const float, Dev> x) {
          return clf.forward(dtn.transfer(x, g_avg->network()));
        });
        val_avg_csv << s << ',' << last_val_avg << ',' << g_avg->updates() << '\n';
        val_avg_csv.flush();
      }
      if (last_val > best_val) {
        best_val = last_val;
        best_step = s;
        save_checkpoint(best_ckpt);
      }
    }
    if (s % o.ckpt_every == 0 || s == last || out_of_time) save_checkpoint(ckpt);
    if (out_of_time) {
      progress.finish();
      std::printf("(c) time limit of %.1f min reached at step %ld\n", o.time_limit_min, s);
      write_grid(s);
      break;
    }
  }
  progress.finish();
  const double train_min = std::chrono::duration<double>(std::chrono::steady_clock::now() - train_start).count() / 60.0;
  io::PlotOptions po;
  po.title = "DTN losses, " + src + " -> MNIST";
  po.log_y = true;
  if (!series[0].points.empty()) io::write_plot_svg(o.out_dir + "/losses.svg", series, po);
  std::snprintf(line, sizeof line,
                "(c) DTN: %lld steps (batch %d + %d), %.1f min of training (%s), alpha %g beta %g gamma %g, "
                "%d D / %d g updates per step, lr D %g g %g",
                static_cast<long long>(dtn.steps()), o.batch, o.batch, train_min, runner.mode(), o.alpha, o.beta, o.gamma,
                cfg.d_updates, cfg.g_updates, cfg.d_optim.lr, cfg.g_optim.lr);
  report(line);

  // ---- (d) evaluation: the MNIST classifier on G(x) over the source test split
  const double acc_dtn = accuracy<Dev>(src_test, o.eval_limit, o.eval_batch,
                                       [&](View<const float, Dev> x) { return clf.forward(dtn.transfer(x)); });
  // The same with g's batch norm using each evaluation batch's own statistics (as in training,
  // where g sees source and target batches separately, so its running statistics are a blend
  // of both domains). Reported beside the headline figure above, which uses running statistics.
  // Training-mode batch norm also updates the running statistics: they are restored afterwards.
  Tensor<float, Dev> g_running = to<Dev>(View<const float, Dev>(dtn.g().buffers()));
  const double acc_dtn_batch = accuracy<Dev>(src_test, o.eval_limit, o.eval_batch,
                                             [&](View<const float, Dev> x) { return clf.forward(dtn.transfer(x, true)); });
  copy(View<const float, Dev>(g_running.view()), dtn.g().buffers());
  double acc_avg = -1;
  if (g_avg && g_avg->updates() > 0)
    acc_avg = accuracy<Dev>(src_test, o.eval_limit, o.eval_batch, [&](View<const float, Dev> x) {
      return clf.forward(dtn.transfer(x, g_avg->network()));
    });
  const data::ImageSet src_gray = data::to_grayscale(src_test);
  const double acc_raw =
      accuracy<Dev>(src_gray, o.eval_limit, o.eval_batch, [&](View<const float, Dev> x) { return clf.forward(x); });
  const long evaluated = o.eval_limit > 0 ? std::min<long>(o.eval_limit, src_test.n) : src_test.n;
  std::snprintf(line, sizeof line, "(d) %s->MNIST: MNIST classifier on G(x), %s test (%ld images): %.2f%%", src.c_str(),
                src.c_str(), evaluated, 100 * acc_dtn);
  report(line);
  std::snprintf(line, sizeof line, "(d) the same, g's batch norm on each evaluation batch's statistics (batch %d): %.2f%%",
                o.eval_batch, 100 * acc_dtn_batch);
  report(line);
  if (acc_avg >= 0) {
    std::snprintf(line, sizeof line,
                  "(d) the average of g's weights (exponential, decay %g, over %lld updates): %s->MNIST %.2f%% on %s test",
                  g_avg->decay(), static_cast<long long>(g_avg->updates()), src.c_str(), 100 * acc_avg, src.c_str());
    report(line);
  }
  std::snprintf(line, sizeof line, "(d) no adaptation: MNIST classifier on grayscale %s test images: %.2f%%", src.c_str(),
                100 * acc_raw);
  report(line);
  if (best_step > 0 && file_exists(best_ckpt)) {
    // Model selection on the validation images only; the test split is read once per model
    // (when the best model is the final one, its accuracy is the one measured above).
    double acc_best = acc_dtn;
    if (best_step != dtn.steps()) {
      dtn.load(best_ckpt);
      acc_best = accuracy<Dev>(src_test, o.eval_limit, o.eval_batch,
                               [&](View<const float, Dev> x) { return clf.forward(dtn.transfer(x)); });
    }
    std::snprintf(line, sizeof line,
                  "(d) best-validation model (step %ld, %.2f%% on %d held-out %s train images): %s->MNIST %.2f%% on %s test",
                  best_step, 100 * best_val, src_val.n, src.c_str(), src.c_str(), 100 * acc_best, src.c_str());
    report(line);
  }
  std::snprintf(line, sizeof line, "total wall time %.1f min on %s", minutes(), o.device.c_str());
  report(line);
  return 0;
}

}  // namespace digits
