#pragma once
// Every exception the library throws derives from dtn::error, so a user can catch one type.
#include <stdexcept>
#include <string>

namespace dtn {

struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A tensor shape that does not fit a layer or an op; the message names the layer and both shapes.
struct shape_error : error {
  using error::error;
};
// A bad argument (negative size, unknown option, value out of range).
struct argument_error : error {
  using error::error;
};
// A file that cannot be opened, is truncated or malformed; the message names the file.
struct io_error : error {
  using error::error;
};
// A CUDA, cuDNN or cuBLAS call that failed; the message carries the call text and file:line.
struct cuda_error : error {
  using error::error;
};
// Training produced a non-finite loss or gradient.
struct numeric_error : error {
  using error::error;
};

}  // namespace dtn
