#pragma once
// A fresh directory under the system temp dir for one test, removed with everything in it when
// the object goes out of scope. CTest runs test cases in parallel processes: the pid and a
// per-process counter keep the names apart.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace dtn_test {

struct ScratchDir {
  std::filesystem::path path;
  explicit ScratchDir(const std::string& tag = "data") {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("dtn_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  std::string file(const std::string& name) const { return (path / name).string(); }
  // The names of what the directory holds, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(path)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

}  // namespace dtn_test
