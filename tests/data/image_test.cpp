// PNG output read back through libpng, image grid layout, SVG loss plots.
#include <dtn/io/image.hpp>
#include <dtn/io/plot.hpp>

#include <cmath>
#include <limits>

#include "helpers.hpp"

using namespace dtn_test;

namespace {
dtn::io::Image8 pattern(int c, int h, int w) {
  dtn::io::Image8 im;
  im.c = c;
  im.h = h;
  im.w = w;
  im.pixels.resize(static_cast<std::size_t>(c * h * w));
  for (std::size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = static_cast<std::uint8_t>((i * 31 + i / 7) & 0xff);
  return im;
}
std::size_t count(const std::string& s, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}
}  // namespace

TEST_CASE("png: gray and RGB write and read back pixel-exact") {
  TempDir dir;
  for (int c : {1, 3}) {
    CAPTURE(c);
    const auto im = pattern(c, 13, 17);
    const std::string f = dir.file("p" + std::to_string(c) + ".png");
    dtn::io::write_png(f, im);
    const auto back = dtn::io::read_png(f);
    CHECK(back.c == c);
    CHECK(back.h == 13);
    CHECK(back.w == 17);
    CHECK(back.pixels == im.pixels);
    // Overwriting goes through a temporary and a rename: no temporary is left behind.
    dtn::io::write_png(f, im);
  }
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) files += e.is_regular_file();
  CHECK(files == 2);
}

TEST_CASE("png: errors name the file") {
  TempDir dir;
  const auto im = pattern(3, 4, 4);
  const std::string nodir = dir.file("no/such/dir/x.png");
  require_io_error([&] { dtn::io::write_png(nodir, im); }, {nodir});
  const std::string junk = dir.file("junk.png");
  write_bytes(junk, std::vector<std::uint8_t>(100, 7));
  require_io_error([&] { dtn::io::read_png(junk); }, {junk});
  CHECK_THROWS_AS(dtn::io::write_png(dir.file("two.png"), im.pixels.data(), 2, 4, 4), dtn::argument_error);
}

TEST_CASE("grid: rows of images in [-1, 1] with a 2-pixel gap") {
  // Row 0: two RGB 4x3 images; row 1: three gray 4x3 images. The grid is RGB, cells 4x3,
  // 3 columns: width 3 * (3 + 2) + 2 = 17, height 2 * (4 + 2) + 2 = 14.
  const int h = 4, w = 3;
  std::vector<float> rgb(2 * 3 * h * w), gray(3 * 1 * h * w);
  for (std::size_t i = 0; i < rgb.size(); ++i) rgb[i] = -1.0f + 2.0f * static_cast<float>(i) / static_cast<float>(rgb.size() - 1);
  for (std::size_t i = 0; i < gray.size(); ++i) gray[i] = std::sin(static_cast<float>(i));
  gray[5] = 3.0f;                                     // clamps to 255
  gray[6] = -7.0f;                                    // clamps to 0
  gray[7] = std::numeric_limits<float>::quiet_NaN();  // 0
  dtn::View<const float, dtn::Cpu> r0(rgb.data(), dtn::Shape{2, 3, h, w}), r1(gray.data(), dtn::Shape{3, 1, h, w});
  dtn::io::GridOptions opt;
  opt.background = 200;
  const auto g = dtn::io::make_image_grid({r0, r1}, opt);
  REQUIRE(g.c == 3);
  REQUIRE(g.h == 14);
  REQUIRE(g.w == 17);
  auto at = [&](int ch, int y, int x) { return g.pixels[(static_cast<std::size_t>(ch) * 14 + y) * 17 + x]; };
  auto u8 = [](float v) {
    if (std::isnan(v)) return 0;
    return static_cast<int>(std::lround(std::min(255.0f, std::max(0.0f, (v + 1.0f) * 127.5f))));
  };
  std::size_t bad = 0, cells = 0;
  for (int y = 0; y < 14; ++y)
    for (int x = 0; x < 17; ++x) {
      const int row = (y - 2) / 6, col = (x - 2) / 5, iy = (y - 2) % 6, ix = (x - 2) % 5;
      const bool in_cell = y >= 2 && x >= 2 && iy < h && ix < w && (row == 0 ? col < 2 : col < 3);
      for (int ch = 0; ch < 3; ++ch) {
        int expect = 200;
        if (in_cell) {
          expect = row == 0 ? u8(rgb[((static_cast<std::size_t>(col) * 3 + ch) * h + iy) * w + ix])
                            : u8(gray[(static_cast<std::size_t>(col) * h + iy) * w + ix]);
          ++cells;
        }
        bad += at(ch, y, x) != expect;
      }
    }
  CHECK(bad == 0);
  CHECK(cells == 3u * (5 * h * w));
  CHECK(at(0, 2, 2) == 0);  // the first RGB pixel is -1

  TempDir dir;
  const std::string f = dir.file("grid.png");
  dtn::io::write_image_grid(f, {r0, r1}, opt);
  const auto back = dtn::io::read_png(f);
  CHECK(back.pixels == g.pixels);

  // A batch of 5 gray images in 2 columns: 3 rows.
  dtn::View<const float, dtn::Cpu> batch(gray.data(), dtn::Shape{3, 1, h, w});
  dtn::io::write_image_grid(f, batch, 2);
  const auto b2 = dtn::io::read_png(f);
  CHECK(b2.c == 1);
  CHECK(b2.h == 2 * (h + 2) + 2);
  CHECK(b2.w == 2 * (w + 2) + 2);

  CHECK_THROWS_AS(dtn::io::make_image_grid({}), dtn::argument_error);
  dtn::View<const float, dtn::Cpu> two_ch(rgb.data(), dtn::Shape{1, 2, h, w});
  CHECK_THROWS_AS(dtn::io::make_image_grid({two_ch}), dtn::shape_error);
  dtn::View<const float, dtn::Cpu> no_data(nullptr, dtn::Shape{2, 1, h, w});
  CHECK_THROWS_WITH_AS(dtn::io::make_image_grid({batch, no_data}), "dtn::io::make_image_grid: row 1 has no data",
                       dtn::argument_error);
  // 40,000 rows of 32-pixel cells: a 1.4-million-pixel-high grid is refused before any allocation.
  std::vector<dtn::View<const float, dtn::Cpu>> tall(40000, dtn::View<const float, dtn::Cpu>(gray.data(), dtn::Shape{1, 1, 32, 1}));
  CHECK_THROWS_WITH_AS(dtn::io::make_image_grid(tall), "dtn::io::make_image_grid: grid of 1360002x5 pixels is too large",
                       dtn::argument_error);
  dtn::io::Image8 short_buffer{1, 4, 4, std::vector<std::uint8_t>(15)};
  CHECK_THROWS_WITH_AS(dtn::io::write_png(dir.file("short.png"), short_buffer),
                       ("dtn::io::write_png (" + dir.file("short.png") + "): pixel buffer of 15 bytes does not match 1x4x4").c_str(),
                       dtn::argument_error);
  CHECK(!std::filesystem::exists(dir.file("short.png")));
}

