// The progress line: plain periodic lines when the output is not a terminal (a log file, CI);
// in-place updates ("\r") only on a terminal.
#include <doctest/doctest.h>

#include <cstdio>
#include <dtn/io/progress.hpp>
#include <string>

namespace {
std::string contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}
}  // namespace

TEST_CASE("progress: plain lines with step/total, images/s, ETA and the caller's text when not a terminal") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    // interval 0: every update prints (a log file gets periodic lines, at most one per interval)
    dtn::io::Progress p("(c) DTN", 10, 0.0, f);
    for (long s = 1; s <= 10; ++s) p.update(s, 128.0 * s, "L_D " + std::to_string(s));
  }
  const std::string out = contents(f);
  std::fclose(f);
  CHECK(out.find('\r') == std::string::npos);
  CHECK(out.find("(c) DTN 1/10 |") != std::string::npos);
  CHECK(out.find("(c) DTN 10/10 |") != std::string::npos);
  CHECK(out.find("img/s") != std::string::npos);
  CHECK(out.find("ETA 0:00:00 | L_D 10\n") != std::string::npos);
  std::size_t lines = 0;
  for (char c : out) lines += c == '\n';
  CHECK(lines == 10);
}

TEST_CASE("progress: with a long interval only the last update prints") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    dtn::io::Progress p("train", 5, 3600.0, f);
    for (long s = 1; s <= 5; ++s) p.update(s, static_cast<double>(s), "x");
  }
  const std::string out = contents(f);
  std::fclose(f);
  std::size_t lines = 0;
  for (char c : out) lines += c == '\n';
  // The first update prints (nothing printed yet), the intermediate ones are within the
  // interval, the final one always prints.
  CHECK(lines == 2);
  CHECK(out.find("train 5/5") != std::string::npos);
  CHECK(dtn::io::Progress::clock_text(3725) == "1:02:05");
}
