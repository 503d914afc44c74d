// The compiled engine's time loop: one direction of one layer, forward and backward.
//
// It knows nothing about any cell. Per step it does the recurrent matrix product into a
// preallocated buffer (ATen's public addmm_out / mm_out) and calls a generated kernel through
// a function pointer,
//
//     void kernel(int64_t B, const unsigned char* rows, void* const* buffers);
//
// whose buffers are described by `slots`: for each buffer, where its data is at step p
// (p counts steps in the order they are processed; t is the time index of step p; a
// per-step tensor with fewer entries than steps is a ring, indexed modulo its length). The
// Python side (lstm/compiled/run.py) allocates every tensor and reads the results. Nothing
// here allocates per step: the operands of the per-step products are views whose offset
// moves (Cursor), and the backward's running gradients live in buffers that swap roles.
//
// Floating-point state: flush-to-zero and denormals-are-zero are set around the loop (on x86),
// so that vectorised transcendentals never stall on denormals, and restored after it, so
// that nothing outside the loop sees them (tests/test_compiled.py reads MXCSR around a call).

#include <torch/extension.h>

#include <cstring>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define LSTM_HAS_MXCSR 1
#endif

namespace {

using Kernel = void (*)(int64_t, const unsigned char*, void* const*);

// Where one kernel buffer's data lives at step p.
enum Source : int64_t {
  kFixed = 0,       // the same tensor every step (parameters, accumulated gradients)
  kByTime = 1,      // tensor[t] of a (T, ...) tensor (input maps' answers, their gradients)
  kByStep = 2,      // tensor[p] of a (T, ...) tensor (saved values, recurrent answers)
  kByStepNext = 3,  // tensor[p + 1] of a (T + 1, ...) tensor (the step's new hidden and state)
};

struct Slot {
  int64_t source;
  char* base;
  int64_t stride;  // bytes per step along dim 0
  int64_t count;   // entries along dim 0 (a ring when fewer than the steps)
};

std::vector<Slot> make_slots(const std::vector<at::Tensor>& tensors,
                             const std::vector<int64_t>& sources) {
  TORCH_CHECK(tensors.size() == sources.size(), "slots: ", tensors.size(), " tensors, ",
              sources.size(), " sources");
  std::vector<Slot> slots;
  slots.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& tensor = tensors[i];
    TORCH_CHECK(tensor.is_contiguous() && tensor.device().is_cpu(), "slot ", i,
                ": expected a contiguous CPU tensor");
    int64_t stride = 0, count = 1;
    if (sources[i] != kFixed) {
      TORCH_CHECK(tensor.dim() > 0 && tensor.size(0) > 0, "slot ", i, ": expected steps");
      stride = tensor.stride(0) * tensor.element_size();
      count = tensor.size(0);
    }
    slots.push_back({sources[i], static_cast<char*>(tensor.data_ptr()), stride, count});
  }
  return slots;
}

void fill(const std::vector<Slot>& slots, int64_t p, int64_t t, std::vector<void*>& out) {
  for (size_t i = 0; i < slots.size(); ++i) {
    const auto& slot = slots[i];
    int64_t index = slot.source == kByTime ? t : slot.source == kByStepNext ? p + 1 : p;
    out[i] = slot.source == kFixed ? slot.base : slot.base + (index % slot.count) * slot.stride;
  }
}

// One step of a (T, ...) tensor as a tensor, moved from step to step by changing its storage
// offset: no view is created per step.
class Cursor {
 public:
  Cursor() = default;
  explicit Cursor(const at::Tensor& whole)
      : view_(whole.select(0, 0)), base_(whole.storage_offset()), stride_(whole.stride(0)) {}
  at::Tensor& at(int64_t index) {
    view_.unsafeGetTensorImpl()->set_storage_offset(base_ + index * stride_);
    return view_;
  }

 private:
  at::Tensor view_;
  int64_t base_ = 0;
  int64_t stride_ = 0;
};

