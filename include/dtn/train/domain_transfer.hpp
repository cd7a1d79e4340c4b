#pragma once
// DomainTransfer<F, G, D, Dev>: the Domain Transfer Network trainer (Taigman et al., ICLR 2017).
//
//   f: frozen feature extractor (pretrained on the source domain), G = g o f,
//   D: three-class discriminator: class 0 = G(source), 1 = G(target), 2 = real target.
//   L_D    = CE(D(G(xs)), 0) + CE(D(G(xt)), 1) + CE(D(xt), 2)
//   L_GANG = CE(D(G(xs)), 2) + CE(D(G(xt)), 2)
//   L_CONST = MSE(f(xs), f(G(xs)))     L_TID = MSE(xt, G(xt))
//   L_TV   = mean over both batches of TV(G(x)) (B = 1, see loss/losses.hpp)
//   L_G    = L_GANG + alpha L_CONST + beta L_TID + gamma L_TV
// Each step updates D with L_D (g fixed), then g with L_G (D fixed); f never changes, but the
// gradient of L_CONST flows through it into g. Batch norm takes its statistics per batch, as in
// the usual implementations: D and g see the source and the target batch (and D the real target
// batch) as batches of their own, whether they run on each separately or, with
// DtnConfig::joint_batches, once on all of them (Network::forward with segments).
//
// F, G and D are the user's own Sequential<...> specs. Images: source [N, Cs, H, W], target
// [N, Ct, H, W], both in [-1, 1]; where f reads more channels than an image has (f takes RGB,
// MNIST and G's outputs are gray), the image is repeated across channels (1 -> 3).
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../backend/backend.hpp"
#include "../io/checkpoint.hpp"
#include "../loss/losses.hpp"
#include "../nn/sequential.hpp"
#include "../optim/adam.hpp"

namespace dtn {

enum class NonFinitePolicy {
  stop,       // throw dtn::numeric_error naming the step and the loss term (the default)
  skip_batch  // leave the parameters unchanged for this update and carry on
};

struct DtnConfig {
  double alpha = 15.0;   // weight of L_CONST (digits: 15)
  double beta = 15.0;    // weight of L_TID (digits: 15)
  double gamma = 0.0;    // weight of L_TV (digits: 0)
  double tv_eps = 1e-8;  // smoothing of the TV root (loss/losses.hpp)
  AdamConfig d_optim{2e-4, 0.5, 0.999, 1e-8, 0.0};
  AdamConfig g_optim{2e-4, 0.5, 0.999, 1e-8, 0.0};
  int d_updates = 1;  // D updates per step
  int g_updates = 1;  // g updates per step
  InitScheme init = InitScheme::dcgan;
  std::uint64_t seed = 0;
  NonFinitePolicy on_nonfinite = NonFinitePolicy::stop;
  bool fuse_layers = true;  // batch norm and its activation as one pass (Network::set_fusion)
  // Fewer, larger passes: g runs once on both batches, D once per update on all of its batches
  // ([G(xs), G(xt), xt] for L_D, [G(xt), G(xs)] for L_GANG), each batch a segment of its own for
  // batch norm (Network::forward with segments). The same method and the same results up to the
  // order of float additions in the parameter gradients; off: one pass per batch.
  bool joint_batches = false;
};

// Every loss term of one step (the last update of each kind).
struct DtnLosses {
  double d = 0, d_source = 0, d_target_fake = 0, d_target_real = 0;
  double gang = 0, constancy = 0, tid = 0, tv = 0, g = 0;
  bool skipped_d = false, skipped_g = false;  // with NonFinitePolicy::skip_batch
};

template <class F, class G, class D, class Dev = Cpu, class T = float>
class DomainTransfer {
 public:
  using FNet = Net<F, T, Dev>;
  using GNet = Net<G, T, Dev>;
  using DNet = Net<D, T, Dev>;

