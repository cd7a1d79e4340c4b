#pragma once
// A progress line for long runs: on a terminal it updates in place ("\r"), otherwise (a log
// file, CI) it prints plain lines at most every `interval` seconds.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace dtn {
namespace io {

class Progress {
 public:
  Progress(std::string label, long total, double interval_s = 10.0, std::FILE* out = stderr)
      : label_(std::move(label)), total_(total), interval_(interval_s), out_(out), tty_(isatty(fileno(out)) != 0),
        start_(Clock::now()), last_(start_ - std::chrono::hours(1)) {}
  ~Progress() { finish(); }

  // Reports that `done` of `total` units are finished; `items` is the number of images
  // processed so far (for images/s) and `extra` any text such as the current losses.
  void update(long done, double items, const std::string& extra) {
    const auto now = Clock::now();
    const double since = std::chrono::duration<double>(now - last_).count();
    if (done < total_ && since < (tty_ ? 0.2 : interval_)) return;
    last_ = now;
    const double el = std::chrono::duration<double>(now - start_).count();
    const double rate = el > 0 ? items / el : 0;
    const double eta = done > 0 ? el * static_cast<double>(total_ - done) / static_cast<double>(done) : 0;
    char head[160];
    std::snprintf(head, sizeof head, "%s %ld/%ld | %.0f img/s | %s elapsed | ETA %s | ", label_.c_str(), done, total_,
                  rate, clock_text(el).c_str(), clock_text(eta).c_str());
    if (tty_) {
      std::fprintf(out_, "\r\033[K%s%s", head, extra.c_str());
      open_ = true;
    } else {
      std::fprintf(out_, "%s%s\n", head, extra.c_str());
    }
    std::fflush(out_);
  }
  void finish() {
    if (open_) std::fprintf(out_, "\n");
    open_ = false;
  }
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  static std::string clock_text(double s) {
    const long t = static_cast<long>(s + 0.5);
    char b[32];
    std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    return b;
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::string label_;
  long total_;
  double interval_;
  std::FILE* out_;
  bool tty_, open_ = false;
  Clock::time_point start_, last_;
};

}  // namespace io
}  // namespace dtn