class FloatMode {
 public:
  FloatMode() {
#ifdef LSTM_HAS_MXCSR
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | 0x8040);  // FTZ (bit 15) and DAZ (bit 6)
#endif
  }
  ~FloatMode() {
#ifdef LSTM_HAS_MXCSR
    _mm_setcsr(saved_);
#endif
  }
  FloatMode(const FloatMode&) = delete;
  FloatMode& operator=(const FloatMode&) = delete;

 private:
  unsigned int saved_ = 0;
};

// Rows of one step of a tensor (*lead, B, width), contiguous: the batch at dim -2, as every
// state here. `bytes` is the step's size.
struct Rows {
  int64_t lead;
  int64_t count;
  int64_t row_bytes;
};

Rows rows_of(const at::Tensor& whole, int64_t rows, bool per_step) {
  const int64_t numel = per_step ? whole.numel() / std::max<int64_t>(whole.size(0), 1)
                                 : whole.numel();
  const int64_t width = whole.dim() >= 1 ? whole.size(-1) : 1;
  const int64_t lead = rows && width ? numel / (rows * width) : 0;
  return {lead, rows, width * static_cast<int64_t>(whole.element_size())};
}

// The rows of `to` whose sequence is not running take `from`'s.
void keep_rows(char* to, const char* from, const Rows& shape, const unsigned char* running) {
  for (int64_t l = 0; l < shape.lead; ++l) {
    for (int64_t b = 0; b < shape.count; ++b) {
      if (running[b]) continue;
      const int64_t offset = (l * shape.count + b) * shape.row_bytes;
      std::memcpy(to + offset, from + offset, shape.row_bytes);
    }
  }
}

// out[b] = a[b] + c[b] for the rows b that are not running (a may be null: zero).
template <typename T>
void add_rows(T* out, const T* a, const T* c, int64_t rows, int64_t width,
              const unsigned char* running) {
  for (int64_t b = 0; b < rows; ++b) {
    if (running[b]) continue;
    for (int64_t j = 0; j < width; ++j) {
      out[b * width + j] = (a ? a[b * width + j] : T(0)) + c[b * width + j];
    }
  }
}

}  // namespace

// The forward loop over `steps` steps. `hidden` is (T + 1, B, H_in): hidden[0] the initial
// hidden, hidden[p + 1] the hidden after step p; `states` likewise per state part;
// `recurrent` (T, B, G) receives h2h's answer of every step (its bias added), which the
// kernel reads through its slot. Any of them may be a ring of fewer entries (inference:
// nothing is kept for backward). With `mask` (T, B) of 0/1 bytes, a row whose sequence has
// ended keeps its hidden and state through the step and gets a zero output in `outputs`
// (T, B, H_in, written in time order; unused without a mask).
void forward(int64_t kernel, const std::vector<at::Tensor>& tensors,
             const std::vector<int64_t>& sources, int64_t steps, at::Tensor hidden,
             const std::vector<at::Tensor>& states, c10::optional<at::Tensor> weight,
             c10::optional<at::Tensor> bias, c10::optional<at::Tensor> recurrent,
             c10::optional<at::Tensor> mask, at::Tensor outputs, bool reverse) {
  at::NoGradGuard no_grad;
  FloatMode mode;
  const auto function = reinterpret_cast<Kernel>(kernel);
  const auto slots = make_slots(tensors, sources);
  std::vector<void*> pointers(slots.size());
  const int64_t rows = hidden.size(1);
  const bool ragged = mask.has_value();
  at::Tensor weight_t;
  Cursor hidden_at, recurrent_at;
  if (weight) {
    weight_t = weight->t().contiguous();  // MKL's small products are faster untransposed
    hidden_at = Cursor(hidden);
    recurrent_at = Cursor(*recurrent);
  }
  const Rows hidden_rows = rows_of(hidden, rows, true);
  std::vector<Rows> state_rows;
  for (const auto& state : states) state_rows.push_back(rows_of(state, rows, true));
  const int64_t ring = hidden.size(0);
  const int64_t hidden_step = hidden.stride(0) * hidden.element_size();
  char* hidden_base = static_cast<char*>(hidden.data_ptr());
  for (int64_t p = 0; p < steps; ++p) {
    const int64_t t = reverse ? steps - 1 - p : p;
    if (weight) {
      auto& into = recurrent_at.at(p % recurrent->size(0));
      if (bias) {
        at::addmm_out(into, *bias, hidden_at.at(p % ring), weight_t);
      } else {
        at::mm_out(into, hidden_at.at(p % ring), weight_t);
      }
    }
    fill(slots, p, t, pointers);
    const unsigned char* running = ragged ? mask->data_ptr<uint8_t>() + t * rows : nullptr;
    function(rows, running, pointers.data());
    if (!ragged) continue;
    char* before = hidden_base + (p % ring) * hidden_step;
    char* after = hidden_base + ((p + 1) % ring) * hidden_step;
    keep_rows(after, before, hidden_rows, running);
    for (size_t i = 0; i < states.size(); ++i) {
      const int64_t step = states[i].stride(0) * states[i].element_size();
      const int64_t count = states[i].size(0);
      char* base = static_cast<char*>(states[i].data_ptr());
      keep_rows(base + ((p + 1) % count) * step, base + (p % count) * step, state_rows[i], running);
    }
    char* out = static_cast<char*>(outputs.data_ptr()) + t * hidden_step;
    const int64_t row_bytes = hidden_rows.row_bytes;
    for (int64_t b = 0; b < rows; ++b) {
      if (running[b]) {
        std::memcpy(out + b * row_bytes, after + b * row_bytes, row_bytes);
      } else {
        std::memset(out + b * row_bytes, 0, row_bytes);
      }
    }
  }
}