  // source_sample / target_sample: per-image shapes, e.g. {3, 32, 32} and {1, 32, 32}.
  DomainTransfer(Shape source_sample, Shape target_sample, DtnConfig cfg = {})
      : cfg_(cfg),
        source_sample_(source_sample),
        target_sample_(target_sample),
        f_(f_input_shape(source_sample), "f", cfg.init, cfg.seed),
        g_(f_.output_sample_shape(), "g", cfg.init, cfg.seed + 1),
        g_src_(f_.output_sample_shape(), "g", cfg.init, cfg.seed + 1),
        d_(target_sample, "d", cfg.init, cfg.seed + 2),
        g_opt_(g_, cfg.g_optim),
        d_opt_(d_, cfg.d_optim),
        tv_{TotalVariationLoss<T, Dev>(static_cast<T>(cfg.tv_eps)), TotalVariationLoss<T, Dev>(static_cast<T>(cfg.tv_eps))} {
    g_src_.share_parameters_of(g_);
    f_.set_fusion(cfg.fuse_layers);
    g_.set_fusion(cfg.fuse_layers);
    g_src_.set_fusion(cfg.fuse_layers);
    d_.set_fusion(cfg.fuse_layers);
    if (g_.output_sample_shape() != target_sample)
      throw shape_error("DomainTransfer: g produces images of shape " + g_.output_sample_shape().str() +
                        " but the target domain's images are " + target_sample.str());
    check_channels("source", source_sample);
    check_channels("target", target_sample);
    if (cfg.d_updates < 1 || cfg.g_updates < 1) throw argument_error("DomainTransfer: d_updates and g_updates must be >= 1");
    for (double w : {cfg.alpha, cfg.beta, cfg.gamma})
      if (!(w >= 0 && std::isfinite(w))) throw argument_error("DomainTransfer: alpha, beta and gamma must be finite and >= 0");
    f_.eval();
    f_.freeze();
  }

  FNet& f() { return f_; }
  GNet& g() { return g_; }
  DNet& d() { return d_; }
  Adam<T, Dev>& g_optimizer() { return g_opt_; }
  Adam<T, Dev>& d_optimizer() { return d_opt_; }
  const DtnConfig& config() const { return cfg_; }
  std::int64_t steps() const { return step_; }

  // One training step on a source batch xs and a target batch xt (any batch sizes). Reads the
  // losses back to the host after each update and applies the non-finite policy before any
  // parameter changes.
  DtnLosses step(View<const T, Dev> xs, View<const T, Dev> xt) {
    DtnLosses out;
    ++step_;
    run(xs, xt, false, &out);
    return out;
  }

  // The same step in three parts, with no host synchronisation inside run_deferred(), so that it
  // can be captured once as a CUDA graph and replayed (dtn/train/graph_step.cuh):
  //   prepare_deferred()   writes the Adam scalars of the coming step to device memory;
  //   run_deferred(xs, xt) the whole step; the non-finite guard runs on the device (an update
  //                        whose gradient holds a NaN or Inf is not applied);
  //   finish_deferred()    reads every loss back, advances the step counters and applies the
  //                        policy (NonFinitePolicy::stop throws, naming the step and the term).
  // With d_updates = g_updates = 1 the result is bitwise that of step().
  void prepare_deferred() {
    if (cfg_.d_updates != 1 || cfg_.g_updates != 1)
      throw argument_error("DomainTransfer: deferred (graph) steps need d_updates = g_updates = 1");
    AdamStep<T> host[2] = {d_opt_.scalars(d_opt_.steps() + 1), g_opt_.scalars(g_opt_.steps() + 1)};
    constexpr std::size_t count = 2 * sizeof(AdamStep<T>) / sizeof(T);
    adam_scalars_.resize(Shape{static_cast<std::int64_t>(count)});
    Copy<Dev, Cpu>::run(adam_scalars_.data(), host, sizeof host);
  }
  // The step's nine loss values are gathered on the device at its end, so that finish_deferred()
  // reads them back in one copy (one host round trip, not nine).
  void run_deferred(View<const T, Dev> xs, View<const T, Dev> xt) {
    run(xs, xt, true, nullptr);
    const View<const T, Dev> losses[kDeferredLosses] = {
        ce_[0].loss(),     ce_[1].loss(),   ce_[2].loss(),  ce_[3].loss(), ce_[4].loss(),
        mse_const_.loss(), mse_tid_.loss(), tv_[0].loss(), tv_[1].loss()};
    for (std::size_t i = 0; i < kDeferredLosses; ++i)
      Copy<Dev, Dev>::run(deferred_losses_.data() + i, losses[i].data, sizeof(T));
  }
  DtnLosses finish_deferred() {
    ++step_;
    DtnLosses out;
    std::vector<T> v(kDeferredLosses);
    Copy<Cpu, Dev>::run(v.data(), deferred_losses_.data(), kDeferredLosses * sizeof(T));
    int flags[2] = {0, 0};
    Copy<Cpu, Dev>::run(flags, nonfinite_.data(), sizeof flags);
    fill_d(out, v[0], v[1], v[2]);
    fill_g(out, v[3], v[4], v[5], v[6], cfg_.gamma > 0 ? 0.5 * (static_cast<double>(v[7]) + v[8]) : 0.0);
    if (flags[0] == 0) d_opt_.advance();
    if (flags[1] == 0) g_opt_.advance();
    out.skipped_d = flags[0] != 0;
    out.skipped_g = flags[1] != 0;
    if ((flags[0] || flags[1]) && cfg_.on_nonfinite == NonFinitePolicy::stop) {
      const bool d = flags[0] != 0;
      std::vector<T> terms = d ? std::vector<T>{v[0], v[1], v[2]} : std::vector<T>{v[3], v[4], v[5], v[6]};
      const std::vector<const char*> names =
          d ? std::vector<const char*>{"L_D(source)", "L_D(target fake)", "L_D(target real)"}
            : std::vector<const char*>{"L_GANG(target)", "L_GANG(source)", "L_CONST", "L_TID"};
      for (std::size_t i = 0; i < terms.size(); ++i)
        if (!std::isfinite(static_cast<double>(terms[i]))) reject(d ? "D" : "g", names[i], terms[i]);
      reject(d ? "D" : "g", "gradient", static_cast<T>(flags[d ? 0 : 1]));
    }
    return out;
  }
  DtnLosses step_deferred(View<const T, Dev> xs, View<const T, Dev> xt) {
    prepare_deferred();
    run_deferred(xs, xt);
    return finish_deferred();
  }

