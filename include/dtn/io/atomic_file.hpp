#pragma once
// Atomic replacement of a file: a crash, power loss or SIGKILL at any moment leaves either the old
// file or the complete new one at `path`, never a half-written one.
//
// How: the bytes go to `<path>.tmp.<pid>.<counter>` in the same directory (a rename is atomic only
// within one file system), which is flushed and fsync'ed before it is renamed over `path`; then
// the directory is fsync'ed so the rename itself is durable. On any error the temporary file is
// removed and dtn::io_error names the path, the failing step and the errno text.
// A process killed mid-write leaves its temporary file behind (nothing can remove it); the target
// is untouched. If `path` is a symbolic link, the link itself is replaced.
//
// POSIX only (fsync, rename over an existing file, directory fsync).
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <string>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <unistd.h>

#include "dtn/core/error.hpp"

namespace dtn::io {

namespace detail {

inline std::string errno_text(int err) { return std::generic_category().message(err); }

inline std::atomic<unsigned long>& atomic_file_counter() {
  static std::atomic<unsigned long> counter{0};
  return counter;
}

// The directory that holds `path` ("." for a bare file name), for the fsync after the rename.
inline std::string parent_directory(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace detail

// Writes a file through a temporary and renames it over the target on commit(). Destroying the
// writer without commit() (an exception while producing the bytes) removes the temporary and
// leaves the target as it was.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path) : path_(std::move(path)) {
    if (path_.empty()) throw io_error("atomic write: empty file name");
    temp_ = path_ + ".tmp." + std::to_string(static_cast<long>(::getpid())) + "." +
            std::to_string(detail::atomic_file_counter().fetch_add(1));
    // "x": fail rather than write into a file that already exists (a stale name from a reused pid).
    file_ = std::fopen(temp_.c_str(), "wbx");
    if (file_ == nullptr) {
      const int err = errno;
      throw io_error("cannot write " + path_ + ": creating temporary file " + temp_ +
                     " failed: " + detail::errno_text(err));
    }
  }

  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  ~AtomicFileWriter() { abandon(); }

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }

  void write(const void* data, std::size_t n) {
    if (file_ == nullptr) throw io_error("cannot write " + path_ + ": the file was already committed");
    if (n == 0) return;
    if (std::fwrite(data, 1, n, file_) != n) fail("writing " + std::to_string(n) + " bytes to " + temp_);
  }

  // Flushes and fsyncs the data, renames the temporary over the target, fsyncs the directory.
  void commit() {
    if (file_ == nullptr) throw io_error("cannot write " + path_ + ": the file was already committed");
    if (std::fflush(file_) != 0) fail("flushing " + temp_);
    if (::fsync(::fileno(file_)) != 0) fail("fsync of " + temp_);
    std::FILE* f = file_;
    file_ = nullptr;
    if (std::fclose(f) != 0) {
      const int err = errno;
      std::remove(temp_.c_str());
      throw io_error("cannot write " + path_ + ": closing " + temp_ + " failed: " + detail::errno_text(err));
    }
    if (std::rename(temp_.c_str(), path_.c_str()) != 0) {
      const int err = errno;
      std::remove(temp_.c_str());
      throw io_error("cannot write " + path_ + ": renaming " + temp_ + " over it failed: " +
                     detail::errno_text(err));
    }
    committed_ = true;
    sync_directory();
  }

 private:
  [[noreturn]] void fail(const std::string& step) {
    const int err = errno;
    abandon();
    throw io_error("cannot write " + path_ + ": " + step + " failed: " + detail::errno_text(err));
  }

  void abandon() noexcept {
    if (file_ != nullptr) {
      std::fclose(file_);
      file_ = nullptr;
    }
    if (!committed_ && !removed_) {
      std::remove(temp_.c_str());
      removed_ = true;
    }
  }

  // The rename is only durable once the directory entry is on disk. Some file systems cannot
  // fsync a directory (EINVAL, ENOTSUP): there is nothing more to do on those.
  void sync_directory() {
    const std::string dir = detail::parent_directory(path_);
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      throw io_error("wrote " + path_ + " but cannot open its directory " + dir + " to fsync it: " +
                     detail::errno_text(err));
    }
    if (::fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP) {
      const int err = errno;
      ::close(fd);
      throw io_error("wrote " + path_ + " but fsync of its directory " + dir + " failed: " +
                     detail::errno_text(err));
    }
    ::close(fd);
  }

  std::string path_;
  std::string temp_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
  bool removed_ = false;
};

// Replaces `path` atomically with the n bytes at `data`.
inline void write_file_atomic(const std::string& path, const void* data, std::size_t n) {
  AtomicFileWriter w(path);
  w.write(data, n);
  w.commit();
}

}  // namespace dtn::io