// The backward loop, steps in reverse processing order. `tensors`/`sources` are the
// backward kernel's slots; `hidden_slot` is the slot of the gradient reaching the step's
// hidden output, `state_in_slots` those reaching its state parts, `state_out_slots` those it
// writes for the state parts it read, `direct_slot` (or -1) the one it writes for the
// hidden input read directly (not through h2h). The gradient of the recurrent answer goes
// into `d_recurrent[p]` through its slot; the gradient of the previous hidden is then
// d_outputs[t - 1] + d_recurrent[p] x W (+ the direct one). `d_outputs` (T, B, H_in) is
// zero where the sequence is not running. Returns the gradients of the initial hidden and
// state parts.
std::vector<at::Tensor> backward(int64_t kernel, const std::vector<at::Tensor>& tensors,
                                 const std::vector<int64_t>& sources, int64_t hidden_slot,
                                 const std::vector<int64_t>& state_in_slots,
                                 const std::vector<int64_t>& state_out_slots,
                                 int64_t direct_slot, at::Tensor d_outputs,
                                 c10::optional<at::Tensor> weight,
                                 c10::optional<at::Tensor> d_recurrent,
                                 c10::optional<at::Tensor> mask, at::Tensor d_hidden_final,
                                 const std::vector<at::Tensor>& d_states_final, bool reverse) {
  at::NoGradGuard no_grad;
  FloatMode mode;
  const auto function = reinterpret_cast<Kernel>(kernel);
  auto slots = make_slots(tensors, sources);
  std::vector<void*> pointers(slots.size());
  const int64_t steps = d_outputs.size(0), rows = d_hidden_final.size(0);
  const int64_t width = d_hidden_final.numel() / std::max<int64_t>(rows, 1);
  const bool ragged = mask.has_value();
  TORCH_CHECK(state_in_slots.size() == d_states_final.size(), "backward: state slots");
  TORCH_CHECK(state_out_slots.size() == d_states_final.size(), "backward: state slots");
  // The gradient reaching the step's hidden output (d_outputs[t] + the carry), and the one
  // being made for the previous step: two buffers that swap.
  at::Tensor total = at::empty_like(d_hidden_final), next = at::empty_like(d_hidden_final);
  Cursor d_out_at(d_outputs), d_recurrent_at;
  if (d_recurrent) d_recurrent_at = Cursor(*d_recurrent);
  at::Tensor direct;
  if (direct_slot >= 0) {
    direct = at::empty_like(d_hidden_final);
    slots[direct_slot].base = static_cast<char*>(direct.data_ptr());
  }
  std::vector<at::Tensor> state_in, state_out;
  std::vector<Rows> state_rows;
  for (size_t i = 0; i < d_states_final.size(); ++i) {
    state_in.push_back(d_states_final[i].clone());
    state_out.push_back(at::empty_like(d_states_final[i]));
    state_rows.push_back(rows_of(d_states_final[i], rows, false));
  }
  if (steps == 0) {
    std::vector<at::Tensor> result{d_hidden_final.clone()};
    for (auto& state : state_in) result.push_back(state);
    return result;
  }
  const int64_t last = reverse ? 0 : steps - 1;
  at::add_out(total, d_out_at.at(last), d_hidden_final);
  for (int64_t p = steps - 1; p >= 0; --p) {
    const int64_t t = reverse ? steps - 1 - p : p;
    const int64_t before = reverse ? t + 1 : t - 1;  // the time index of step p - 1
    slots[hidden_slot].base = static_cast<char*>(total.data_ptr());
    for (size_t i = 0; i < state_in.size(); ++i) {
      if (state_in_slots[i] >= 0) slots[state_in_slots[i]].base = static_cast<char*>(state_in[i].data_ptr());
      if (state_out_slots[i] >= 0) slots[state_out_slots[i]].base = static_cast<char*>(state_out[i].data_ptr());
    }
    fill(slots, p, t, pointers);
    const unsigned char* running = ragged ? mask->data_ptr<uint8_t>() + t * rows : nullptr;
    function(rows, running, pointers.data());
    if (weight && p > 0) {
      at::addmm_out(next, d_out_at.at(before), d_recurrent_at.at(p), *weight);
    } else if (weight) {
      at::mm_out(next, d_recurrent_at.at(p), *weight);
    } else if (p > 0) {
      next.copy_(d_out_at.at(before));
    } else {
      next.zero_();
    }
    if (direct.defined()) next.add_(direct);
    if (ragged) {
      AT_DISPATCH_FLOATING_TYPES(next.scalar_type(), "keep_rows", [&] {
        const scalar_t* previous = p > 0 ? d_out_at.at(before).data_ptr<scalar_t>() : nullptr;
        add_rows<scalar_t>(next.data_ptr<scalar_t>(), previous, total.data_ptr<scalar_t>(), rows,
                           width, running);
      });
    }
    std::swap(total, next);
    for (size_t i = 0; i < state_in.size(); ++i) {
      if (state_out_slots[i] < 0) {  // the step does not read this part: no gradient reaches back
        if (!ragged) {
          state_in[i].zero_();
        } else {
          at::Tensor kept = state_in[i].clone();
          state_in[i].zero_();
          keep_rows(static_cast<char*>(state_in[i].data_ptr()),
                    static_cast<const char*>(kept.data_ptr()), state_rows[i], running);
        }
        continue;
      }
      if (ragged) {
        keep_rows(static_cast<char*>(state_out[i].data_ptr()),
                  static_cast<const char*>(state_in[i].data_ptr()), state_rows[i], running);
      }
      std::swap(state_in[i], state_out[i]);
    }
  }
  std::vector<at::Tensor> result{total};
  for (auto& state : state_in) result.push_back(state);
  return result;
}

int64_t mxcsr() {
#ifdef LSTM_HAS_MXCSR
  return static_cast<int64_t>(_mm_getcsr());
#else
  return -1;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("forward", &forward, "the forward time loop of one direction");
  module.def("backward", &backward, "the backward time loop of one direction");
  module.def("mxcsr", &mxcsr, "the x86 MXCSR register (-1 elsewhere)");
}