  // G(x) = g(f(x)) for source or target images. By default g runs in evaluation mode (running
  // batch-norm statistics); batch_stats = true uses the batch's own statistics instead.
  View<const T, Dev> transfer(View<const T, Dev> x, bool batch_stats = false) {
    View<const T, Dev> y = transfer(x, g_, batch_stats);
    g_.train(true);
    return y;
  }
  // The same through another network of g's type in place of g, e.g. the average of g's weights
  // (WeightAverage::network()); its training mode is left as it was.
  View<const T, Dev> transfer(View<const T, Dev> x, GNet& g, bool batch_stats = false) {
    if (x.shape.rank() != 4) throw_shape("DomainTransfer::transfer", "an [N, C, H, W] batch", x.shape);
    View<const T, Dev> feat = f_.forward(as_f_input(x, xt3_));
    const bool was_training = g.is_training();
    g.train(batch_stats);
    View<const T, Dev> y = g.forward(feat);
    g.train(was_training);
    return y;
  }

  // Everything needed to resume: f, g, D (parameters and running statistics), both Adam states,
  // the step count, and the caller's own metadata (e.g. the data order and RNG state).
  // `tensors` adds the caller's own tensors (e.g. WeightAverage::append_to's), in the same file
  // and the same atomic write; their names must differ from the trainer's.
  void save(const std::string& path, const std::map<std::string, std::string>& extra = {},
            std::vector<io::TensorRecord> tensors = {}) {
    std::vector<io::TensorRecord> recs = std::move(tensors);
    io::append_network(recs, f_);
    io::append_network(recs, g_);
    io::append_network(recs, d_);
    std::map<std::string, std::string> meta = io::checkpoint_metadata(signature(), step_);
    io::append_adam(recs, meta, "opt.g", g_opt_);
    io::append_adam(recs, meta, "opt.d", d_opt_);
    for (const auto& kv : extra) {
      if (meta.count(kv.first)) throw argument_error("DomainTransfer::save: metadata key \"" + kv.first + "\" is reserved");
      meta[kv.first] = kv.second;
    }
    io::save_safetensors(path, recs, meta);
  }
  // Restores a checkpoint written by save() for the same networks; returns its metadata.
  std::map<std::string, std::string> load(const std::string& path) { return load(io::load_safetensors(path)); }
  // The same from a file already read (io::load_safetensors), e.g. to read the caller's own
  // tensors from it too (WeightAverage::load_from) without reading it twice.
  std::map<std::string, std::string> load(const io::SafetensorsFile& file) {
    const std::int64_t step = io::check_checkpoint(file, signature());
    io::load_network(file, f_);
    io::load_network(file, g_);
    io::load_network(file, d_);
    io::load_adam(file, "opt.g", g_opt_);
    io::load_adam(file, "opt.d", d_opt_);
    step_ = step;
    return file.metadata;
  }
  std::string signature() const {
    return "DomainTransfer f{" + f_.signature() + "} g{" + g_.signature() + "} d{" + d_.signature() + "}";
  }

