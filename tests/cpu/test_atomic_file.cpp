// Atomic file replacement: content, cleanup of the temporary file, errors that name the path.
#include <doctest/doctest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dtn/io/atomic_file.hpp"
#include "../scratch_dir.hpp"

namespace fs = std::filesystem;

namespace {

using dtn_test::ScratchDir;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string message_of(const std::string& path, const void* data, std::size_t n) {
  try {
    dtn::io::write_file_atomic(path, data, n);
  } catch (const dtn::io_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("atomic_file: writes the bytes and replaces an existing file, leaving no temporary") {
  ScratchDir d("write");
  const std::string path = d.file("out.bin");
  const std::string first = "first version";
  dtn::io::write_file_atomic(path, first.data(), first.size());
  CHECK(read_all(path) == first);
  std::string second(100000, '\0');
  for (std::size_t i = 0; i < second.size(); ++i) second[i] = static_cast<char>(i * 7 + 3);
  dtn::io::write_file_atomic(path, second.data(), second.size());
  CHECK(read_all(path) == second);
  dtn::io::write_file_atomic(path, nullptr, 0);
  CHECK(fs::file_size(path) == 0);
  CHECK(d.entries() == std::vector<std::string>{"out.bin"});
}

TEST_CASE("atomic_file: the temporary lives beside the target and is unique per write") {
  ScratchDir d("names");
  const std::string path = d.file("x.safetensors");
  dtn::io::AtomicFileWriter a(path);
  dtn::io::AtomicFileWriter b(path);
  const std::string prefix = path + ".tmp." + std::to_string(::getpid()) + ".";
  CHECK(a.temp_path().rfind(prefix, 0) == 0);
  CHECK(b.temp_path().rfind(prefix, 0) == 0);
  CHECK(a.temp_path() != b.temp_path());
  CHECK(fs::exists(a.temp_path()));
  CHECK(fs::exists(b.temp_path()));
}

TEST_CASE("atomic_file: a writer destroyed without commit leaves the old file and removes its temporary") {
  ScratchDir d("abandon");
  const std::string path = d.file("keep.txt");
  dtn::io::write_file_atomic(path, "old", 3);
  {
    dtn::io::AtomicFileWriter w(path);
    w.write("new content that is never committed", 35);
    CHECK(fs::exists(w.temp_path()));
  }
  CHECK(read_all(path) == "old");
  CHECK(d.entries() == std::vector<std::string>{"keep.txt"});
}

TEST_CASE("atomic_file: commit twice or write after commit is an error") {
  ScratchDir d("twice");
  dtn::io::AtomicFileWriter w(d.file("a"));
  w.write("x", 1);
  w.commit();
  CHECK_THROWS_AS(w.commit(), dtn::io_error);
  CHECK_THROWS_AS(w.write("y", 1), dtn::io_error);
  CHECK(read_all(d.file("a")) == "x");
}

TEST_CASE("atomic_file: a missing directory is an io_error naming the path and the errno text") {
  ScratchDir d("missing");
  const std::string path = d.file("no/such/dir/out.bin");
  const std::string msg = message_of(path, "abc", 3);
  INFO(msg);
  CHECK(msg.find(path) != std::string::npos);
  CHECK(msg.find("No such file or directory") != std::string::npos);
  CHECK(d.entries().empty());
}

TEST_CASE("atomic_file: renaming over a directory fails cleanly and removes the temporary") {
  ScratchDir d("isdir");
  const std::string path = d.file("target");
  fs::create_directories(fs::path(path) / "inner");
  const std::string msg = message_of(path, "abc", 3);
  INFO(msg);
  CHECK(msg.find(path) != std::string::npos);
  CHECK(msg.find("renaming") != std::string::npos);
  CHECK(fs::is_directory(fs::path(path) / "inner"));
  CHECK(d.entries() == std::vector<std::string>{"target"});
}

TEST_CASE("atomic_file: a write that fails midway (file size limit) keeps the old file and removes the temporary") {
  ScratchDir d("efbig");
  const std::string path = d.file("ckpt.bin");
  dtn::io::write_file_atomic(path, "previous", 8);
  // In a child: cap the file size at 64 KiB (EFBIG instead of SIGXFSZ) and write 1 MiB.
  // Exit codes: 0 = io_error naming the path and "File too large"; 1 = no error; 2 = wrong message.
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{64 * 1024, 64 * 1024};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    std::vector<char> big(1 << 20, 'z');
    try {
      dtn::io::write_file_atomic(path, big.data(), big.size());
    } catch (const dtn::io_error& e) {
      const std::string m = e.what();
      ::_exit(m.find(path) != std::string::npos && m.find("File too large") != std::string::npos ? 0 : 2);
    }
    ::_exit(1);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(read_all(path) == "previous");
  CHECK(d.entries() == std::vector<std::string>{"ckpt.bin"});
}

TEST_CASE("atomic_file: parent_directory") {
  using dtn::io::detail::parent_directory;
  CHECK(parent_directory("file") == ".");
  CHECK(parent_directory("/file") == "/");
  CHECK(parent_directory("a/b/c.bin") == "a/b");
  CHECK(parent_directory("/abs/x") == "/abs");
}
