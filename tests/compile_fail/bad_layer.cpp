// Must NOT compile: a user's layer without backward(). CTest checks that the compiler's message
// is the readable contract message (tests.cmake: compile_fail/bad_layer).
#include <dtn/dtn.hpp>

struct NoBackward {
  template <class T, class Dev>
  struct layer {
    static constexpr const char* kind = "NoBackward";
    dtn::Shape setup(const dtn::Shape& in) { return in; }
    template <class F>
    void for_each_param(F&&) {}
    void forward(dtn::View<const T, Dev>, dtn::View<T, Dev>, bool) {}
  };
};

int main() {
  dtn::Net<dtn::Sequential<dtn::ReLU, NoBackward>> net(dtn::Shape{4}, "user");
  return 0;
}