 private:
  static Shape f_input_shape(const Shape& source) {
    if (source.rank() != 3) throw_shape("DomainTransfer", "a [C, H, W] source image shape", source);
    return source;
  }
  void check_channels(const char* which, const Shape& s) const {
    const std::int64_t fc = f_.input_sample_shape()[0];
    if (s.rank() != 3 || s[1] != f_.input_sample_shape()[1] || s[2] != f_.input_sample_shape()[2] || fc % s[0] != 0)
      throw shape_error(std::string("DomainTransfer: ") + which + " images " + s.str() + " cannot be fed to f, which reads " +
                        f_.input_sample_shape().str());
  }
  static void check_batch(const char* which, const Shape& got, const Shape& sample) {
    if (got.rank() != 4 || got[0] < 1 || got[1] != sample[0] || got[2] != sample[1] || got[3] != sample[2])
      throw shape_error(std::string("DomainTransfer::step: ") + which + " batch expected [N, " + std::to_string(sample[0]) +
                        ", " + std::to_string(sample[1]) + ", " + std::to_string(sample[2]) + "], got " + got.str());
  }
  // x itself when it has f's channel count, else x repeated across channels into buf.
  View<const T, Dev> as_f_input(View<const T, Dev> x, Tensor<T, Dev>& buf) {
    const std::int64_t fc = f_.input_sample_shape()[0];
    if (x.shape[1] == fc) return x;
    if (fc % x.shape[1] != 0)
      throw shape_error("DomainTransfer: images " + x.shape.str() + " cannot be repeated to f's " + std::to_string(fc) +
                        " channels");
    buf.resize(Shape{x.shape[0], fc, x.shape[2], x.shape[3]});
    Backend<Dev>::repeat_channels_forward(static_cast<int>(x.shape[0]), static_cast<int>(x.shape[1]),
                                          static_cast<int>(fc / x.shape[1]), static_cast<long>(x.shape[2] * x.shape[3]),
                                          x.data, buf.data());
    return buf.view();
  }
  // src into dst's samples [first, first + src's N).
  static void copy_rows(Tensor<T, Dev>& dst, std::int64_t first, View<const T, Dev> src) {
    Copy<Dev, Dev>::run(dst.view().slice(first, src.shape[0]).data, src.data, src.size() * sizeof(T));
  }
  // The label tensor of class cls for a batch of n, made once per (cls, n): a step whose source
  // and target batches differ in size needs two of class 2, and remaking them every step would
  // allocate (and copy from the host) inside a captured step graph.
  Tensor<int, Dev>& targets(int cls, int n) {
    auto it = targets_.find({cls, n});
    if (it == targets_.end()) it = targets_.emplace(std::make_pair(cls, n), constant_targets<Dev>(n, cls)).first;
    return it->second;
  }
  void collect(std::vector<T>& host, const std::vector<View<const T, Dev>>& scalars) {
    host.resize(scalars.size());
    for (std::size_t i = 0; i < scalars.size(); ++i) Copy<Cpu, Dev>::run(&host[i], scalars[i].data, sizeof(T));
  }
  // True when every loss and the gradient arena are finite; otherwise applies the policy.
  bool guard(const char* phase, const std::vector<const char*>& names, const std::vector<T>& values,
             View<T, Dev> grads) {
    for (std::size_t i = 0; i < values.size(); ++i)
      if (!std::isfinite(static_cast<double>(values[i]))) return reject(phase, names[i], values[i]);
    Backend<Dev>::count_nonfinite(grads.size(), grads.data, nonfinite_.data());
    int bad = 0;
    Copy<Cpu, Dev>::run(&bad, nonfinite_.data(), sizeof(int));
    if (bad) return reject(phase, "gradient", static_cast<T>(bad));
    return true;
  }
  bool reject(const char* phase, const char* term, T value) {
    if (cfg_.on_nonfinite == NonFinitePolicy::skip_batch) return false;
    const std::string what = std::string(term) == "gradient"
                                 ? std::to_string(static_cast<long>(value)) + " non-finite gradient values"
                                 : std::string(term) + " = " + std::to_string(static_cast<double>(value));
    throw numeric_error("DomainTransfer: step " + std::to_string(step_) + ", " + phase + " update: " + what +
                        " (parameters left unchanged)");
  }