TEST_CASE("grid: a smaller image is centred in the cell") {
  std::vector<float> big(1 * 1 * 6 * 6, 1.0f), small(1 * 1 * 2 * 2, -1.0f);
  dtn::View<const float, dtn::Cpu> a(big.data(), dtn::Shape{1, 1, 6, 6}), b(small.data(), dtn::Shape{1, 1, 2, 2});
  dtn::io::GridOptions opt;
  opt.gap = 1;
  opt.background = 100;
  const auto g = dtn::io::make_image_grid({a, b}, opt);
  REQUIRE(g.w == 8);
  REQUIRE(g.h == 15);
  // Row 1's cell spans y 8..13, x 1..6; the 2x2 image sits at y 10..11, x 3..4.
  for (int y = 8; y < 14; ++y)
    for (int x = 1; x < 7; ++x) {
      const bool inside = y >= 10 && y < 12 && x >= 3 && x < 5;
      CHECK(g.pixels[static_cast<std::size_t>(y) * 8 + x] == (inside ? 0 : 100));
    }
}

TEST_CASE("plot: SVG with one polyline per unbroken run, legend, escaped names") {
  dtn::io::PlotSeries a{"L_GAN <D>", {}}, b{"L_CONST & TID", {}};
  for (int i = 0; i < 50; ++i) {
    a.points.push_back({i * 10.0, 1.0 / (1 + i)});
    b.points.push_back({i * 10.0, i == 20 ? std::nan("") : 0.5 + 0.01 * i});
  }
  dtn::io::PlotOptions opt;
  opt.title = "losses";
  const std::string svg = dtn::io::plot_svg({a, b}, opt);
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("</svg>") != std::string::npos);
  CHECK(count(svg, "<polyline") == 3);  // b is broken by its NaN
  CHECK(svg.find("L_GAN &lt;D&gt;") != std::string::npos);
  CHECK(svg.find("L_CONST &amp; TID") != std::string::npos);
  CHECK(svg.find("<D>") == std::string::npos);
  CHECK(svg.find("nan,") == std::string::npos);  // no NaN coordinate (printf writes "nan")
  CHECK(svg.find(",nan") == std::string::npos);
  // a's first point (x = 0, the minimum) sits on the left edge of the plot area (x = 70).
  CHECK(svg.find("points=\"70,") != std::string::npos);

  opt.log_y = true;
  a.points.push_back({500.0, 0.0});  // not drawable on a log axis: dropped, the line breaks
  CHECK(count(dtn::io::plot_svg({a}, opt), "<polyline") == 1);
  CHECK(count(dtn::io::plot_svg({}, opt), "<polyline") == 0);
  // Steps far beyond the spacing of doubles still give a finite set of ticks.
  dtn::io::PlotSeries c{"c", {{1e16, 1.0}, {1e16 + 4, 2.0}}};
  CHECK(dtn::io::plot_svg({c}).size() < 100000);

  TempDir dir;
  const std::string f = dir.file("loss.svg");
  dtn::io::write_plot_svg(f, {a, b}, opt);
  const auto bytes = read_bytes(f);
  CHECK(std::string(bytes.begin(), bytes.end()) == dtn::io::plot_svg({a, b}, opt));
  opt.width = 10;
  CHECK_THROWS_AS(dtn::io::plot_svg({a}, opt), dtn::argument_error);
}