  // f(xs), f(xt), G(xs), G(xt): rows of feat_ and of dimgs_ (dimgs_ = [G(xs), G(xt), xt]).
  View<const T, Dev> fs() const { return feat_.view().slice(0, ns_); }
  View<const T, Dev> ft() const { return feat_.view().slice(ns_, nt_); }
  View<const T, Dev> gs() const { return dimgs_.view().slice(0, ns_); }
  View<const T, Dev> gt() const { return dimgs_.view().slice(ns_, nt_); }

  void run(View<const T, Dev> xs, View<const T, Dev> xt, bool deferred, DtnLosses* out) {
    check_batch("source", xs.shape, source_sample_);
    check_batch("target", xt.shape, target_sample_);
    // f is frozen: its features of both batches, feat_ = [f(xs), f(xt)], serve the D and the g
    // updates.
    ns_ = xs.shape[0];
    nt_ = xt.shape[0];
    // One pass per batch even with joint_batches: f's passes are large already, and f's buffers
    // at both batches' size would stay allocated for nothing.
    View<const T, Dev> fs = f_.forward(as_f_input(xs, xs3_));
    feat_.resize(fs.shape.with_batch(ns_ + nt_));
    copy_rows(feat_, 0, fs);
    copy_rows(feat_, ns_, f_.forward(as_f_input(xt, xt3_)));
    g_.train();
    g_src_.train();
    d_.train();
    for (int k = 0; k < cfg_.d_updates; ++k) update_d(xt, deferred, out);
    for (int k = 0; k < cfg_.g_updates; ++k) update_g(xt, deferred, out);
  }
  static void fill_d(DtnLosses& out, T s, T tf, T tr) {
    out.d_source = s;
    out.d_target_fake = tf;
    out.d_target_real = tr;
    out.d = static_cast<double>(s) + tf + tr;
  }
  void fill_g(DtnLosses& out, T gang_t, T gang_s, T cst, T tid, double tv) const {
    out.gang = static_cast<double>(gang_t) + gang_s;
    out.constancy = cst;
    out.tid = tid;
    out.tv = tv;
    out.g = out.gang + cfg_.alpha * out.constancy + cfg_.beta * out.tid + cfg_.gamma * out.tv;
  }
  // Applies an optimizer step: on the host path after the guard, on the deferred path guarded
  // on the device by the count of non-finite gradient values (flag slot 0 for D, 1 for g).
  bool apply(Adam<T, Dev>& opt, View<T, Dev> grads, bool deferred, int slot, const char* phase,
             const std::vector<const char*>& names, const std::vector<T>& values) {
    if (deferred) {
      Backend<Dev>::count_nonfinite(grads.size(), grads.data, nonfinite_.data() + slot);
      opt.step_device(reinterpret_cast<const AdamStep<T>*>(adam_scalars_.data()) + slot, nonfinite_.data() + slot);
      return true;
    }
    if (!guard(phase, names, values, grads)) return false;
    opt.step();
    return true;
  }

  void update_d(View<const T, Dev> xt, bool deferred, DtnLosses* out) {
    d_.freeze(false);
    d_.zero_grad();
    // G(xs) and G(xt) with g fixed, kept for the g update that follows, which back-propagates
    // through both without running g forward again: g_ runs both batches as two segments
    // (joint_batches), or g_src_ (g's parameters, its own caches) the source batch and g_ the target.
    forward_g();
    const int ns = static_cast<int>(ns_), nt = static_cast<int>(nt_);
    if (cfg_.joint_batches) {
      // One pass of D on [G(xs), G(xt), xt]: three segments, in the order of the separate passes.
      copy_rows(dimgs_, ns_ + nt_, xt);
      d_joint(dimgs_.view(), {{ns, 0, &ce_[0]}, {nt, 1, &ce_[1]}, {nt, 2, &ce_[2]}}, false);
    } else {
      d_term(gs(), targets(0, ns), ce_[0]);
      d_term(gt(), targets(1, nt), ce_[1]);
      d_term(xt, targets(2, nt), ce_[2]);
    }
    std::vector<T> v;
    if (!deferred) {
      collect(v, {ce_[0].loss(), ce_[1].loss(), ce_[2].loss()});
      fill_d(*out, v[0], v[1], v[2]);
    }
    if (!apply(d_opt_, d_.gradients(), deferred, 0, "D", {"L_D(source)", "L_D(target fake)", "L_D(target real)"}, v))
      out->skipped_d = true;
  }
  // G(xs), G(xt) into dimgs_'s first rows (room after them for xt, D's third batch).
  void forward_g() {
    if (cfg_.joint_batches) {
      View<const T, Dev> y = g_.forward(feat_.view(), {ns_, nt_});
      dimgs_.resize(y.shape.with_batch(ns_ + 2 * nt_));
      copy_rows(dimgs_, 0, y);
    } else {
      View<const T, Dev> ys = g_src_.forward(fs());
      dimgs_.resize(ys.shape.with_batch(ns_ + 2 * nt_));
      copy_rows(dimgs_, 0, ys);
      copy_rows(dimgs_, ns_, g_.forward(ft()));
    }
    g_caches_fresh_ = true;
  }
  void d_term(View<const T, Dev> x, Tensor<int, Dev>& t, CrossEntropyLoss<T, Dev>& ce) {
    ce.compute(d_.forward(x), t.view());
    d_.backward(ce.grad(), false);
  }
  // One of D's batches in a joint pass: its size, its class, its loss.
  struct DBatch {
    int n, cls;
    CrossEntropyLoss<T, Dev>* ce;
  };
  // D once on x, the batches one after the other (each a segment of its own), each batch's loss
  // against its class, and back: what d_term does per batch. Returns D's input gradient when
  // need_input_grad.
  View<const T, Dev> d_joint(View<const T, Dev> x, std::initializer_list<DBatch> batches, bool need_input_grad) {
    std::vector<std::int64_t> segments;
    for (const DBatch& b : batches) segments.push_back(b.n);
    View<const T, Dev> logits = d_.forward(x, segments);
    dlogits_.resize(logits.shape);
    std::int64_t first = 0;
    for (const DBatch& b : batches) {
      b.ce->compute(logits.slice(first, b.n), targets(b.cls, b.n).view());
      copy_rows(dlogits_, first, b.ce->grad());
      first += b.n;
    }
    return d_.backward(dlogits_.view(), need_input_grad);
  }

  void update_g(View<const T, Dev> xt, bool deferred, DtnLosses* out) {
    d_.freeze(true);  // D fixed: gradients pass through it, its parameters get none
    g_.zero_grad();
    const T tv_w = static_cast<T>(cfg_.gamma * 0.5);
    if (!g_caches_fresh_) forward_g();  // g changed since (a second g update in this step)
    const int nt = static_cast<int>(nt_), ns = static_cast<int>(ns_);
    // dL_G/dG(x) of both batches in dgen_ = [source rows, target rows], starting with L_GANG's
    // through the fixed D, which sees the target batch first.
    dgen_.resize(dimgs_.shape().with_batch(ns_ + nt_));
    View<T, Dev> dgs = dgen_.view().slice(0, ns_), dgt = dgen_.view().slice(ns_, nt_);
    if (cfg_.joint_batches) {
      dpair_.resize(dgen_.shape());
      copy_rows(dpair_, 0, gt());
      copy_rows(dpair_, nt_, gs());
      View<const T, Dev> dd = d_joint(dpair_.view(), {{nt, 2, &ce_[3]}, {ns, 2, &ce_[4]}}, true);
      copy_rows(dgen_, ns_, dd.slice(0, nt_));
      copy_rows(dgen_, 0, dd.slice(nt_, ns_));
    } else {
      ce_[3].compute(d_.forward(gt()), targets(2, nt).view());
      copy_rows(dgen_, ns_, d_.backward(ce_[3].grad(), true));
      ce_[4].compute(d_.forward(gs()), targets(2, ns).view());
      copy_rows(dgen_, 0, d_.backward(ce_[4].grad(), true));
    }
    // ---- target batch: beta L_TID + gamma/2 TV
    mse_tid_.compute(gt(), xt, static_cast<T>(cfg_.beta));
    Backend<Dev>::axpy(dgt.size(), T(1), mse_tid_.grad().data, dgt.data);
    if (cfg_.gamma > 0) {
      tv_[1].compute(gt(), tv_w);
      Backend<Dev>::axpy(dgt.size(), T(1), tv_[1].grad().data, dgt.data);
    }
    // ---- source batch: alpha L_CONST + gamma/2 TV
    // L_CONST: f(G(xs)) against f(xs); the gradient flows back through the frozen f.
    View<const T, Dev> fg = f_.forward(as_f_input(gs(), gs3_));
    mse_const_.compute(fg, fs(), static_cast<T>(cfg_.alpha));
    View<const T, Dev> df = f_.backward(mse_const_.grad(), true);
    if (df.shape[1] != dgs.shape[1]) {
      dgs3_.resize(dgs.shape);
      Backend<Dev>::repeat_channels_backward(ns, static_cast<int>(dgs.shape[1]), static_cast<int>(df.shape[1] / dgs.shape[1]),
                                             static_cast<long>(dgs.shape[2] * dgs.shape[3]), df.data, dgs3_.data());
      Backend<Dev>::axpy(dgs.size(), T(1), dgs3_.data(), dgs.data);
    } else {
      Backend<Dev>::axpy(dgs.size(), T(1), df.data, dgs.data);
    }
    if (cfg_.gamma > 0) {
      tv_[0].compute(gs(), tv_w);
      Backend<Dev>::axpy(dgs.size(), T(1), tv_[0].grad().data, dgs.data);
    }
    // ---- back through g: once on both batches, or the target batch, then the source batch
    if (cfg_.joint_batches) {
      g_.backward(dgen_.view(), false);
    } else {
      g_.backward(dgt, false);
      g_src_.backward(dgs, false);
    }
    g_caches_fresh_ = false;
    d_.freeze(false);

    std::vector<T> v;
    if (!deferred) {
      collect(v, {ce_[3].loss(), ce_[4].loss(), mse_const_.loss(), mse_tid_.loss(), tv_[0].loss(), tv_[1].loss()});
      const double tv = cfg_.gamma > 0 ? 0.5 * (static_cast<double>(v[4]) + v[5]) : 0.0;
      fill_g(*out, v[0], v[1], v[2], v[3], tv);
      v[4] = static_cast<T>(tv);
      v.pop_back();
    }
    if (!apply(g_opt_, g_.gradients(), deferred, 1, "g", {"L_GANG(target)", "L_GANG(source)", "L_CONST", "L_TID", "L_TV"},
               v))
      out->skipped_g = true;
  }

  DtnConfig cfg_;
  Shape source_sample_, target_sample_;
  FNet f_;
  GNet g_;
  GNet g_src_;  // shares g_'s parameters: holds the source batch's activations during a step
  DNet d_;
  Adam<T, Dev> g_opt_, d_opt_;
  CrossEntropyLoss<T, Dev> ce_[5];
  MSELoss<T, Dev> mse_const_, mse_tid_;
  TotalVariationLoss<T, Dev> tv_[2];  // [0] on G(xs), [1] on G(xt)
  std::map<std::pair<int, int>, Tensor<int, Dev>> targets_;  // (class, batch size)
  Tensor<T, Dev> xs3_, xt3_, gs3_, dgs3_;
  Tensor<T, Dev> feat_;   // [f(xs), f(xt)]
  Tensor<T, Dev> dimgs_;  // [G(xs), G(xt), xt]: D's batches in the D update
  Tensor<T, Dev> dpair_;  // [G(xt), G(xs)]: D's batches in the g update (joint_batches)
  Tensor<T, Dev> dgen_;   // dL_G/d[G(xs), G(xt)]
  Tensor<T, Dev> dlogits_;
  std::int64_t ns_ = 0, nt_ = 0;  // the step's source and target batch sizes
  static constexpr std::size_t kDeferredLosses = 9;
  Tensor<T, Dev> deferred_losses_{Shape{static_cast<std::int64_t>(kDeferredLosses)}};  // run_deferred's losses
  Tensor<int, Dev> nonfinite_{Shape{2}};  // non-finite gradient counts of the D and g updates
  Tensor<T, Dev> adam_scalars_;           // AdamStep<T> of D and of g for a deferred step
  bool g_caches_fresh_ = false;  // g_ and g_src_ hold G(xt) and G(xs) for g's current parameters
  std::int64_t step_ = 0;
};

}  // namespace dtn
